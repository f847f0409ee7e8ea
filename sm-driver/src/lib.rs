//! `sm-driver`: the nvmetcp SMAPIv3 volume and datapath plugin for XCP-ng.
//!
//! One static binary, `nvmetcp-plugin`, is installed once and reached through
//! one link per implemented method in two directories that
//! xapi-storage-script watches:
//!
//! * `/usr/libexec/xapi-storage-script/volume/org.xen.xapi.storage.nvmetcp/`
//!   (`Plugin.Query`, `SR.*`, `Volume.*`), and
//! * `/usr/libexec/xapi-storage-script/datapath/nvmetcp/` (`Plugin.Query`,
//!   `Datapath.*`).
//!
//! The life of one call: [`entry::parse_args`] reads argv (the link name is the
//! method, its directory the plugin); [`entry::execute`] reads and validates
//! the named parameters ([`smapi::params`]), opens a tracing span carrying
//! `dbg`, the SR and the volume, runs the handler registered in
//! [`dispatch`], and returns either the JSON result or the error record built
//! by [`error::to_error_record`]. The binary prints that one document on
//! stdout; logs go to syslog (LOCAL2, so `/var/log/SMlog`) and never to stdout.
//!
//! Handlers reach the host only through [`host::HostRoot`] (sysfs, `/dev`,
//! `/etc`) and [`cmd::Runner`] (external programs), so unit tests replace
//! both with a temporary tree and a recording fake.

pub mod agent;
pub mod chain_member;
pub mod cmd;
pub mod context;
pub mod datapath;
pub mod device_config;
pub mod diagnostics;
pub mod dispatch;
pub mod doctor;
pub mod engine;
pub mod entry;
pub mod error;
pub mod error_chain;
pub mod hex;
pub mod host;
pub mod host_config;
pub mod host_plugin;
pub mod ids;
pub mod initiator;
pub mod install;
pub mod lock;
pub mod lvm;
pub mod nvme;
pub mod plugin;
pub mod pool_forward;
pub mod pool_mappings;
pub mod pool_role;
pub mod request;
pub mod secrets;
pub mod smapi;
pub mod snapshot;
pub mod sr;
pub mod sr_access;
pub mod sr_config;
pub mod sr_paths;
pub mod sr_state;
pub mod status;
pub mod volume;
pub mod writer_guard;
#[cfg(any(test, feature = "testing"))]
pub mod xapi_fixture;
