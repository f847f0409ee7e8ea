//! Encoding tests against the golden shapes of the SMAPIv3 reference.

use super::{Backend, ChangedBlocks, Health, Implementation, Operation, ProbeResult, QueryResult, SrStat, Volume};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/smapi/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Decodes a fixture into `T`, encodes it again and demands the same JSON.
fn round_trip<T: Serialize + DeserializeOwned>(name: &str) -> T {
    let expected = fixture(name);
    let decoded: T = serde_json::from_value(expected.clone()).unwrap();
    assert_eq!(serde_json::to_value(&decoded).unwrap(), expected, "{name}");
    decoded
}

#[test]
fn golden_records_round_trip_exactly() {
    round_trip::<QueryResult>("query_result.json");
    let stat = round_trip::<SrStat>("sr_stat.json");
    assert_eq!(stat.health, Health::Healthy(String::new()));
    assert_eq!(stat.uuid, None);
    let stat = round_trip::<SrStat>("sr_stat_unreachable.json");
    assert_eq!(stat.total_space, i64::MAX, "int64 survives beyond 2^53");
    assert!(matches!(stat.health, Health::Unreachable(_)));
    let probes = round_trip::<Vec<ProbeResult>>("probe_results.json");
    assert!(probes[0].sr.is_none() && probes[1].sr.is_some());
    round_trip::<Volume>("volume.json");
    round_trip::<Volume>("volume_cbt.json");
    let backend = round_trip::<Backend>("backend.json");
    assert_eq!(backend.implementations.len(), 4);
    round_trip::<ChangedBlocks>("changed_blocks.json");
    round_trip::<Operation>("operation.json");
}

#[test]
fn absent_options_are_left_out_never_null() {
    let volume = Volume {
        key: "k".into(),
        uuid: None,
        name: "n".into(),
        description: String::new(),
        read_write: true,
        sharable: false,
        virtual_size: 1,
        physical_utilisation: 1,
        uri: vec![],
        keys: Default::default(),
        volume_type: None,
        cbt_enabled: None,
    };
    let text = serde_json::to_string(&volume).unwrap();
    assert!(!text.contains("null"), "{text}");
    assert!(!text.contains("uuid") && !text.contains("volume_type") && !text.contains("cbt_enabled"));
    let probe =
        ProbeResult { configuration: Default::default(), complete: false, sr: None, extra_info: Default::default() };
    assert_eq!(
        serde_json::to_value(&probe).unwrap(),
        json!({"configuration": {}, "complete": false, "extra_info": {}})
    );
}

#[test]
fn variants_are_tag_payload_arrays() {
    for (health, tag) in [
        (Health::Healthy("2/2 paths live".into()), "Healthy"),
        (Health::Recovering("r".into()), "Recovering"),
        (Health::Unreachable("u".into()), "Unreachable"),
        (Health::Unavailable("x".into()), "Unavailable"),
    ] {
        let value = serde_json::to_value(&health).unwrap();
        assert_eq!(value[0], tag);
        assert!(value[1].is_string());
        assert_eq!(serde_json::from_value::<Health>(value).unwrap(), health);
    }
    let block = Implementation::BlockDevice { path: "/dev/dm-0".into() };
    assert_eq!(serde_json::to_value(&block).unwrap(), json!(["BlockDevice", {"path": "/dev/dm-0"}]));
    assert_eq!(serde_json::to_value(super::VolumeType::Data).unwrap(), json!("Data"));
    assert_eq!(serde_json::to_value(super::VolumeType::CbtMetadata).unwrap(), json!("CBT_Metadata"));
}

#[test]
fn malformed_variants_are_rejected() {
    for bad in
        [json!("Healthy"), json!(["Healthy"]), json!(["Sick", ""]), json!(["Healthy", 1]), json!(["Healthy", "", 3])]
    {
        assert!(serde_json::from_value::<Health>(bad.clone()).is_err(), "{bad}");
    }
    assert!(serde_json::from_value::<Implementation>(json!(["BlockDevice", {}])).is_err());
}
