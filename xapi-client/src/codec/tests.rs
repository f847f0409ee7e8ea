use proptest::prelude::{any, prop, prop_oneof, proptest, Just, Strategy};

use super::json::{from_json, to_json};
use super::{
    decode_envelope, failure, parse_call, parse_response, parse_value, success, write_call, write_fault,
    write_response, write_value, ApiFailure, CodecError, Encoding, MethodResponse,
};
use crate::value::Value;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn envelope_value(name: &str) -> Value {
    let MethodResponse::Value(reply) = parse_response(&fixture(name)).unwrap() else { panic!("fault") };
    decode_envelope(reply).unwrap()
}

#[test]
fn login_reply_yields_the_session_ref() {
    let value = envelope_value("session_login.xml");
    assert_eq!(value, Value::from("OpaqueRef:9e9cf047-76d7-9f3a-62ca-cb7bacf5a4e1"));
}

#[test]
fn failure_keeps_code_and_params() {
    let MethodResponse::Value(reply) = parse_response(&fixture("host_is_slave.xml")).unwrap() else { panic!() };
    let failure = decode_envelope(reply).unwrap_err().unwrap();
    assert_eq!(failure, ApiFailure { code: "HOST_IS_SLAVE".into(), params: vec!["192.0.2.10".into()] });
}

#[test]
fn untyped_strings_are_kept_byte_for_byte_and_entities_decoded() {
    let value = envelope_value("sm_get_all_records.xml");
    let records = value.as_struct("SM").unwrap();
    let sm = records.values().next().unwrap().as_struct("SM record").unwrap();
    assert_eq!(sm["name_description"], Value::from("  Shared LVM on NVMe over Fabrics  "));
    assert_eq!(sm["copyright"], Value::from("(C) nvmetcp developers & contributors"));
    assert_eq!(sm["configuration"].as_string_map("c").unwrap()["portals"], "I/O ports <address[:port],...>");
    assert_eq!(sm["features"].as_struct("f").unwrap()["SR_PROBE"].as_i64("f").unwrap(), 1);
    assert_eq!(sm["required_cluster_stack"], Value::Array(vec![]));
    assert_eq!(sm["supported_image_formats"], Value::Array(vec![]));
    assert_eq!(sm["other_config"], Value::Struct(Default::default()));
}

#[test]
fn event_from_reads_i4_booleans_and_null_refs() {
    let value = envelope_value("event_from.xml");
    let members = value.as_struct("event.from").unwrap();
    assert_eq!(members["valid_ref_counts"].as_struct("v").unwrap()["pbd"], Value::Int(3));
    let event = members["events"].as_array("events").unwrap()[0].as_struct("event").unwrap();
    let snapshot = event["snapshot"].as_struct("snapshot").unwrap();
    assert_eq!(snapshot["currently_attached"], Value::Bool(true));
    assert_eq!(snapshot["SR"], Value::from("OpaqueRef:NULL"));
    assert_eq!(event["id"].as_i64("id").unwrap(), 1742);
}

#[test]
fn task_result_is_an_xml_fragment_holding_one_value() {
    let value = envelope_value("task_get_record.xml");
    let task = value.as_struct("task").unwrap();
    assert_eq!(task["created"], Value::DateTime("20241125T01:30:00Z".into()));
    assert_eq!(task["progress"], Value::Double(1.0));
    let result = parse_value(task["result"].as_str("result").unwrap()).unwrap();
    assert_eq!(result, Value::from("OpaqueRef:0b9d8f6e-5a4c-4e3b-8d2a-1f0e9d8c7b6a"));
}

#[test]
fn pretty_printed_typed_replies_parse_too() {
    let value = envelope_value("python_pretty.xml");
    assert_eq!(
        value,
        Value::Array(vec![
            Value::Int(42),
            Value::Int(9_007_199_254_740_993),
            Value::Double(-0.5),
            Value::Nil,
            Value::Base64("aGVsbG8=".into())
        ])
    );
}

#[test]
fn xapi_encoding_writes_what_xapi_writes() {
    // Structs are maps (member order carries no meaning and is not kept), so
    // the check is: the same value back, and the same bytes in all.
    for name in ["session_login.xml", "host_is_slave.xml", "sm_get_all_records.xml", "task_get_record.xml"] {
        let original = fixture(name);
        let MethodResponse::Value(reply) = parse_response(&original).unwrap() else { panic!() };
        let written = write_response(&reply, Encoding::Xapi);
        assert_eq!(parse_response(&written).unwrap(), MethodResponse::Value(reply), "{name}");
        let expanded = original.replace("<data/>", "<data></data>").replace("<struct/>", "<struct></struct>");
        let mut written_bytes: Vec<u8> = written.into_bytes();
        let mut original_bytes: Vec<u8> = expanded.into_bytes();
        written_bytes.sort_unstable();
        original_bytes.sort_unstable();
        assert_eq!(written_bytes, original_bytes, "{name}");
    }
}

