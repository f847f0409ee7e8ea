//! The XAPI rules a reattach depends on, through the XML-RPC client:
//! `SR.introduce` makes a bare record (`SR_UUID_EXISTS` for a known UUID),
//! `PBD.create` + `PBD.plug` attach it, `SR.scan` rebuilds the VDIs from the
//! backend, `SR.forget` drops them with the SR, and `add_to_other_config`
//! refuses a duplicate key.

#![allow(clippy::unwrap_used)] // a test program

use std::collections::BTreeMap;
use std::sync::Mutex;

use xapi_client::{Client, Credentials, Endpoint, Session, Timeouts, Value};
use xapi_emulator::{Backend, Config, Emulator, Failure, HostInfo, NewVolume, Scan, Volume};

/// Storage holding volumes, as the plugin's `SR.ls` would list them.
#[derive(Default)]
struct Volumes(Mutex<Vec<Volume>>);

impl Backend for Volumes {
    fn sr_scan(&self, _host: &HostInfo, _sr_uuid: &str) -> Result<Option<Scan>, Failure> {
        let volumes = self.0.lock().unwrap().clone();
        Ok(Some(Scan { total_space: 1 << 30, free_space: 1 << 29, volumes }))
    }

    fn volume_create(&self, _host: &HostInfo, _sr: &str, new: &NewVolume) -> Result<Option<Volume>, Failure> {
        let mut volumes = self.0.lock().unwrap();
        let volume = Volume {
            key: format!("vol-{}", volumes.len()),
            uuid: Some(format!("5e1f0000-0000-4000-8000-{:012}", volumes.len())),
            name_label: new.name_label.clone(),
            name_description: new.name_description.clone(),
            virtual_size: new.virtual_size,
            physical_utilisation: new.virtual_size,
            sharable: new.sharable,
            read_only: false,
        };
        volumes.push(volume.clone());
        Ok(Some(volume))
    }
}

fn session(dir: &tempfile::TempDir) -> Session {
    let config = Config { hosts: vec!["a".into(), "b".into()], ..Config::default() };
    let socket = dir.path().join("xapi");
    Emulator::new(config, Volumes::default()).listen_unix(&socket).unwrap();
    Client::new(Endpoint::Unix(socket), Timeouts::default()).login(&Credentials::local_root(), "reattach-test").unwrap()
}

fn call(session: &Session, method: &str, params: Vec<Value>) -> Value {
    session.call(method, params).unwrap()
}

fn code(session: &Session, method: &str, params: Vec<Value>) -> String {
    match session.call(method, params) {
        Err(xapi_client::Error::Api { source, .. }) => source.code,
        other => panic!("{method}: expected a XAPI failure, got {other:?}"),
    }
}

fn s(text: &str) -> Value {
    Value::from(text)
}

fn field(record: &Value, name: &str) -> Value {
    record.as_struct("record").unwrap()[name].clone()
}

#[test]
fn an_introduced_sr_is_attached_scanned_forgotten_and_introduced_again() {
    let dir = tempfile::tempdir().unwrap();
    let xapi = session(&dir);
    let hosts: Vec<String> = call(&xapi, "host.get_all", vec![]).as_strings("hosts").unwrap();
    let config = Value::map(&BTreeMap::from([("nqn".to_owned(), "nqn.x".to_owned())]));
    let uuid = "0b6c6f7e-1111-4222-8333-944455556666";
    let introduce = |name: &str| {
        vec![s(uuid), s(name), s(""), s("nvmetcp"), s("user"), Value::Bool(true), Value::Struct(BTreeMap::new())]
    };
    let sr = call(&xapi, "SR.introduce", introduce("back")).as_str("sr").unwrap().to_owned();
    assert_eq!(code(&xapi, "SR.introduce", introduce("twice")), "SR_UUID_EXISTS");
    let record = call(&xapi, "SR.get_record", vec![s(&sr)]);
    assert_eq!(field(&record, "uuid"), s(uuid));
    assert_eq!(field(&record, "PBDs"), Value::Array(vec![]), "introduce makes no PBD");
    assert_eq!(code(&xapi, "SR.scan", vec![s(&sr)]), "SR_HAS_NO_PBDS");

    let mut pbds = Vec::new();
    for host in &hosts {
        let pbd = Value::record([("host", s(host)), ("SR", s(&sr)), ("device_config", config.clone())]);
        pbds.push(call(&xapi, "PBD.create", vec![pbd.clone()]).as_str("pbd").unwrap().to_owned());
        assert_eq!(code(&xapi, "PBD.create", vec![pbd]), "PBD_EXISTS");
        call(&xapi, "PBD.plug", vec![s(pbds.last().unwrap())]);
    }
    let vdi = Value::record([("SR", s(&sr)), ("name_label", s("disk")), ("virtual_size", s("8388608"))]);
    call(&xapi, "VDI.create", vec![vdi]);
    call(&xapi, "SR.scan", vec![s(&sr)]);
    let record = call(&xapi, "SR.get_record", vec![s(&sr)]);
    assert_eq!(field(&record, "physical_size"), s("1073741824"), "int64 as XAPI writes it");
    assert_eq!(field(&record, "physical_utilisation"), s("536870912"));
    let vdis = field(&record, "VDIs").as_strings("VDIs").unwrap();
    assert_eq!(vdis.len(), 1, "scan keeps the one volume once");
    let disk = call(&xapi, "VDI.get_record", vec![s(&vdis[0])]);
    assert_eq!(field(&disk, "location"), s("vol-0"));
    assert_eq!(field(&disk, "uuid"), s("5e1f0000-0000-4000-8000-000000000000"));

    call(&xapi, "SR.add_to_other_config", vec![s(&sr), s("auto-scan"), s("true")]);
    assert_eq!(code(&xapi, "SR.add_to_other_config", vec![s(&sr), s("auto-scan"), s("true")]), "MAP_DUPLICATE_KEY");
    call(&xapi, "SR.remove_from_other_config", vec![s(&sr), s("auto-scan")]);
    call(&xapi, "SR.remove_from_other_config", vec![s(&sr), s("auto-scan")]);

    assert_eq!(code(&xapi, "SR.forget", vec![s(&sr)]), "SR_HAS_PBD");
    for pbd in &pbds {
        call(&xapi, "PBD.unplug", vec![s(pbd)]);
    }
    call(&xapi, "SR.forget", vec![s(&sr)]);
    assert!(call(&xapi, "VDI.get_all", vec![]).as_strings("VDIs").unwrap().is_empty(), "forget drops the VDIs");
    assert!(call(&xapi, "PBD.get_all", vec![]).as_strings("PBDs").unwrap().is_empty(), "and the PBDs");

    let again = call(&xapi, "SR.introduce", introduce("again")).as_str("sr").unwrap().to_owned();
    let pbd = Value::record([("host", s(&hosts[0])), ("SR", s(&again)), ("device_config", config)]);
    let pbd = call(&xapi, "PBD.create", vec![pbd]).as_str("pbd").unwrap().to_owned();
    call(&xapi, "PBD.plug", vec![s(&pbd)]);
    call(&xapi, "SR.scan", vec![s(&again)]);
    let vdis = field(&call(&xapi, "SR.get_record", vec![s(&again)]), "VDIs").as_strings("VDIs").unwrap();
    let disk = call(&xapi, "VDI.get_record", vec![s(&vdis[0])]);
    assert_eq!(field(&disk, "uuid"), s("5e1f0000-0000-4000-8000-000000000000"), "the same volume is back");
}
