//! `nvmetcp-initiator`: nvmetcp's own NVMe/TCP host, for dom0 kernels without
//! `nvme_tcp` (XCP-ng 8.2 and 8.3 run Linux 4.19).
//!
//! The room has two halves that meet at [`block::BlockDevice`]:
//!
//! * the NVMe/TCP side (the PDU codec, queues, controllers and the multipath
//!   engine) turns "this subsystem, these portals" into one `BlockDevice`;
//! * the serving side exposes a `BlockDevice` to the host kernel as an NBD
//!   device, run by one supervised daemon per SR per host.
//!
//! `sm-driver` reaches this crate only through its narrow door (start, stop,
//! state of the initiator for one SR on this host).

pub mod auth;
pub mod block;
pub mod buffers;
pub mod command;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dh;
pub mod discovery;
#[cfg(test)]
mod fake_target;
pub mod identify;
pub mod multipath;
pub mod nbd;
pub mod pdu;
pub mod queue;
pub mod splice;
pub mod stages;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vectored;

pub use config::{
    AuthKeys, DhchapSecret, HostIdentity, IoPolicy, MultipathConfig, NamespaceIdentity, TransportOptions,
};
pub use multipath::{AnaState, DeviceState, Multipath, OpenError, PathState, PathStatus};
