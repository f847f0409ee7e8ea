//! Sessions and typed calls against the XAPI emulator: login and logout,
//! `HOST_IS_SLAVE`, errors typed by code, and the SR/PBD/secret/task/event
//! calls nvmetcp makes.

#![allow(clippy::unwrap_used)] // test helpers: a failed step is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use xapi_client::api::{event, host, message, pbd, pool, secret, sm, sr, task};
use xapi_client::{Client, Credentials, Endpoint, Secret, Timeouts, TlsVerify};
use xapi_emulator::{AcceptAll, Backend, Config, Emulator, Failure, HostInfo, NewSr};

fn client(url: &str) -> Client {
    Client::new(Endpoint::parse(url, TlsVerify::SystemRoots).unwrap(), Timeouts::default())
}

fn root() -> Credentials {
    Credentials { user: "root".into(), password: Secret::new("xenroot") }
}

fn pool_of(hosts: usize) -> Config {
    Config { hosts: (1..=hosts).map(|i| format!("xcp-ng-{i}")).collect(), ..Config::default() }
}

#[test]
fn login_calls_and_logout_on_drop() {
    let emulator = Emulator::new(pool_of(1), AcceptAll);
    let url = emulator.listen_http().unwrap();
    {
        let session = client(&url).login(&root(), "nvmetcp-test").unwrap();
        assert_eq!(emulator.open_sessions(), 1);
        let (_, the_pool) = pool::the_pool(&session).unwrap();
        let hosts = host::get_all_records(&session).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(the_pool.master, hosts[0].0);
        assert!(host::is_live(&session, &hosts[0].1.metrics).unwrap());
    }
    assert_eq!(emulator.open_sessions(), 0, "dropping a session logs it out");
    let session = client(&url).login(&root(), "nvmetcp-test").unwrap();
    session.logout().unwrap();
    assert_eq!(emulator.open_sessions(), 0);
}

