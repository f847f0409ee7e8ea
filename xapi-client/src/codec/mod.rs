//! The wire format: XML-RPC as XAPI writes and reads it, the
//! `Status`/`Value`/`ErrorDescription` envelope, and the JSON mapping XAPI's
//! JSON-RPC endpoint uses.
//!
//! The codec is hand-written because every XML-RPC crate gets XAPI wrong in a
//! way that corrupts data: untyped string values are trimmed, or XAPI's
//! `20240101T12:00:00Z` datetimes are rejected (see `../shared/reference/xapi.md`
//! §5). It is shared by the client, the test emulator and the host plugin.

mod envelope;
pub mod json;
#[cfg(test)]
mod tests;
mod xml;

pub use envelope::{decode_envelope, failure, success, ApiFailure};
pub use xml::{
    parse_call, parse_response, parse_value, write_call, write_fault, write_response, write_value, CodecError,
    Encoding, MethodResponse, MAX_DEPTH,
};
