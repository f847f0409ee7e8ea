//! `PBD`: an SR on one host. Plugging it runs the plugin's `SR.attach` there.

use std::collections::BTreeMap;

use crate::api::{all_records, HostRef, PbdRef, SrRef, TaskRef};
use crate::client::Session;
use crate::error::Result;
use crate::value::{Fields, TypeError, Value};

/// The fields of a PBD record nvmetcp reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pbd {
    /// UUID.
    pub uuid: String,
    /// Its host.
    pub host: HostRef,
    /// Its SR.
    pub sr: SrRef,
    /// device-config (secret keys appear as `…_secret` UUIDs).
    pub device_config: BTreeMap<String, String>,
    /// Whether the SR is attached on the host.
    pub currently_attached: bool,
    /// `other_config`.
    pub other_config: BTreeMap<String, String>,
}

impl Pbd {
    pub(crate) fn decode(value: &Value) -> std::result::Result<Self, TypeError> {
        let f = Fields::of(value, "PBD")?;
        Ok(Self {
            uuid: f.string("uuid")?,
            host: HostRef(f.string("host")?),
            sr: SrRef(f.string("SR")?),
            device_config: f.string_map("device_config")?,
            currently_attached: f.bool("currently_attached")?,
            other_config: f.string_map("other_config")?,
        })
    }
}

/// `PBD.create` (its one argument is a record).
///
/// # Errors
/// [`crate::Error`]; `PBD_EXISTS` when the host already has one for the SR.
pub fn create(
    session: &Session,
    host: &HostRef,
    sr: &SrRef,
    device_config: &BTreeMap<String, String>,
) -> Result<PbdRef> {
    let record = Value::record([
        ("host", host.into()),
        ("SR", sr.into()),
        ("device_config", Value::map(device_config)),
        ("other_config", Value::record::<&str>([])),
    ]);
    session.call_as("PBD.create", vec![record], |v| PbdRef::decode(v, "PBD ref"))
}

/// `PBD.plug`.
///
/// # Errors
/// [`crate::Error`]; the plugin's `SR.attach` failure as an XAPI error.
pub fn plug(session: &Session, pbd: &PbdRef) -> Result<()> {
    session.call("PBD.plug", vec![pbd.into()]).map(drop)
}

/// `Async.PBD.plug`.
///
/// # Errors
/// [`crate::Error`].
pub fn plug_async(session: &Session, pbd: &PbdRef) -> Result<TaskRef> {
    session.call_as("Async.PBD.plug", vec![pbd.into()], |v| TaskRef::decode(v, "task ref"))
}

/// `PBD.unplug`.
///
/// # Errors
/// [`crate::Error`].
pub fn unplug(session: &Session, pbd: &PbdRef) -> Result<()> {
    session.call("PBD.unplug", vec![pbd.into()]).map(drop)
}

/// `PBD.destroy`.
///
/// # Errors
/// [`crate::Error`].
pub fn destroy(session: &Session, pbd: &PbdRef) -> Result<()> {
    session.call("PBD.destroy", vec![pbd.into()]).map(drop)
}

/// `PBD.get_all_records`, sorted by ref.
///
/// # Errors
/// [`crate::Error`].
pub fn get_all_records(session: &Session) -> Result<Vec<(PbdRef, Pbd)>> {
    session.call_as("PBD.get_all_records", vec![], |v| all_records(v, "PBD", PbdRef, Pbd::decode))
}

/// `PBD.get_record`.
///
/// # Errors
/// [`crate::Error`].
pub fn get_record(session: &Session, pbd: &PbdRef) -> Result<Pbd> {
    session.call_as("PBD.get_record", vec![pbd.into()], Pbd::decode)
}

/// `PBD.add_to_other_config`.
///
/// # Errors
/// [`crate::Error`]; `MAP_DUPLICATE_KEY` when `key` is already there.
pub fn add_to_other_config(session: &Session, pbd: &PbdRef, key: &str, value: &str) -> Result<()> {
    session.call("PBD.add_to_other_config", vec![pbd.into(), Value::from(key), Value::from(value)]).map(drop)
}

/// `PBD.remove_from_other_config` (a key that is not there is no error).
///
/// # Errors
/// [`crate::Error`].
pub fn remove_from_other_config(session: &Session, pbd: &PbdRef, key: &str) -> Result<()> {
    session.call("PBD.remove_from_other_config", vec![pbd.into(), Value::from(key)]).map(drop)
}

/// Sets `other_config:key` to `value`: XAPI has no single call for one key,
/// so remove then add, as `xe pbd-param-set other-config:key=value` does.
///
/// # Errors
/// [`crate::Error`].
pub fn set_other_config_key(session: &Session, pbd: &PbdRef, key: &str, value: &str) -> Result<()> {
    remove_from_other_config(session, pbd, key)?;
    add_to_other_config(session, pbd, key, value)
}