#[test]
fn requests_type_strings_and_send_int64_as_strings() {
    let call = write_call(
        "SR.create",
        &[Value::from("OpaqueRef:s"), Value::Int(1 << 40), Value::Bool(true), Value::from(" a<b ")],
    );
    assert_eq!(
        call,
        "<?xml version=\"1.0\"?><methodCall><methodName>SR.create</methodName><params>\
         <param><value><string>OpaqueRef:s</string></value></param>\
         <param><value><string>1099511627776</string></value></param>\
         <param><value><boolean>1</boolean></value></param>\
         <param><value><string> a&lt;b </string></value></param></params></methodCall>"
    );
    let (method, params) = parse_call(&call).unwrap();
    assert_eq!(method, "SR.create");
    assert_eq!(params[1].as_i64("size").unwrap(), 1 << 40);
    assert_eq!(params[3], Value::from(" a<b "));
}

#[test]
fn calls_without_params_parse() {
    for xml in [
        "<methodCall><methodName>system.listMethods</methodName></methodCall>",
        "<methodCall><methodName>system.listMethods</methodName><params/></methodCall>",
        "<?xml version='1.0'?>\n<methodCall>\n<methodName>system.listMethods</methodName>\n<params>\n</params>\n</methodCall>\n",
    ] {
        assert_eq!(parse_call(xml).unwrap(), ("system.listMethods".to_owned(), vec![]), "{xml}");
    }
}

#[test]
fn faults_are_read_and_written() {
    let xml = write_fault(-32601, "unknown <method>");
    assert_eq!(
        parse_response(&xml).unwrap(),
        MethodResponse::Fault { code: -32601, message: "unknown <method>".into() }
    );
}

#[test]
fn envelopes_round_trip() {
    let ok = success(Value::from("x"));
    assert_eq!(decode_envelope(ok), Ok(Value::from("x")));
    let failed = failure("SR_BACKEND_FAILURE", &["a".into(), "b".into()]);
    assert_eq!(decode_envelope(failed).unwrap_err().unwrap().params, vec!["a", "b"]);
    assert_eq!(decode_envelope(Value::from("not an envelope")), Err(None));
}

fn is_error(xml: &str) -> CodecError {
    match parse_response(xml) {
        Err(e) => e,
        Ok(v) => panic!("{xml} parsed as {v:?}"),
    }
}

#[test]
fn hostile_and_malformed_documents_are_errors() {
    let laughs = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]>\
                  <methodResponse><params><param><value>&lol2;</value></param></params></methodResponse>";
    assert!(matches!(is_error(laughs), CodecError::Xml { .. }));
    let unknown_entity = "<methodResponse><params><param><value>&ext;</value></param></params></methodResponse>";
    assert!(matches!(is_error(unknown_entity), CodecError::Xml { .. }));
    let mismatched = "<methodResponse><params><param><value></param></value></params></methodResponse>";
    assert!(matches!(is_error(mismatched), CodecError::Xml { .. } | CodecError::Structure { .. }));
    let truncated = &fixture("session_login.xml")[..120];
    assert!(matches!(is_error(truncated), CodecError::Xml { .. } | CodecError::Structure { .. }));
    let bad_int = "<methodResponse><params><param><value><int>12x</int></value></param></params></methodResponse>";
    assert!(matches!(is_error(bad_int), CodecError::BadScalar { .. }));
    let bad_bool =
        "<methodResponse><params><param><value><boolean>true</boolean></value></param></params></methodResponse>";
    assert!(matches!(is_error(bad_bool), CodecError::BadScalar { .. }));
    let trailing = format!("{}<x/>", fixture("session_login.xml"));
    assert!(matches!(is_error(&trailing), CodecError::Structure { .. } | CodecError::Xml { .. }));
    let attribute = "<methodResponse><params><param><value a=\"1\">x</value></param></params></methodResponse>";
    assert!(matches!(is_error(attribute), CodecError::Xml { .. }));
    // XAPI writes member names unescaped: a name holding `&` is malformed XML.
    let unescaped = "<methodResponse><params><param><value><struct><member><name>a&b</name><value>x</value>\
                     </member></struct></value></param></params></methodResponse>";
    assert!(matches!(is_error(unescaped), CodecError::Xml { .. }));
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    let depth = 100_000;
    let xml = format!(
        "<methodResponse><params><param><value>{}{}</value></param></params></methodResponse>",
        "<array><data><value>".repeat(depth),
        "</value></data></array>".repeat(depth)
    );
    assert_eq!(is_error(&xml), CodecError::TooDeep);
}

