//! A test-only XAPI emulator.
//!
//! It serves XAPI's wire format — XML-RPC on every path, JSON-RPC on
//! `/jsonrpc` — over HTTP and a unix socket, keeps a small pool model (pool,
//! hosts, SM records, SRs, PBDs, secrets, messages, tasks, events) and
//! applies the XAPI rules nvmetcp depends on:
//!
//! * a shared `SR.create` makes one PBD per host, master first, with the same
//!   device-config, calls the storage backend once, writes the configuration
//!   the backend returns into every PBD, and plugs them all; a PBD that fails
//!   to plug stays unplugged and the create still succeeds, as in XAPI;
//! * device-config keys ending in `password` become secrets, renamed
//!   `<key>_secret` and holding the secret's UUID;
//! * a login over TCP on an instance configured as a pool member fails with
//!   `HOST_IS_SLAVE [master]`, and calls on the unix socket are root;
//! * `SR.introduce` makes a database record only (`SR_UUID_EXISTS` for a
//!   UUID already known), `PBD.create` + `PBD.plug` attach it host by host,
//!   `SR.forget` drops the SR with its PBDs and VDIs, and `SR.scan` rebuilds
//!   the VDI records and sizes from the backend's `SR.ls` and `SR.stat`;
//! * `SR_UNKNOWN_DRIVER` for types without an SM record, `SR_HAS_PBD`,
//!   `PBD_EXISTS`, `SESSION_INVALID`, `HANDLE_INVALID`, `UUID_INVALID`.
//!
//! Storage behaviour comes from a [`Backend`], so tests decide what a plug
//! or a host plugin does on each host. Real clients (the Python `XenAPI`
//! SDK and Xen Orchestra's `xen-api`) are run against it in CI so it stays
//! true to XAPI.

mod backend;
mod fixture_backend;
mod handlers;
mod model;
mod plugin_backend;
mod server;
mod volumes;

pub use backend::{AcceptAll, Backend, Failure, HostInfo, NewSr, NewVolume, Scan, Volume};
pub use fixture_backend::FixtureBackend;
pub use model::{Config, MapUpdate, SmType};
pub use plugin_backend::PluginBackend;
pub use server::Emulator;