#[test]
fn wrong_password_is_a_typed_error_without_the_password() {
    let emulator = Emulator::new(pool_of(1), AcceptAll);
    let url = emulator.listen_http().unwrap();
    let bad = Credentials { user: "root".into(), password: Secret::new("hunter2-not-it") };
    let error = client(&url).login(&bad, "nvmetcp-test").unwrap_err();
    let xapi = error.xapi().unwrap();
    assert_eq!(xapi.code, "SESSION_AUTHENTICATION_FAILED");
    assert_eq!(xapi.params[0], "root");
    let shown = format!("{error} {error:?} {bad:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn the_unix_socket_is_root_without_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("xapi");
    let emulator = Emulator::new(pool_of(1), AcceptAll);
    emulator.listen_unix(&socket).unwrap();
    let session = Client::new(Endpoint::Unix(socket), Timeouts::default())
        .login(&Credentials::local_root(), "nvmetcp-test")
        .unwrap();
    assert_eq!(sm::get_all_records(&session).unwrap().iter().filter(|(_, s)| s.sr_type == "nvmetcp").count(), 1);
}

#[test]
fn a_member_redirects_login_to_its_master_once() {
    // The master on 127.0.0.1 and a member on 127.0.0.2, on the same port
    // (XAPI names the master by address; the port stays the endpoint's).
    let master = Emulator::new(pool_of(2), AcceptAll);
    let master_url = master.listen_http().unwrap();
    let port = master_url.rsplit(':').next().unwrap();
    let member = Emulator::new(Config { member_of: Some("127.0.0.1".into()), ..pool_of(2) }, AcceptAll);
    let member_url = member.listen_http_at(&format!("127.0.0.2:{port}")).unwrap();
    let session = client(&member_url).login(&root(), "nvmetcp-test").unwrap();
    assert_eq!(session.endpoint().to_string(), master_url);
    assert_eq!((master.open_sessions(), member.open_sessions()), (1, 0));
    drop(session);
    assert_eq!(master.open_sessions(), 0);

    // A member whose "master" is itself again says HOST_IS_SLAVE: the
    // client follows once, then reports the error with the address.
    let lost = Emulator::new(Config { member_of: Some("127.0.0.3".into()), ..pool_of(2) }, AcceptAll);
    let lost_port = lost.listen_http_at("127.0.0.3:0").unwrap().rsplit(':').next().unwrap().to_owned();
    let error = client(&format!("http://127.0.0.3:{lost_port}")).login(&root(), "nvmetcp-test").unwrap_err();
    assert_eq!(error.xapi().unwrap().code, "HOST_IS_SLAVE");
    assert_eq!(error.xapi().unwrap().master_address(), Some("127.0.0.3"));
}

/// A backend like the plugin: `SR.create` adds `sr_uuid` to the config, and
/// plugging fails on one host.
#[derive(Default)]
struct Recording {
    broken_host: Option<String>,
}

impl Backend for Recording {
    fn sr_create(&self, _master: &HostInfo, sr: &NewSr) -> Result<BTreeMap<String, String>, Failure> {
        let mut stored = sr.device_config.clone();
        stored.insert("sr_uuid".into(), sr.uuid.clone());
        Ok(stored)
    }

    fn pbd_plug(&self, host: &HostInfo, _sr: &str, _config: &BTreeMap<String, String>) -> Result<(), Failure> {
        if self.broken_host.as_deref() == Some(&host.name_label) {
            return Err(Failure::new("SR_BACKEND_FAILURE_NVMETCP_NO_PATH", &["", "no path is live", ""]));
        }
        Ok(())
    }

    fn call_plugin(
        &self,
        host: &HostInfo,
        plugin: &str,
        function: &str,
        _args: &BTreeMap<String, String>,
    ) -> Result<String, Failure> {
        if plugin == "nvmetcp" && function == "hostnqn" {
            Ok(format!("nqn.2014-08.org.nvmexpress:uuid:{}", host.uuid))
        } else {
            Err(Failure::new("XENAPI_MISSING_PLUGIN", &[plugin]))
        }
    }
}

fn create_args(session: &xapi_client::Session, config: BTreeMap<String, String>) -> sr::SrCreate {
    let (_, the_pool) = pool::the_pool(session).unwrap();
    sr::SrCreate {
        host: the_pool.master,
        device_config: config,
        physical_size: 0,
        name_label: "NVMe/TCP".into(),
        name_description: "  shared  ".into(),
        sr_type: "nvmetcp".into(),
        content_type: "user".into(),
        shared: true,
        sm_config: BTreeMap::new(),
    }
}

#[test]
fn shared_sr_create_makes_a_pbd_per_host_and_moves_passwords_to_secrets() {
    let backend = Recording { broken_host: Some("xcp-ng-3".into()) };
    let emulator = Emulator::new(pool_of(3), backend);
    let url = emulator.listen_http().unwrap();
    let session = client(&url).login(&root(), "nvmetcp-test").unwrap();
    let config: BTreeMap<String, String> = [
        ("portals".to_owned(), "192.0.2.20,192.0.2.21".to_owned()),
        ("dhchap_password".to_owned(), "DHHC-1:00:secret:".to_owned()),
    ]
    .into();
    let sr_ref = sr::create(&session, &create_args(&session, config)).unwrap();
    let record = sr::get_record(&session, &sr_ref).unwrap();
    assert_eq!((record.shared, record.name_description.as_str(), record.pbds.len()), (true, "  shared  ", 3));
    let pbds = pbd::get_all_records(&session).unwrap();
    let hosts = host::get_all_records(&session).unwrap();
    let attached: BTreeMap<String, bool> = pbds
        .iter()
        .map(|(_, p)| (hosts.iter().find(|(r, _)| *r == p.host).unwrap().1.name_label.clone(), p.currently_attached))
        .collect();
    assert_eq!(attached, [("xcp-ng-1".into(), true), ("xcp-ng-2".into(), true), ("xcp-ng-3".into(), false)].into());
    for (_, p) in &pbds {
        assert!(!p.device_config.contains_key("dhchap_password"));
        assert_eq!(p.device_config["sr_uuid"], record.uuid, "the plugin's config is written to every PBD");
        let secret_ref = secret::get_by_uuid(&session, &p.device_config["dhchap_password_secret"]).unwrap();
        assert_eq!(secret::get_value(&session, &secret_ref).unwrap().expose(), "DHHC-1:00:secret:");
    }
    // A plugged PBD prevents forgetting the SR.
    assert_eq!(sr::forget(&session, &sr_ref).unwrap_err().xapi().unwrap().code, "SR_HAS_PBD");
    let broken = pbds.iter().find(|(_, p)| !p.currently_attached).unwrap();
    let plug = pbd::plug(&session, &broken.0).unwrap_err();
    assert_eq!(plug.xapi().unwrap().code, "SR_BACKEND_FAILURE_NVMETCP_NO_PATH");
    assert_eq!(
        pbd::create(&session, &broken.1.host, &sr_ref, &BTreeMap::new()).unwrap_err().xapi().unwrap().code,
        "PBD_EXISTS"
    );
    for (pbd_ref, p) in &pbds {
        if p.currently_attached {
            pbd::unplug(&session, pbd_ref).unwrap();
        }
    }
    sr::destroy(&session, &sr_ref).unwrap();
    assert!(sr::get_all_records(&session).unwrap().is_empty());
    assert!(pbd::get_all_records(&session).unwrap().is_empty());
}

#[test]
fn unknown_types_and_handles_are_typed_errors() {
    let emulator = Emulator::new(Config { sm_types: vec![], ..pool_of(1) }, AcceptAll);
    let url = emulator.listen_http().unwrap();
    let session = client(&url).login(&root(), "nvmetcp-test").unwrap();
    let error = sr::create(&session, &create_args(&session, BTreeMap::new())).unwrap_err();
    assert_eq!(
        (error.xapi().unwrap().code.as_str(), error.xapi().unwrap().params.as_slice()),
        ("SR_UNKNOWN_DRIVER", &["nvmetcp".to_owned()][..])
    );
    let missing = sr::get_by_uuid(&session, "00000000-0000-0000-0000-000000000000").unwrap_err();
    assert_eq!(missing.xapi().unwrap().code, "UUID_INVALID");
    let stale = session.call("SR.get_record", vec!["OpaqueRef:gone".into()]).unwrap_err();
    assert_eq!(stale.xapi().unwrap().code, "HANDLE_INVALID");
    let unknown = session.call("SR.frobnicate", vec![]).unwrap_err();
    assert_eq!(unknown.xapi().unwrap().code, "MESSAGE_METHOD_UNKNOWN");
}

#[test]
fn async_calls_return_tasks_whose_result_is_decoded() {
    let emulator = Emulator::new(pool_of(2), Recording::default());
    let url = emulator.listen_http().unwrap();
    let session = client(&url).login(&root(), "nvmetcp-test").unwrap();
    let task_ref = sr::create_async(&session, &create_args(&session, BTreeMap::new())).unwrap();
    let mut seen = Vec::new();
    let result = task::wait(&session, &task_ref, Duration::from_secs(10), |t| seen.push(t.status)).unwrap();
    let sr_ref = result.as_str("result").unwrap();
    assert!(sr_ref.starts_with("OpaqueRef:"), "{result:?}");
    assert_eq!(seen.last(), Some(&task::Status::Success));
    assert!(task::get_record(&session, &task_ref).is_err(), "the finished task is destroyed");
    // A failing async call carries the error as the sync call would.
    let pbds = pbd::get_all_records(&session).unwrap();
    let task_ref = pbd::plug_async(&session, &xapi_client::api::PbdRef("OpaqueRef:gone".into())).unwrap();
    let error = task::wait(&session, &task_ref, Duration::from_secs(10), |_| {}).unwrap_err();
    assert_eq!(error.xapi().unwrap().code, "HANDLE_INVALID");
    assert_eq!(pbds.len(), 2);
}

#[test]
fn event_from_waits_for_changes_and_honours_its_timeout() {
    let emulator = Emulator::new(pool_of(2), AcceptAll);
    let url = emulator.listen_http().unwrap();
    let session = client(&url).login(&root(), "nvmetcp-test").unwrap();
    let (pool_ref, _) = pool::the_pool(&session).unwrap();
    let token = event::inject(&session, "pool", &pool_ref.0).unwrap();
    let started = std::time::Instant::now();
    let quiet = event::from(&session, &["pbd"], &token, 0.3).unwrap();
    assert!(quiet.events.is_empty() && started.elapsed() >= Duration::from_millis(250));
    let writer = client(&url).login(&root(), "nvmetcp-test").unwrap();
    let creator = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        sr::create(&writer, &create_args(&writer, BTreeMap::new())).unwrap();
    });
    let mut token = quiet.token;
    let mut plugged = 0;
    while plugged < 2 {
        let batch = event::from(&session, &["PBD"], &token, 10.0).unwrap();
        assert!(!batch.events.is_empty(), "event.from returned at its timeout without the PBD changes");
        for e in &batch.events {
            assert_eq!(e.class, "pbd");
            let attached = e.snapshot.as_ref().and_then(|s| s.as_struct("s").ok()?.get("currently_attached").cloned());
            if e.operation == "mod" && attached == Some(xapi_client::Value::Bool(true)) {
                plugged += 1;
            }
        }
        token = batch.token;
    }
    creator.join().unwrap();
}

