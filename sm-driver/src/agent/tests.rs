//! The agent on a sysfs tree in a temporary directory, with a recording pool:
//! a scripted path cut and restore, a restart, and an RRD reading decoded by
//! the independent decoder.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::alerts::Alert;
use super::publish::{PathCounts, Pool, PublishError};
use super::rrd::v2::tests::decode;
use super::{host_uuid, status, Agent};
use crate::host::HostRoot;
use crate::nvme::options::tests::options;
use crate::nvme::sysfs::fixture::SysfsTree;
use crate::sr_state::{save, SrState};

const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
const NS: &str = "uuid.8d30ade900c54fe69fbcbe2c924ffcdc";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Paths(String, String),
    Alert(&'static str, String),
}

#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<Sent>>>);

impl Recording {
    fn sent(&self) -> Vec<Sent> {
        self.0.lock().unwrap().clone()
    }

    fn wait_for(&self, count: usize) -> Vec<Sent> {
        self.wait_until(|sent| sent.len() >= count)
    }

    fn wait_until(&self, done: impl Fn(&[Sent]) -> bool) -> Vec<Sent> {
        let started = Instant::now();
        while !done(&self.sent()) {
            assert!(started.elapsed() < Duration::from_secs(5), "only {:?}", self.sent());
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        self.sent()
    }
}

impl Pool for Recording {
    fn publish_paths(&mut self, counts: &PathCounts) -> Result<(), PublishError> {
        self.0.lock().unwrap().push(Sent::Paths(super::publish::mpath_key(&counts.namespace), counts.value()));
        Ok(())
    }
    fn send_alert(&mut self, alert: &Alert) -> Result<(), PublishError> {
        self.0.lock().unwrap().push(Sent::Alert(alert.name, alert.text(None)));
        Ok(())
    }
    fn reset(&mut self) {}
}

/// One SR attached over two live paths, its head `nvme0n1`.
fn attached_sr() -> SysfsTree {
    let tree = SysfsTree::new();
    let a = options();
    let mut b = options();
    b.portal = crate::nvme::names::Portal::parse("10.0.0.2", 4420).unwrap();
    let nqn = a.subsystem.as_str().to_owned();
    let hostnqn = a.host.nqn.as_str().to_owned();
    tree.head("nvme-subsys0", "nvme0n1", &nqn, 1, "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc", 8);
    tree.controller("nvme0", "tcp", &nqn, "traddr=10.0.0.1,trsvcid=4420", &hostnqn, "live");
    tree.controller("nvme1", "tcp", &nqn, "traddr=10.0.0.2,trsvcid=4420", &hostnqn, "live");
    tree.path_device("nvme0", "nvme0c0n1");
    tree.path_device("nvme1", "nvme0c1n1");
    let state = SrState {
        sr_uuid: SR.into(),
        vg: format!("VG_nvmetcp-{SR}").parse().unwrap(),
        nqn: nqn.as_str().into(),
        namespace: NS.into(),
        paths: vec![a.key(), b.key()],
        configuration: std::collections::BTreeMap::new(),
        total_space: 0,
        free_space: 0,
        extent_size: 0,
        initiator: crate::initiator::InitiatorKind::Kernel,
    };
    save(&tree.host(), &state).unwrap();
    tree
}

fn stat(tree: &SysfsTree, reads: u64, writes: u64) {
    tree.write(
        "/sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1/stat",
        &format!("{reads} 0 {} {} {writes} 0 {} 0 0 0 0\n", reads * 8, reads / 2, writes * 8),
    );
}

#[test]
fn a_cut_and_a_restore_are_published_once_each_and_survive_a_restart() {
    let tree = attached_sr();
    let host = tree.host();
    let pool = Recording::default();
    let mut agent = Agent::new(&host, "xcp-ng-1", Box::new(pool.clone()));
    let t0 = Instant::now();
    agent.watch(t0);
    agent.watch(t0 + Duration::from_millis(250));
    let key = format!("mpath-{NS}");
    assert_eq!(pool.wait_for(1), [Sent::Paths(key.clone(), "[2, 2]".into())]);

    tree.write("/sys/devices/virtual/nvme-fabrics/ctl/nvme1/state", "connecting\n");
    agent.watch(t0 + Duration::from_millis(500));
    agent.watch(t0 + Duration::from_millis(750));
    tree.write("/sys/devices/virtual/nvme-fabrics/ctl/nvme1/state", "resetting\n");
    agent.watch(t0 + Duration::from_secs(1));
    let sent = pool.wait_for(3);
    assert!(sent.contains(&Sent::Paths(key.clone(), "[1, 2]".into())), "{sent:?}");
    let lost: Vec<&Sent> = sent.iter().filter(|s| matches!(s, Sent::Alert(..))).collect();
    assert_eq!(
        lost,
        [&Sent::Alert(
            "NVMETCP_PATH_LOST",
            format!(
                "Host xcp-ng-1 lost NVMe path 10.0.0.2:4420 (controller nvme1: connecting) to SR {SR}; 1/2 paths live."
            )
        )]
    );
    let saved = status::load(&host).unwrap();
    assert_eq!(saved.srs[SR].announced, ["10.0.0.1:4420"]);
    assert_eq!((saved.srs[SR].live, saved.srs[SR].total), (1, 2));

    // A restarted agent remembers what it announced: no second "path lost".
    drop(agent);
    let pool2 = Recording::default();
    let mut agent = Agent::new(&host, "xcp-ng-1", Box::new(pool2.clone()));
    agent.watch(t0 + Duration::from_secs(2));
    tree.write("/sys/devices/virtual/nvme-fabrics/ctl/nvme1/state", "live\n");
    agent.watch(t0 + Duration::from_secs(3));
    let back = Sent::Paths(key.clone(), "[2, 2]".into());
    let sent = pool2.wait_until(|sent| {
        sent.iter().any(|s| matches!(s, Sent::Alert(..)))
            && sent.iter().rev().find(|s| matches!(s, Sent::Paths(..))) == Some(&back)
    });
    let alerts: Vec<&Sent> = sent.iter().filter(|s| matches!(s, Sent::Alert(..))).collect();
    assert_eq!(alerts.len(), 1, "{sent:?}");
    assert!(matches!(alerts[0], Sent::Alert("NVMETCP_PATHS_RESTORED", _)));
    let counts: Vec<&Sent> = sent.iter().filter(|s| matches!(s, Sent::Paths(..))).collect();
    assert_eq!(counts.last(), Some(&&Sent::Paths(key, "[2, 2]".into())), "the latest count wins: {sent:?}");
}

#[test]
fn a_reading_carries_the_head_devices_rates() {
    let tree = attached_sr();
    let host = tree.host();
    let mut agent = Agent::new(&host, "h", Box::new(Recording::default()));
    let t0 = Instant::now();
    stat(&tree, 1000, 10);
    let attached = agent.watch(t0);
    agent.read(t0, &attached);
    stat(&tree, 6000, 510);
    agent.read(t0 + Duration::from_secs(5), &attached);
    // One plugin per SR, the file SR.stat's datasources names.
    let path = format!("/dev/shm/metrics/{}", super::rrd::plugin_uid(SR));
    assert_eq!(super::rrd::datasource_uri(SR), format!("xeno+shm:///nvmetcp-sr-{SR}"));
    let file = std::fs::read(host.path(&path)).unwrap();
    let reading = decode(&file).unwrap();
    let value = |name: &str| {
        let (_, meta, bits) = reading.sources.iter().find(|s| s.0 == name).unwrap();
        if meta["value_type"] == "int64" {
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_wrap)]
            return *bits as i64 as f64;
        }
        f64::from_bits(*bits)
    };
    assert!((value("iops_read_3f1c6d0e") - 1000.0).abs() < 1e-6);
    assert!((value("iops_write_3f1c6d0e") - 100.0).abs() < 1e-6);
    assert!((value("io_throughput_read_3f1c6d0e") - 5000.0 * 8.0 * 512.0 / 5.0 / 1_048_576.0).abs() < 1e-6);
    assert!((value("read_latency_3f1c6d0e") - 500.0).abs() < 1e-6);
    assert_eq!(value("nvmetcp_paths_live_3f1c6d0e"), 2.0);
    assert_eq!(reading.sources.len(), 7);
    std::fs::create_dir_all(host.path(&format!("/proc/{}", std::process::id()))).unwrap();
    let shown = status::report(&host, SystemTime::now());
    assert!(shown.running, "{shown:?}");
    assert!(shown.last_rrd_write.is_some());
    assert!(shown.summary.starts_with("running (pid "), "{}", shown.summary);
    // Detached: its plugin file goes (xcp-rrdd stops reading it).
    crate::sr_state::remove(&host, SR).unwrap();
    let attached = agent.watch(t0 + Duration::from_secs(6));
    assert!(attached.is_empty());
    agent.read(t0 + Duration::from_secs(10), &attached);
    assert!(!host.exists(&path), "the detached SR's plugin file is removed");
}

