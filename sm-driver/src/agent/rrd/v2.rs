//! The xcp-rrdd plugin protocol, version 2: the bytes a plugin leaves in its
//! shared-memory file for xcp-rrdd to read every five seconds.
//!
//! Layout (all integers big-endian), as xcp-rrdd reads it
//! (`xapi-project/xen-api` `ocaml/xcp-rrdd/lib/transport/base/rrd_protocol_v2.ml`,
//! design note `doc/content/design/plugin-protocol-v2.md`):
//!
//! | field | bytes |
//! |---|---|
//! | `DATASOURCES` | 11 |
//! | CRC-32 of timestamp and values | 4 |
//! | CRC-32 of the metadata | 4 |
//! | number of data sources | 4 |
//! | timestamp, Unix seconds (int64; the OCaml reader and writer use an integer, the design note says double) | 8 |
//! | one value per data source (int64, or the bits of an IEEE double) | 8 × n |
//! | metadata length | 4 |
//! | metadata: JSON `{"datasources": {name: {…}}}` without values | length |
//!
//! The metadata keys are those xcp-rrdd parses (`uninitialised_ds_of_rpc`):
//! `description`, `owner` (`host`, `vm <uuid>`, `sr <uuid>`), `value_type`
//! (`int64`/`float`), `type` (`absolute`, `gauge`, `derive`), `default`,
//! `units`, `min`, `max`; every value is a JSON string. The values come in
//! the order of the metadata's members, so data sources are kept sorted by
//! name here and serialised from a sorted map.

use std::collections::BTreeMap;

/// The header string.
pub const HEADER: &[u8] = b"DATASOURCES";

/// How xcp-rrdd archives a data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value as it is now (a rate the plugin computed, a count).
    Gauge,
    /// A counter reset on every reading.
    Absolute,
    /// An ever-increasing counter; xcp-rrdd stores its rate.
    Derive,
}

impl Kind {
    const fn wire(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Absolute => "absolute",
            Self::Derive => "derive",
        }
    }
}

/// A value and, by its variant, the data source's `value_type`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// `float`.
    Float(f64),
    /// `int64`.
    Int(i64),
}

/// One data source with its current value.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    /// The name xcp-rrdd and its clients see (`iops_read_3f1c6d0e`).
    pub name: String,
    /// A sentence for people.
    pub description: String,
    /// `host`, `vm <uuid>` or `sr <uuid>`.
    pub owner: String,
    /// Units shown beside the value.
    pub units: String,
    /// How it is archived.
    pub kind: Kind,
    /// Recorded without being asked for.
    pub default: bool,
    /// Lowest valid value.
    pub min: f64,
    /// Highest valid value.
    pub max: f64,
    /// The value now.
    pub value: Reading,
}

/// The metadata JSON of `sources`, sorted by name, and the sources in that
/// order.
fn metadata(sources: &[DataSource]) -> (String, Vec<&DataSource>) {
    let bound = |v: f64| {
        if v.is_finite() {
            format!("{v}")
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    };
    let mut by_name: BTreeMap<&str, &DataSource> = BTreeMap::new();
    for source in sources {
        by_name.insert(&source.name, source);
    }
    let members: serde_json::Map<String, serde_json::Value> = by_name
        .values()
        .map(|s| {
            let value_type = match s.value {
                Reading::Float(_) => "float",
                Reading::Int(_) => "int64",
            };
            let fields = serde_json::json!({
                "description": s.description,
                "owner": s.owner,
                "value_type": value_type,
                "type": s.kind.wire(),
                "default": if s.default { "true" } else { "false" },
                "units": s.units,
                "min": bound(s.min),
                "max": bound(s.max),
            });
            (s.name.clone(), fields)
        })
        .collect();
    let json = serde_json::json!({ "datasources": members }).to_string();
    (json, by_name.into_values().collect())
}

/// Encodes one reading of `sources` taken at `timestamp` (Unix seconds).
/// Two sources with one name keep the later one.
#[must_use]
pub fn encode(timestamp: u64, sources: &[DataSource]) -> Vec<u8> {
    let (meta, ordered) = metadata(sources);
    let mut data = Vec::with_capacity(8 + 8 * ordered.len());
    data.extend_from_slice(&timestamp.to_be_bytes());
    for source in &ordered {
        match source.value {
            Reading::Float(v) => data.extend_from_slice(&v.to_bits().to_be_bytes()),
            Reading::Int(v) => data.extend_from_slice(&v.to_be_bytes()),
        }
    }
    let count = u32::try_from(ordered.len()).unwrap_or(u32::MAX);
    let meta_len = u32::try_from(meta.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER.len() + 16 + data.len() + meta.len());
    out.extend_from_slice(HEADER);
    out.extend_from_slice(&crc32(&data).to_be_bytes());
    out.extend_from_slice(&crc32(meta.as_bytes()).to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&data);
    out.extend_from_slice(&meta_len.to_be_bytes());
    out.extend_from_slice(meta.as_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and ocaml-crc compute it).
#[must_use]
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            #[allow(clippy::cast_possible_truncation)] // i < 256
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, b| TABLE[usize::from(c.to_le_bytes()[0] ^ b)] ^ (c >> 8))
}

#[cfg(test)]
pub(crate) mod tests;
