//! `xapi-client`: a small, correct XAPI client (XML-RPC over the dom0 unix
//! socket or HTTPS).
//!
//! The driver needs XAPI to resolve DH-HMAC-CHAP secrets and the admin
//! command needs it to create the SR across the pool. The existing XML-RPC
//! crates mishandle XAPI's encoding (untyped string values, 64-bit integers as
//! strings), so this crate will carry its own codec, transports and typed
//! calls. It is an empty crate until that work lands: see ARCHITECTURE.md.
