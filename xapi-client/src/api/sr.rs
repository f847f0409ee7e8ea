//! `SR`: creation (which, for a shared SR, makes a PBD per host and plugs
//! them all), probing, and the records.

use std::collections::BTreeMap;

use crate::api::{all_records, HostRef, PbdRef, SrRef, TaskRef};
use crate::client::Session;
use crate::error::Result;
use crate::value::{Fields, TypeError, Value};

/// The fields of an SR record nvmetcp reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sr {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name_label: String,
    /// Description.
    pub name_description: String,
    /// The SR type.
    pub sr_type: String,
    /// Whether every host may plug it.
    pub shared: bool,
    /// Its PBDs, one per host.
    pub pbds: Vec<PbdRef>,
    /// Size in bytes.
    pub physical_size: i64,
    /// Bytes used.
    pub physical_utilisation: i64,
    /// `content_type` (`user` for VM disks).
    pub content_type: String,
    /// `other_config`.
    pub other_config: BTreeMap<String, String>,
}

impl Sr {
    fn decode(value: &Value) -> std::result::Result<Self, TypeError> {
        let f = Fields::of(value, "SR")?;
        Ok(Self {
            uuid: f.string("uuid")?,
            name_label: f.string("name_label")?,
            name_description: f.string("name_description")?,
            sr_type: f.string("type")?,
            shared: f.bool("shared")?,
            pbds: f.strings("PBDs")?.into_iter().map(PbdRef).collect(),
            physical_size: f.int("physical_size")?,
            physical_utilisation: f.int("physical_utilisation")?,
            content_type: f.string("content_type")?,
            other_config: f.string_map("other_config")?,
        })
    }
}

/// The arguments of `SR.create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrCreate {
    /// The host to run on (ignored for shared SRs: they are created on the
    /// master).
    pub host: HostRef,
    /// device-config, copied to every PBD.
    pub device_config: BTreeMap<String, String>,
    /// Requested size (0: the plugin decides).
    pub physical_size: i64,
    /// Name.
    pub name_label: String,
    /// Description.
    pub name_description: String,
    /// The SR type.
    pub sr_type: String,
    /// `user` for VM disks.
    pub content_type: String,
    /// Shared across the pool.
    pub shared: bool,
    /// `sm_config`.
    pub sm_config: BTreeMap<String, String>,
}

impl SrCreate {
    fn params(&self) -> Vec<Value> {
        vec![
            (&self.host).into(),
            Value::map(&self.device_config),
            Value::Int(self.physical_size),
            Value::from(self.name_label.as_str()),
            Value::from(self.name_description.as_str()),
            Value::from(self.sr_type.as_str()),
            Value::from(self.content_type.as_str()),
            Value::Bool(self.shared),
            Value::map(&self.sm_config),
        ]
    }
}

/// `SR.create`.
///
/// # Errors
/// [`crate::Error`]; the plugin's own failure arrives as an XAPI error
/// (`SR_BACKEND_FAILURE_…`).
pub fn create(session: &Session, args: &SrCreate) -> Result<SrRef> {
    session.call_as("SR.create", args.params(), |v| SrRef::decode(v, "SR ref"))
}

/// `Async.SR.create`: returns the task to follow (see [`crate::api::task`]).
///
/// # Errors
/// [`crate::Error`].
pub fn create_async(session: &Session, args: &SrCreate) -> Result<TaskRef> {
    session.call_as("Async.SR.create", args.params(), |v| TaskRef::decode(v, "task ref"))
}

/// One `SR.probe_ext` result.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// The device-config that reaches this candidate.
    pub configuration: BTreeMap<String, String>,
    /// Whether `configuration` is enough to attach.
    pub complete: bool,
    /// The SR found there, if any.
    pub sr: Option<ProbedSr>,
    /// Anything else the plugin said.
    pub extra_info: BTreeMap<String, String>,
}

/// An SR found by probing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedSr {
    /// Its UUID, when known.
    pub uuid: Option<String>,
    /// Name.
    pub name_label: String,
    /// Description.
    pub name_description: String,
    /// Free bytes.
    pub free_space: i64,
    /// Total bytes.
    pub total_space: i64,
    /// `healthy`, `recovering`, `unreachable` or `unavailable`.
    pub health: String,
}

