//! The NVMe-oF fabric layer: from "this subsystem, these portals" to one
//! verified multipath block device on this host, and back.
//!
//! It talks to the kernel directly — the fabrics device `/dev/nvme-fabrics`
//! to connect, sysfs to find and watch controllers and namespaces — and never
//! parses nvme-cli's output (dom0 ships 1.16, newer systems 2.x; neither is
//! needed at run time).
//!
//! * [`names`]: validated values (NQN, host ID, portal, interface, keys);
//! * [`options`]: connect parameters, their defaults, and the one renderer of
//!   the kernel option string;
//! * [`sysfs`]: controllers, subsystems and namespace devices as the kernel
//!   shows them.

pub mod names;
pub mod options;
pub mod sysfs;