#[test]
fn json_mapping_follows_xapi() {
    let value = Value::record([
        ("i", Value::Int(-7)),
        ("b", Value::Bool(false)),
        ("d", Value::DateTime("20240101T12:00:00Z".into())),
        ("a", Value::Array(vec![Value::Nil, Value::Double(0.5)])),
    ]);
    let json = to_json(&value);
    assert_eq!(json, serde_json::json!({"i": -7, "b": false, "d": "20240101T12:00:00Z", "a": [null, 0.5]}));
    let back = from_json(&json);
    assert_eq!(back.as_struct("v").unwrap()["i"], Value::Int(-7));
}

#[test]
fn characters_xml_cannot_carry_are_replaced_and_read_leniently() {
    let text = "a\u{0}b\u{1}c\u{1b}[0m\u{7}\u{8}\u{b}\u{c}\u{1f}\u{fffe}\u{ffff}\t\n\r\u{7f}é";
    for encoding in [Encoding::Request, Encoding::Xapi] {
        let xml = write_response(&success(Value::from(text)), encoding);
        assert!(
            xml.chars().all(|c| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')),
            "{xml:?}"
        );
        assert!(!xml.contains("&#1;") && !xml.contains("&#0;"), "{xml}");
        let MethodResponse::Value(reply) = parse_response(&xml).unwrap() else { panic!("fault") };
        let back = decode_envelope(reply).unwrap();
        assert_eq!(
            back,
            Value::from(
                "a\u{fffd}b\u{fffd}c\u{fffd}[0m\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\t\n\r\u{7f}é"
            )
        );
    }
    // A peer that does send them (raw, or as references) is still read.
    for raw in ["<value>a\u{1}b</value>", "<value>a&#1;b</value>", "<value>a&#x1b;b</value>"] {
        let value = parse_value(raw).unwrap();
        assert!(matches!(value, Value::String(ref s) if s.starts_with('a') && s.ends_with('b')), "{raw}: {value:?}");
    }
}

fn xml_text() -> impl Strategy<Value = String> {
    // Any characters XML 1.0 can carry, including leading and trailing
    // whitespace and the characters that need escaping.
    prop::collection::vec(
        prop_oneof![Just(' '), Just('\t'), Just('\n'), Just('\r'), Just('&'), Just('<'), Just('>'), any::<char>()],
        0..12,
    )
    .prop_map(|chars| {
        chars
            .into_iter()
            .filter(|c| matches!(*c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF))
            .collect()
    })
}

fn values() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        xml_text().prop_map(Value::String),
        any::<i64>().prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
        (-1e300f64..1e300).prop_map(Value::Double),
        Just(Value::Double(f64::INFINITY)),
        Just(Value::DateTime("20240101T12:00:00Z".into())),
        Just(Value::Base64("aGVsbG8=".into())),
        Just(Value::Nil),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(xml_text(), inner, 0..6).prop_map(Value::Struct),
        ]
    })
}

/// What a value looks like after a trip through an encoding that sends
/// integers as text (both do: XAPI's docs ask for it).
fn integers_as_text(value: Value) -> Value {
    match value {
        Value::Int(i) => Value::String(i.to_string()),
        Value::Array(items) => Value::Array(items.into_iter().map(integers_as_text).collect()),
        Value::Struct(members) => Value::Struct(members.into_iter().map(|(k, v)| (k, integers_as_text(v))).collect()),
        other => other,
    }
}

proptest! {
    #[test]
    fn every_value_survives_both_encodings(value in values()) {
        for encoding in [Encoding::Request, Encoding::Xapi] {
            let xml = write_value(&value, encoding);
            let back = parse_value(&xml).unwrap();
            assert_eq!(back, integers_as_text(value.clone()), "{xml}");
        }
    }

    #[test]
    fn arbitrary_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_response(&text);
        let _ = parse_call(&text);
        let _ = parse_value(&text);
    }

    #[test]
    fn mutated_replies_never_panic(cut in 0usize..600, insert in xml_text()) {
        let original = fixture("event_from.xml");
        let cut = cut.min(original.len());
        let cut = (0..=cut).rev().find(|i| original.is_char_boundary(*i)).unwrap_or(0);
        let mutated = format!("{}{insert}{}", &original[..cut], &original[cut..]);
        let _ = parse_response(&mutated);
    }
}
