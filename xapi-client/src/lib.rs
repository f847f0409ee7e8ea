//! `xapi-client`: a small, correct XAPI (XenAPI) client.
//!
//! The driver needs XAPI to resolve DH-HMAC-CHAP secrets and the admin
//! command needs it to create the SR across the pool. The existing XML-RPC
//! crates mishandle XAPI's encoding (untyped string values, 64-bit integers as
//! strings, dash-less datetimes), so this crate carries its own codec
//! ([`codec`]), a minimal HTTP/1.1 client over the dom0 unix socket or TLS
//! ([`transport`]), sessions that always log out and follow `HOST_IS_SLAVE`
//! ([`client`]), and typed calls for the classes nvmetcp uses ([`api`]).

pub mod codec;
pub mod value;

pub use value::{Fields, TypeError, Value};
pub mod api;
pub mod client;
pub mod error;
pub mod http;
pub mod secret;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

pub use client::{Client, Credentials, Session};
pub use error::{Error, Result, XapiError};
pub use secret::Secret;
pub use transport::{Endpoint, Fingerprint, Timeouts, TlsVerify};