fn decode_probe(value: &Value) -> std::result::Result<Vec<ProbeResult>, TypeError> {
    value
        .as_array("SR.probe_ext")?
        .iter()
        .map(|item| {
            let f = Fields::of(item, "probe_result")?;
            let sr = f
                .optional("sr")
                .map(|sr| {
                    let s = Fields::of(sr, "sr_stat")?;
                    Ok::<_, TypeError>(ProbedSr {
                        uuid: s.optional("uuid").map(|u| u.as_str("sr_stat.uuid").map(str::to_owned)).transpose()?,
                        name_label: s.string("name_label")?,
                        name_description: s.string("name_description")?,
                        free_space: s.int("free_space")?,
                        total_space: s.int("total_space")?,
                        health: s.string_or_empty("health")?,
                    })
                })
                .transpose()?;
            Ok(ProbeResult {
                configuration: f.string_map("configuration")?,
                complete: f.bool("complete")?,
                sr,
                extra_info: f.string_map("extra_info")?,
            })
        })
        .collect()
}

/// `SR.probe_ext` on `host` for `sr_type`.
///
/// # Errors
/// [`crate::Error`].
pub fn probe_ext(
    session: &Session,
    host: &HostRef,
    device_config: &BTreeMap<String, String>,
    sr_type: &str,
    sm_config: &BTreeMap<String, String>,
) -> Result<Vec<ProbeResult>> {
    session.call_as(
        "SR.probe_ext",
        vec![host.into(), Value::map(device_config), Value::from(sr_type), Value::map(sm_config)],
        decode_probe,
    )
}

/// `SR.destroy`: the plugin destroys the SR, then XAPI forgets it (all PBDs
/// must be unplugged).
///
/// # Errors
/// [`crate::Error`]; `SR_HAS_PBD` while a PBD is plugged.
pub fn destroy(session: &Session, sr: &SrRef) -> Result<()> {
    session.call("SR.destroy", vec![sr.into()]).map(drop)
}

/// `SR.forget`: removes the SR, its PBDs and VDIs from XAPI's database only.
///
/// # Errors
/// [`crate::Error`]; `SR_HAS_PBD` while a PBD is plugged.
pub fn forget(session: &Session, sr: &SrRef) -> Result<()> {
    session.call("SR.forget", vec![sr.into()]).map(drop)
}

/// `SR.scan`.
///
/// # Errors
/// [`crate::Error`].
pub fn scan(session: &Session, sr: &SrRef) -> Result<()> {
    session.call("SR.scan", vec![sr.into()]).map(drop)
}

/// `SR.get_all_records`, sorted by ref.
///
/// # Errors
/// [`crate::Error`].
pub fn get_all_records(session: &Session) -> Result<Vec<(SrRef, Sr)>> {
    session.call_as("SR.get_all_records", vec![], |v| all_records(v, "SR", SrRef, Sr::decode))
}

/// `SR.get_record`.
///
/// # Errors
/// [`crate::Error`].
pub fn get_record(session: &Session, sr: &SrRef) -> Result<Sr> {
    session.call_as("SR.get_record", vec![sr.into()], Sr::decode)
}

/// `SR.get_by_uuid`.
///
/// # Errors
/// [`crate::Error`]; `UUID_INVALID` when there is none.
pub fn get_by_uuid(session: &Session, uuid: &str) -> Result<SrRef> {
    session.call_as("SR.get_by_uuid", vec![Value::from(uuid)], |v| SrRef::decode(v, "SR ref"))
}

/// `SR.get_sm_config`.
///
/// # Errors
/// [`crate::Error`].
pub fn get_sm_config(session: &Session, sr: &SrRef) -> Result<BTreeMap<String, String>> {
    session.call_as("SR.get_sm_config", vec![sr.into()], |v| v.as_string_map("SR.sm_config"))
}

/// Sets `sm_config:key` to `value` (remove, then `SR.add_to_sm_config`).
///
/// # Errors
/// [`crate::Error`].
pub fn set_sm_config_key(session: &Session, sr: &SrRef, key: &str, value: &str) -> Result<()> {
    session.call("SR.remove_from_sm_config", vec![sr.into(), Value::from(key)])?;
    session.call("SR.add_to_sm_config", vec![sr.into(), Value::from(key), Value::from(value)]).map(drop)
}
