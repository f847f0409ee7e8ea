//! The qemu-storage-daemon engine against a scripted QMP server on a unix
//! socket: the exact commands of a swap and of a merge, and what each
//! documented answer means. The daemon itself runs in the test bed
//! (`tests/testbed/tests/snapshot_engine.rs`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::thread;

use super::*;
use crate::cmd::FakeRunner;
use crate::engine::ImageFormat;

/// Serves `sessions` connections; each answers its requests with the given
/// replies in order (after the greeting and `qmp_capabilities`). Returns the
/// requests received, as JSON, in order.
fn qmp_server(dir: &Path, sessions: Vec<Vec<Value>>) -> (Arc<Mutex<Vec<Value>>>, thread::JoinHandle<()>) {
    let listener = UnixListener::bind(dir.join("qmp.sock")).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let server = thread::spawn(move || {
        for replies in sessions {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writeln!(writer, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            writeln!(writer, r#"{{"return": {{}}}}"#).unwrap();
            for reply in replies {
                line.clear();
                reader.read_line(&mut line).unwrap();
                record.lock().unwrap().push(serde_json::from_str::<Value>(&line).unwrap());
                // An event first, as QEMU may send one at any time.
                writeln!(writer, r#"{{"event": "JOB_STATUS_CHANGE", "data": {{}}}}"#).unwrap();
                writeln!(writer, "{reply}").unwrap();
            }
        }
    });
    (seen, server)
}

fn raw() -> Image {
    Image::new(ImageFormat::Raw, "/dev/vg/vol-aa").unwrap()
}

fn layer(n: u32) -> Image {
    Image::new(ImageFormat::Qcow2, format!("/dev/vg/node-{n}")).unwrap()
}

fn disk(dir: &Path, leaf: Image) -> OpenDisk {
    OpenDisk { device: "/dev/nbd0".into(), leaf, handle: Handle::QemuStorageDaemon { pid: 1, run_dir: dir.into() } }
}

fn nodes(images: &[(&Image, &str)]) -> Value {
    let mut list: Vec<Value> = images
        .iter()
        .map(|(i, name)| json!({"node-name": name, "drv": i.format().qemu_name(), "file": i.path_str()}))
        .collect();
    // The protocol node under each: same file name, another driver.
    list.extend(
        images.iter().map(|(i, _)| json!({"node-name": "#block1", "drv": "host_device", "file": i.path_str()})),
    );
    json!({"return": list})
}

#[test]
fn node_names_are_stable_short_and_distinct() {
    let a = node_name(&raw());
    assert_eq!(a, node_name(&raw()));
    assert_ne!(a, node_name(&layer(1)));
    assert!(a.len() <= 31 && a.starts_with('n'), "{a}");
}

#[test]
fn a_new_overlay_is_added_without_backing_on_the_raw_device() {
    let node = blockdev(&layer(1), false, true);
    assert_eq!(node["driver"], "qcow2");
    assert_eq!(node["backing"], Value::Null);
    assert_eq!(node["file"]["driver"], "host_device");
    assert_eq!(node["file"]["filename"], "/dev/vg/node-1");
    assert!(blockdev(&raw(), true, false).get("backing").is_none(), "an opened chain follows its header");
}

#[test]
fn swap_adds_the_overlay_then_snapshots_the_current_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let (seen, server) =
        qmp_server(dir.path(), vec![vec![nodes(&[(&raw(), "nbase")]), json!({"return": {}}), json!({"return": {}})]]);
    let fake = FakeRunner::new();
    let host = HostRoot::at(dir.path());
    let engine = Qsd::new(&fake, &host, dir.path());
    let swapped = engine.swap_leaf(&disk(dir.path(), raw()), &layer(1)).unwrap();
    server.join().unwrap();
    assert_eq!(swapped.leaf, layer(1));
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0]["execute"], "query-named-block-nodes");
    assert_eq!(seen[1]["execute"], "blockdev-add");
    assert_eq!(seen[1]["arguments"]["node-name"], node_name(&layer(1)));
    assert_eq!(
        seen[2],
        json!({"execute": "blockdev-snapshot", "arguments": {"node": "nbase", "overlay": node_name(&layer(1))}})
    );
}

