//! The writer checked by a decoder written separately from the protocol's
//! description (`doc/content/design/plugin-protocol-v2.md` and xcp-rrdd's
//! reading algorithm in `rrd_protocol_v2.ml`): it shares no code with the
//! writer, not even the CRC (bitwise here, table-driven there).

use super::{encode, DataSource, Kind, Reading};

/// What a reader gets out of the file.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) timestamp: u64,
    /// name, metadata fields, raw value bits.
    pub(crate) sources: Vec<(String, serde_json::Map<String, serde_json::Value>, u64)>,
}

fn bitwise_crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Decodes as xcp-rrdd does: header, data CRC over timestamp and values,
/// metadata CRC, metadata JSON, values in the metadata's order.
pub(crate) fn decode(file: &[u8]) -> Result<Decoded, String> {
    let header = b"DATASOURCES";
    if file.len() < header.len() + 20 || &file[..header.len()] != header {
        return Err("bad header".into());
    }
    let mut at = header.len();
    let data_crc = be32(file, at);
    let meta_crc = be32(file, at + 4);
    let count = be32(file, at + 8) as usize;
    at += 12;
    let data_end = at + 8 + 8 * count;
    if file.len() < data_end + 4 {
        return Err("short file".into());
    }
    if bitwise_crc32(&file[at..data_end]) != data_crc {
        return Err("data checksum mismatch".into());
    }
    let timestamp = be64(file, at);
    let values: Vec<u64> = (0..count).map(|i| be64(file, at + 8 + 8 * i)).collect();
    let meta_len = be32(file, data_end) as usize;
    let meta = file.get(data_end + 4..data_end + 4 + meta_len).ok_or("metadata truncated")?;
    if bitwise_crc32(meta) != meta_crc {
        return Err("metadata checksum mismatch".into());
    }
    let json: serde_json::Value = serde_json::from_slice(meta).map_err(|e| e.to_string())?;
    let members = json["datasources"].as_object().ok_or("no datasources object")?;
    if members.len() != count {
        return Err(format!("{} metadata entries for {count} values", members.len()));
    }
    let sources = members
        .iter()
        .zip(values)
        .map(|((name, fields), bits)| (name.clone(), fields.as_object().unwrap().clone(), bits))
        .collect();
    Ok(Decoded { timestamp, sources })
}

fn source(name: &str, value: Reading, kind: Kind) -> DataSource {
    DataSource {
        name: name.into(),
        description: format!("{name} of SR 3f1c6d0e"),
        owner: "host".into(),
        units: "requests/s".into(),
        kind,
        default: true,
        min: 0.0,
        max: f64::INFINITY,
        value,
    }
}

#[test]
fn an_independent_decoder_reads_back_every_field() {
    let sources = vec![
        source("iops_write_3f1c6d0e", Reading::Float(250.5), Kind::Gauge),
        source("iops_read_3f1c6d0e", Reading::Float(1234.25), Kind::Gauge),
        source("nvmetcp_paths_live_3f1c6d0e", Reading::Int(2), Kind::Gauge),
    ];
    let file = encode(1_764_620_000, &sources);
    let decoded = decode(&file).unwrap();
    assert_eq!(decoded.timestamp, 1_764_620_000);
    let names: Vec<&str> = decoded.sources.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, ["iops_read_3f1c6d0e", "iops_write_3f1c6d0e", "nvmetcp_paths_live_3f1c6d0e"]);
    let (_, read_meta, read_bits) = &decoded.sources[0];
    assert_eq!(f64::from_bits(*read_bits), 1234.25);
    assert_eq!(read_meta["value_type"], "float");
    assert_eq!(read_meta["type"], "gauge");
    assert_eq!(read_meta["owner"], "host");
    assert_eq!(read_meta["default"], "true");
    assert_eq!(read_meta["units"], "requests/s");
    assert_eq!(read_meta["min"], "0");
    assert_eq!(read_meta["max"], "inf");
    assert_eq!(read_meta["description"], "iops_read_3f1c6d0e of SR 3f1c6d0e");
    assert!(read_meta.get("value").is_none(), "v2 metadata carries no values");
    assert_eq!(f64::from_bits(decoded.sources[1].2), 250.5);
    let (_, live_meta, live_bits) = &decoded.sources[2];
    assert_eq!(live_meta["value_type"], "int64");
    assert_eq!(*live_bits, 2);
}

#[test]
fn the_crc_is_the_standard_one() {
    // The check value of CRC-32/ISO-HDLC (zlib's crc32).
    assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(bitwise_crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn a_changed_value_changes_the_data_checksum_but_not_the_metadata_checksum() {
    let a = encode(10, &[source("iops_read_x", Reading::Float(1.0), Kind::Gauge)]);
    let b = encode(10, &[source("iops_read_x", Reading::Float(2.0), Kind::Gauge)]);
    assert_ne!(a[11..15], b[11..15]);
    assert_eq!(a[15..19], b[15..19]);
}

#[test]
fn corruption_and_truncation_are_detected() {
    let file = encode(10, &[source("iops_read_x", Reading::Float(1.0), Kind::Gauge)]);
    let mut flipped = file.clone();
    flipped[30] ^= 1;
    assert_eq!(decode(&flipped).unwrap_err(), "data checksum mismatch");
    let mut meta = file.clone();
    let last = meta.len() - 3;
    meta[last] ^= 1;
    assert_eq!(decode(&meta).unwrap_err(), "metadata checksum mismatch");
    assert!(decode(&file[..file.len() - 1]).is_err());
    assert!(decode(b"DATASOURCE").is_err());
}

#[test]
fn no_source_is_a_valid_empty_reading() {
    let decoded = decode(&encode(7, &[])).unwrap();
    assert_eq!(decoded.timestamp, 7);
    assert!(decoded.sources.is_empty());
}
