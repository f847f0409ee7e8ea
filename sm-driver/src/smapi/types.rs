//! The SMAPIv3 (xapi-storage API 5.0) records, encoded exactly as rpclib does.
//!
//! xapi-storage-script unmarshals what a plugin prints with rpclib, whose JSON
//! rules differ from serde's defaults in three ways that matter:
//!
//! * a variant with a payload is a two-element array `["Tag", payload]`, and a
//!   variant without one is the bare string `"Tag"`;
//! * an optional record field is *absent* when `None`: rpclib cannot read a
//!   string from `null`, so `null` must never be printed for a missing option;
//! * `int64` is a JSON integer and `(string * string) list` is a JSON object.
//!
//! Every record here derives `Serialize`/`Deserialize` with those rules, so the
//! rest of the driver never builds JSON by hand. The types are the full v5 set
//! (control, data and plugin interfaces), including what 8.2's older IDL lacks
//! (`Unreachable`/`Unavailable` health, `volume_type`, `cbt_enabled`): rpclib
//! ignores unknown record keys, so emitting them is safe on every XCP-ng.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// `(string * string) list` in the IDL: a JSON object with string values.
pub type StringMap = BTreeMap<String, String>;

/// Answer of `Plugin.Query`: identifies the plugin and what it can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResult {
    /// SR type (volume plugin) or URI scheme (datapath plugin).
    pub plugin: String,
    /// Short human-readable name.
    pub name: String,
    /// Longer human-readable description.
    pub description: String,
    /// Who ships the plugin.
    pub vendor: String,
    /// Copyright notice.
    pub copyright: String,
    /// Plugin version.
    pub version: String,
    /// SMAPI version the plugin speaks; always `"5.0"` here.
    pub required_api_version: String,
    /// Capabilities (`SR_PROBE`, `VDI_CREATE`, …); only what really works.
    pub features: Vec<String>,
    /// device-config key → human description, shown by `xe sm-list`.
    pub configuration: StringMap,
    /// Cluster stacks the SR needs; empty for nvmetcp.
    pub required_cluster_stack: Vec<String>,
}

/// Health of an SR, reported by `SR.stat`.
///
/// xapi fails a scan on anything but `Healthy`, and retries `Unreachable`;
/// the string carries the detail an administrator sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// I/O is possible (possibly degraded: the text says so).
    Healthy(String),
    /// Storage is busy recovering.
    Recovering(String),
    /// Storage cannot be reached at all.
    Unreachable(String),
    /// Storage is reachable but unusable.
    Unavailable(String),
}

/// Answer of `SR.stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrStat {
    /// The opaque SR handle returned by `SR.attach`.
    pub sr: String,
    /// SR name label.
    pub name: String,
    /// xapi SR uuid, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// SR name description.
    pub description: String,
    /// Free bytes.
    pub free_space: i64,
    /// Total bytes.
    pub total_space: i64,
    /// Datasource URIs (`xeno+shm://…`) for RRD statistics.
    pub datasources: Vec<String>,
    /// Whether the SR relies on a cluster stack.
    pub clustered: bool,
    /// Health, with detail.
    pub health: Health,
}

/// One answer element of `SR.probe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Configuration that reaches this result (to pass to create/attach).
    pub configuration: StringMap,
    /// True when the configuration can be used by `SR.create`/`SR.attach` as is.
    pub complete: bool,
    /// The existing SR found there, if any (then `configuration.sr_uuid` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sr: Option<SrStat>,
    /// Extra information for the administrator.
    pub extra_info: StringMap,
}

/// What a volume holds, for changed block tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeType {
    /// Ordinary data.
    Data,
    /// Only CBT metadata (data destroyed).
    #[serde(rename = "CBT_Metadata")]
    CbtMetadata,
    /// Data plus CBT metadata.
    #[serde(rename = "Data_and_CBT_Metadata")]
    DataAndCbtMetadata,
}

/// A volume (xapi VDI) as returned by `Volume.create`, `Volume.stat`, `SR.ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Primary key, unique in the SR; xapi's VDI `location`.
    pub key: String,
    /// UUID; xapi uses it as the VDI uuid when it parses as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Name label.
    pub name: String,
    /// Name description.
    pub description: String,
    /// False for read-only volumes.
    pub read_write: bool,
    /// Whether several hosts may attach it at once.
    pub sharable: bool,
    /// Size seen by the VM, in bytes.
    pub virtual_size: i64,
    /// Space used on the backing storage, in bytes.
    pub physical_utilisation: i64,
    /// Datapath URIs, most preferred first.
    pub uri: Vec<String>,
    /// Opaque key/value pairs stored with `Volume.set`.
    pub keys: StringMap,
    /// What the volume holds (absent means `Data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<VolumeType>,
    /// Whether changed block tracking is on (absent means false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cbt_enabled: Option<bool>,
}

/// Answer of `Volume.list_changed_blocks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedBlocks {
    /// Bytes covered by one bit of the bitmap.
    pub granularity: i64,
    /// Base64-encoded bitmap.
    pub bitmap: String,
}

/// A list of byte ranges (`Volume.compare`, `Data.copy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockList {
    /// Block size in bytes.
    pub blocksize: i64,
    /// `(offset, length)` pairs, encoded as two-element arrays.
    pub ranges: Vec<(i64, i64)>,
}