#[test]
fn a_refused_snapshot_removes_the_overlay_and_says_the_disk_stayed() {
    let dir = tempfile::tempdir().unwrap();
    let refused = json!({"error": {"class": "GenericError", "desc": "The overlay already has a backing image"}});
    let (seen, server) = qmp_server(
        dir.path(),
        vec![vec![nodes(&[(&raw(), "nbase")]), json!({"return": {}}), refused, json!({"return": {}})]],
    );
    let fake = FakeRunner::new();
    let host = HostRoot::at(dir.path());
    let error = Qsd::new(&fake, &host, dir.path()).swap_leaf(&disk(dir.path(), raw()), &layer(1)).unwrap_err();
    server.join().unwrap();
    assert!(matches!(error, EngineError::SwapReverted { .. }), "{error}");
    let chain = format!("{:?}", anyhow_chain(&error));
    assert!(chain.contains("already has a backing image"), "{chain}");
    assert_eq!(seen.lock().unwrap()[3]["execute"], "blockdev-del");
}

fn anyhow_chain(error: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        out.push(e.to_string());
        source = e.source();
    }
    out
}

/// QEMU's `id_wellformed`: a letter, then letters, digits, `-`, `.`, `_`.
fn qmp_identifier(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

#[test]
fn a_merge_of_a_node_this_engine_opened_is_named_after_it_and_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let own = node_name(&layer(1));
    let listed = || nodes(&[(&raw(), "#block5"), (&layer(1), &own), (&layer(2), "nleaf")]);
    let job = format!("merge-{own}");
    let (seen, server) = qmp_server(
        dir.path(),
        vec![
            vec![listed(), listed(), listed(), json!({"return": {}})],
            vec![
                json!({"return": [{"device": job, "status": "concluded", "offset": 10, "len": 10}]}),
                json!({"return": {}}),
                json!({"return": {}}),
            ],
        ],
    );
    let fake = FakeRunner::new();
    let host = HostRoot::at(dir.path());
    let engine = Qsd::new(&fake, &host, dir.path());
    let d = disk(dir.path(), layer(2));
    engine.start_commit(&d, &layer(1), &raw()).unwrap();
    assert_eq!(engine.commit_state(&d).unwrap(), CommitState::Done);
    server.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[3]["arguments"]["job-id"], json!(job));
    assert!(qmp_identifier(&job), "{job}");
    assert_eq!(seen[6], json!({"execute": "blockdev-del", "arguments": {"node-name": own}}));
}

#[test]
fn a_merge_names_top_and_base_nodes_and_keeps_the_job_until_collected() {
    let dir = tempfile::tempdir().unwrap();
    let listed = || nodes(&[(&raw(), "#block5"), (&layer(1), "#block9"), (&layer(2), "nleaf")]);
    let job = format!("merge-b{}", &node_name(&layer(1))[1..]);
    let (seen, server) = qmp_server(
        dir.path(),
        vec![
            vec![listed(), listed(), listed(), json!({"return": {}})],
            vec![json!({"return": [{"device": job, "status": "running", "offset": 5, "len": 10}]})],
            vec![
                json!({"return": [{"device": job, "status": "concluded", "offset": 10, "len": 10}]}),
                json!({"return": {}}),
            ],
            vec![json!({"return": []})],
        ],
    );
    let fake = FakeRunner::new();
    let host = HostRoot::at(dir.path());
    let engine = Qsd::new(&fake, &host, dir.path());
    let d = disk(dir.path(), layer(2));
    engine.start_commit(&d, &layer(1), &raw()).unwrap();
    assert_eq!(engine.commit_state(&d).unwrap(), CommitState::Running { done: 5, total: 10 });
    assert_eq!(engine.commit_state(&d).unwrap(), CommitState::Done);
    assert_eq!(engine.commit_state(&d).unwrap(), CommitState::Idle);
    server.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[3],
        json!({"execute": "block-commit", "arguments": {
            "job-id": job, "device": "nleaf", "top-node": "#block9", "base-node": "#block5", "auto-dismiss": false}})
    );
    assert!(qmp_identifier(&job), "{job} is not a valid QMP job id");
    assert_eq!(seen[6], json!({"execute": "job-dismiss", "arguments": {"id": job}}));
    assert!(!seen.iter().any(|r| r["execute"] == "blockdev-del"), "a node QEMU opened itself is not deleted by hand");
}

