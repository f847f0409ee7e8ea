//! The publisher against the in-process XAPI emulator on a dom0 socket,
//! including an xapi that is not there yet (a toolstack restart).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use xapi_client::api::{host, pbd, sr};
use xapi_emulator::{AcceptAll, Config, Emulator};

use super::{mpath_key, LocalXapi, PathCounts, Publisher};
use crate::agent::alerts::Alert;
use crate::host::HostRoot;
use crate::secrets::XAPI_SOCKET;

/// An emulated pool with one shared SR; the host root's dom0 socket is not
/// served until `serve` is called.
struct Pool {
    emulator: Emulator,
    admin: xapi_client::Session,
    sr_uuid: String,
    host_uuid: String,
}

/// The namespace in the PBDs' device-config.
const SPELLED: &str = "8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc";
/// The same namespace as `SR.attach` recorded it.
const RECORDED: &str = "uuid.8d30ade900c54fe69fbcbe2c924ffcdc";

fn pool() -> Pool {
    let emulator =
        Emulator::new(Config { hosts: vec!["xcp-ng-1".into(), "xcp-ng-2".into()], ..Config::default() }, AcceptAll);
    let url = emulator.listen_http().unwrap();
    let endpoint = xapi_client::Endpoint::parse(&url, xapi_client::TlsVerify::SystemRoots).unwrap();
    let admin = xapi_client::Client::new(endpoint, xapi_client::Timeouts::default())
        .login(&xapi_client::Credentials { user: "root".into(), password: xapi_client::Secret::new("xenroot") }, "test")
        .unwrap();
    let hosts = host::get_all_records(&admin).unwrap();
    let args = sr::SrCreate {
        host: hosts[0].0.clone(),
        // The namespace as an administrator may have spelled it (sr-introduce,
        // pbd-create): the key follows the PBD, not the agent's spelling.
        device_config: BTreeMap::from([("namespace".to_owned(), SPELLED.to_owned())]),
        physical_size: 0,
        name_label: "nvme".into(),
        name_description: String::new(),
        sr_type: "nvmetcp".into(),
        content_type: "user".into(),
        shared: true,
        sm_config: BTreeMap::new(),
    };
    let sr_ref = sr::create(&admin, &args).unwrap();
    let sr_uuid = sr::get_record(&admin, &sr_ref).unwrap().uuid;
    Pool { emulator, admin, sr_uuid, host_uuid: hosts[1].1.uuid.clone() }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn counts_and_alerts_reach_this_hosts_pbd_even_when_xapi_comes_late() {
    let pool = pool();
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::at(dir.path());
    std::fs::create_dir_all(root.path("/var/lib/xcp")).unwrap();
    let publisher = Publisher::spawn(Box::new(LocalXapi::new(&root, &pool.host_uuid)));
    // XO (with xo-web-nvmetcp's patch) reads mpath-<device_config.namespace>.
    let key = mpath_key(SPELLED);
    let counts = |live| PathCounts { sr_uuid: pool.sr_uuid.clone(), namespace: RECORDED.into(), live, total: 2 };
    publisher.paths(counts(1));
    publisher.alert(Alert {
        name: "NVMETCP_PATH_LOST",
        priority: 3,
        sr_uuid: pool.sr_uuid.clone(),
        hostname: "xcp2.example.net".into(),
        what: " lost NVMe path 10.0.0.2:4420 (controller nvme1: connecting) to SR s; 1/2 paths live.".into(),
    });
    // xapi is down: the update waits, with the reason shown.
    // The thread may fail on the counts before it has taken the alert in:
    // wait until both wait behind a failure.
    wait_for("a failure with both updates pending", || {
        let status = publisher.status();
        status.last_error.is_some() && status.pending == 2
    });
    pool.emulator.listen_unix(&root.path(XAPI_SOCKET)).unwrap();
    wait_for("the first publication", || publisher.status().last_published.is_some());
    publisher.paths(counts(2));
    wait_for("the second count", || {
        pool.emulator.map_updates().iter().filter(|u| u.key == key && u.value.is_some()).count() == 2
    });

    let mine = host::get_by_uuid(&pool.admin, &pool.host_uuid).unwrap();
    let pbds = pbd::get_all_records(&pool.admin).unwrap();
    let (_, this) = pbds.iter().find(|(_, p)| p.host == mine).unwrap();
    assert_eq!(this.other_config[&key], "[2, 2]");
    assert_eq!(this.other_config["multipathed"], "true");
    let (_, other) = pbds.iter().find(|(_, p)| p.host != mine).unwrap();
    assert!(other.other_config.is_empty(), "another host's PBD is that host's agent's business");
    let values: Vec<String> =
        pool.emulator.map_updates().into_iter().filter(|u| u.key == key).filter_map(|u| u.value).collect();
    assert_eq!(values, ["[1, 2]", "[2, 2]"]);
    let sr_ref = sr::get_by_uuid(&pool.admin, &pool.sr_uuid).unwrap();
    assert_eq!(sr::get_sm_config(&pool.admin, &sr_ref).unwrap()["multipathable"], "true");
    let messages = pool.emulator.records("message");
    assert_eq!(messages.len(), 1, "sent once, although the first attempt failed");
    let record = messages[0].1.as_struct("message").unwrap();
    assert_eq!(record["name"].as_str("name").unwrap(), "NVMETCP_PATH_LOST");
    assert_eq!(record["cls"].as_str("cls").unwrap(), "SR");
    assert_eq!(record["obj_uuid"].as_str("uuid").unwrap(), pool.sr_uuid);
    assert_eq!(record["priority"].as_str("priority").unwrap(), "3");
    let name_label = host::get_name_label(&pool.admin, &mine).unwrap();
    assert_eq!(
        record["body"].as_str("body").unwrap(),
        format!(
            "Host {name_label} (xcp2.example.net) lost NVMe path 10.0.0.2:4420 (controller nvme1: connecting) to SR s; \
             1/2 paths live."
        ),
        "the host by its XAPI name_label"
    );
    assert_eq!(publisher.status().pending, 0);
    assert!(publisher.status().last_error.is_none());
}