/// Payload of the `XenDisk` implementation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XenDisk {
    /// xenstore `params`; ignored by xenopsd when a `BlockDevice` is present.
    pub params: String,
    /// Pairs written under the backend's `sm-data/`.
    pub extra: StringMap,
    /// xenstore backend kind: `vbd` (blkback), `vbd3`, `qdisk`.
    pub backend_type: String,
}

/// One way to reach a volume's data, returned by `Datapath.attach`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Implementation {
    /// Ring connection for guests.
    XenDisk(XenDisk),
    /// A local block device path.
    BlockDevice {
        /// Device path.
        path: String,
    },
    /// A local raw file.
    File {
        /// File path.
        path: String,
    },
    /// An NBD export.
    Nbd {
        /// `nbd:unix:<socket>:exportname=<name>`.
        uri: String,
    },
}

/// Answer of `Datapath.attach`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// Implementations, most preferred first.
    pub implementations: Vec<Implementation>,
}

/// A long-running data operation (`Data.copy`, `Data.mirror`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Copy from the first URI to the second.
    Copy(String, String),
    /// Mirror from the first URI to the second.
    Mirror(String, String),
}

/// Answer of `Data.stat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationStatus {
    /// Whether the operation failed.
    pub failed: bool,
    /// Progress between 0 and 1, for copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
}

/// Writes `["Tag", payload]`, rpclib's encoding of a variant with a payload.
fn serialize_tagged<S: Serializer, P: Serialize + ?Sized>(
    serializer: S,
    tag: &str,
    payload: &P,
) -> Result<S::Ok, S::Error> {
    let mut tuple = serializer.serialize_tuple(2)?;
    tuple.serialize_element(tag)?;
    tuple.serialize_element(payload)?;
    tuple.end()
}

/// Reads `["Tag", payload]` and hands the tag and payload to `build`.
fn deserialize_tagged<'de, D, T, F>(deserializer: D, expecting: &'static str, build: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str, serde_json::Value) -> Result<T, String>,
{
    struct TaggedVisitor(&'static str);
    impl<'de> Visitor<'de> for TaggedVisitor {
        type Value = (String, serde_json::Value);
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} as [\"Tag\", payload]", self.0)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let tag: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
            let payload = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
            if seq.next_element::<de::IgnoredAny>()?.is_some() {
                return Err(de::Error::invalid_length(3, &self));
            }
            Ok((tag, payload))
        }
    }
    let (tag, payload) = deserializer.deserialize_seq(TaggedVisitor(expecting))?;
    build(&tag, payload).map_err(de::Error::custom)
}

fn payload<T: serde::de::DeserializeOwned>(tag: &str, value: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("bad payload for {tag}: {e}"))
}

impl Serialize for Health {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (tag, text) = match self {
            Self::Healthy(t) => ("Healthy", t),
            Self::Recovering(t) => ("Recovering", t),
            Self::Unreachable(t) => ("Unreachable", t),
            Self::Unavailable(t) => ("Unavailable", t),
        };
        serialize_tagged(serializer, tag, text)
    }
}

impl<'de> Deserialize<'de> for Health {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_tagged(deserializer, "health", |tag, value| {
            let text: String = payload(tag, value)?;
            match tag {
                "Healthy" => Ok(Self::Healthy(text)),
                "Recovering" => Ok(Self::Recovering(text)),
                "Unreachable" => Ok(Self::Unreachable(text)),
                "Unavailable" => Ok(Self::Unavailable(text)),
                other => Err(format!("unknown health variant {other:?}")),
            }
        })
    }
}

/// The `{"path": …}` payload shared by `BlockDevice` and `File`.
#[derive(Serialize, Deserialize)]
struct PathPayload {
    path: String,
}

/// The `{"uri": …}` payload of `Nbd`.
#[derive(Serialize, Deserialize)]
struct UriPayload {
    uri: String,
}

impl Serialize for Implementation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::XenDisk(disk) => serialize_tagged(serializer, "XenDisk", disk),
            Self::BlockDevice { path } => {
                serialize_tagged(serializer, "BlockDevice", &PathPayload { path: path.clone() })
            }
            Self::File { path } => serialize_tagged(serializer, "File", &PathPayload { path: path.clone() }),
            Self::Nbd { uri } => serialize_tagged(serializer, "Nbd", &UriPayload { uri: uri.clone() }),
        }
    }
}

impl<'de> Deserialize<'de> for Implementation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_tagged(deserializer, "implementation", |tag, value| match tag {
            "XenDisk" => Ok(Self::XenDisk(payload(tag, value)?)),
            "BlockDevice" => Ok(Self::BlockDevice { path: payload::<PathPayload>(tag, value)?.path }),
            "File" => Ok(Self::File { path: payload::<PathPayload>(tag, value)?.path }),
            "Nbd" => Ok(Self::Nbd { uri: payload::<UriPayload>(tag, value)?.uri }),
            other => Err(format!("unknown implementation variant {other:?}")),
        })
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Copy(from, to) => serialize_tagged(serializer, "Copy", &(from, to)),
            Self::Mirror(from, to) => serialize_tagged(serializer, "Mirror", &(from, to)),
        }
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_tagged(deserializer, "operation", |tag, value| {
            let (from, to): (String, String) = payload(tag, value)?;
            match tag {
                "Copy" => Ok(Self::Copy(from, to)),
                "Mirror" => Ok(Self::Mirror(from, to)),
                other => Err(format!("unknown operation variant {other:?}")),
            }
        })
    }
}

#[cfg(test)]
mod tests;