#[test]
fn a_ready_leaf_merge_is_completed_and_a_failed_one_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (seen, server) = qmp_server(
        dir.path(),
        vec![
            vec![
                json!({"return": [{"device": "merge-nleaf", "status": "ready", "offset": 10, "len": 10}]}),
                json!({"return": {}}),
            ],
            vec![
                json!({"return": [{"device": "merge-nleaf", "status": "concluded", "offset": 10, "len": 10}]}),
                json!({"return": {}}),
                json!({"return": {}}),
            ],
            vec![
                json!({"return": [{"device": "merge-nleaf", "status": "concluded", "offset": 3, "len": 10, "error": "No space left on device"}]}),
                json!({"return": {}}),
            ],
        ],
    );
    let fake = FakeRunner::new();
    let host = HostRoot::at(dir.path());
    let engine = Qsd::new(&fake, &host, dir.path());
    let d = disk(dir.path(), layer(1));
    assert_eq!(engine.commit_state(&d).unwrap(), CommitState::Running { done: 10, total: 10 });
    assert_eq!(engine.commit_state(&d).unwrap(), CommitState::Done);
    assert_eq!(engine.commit_state(&d).unwrap(), CommitState::Failed("No space left on device".into()));
    server.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[1], json!({"execute": "block-job-complete", "arguments": {"device": "merge-nleaf"}}));
    assert_eq!(seen[4], json!({"execute": "blockdev-del", "arguments": {"node-name": "nleaf"}}), "our leaf is closed");
}

#[test]
fn a_node_outside_the_chain_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, server) = qmp_server(dir.path(), vec![vec![nodes(&[(&raw(), "nbase")])]]);
    let fake = FakeRunner::new();
    let host = HostRoot::at(dir.path());
    let error = Qsd::new(&fake, &host, dir.path()).swap_leaf(&disk(dir.path(), layer(7)), &layer(8)).unwrap_err();
    server.join().unwrap();
    assert!(error.to_string().contains("/dev/vg/node-7 is not part of this disk's chain"), "{error}");
}

#[test]
fn free_nbd_devices_are_those_without_a_client() {
    let dir = tempfile::tempdir().unwrap();
    for (n, used) in [(0, true), (1, false), (10, false), (2, false)] {
        std::fs::create_dir_all(dir.path().join(format!("sys/block/nbd{n}"))).unwrap();
        if used {
            std::fs::write(dir.path().join(format!("sys/block/nbd{n}/pid")), "77\n").unwrap();
        }
    }
    std::fs::create_dir_all(dir.path().join("sys/block/nvme0n1")).unwrap();
    let fake = FakeRunner::new();
    let host = HostRoot::at(dir.path());
    let engine = Qsd::new(&fake, &host, dir.path());
    assert_eq!(engine.free_nbd_devices().unwrap(), ["nbd1", "nbd2", "nbd10"]);
}

#[test]
fn features_need_the_daemon_and_nbd_client() {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::at(dir.path());
    let fake = FakeRunner::new().then_stdout("qemu-storage-daemon version 7.2.22\n");
    assert_eq!(Qsd::new(&fake, &host, dir.path()).features().unwrap(), Features { qcow2: true, online_commit: true });
    let fake = FakeRunner::new().then_stdout("qemu-storage-daemon version 7.2.22\n").without(Program::NbdClient);
    let error = Qsd::new(&fake, &host, dir.path()).features().unwrap_err();
    assert!(error.to_string().contains("nbd-client"), "{error}");
}

#[test]
fn the_leaf_in_use_is_the_node_the_export_serves() {
    let dir = tempfile::tempdir().unwrap();
    let exports =
        json!({"return": [{"id": "disk", "type": "nbd", "node-name": node_name(&layer(1)), "shutting-down": false}]});
    let (seen, server) =
        qmp_server(dir.path(), vec![vec![exports, nodes(&[(&raw(), "#block7"), (&layer(1), &node_name(&layer(1)))])]]);
    let fake = FakeRunner::new();
    let host = HostRoot::at(dir.path());
    let leaf = Qsd::new(&fake, &host, dir.path()).current_leaf(&disk(dir.path(), raw())).unwrap();
    server.join().unwrap();
    assert_eq!(leaf, layer(1), "the handle said raw; the daemon writes the overlay");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0]["execute"], "query-block-exports");
    assert_eq!(seen[1]["execute"], "query-named-block-nodes");
}
