//! The SMAPIv3 protocol layer: what xapi-storage-script sends and expects.
//!
//! * [`method`]: the API 5.0 method catalogue and the two plugin kinds;
//! * [`params`]: the named parameters read from stdin, validated by name and type;
//! * [`types`]: the return records, encoded exactly as rpclib reads them;
//! * [`error_record`]: the error record printed with a non-zero exit.
//!
//! Nothing here does I/O: the entry point ([`crate::entry`]) reads stdin and
//! owns stdout.

pub mod error_record;
pub mod method;
pub mod params;
pub mod types;