#[test]
fn the_host_uuid_comes_from_the_inventory_and_a_stale_status_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::at(dir.path());
    assert!(host_uuid(&host).unwrap_err().to_string().contains("INSTALLATION_UUID"));
    std::fs::create_dir_all(host.path("/etc")).unwrap();
    std::fs::write(
        host.path("/etc/xensource-inventory"),
        "PRIMARY_DISK='/dev/sda'\nINSTALLATION_UUID='7d2b4c1e-0f3a-4b5c-8d6e-9f0a1b2c3d4e'\n",
    )
    .unwrap();
    assert_eq!(host_uuid(&host).unwrap(), "7d2b4c1e-0f3a-4b5c-8d6e-9f0a1b2c3d4e");
    assert!(!status::report(&host, SystemTime::now()).running);
    let old = status::AgentStatus { pid: std::process::id(), updated: 1000, ..status::AgentStatus::default() };
    status::save(&host, &old).unwrap();
    std::fs::create_dir_all(host.path(&format!("/proc/{}", std::process::id()))).unwrap();
    let shown = status::report(&host, SystemTime::now());
    assert!(!shown.running);
    assert!(shown.summary.starts_with("not running (last seen"), "{}", shown.summary);
}

/// An SR the userspace initiator serves (XCP-ng 8.x): its daemon's state file
/// written as `nvmetcp_initiator::daemon::state` writes it.
fn served_in_userspace(second_path: &str) -> SysfsTree {
    let tree = SysfsTree::new();
    let a = options();
    let mut b = options();
    b.portal = crate::nvme::names::Portal::parse("10.0.0.2", 4420).unwrap();
    let state = SrState {
        sr_uuid: SR.into(),
        vg: format!("VG_nvmetcp-{SR}").parse().unwrap(),
        nqn: a.subsystem.clone(),
        namespace: NS.into(),
        paths: vec![a.key(), b.key()],
        configuration: std::collections::BTreeMap::new(),
        total_space: 0,
        free_space: 0,
        extent_size: 0,
        initiator: crate::initiator::InitiatorKind::Kernel,
    };
    save(&tree.host(), &state).unwrap();
    let pid = std::process::id();
    let path = |portal: &str, status: &str, cntlid: u16| {
        format!(
            r#"{{"portal":"{portal}","status":"{status}","ana":"optimized","cntlid":{cntlid},"io_queues":2,"in_flight":0,
            "errors":0,"losses":0,"last_error":null,"since_secs":5}}"#
        )
    };
    tree.write(
        &format!("/run/nvmetcp/initiator/{SR}.json"),
        &format!(
            r#"{{"sr":"{SR}","phase":"serving","daemon_pid":{pid},"error":null,
            "nbd":{{"index":1,"kernel_pid":{pid},"backend":"nvmetcp:{SR}","connections":2,"size_bytes":1048576,"block_size":4096}},
            "export":null,
            "device":{{"nqn":"{}","nsid":1,"iopolicy":"round-robin","queued":0,"failed_no_path":0,
            "paths":[{},{}]}},"updated_unix":1}}"#,
            state.nqn,
            path("10.0.0.1:4420", "live", 1),
            path("10.0.0.2:4420", second_path, 2)
        ),
    );
    tree.write(&format!("/proc/{pid}/stat"), "");
    tree.write("/sys/block/nbd1/pid", &format!("{pid}\n"));
    tree.write("/sys/block/nbd1/size", "2048\n");
    tree
}