#[test]
fn host_plugins_and_messages() {
    let emulator = Emulator::new(pool_of(2), Recording::default());
    let url = emulator.listen_http().unwrap();
    let session = client(&url).login(&root(), "nvmetcp-test").unwrap();
    let hosts = host::get_all_records(&session).unwrap();
    let nqn = host::call_plugin(&session, &hosts[1].0, "nvmetcp", "hostnqn", &BTreeMap::new()).unwrap();
    assert_eq!(nqn, format!("nqn.2014-08.org.nvmexpress:uuid:{}", hosts[1].1.uuid));
    let missing = host::call_plugin(&session, &hosts[0].0, "nope", "x", &BTreeMap::new()).unwrap_err();
    assert_eq!(missing.xapi().unwrap().code, "XENAPI_MISSING_PLUGIN");
    message::create(&session, "NVMETCP_PATH_DOWN", 3, message::About::Host, &hosts[0].1.uuid, "1 of 2 paths down")
        .unwrap();
    let messages = emulator.records("message");
    assert_eq!(messages.len(), 1);
    let created = secret::create(&session, &Secret::new("s3cret")).unwrap();
    assert_eq!(secret::get_value(&session, &created).unwrap().expose(), "s3cret");
    assert!(!secret::get_uuid(&session, &created).unwrap().is_empty());
}

