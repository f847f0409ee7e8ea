//! `pool`: there is exactly one; its `master` names the master host.

use crate::api::{all_records, HostRef, PoolRef};
use crate::client::Session;
use crate::error::Result;
use crate::value::{Fields, TypeError, Value};

/// The fields of a pool record nvmetcp reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// UUID.
    pub uuid: String,
    /// Name (empty for a pool of one that was never named).
    pub name_label: String,
    /// The master host.
    pub master: HostRef,
}

impl Pool {
    fn decode(value: &Value) -> std::result::Result<Self, TypeError> {
        let f = Fields::of(value, "pool")?;
        Ok(Self { uuid: f.string("uuid")?, name_label: f.string("name_label")?, master: HostRef(f.string("master")?) })
    }
}

/// `pool.get_all_records`, which has exactly one entry.
///
/// # Errors
/// [`crate::Error`].
pub fn get_all_records(session: &Session) -> Result<Vec<(PoolRef, Pool)>> {
    session.call_as("pool.get_all_records", vec![], |v| all_records(v, "pool", PoolRef, Pool::decode))
}

/// The pool and its ref.
///
/// # Errors
/// [`crate::Error`]; [`crate::Error::Type`] when XAPI lists no pool.
pub fn the_pool(session: &Session) -> Result<(PoolRef, Pool)> {
    get_all_records(session)?.into_iter().next().ok_or_else(|| crate::Error::Type {
        method: "pool.get_all_records".into(),
        source: TypeError { context: "pool".into(), expected: "one pool", got: "none".into() },
    })
}