#[test]
fn an_sr_of_the_userspace_initiator_is_watched_through_its_daemon_and_its_nbd_device() {
    let tree = served_in_userspace("connecting");
    let host = tree.host();
    let pool = Recording::default();
    let mut agent = Agent::new(&host, "xcp-ng-8", Box::new(pool.clone()));
    let t0 = Instant::now();
    let nbd_stat =
        |reads: u64| tree.write("/sys/block/nbd1/stat", &format!("{reads} 0 {} 0 0 0 0 0 0 0 0\n", reads * 8));
    nbd_stat(100);
    let attached = agent.watch(t0);
    assert_eq!(attached[0].device.as_deref(), Some("nbd1"), "the NBD device, verified, carries the I/O");
    assert_eq!(attached[0].counts(), (1, 2), "the daemon's paths, not the (absent) kernel controllers");
    let sent = pool.wait_until(|sent| sent.len() >= 2);
    assert!(sent.contains(&Sent::Paths(format!("mpath-{NS}"), "[1, 2]".into())), "{sent:?}");
    assert!(
        sent.contains(&Sent::Alert(
            "NVMETCP_PATH_LOST",
            format!("Host xcp-ng-8 lost NVMe path 10.0.0.2:4420 (controller cntlid 2: connecting) to SR {SR}; 1/2 paths live.")
        )),
        "{sent:?}"
    );
    agent.read(t0, &attached);
    nbd_stat(350);
    agent.read(t0 + Duration::from_secs(5), &attached);
    let file = std::fs::read(host.path(&format!("/dev/shm/metrics/{}", super::rrd::plugin_uid(SR)))).unwrap();
    let reading = decode(&file).unwrap();
    let (_, _, bits) = reading.sources.iter().find(|s| s.0 == "iops_read_3f1c6d0e").unwrap();
    assert!((f64::from_bits(*bits) - 50.0).abs() < 1e-6, "250 reads in 5 s on nbd1");

    // A daemon that is not serving is not a source: the kernel's view is used.
    let stopped = std::fs::read_to_string(host.path(&format!("/run/nvmetcp/initiator/{SR}.json")))
        .unwrap()
        .replace(r#""phase":"serving""#, r#""phase":"stopped""#);
    tree.write(&format!("/run/nvmetcp/initiator/{SR}.json"), &stopped);
    let attached = agent.watch(t0 + Duration::from_secs(6));
    assert_eq!(attached[0].device, None);
    assert_eq!(attached[0].counts(), (0, 2));
}