#[test]
fn map_keys_of_pbds_and_srs_are_set_one_at_a_time_and_recorded() {
    let emulator = Emulator::new(pool_of(2), Recording::default());
    let url = emulator.listen_http().unwrap();
    let session = client(&url).login(&root(), "nvmetcp-test").unwrap();
    let sr_ref = sr::create(&session, &create_args(&session, BTreeMap::new())).unwrap();
    let uuid = sr::get_record(&session, &sr_ref).unwrap().uuid;
    assert_eq!(sr::get_by_uuid(&session, &uuid).unwrap(), sr_ref);
    let (pbd_ref, _) = pbd::get_all_records(&session).unwrap().remove(0);
    pbd::set_other_config_key(&session, &pbd_ref, "mpath-x", "[1, 2]").unwrap();
    pbd::set_other_config_key(&session, &pbd_ref, "mpath-x", "[2, 2]").unwrap();
    let duplicate = pbd::add_to_other_config(&session, &pbd_ref, "mpath-x", "[0, 2]").unwrap_err();
    assert_eq!(duplicate.xapi().unwrap().code, "MAP_DUPLICATE_KEY");
    assert_eq!(pbd::get_record(&session, &pbd_ref).unwrap().other_config["mpath-x"], "[2, 2]");
    sr::set_sm_config_key(&session, &sr_ref, "multipathable", "true").unwrap();
    assert_eq!(sr::get_sm_config(&session, &sr_ref).unwrap()["multipathable"], "true");
    let added: Vec<(String, String)> =
        emulator.map_updates().into_iter().filter_map(|u| u.value.map(|v| (u.key, v))).collect();
    assert_eq!(
        added,
        [
            ("mpath-x".to_owned(), "[1, 2]".to_owned()),
            ("mpath-x".to_owned(), "[2, 2]".to_owned()),
            ("multipathable".to_owned(), "true".to_owned())
        ]
    );
    let hosts = host::get_all_records(&session).unwrap();
    assert_eq!(host::get_by_uuid(&session, &hosts[0].1.uuid).unwrap(), hosts[0].0);
    assert_eq!(host::get_name_label(&session, &hosts[0].0).unwrap(), hosts[0].1.name_label);
}
