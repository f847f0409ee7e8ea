//! The master's pool calls against the in-process XAPI emulator, whose
//! `host.call_plugin` runs the member's real plugin functions
//! ([`crate::chain_member`]) on a host tree of its own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use xapi_emulator::{Backend, Config, Emulator, Failure, HostInfo};

use super::{OpenOn, Pool, PoolProbe, ServedOn};
use crate::cmd::FakeRunner;
use crate::context::Context;
use crate::engine::{EngineError, Handle, Image, ImageFormat, OpenDisk};
use crate::host::HostRoot;
use crate::snapshot::journal::Serving;
use crate::snapshot::ops::{Elsewhere, OpError, Running, ServingProbe};
use crate::snapshot::served::{HereProbe, RUN_BASE};
use crate::xapi_fixture::XapiHost;

/// What XAPI's `host.call_plugin` answers when the member's host plugin runs
/// `function` (`chain_member`'s functions) on `ctx`: its text, or its error
/// code and parameters as an XAPI failure.
pub(super) fn member_reply(ctx: &Context, function: &str, args: &BTreeMap<String, String>) -> Result<String, Failure> {
    match crate::chain_member::answer(ctx, function, args) {
        Some(Ok(text)) => Ok(text),
        Some(Err((code, params))) => {
            let params: Vec<&str> = params.iter().map(String::as_str).collect();
            Err(Failure::new(code.as_str(), &params))
        }
        None => Err(Failure::new("NVMETCP_UNKNOWN_FUNCTION", &[function])),
    }
}

const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
const VG: &str = "nvmetcp_x";

/// The member `xcp-2` answers with its plugin functions on its own tree;
/// `down` lists functions it fails as an unreachable host would.
struct Member {
    root: PathBuf,
    down: Vec<&'static str>,
    asked: Mutex<Vec<String>>,
}

impl Backend for Member {
    fn call_plugin(
        &self,
        host: &HostInfo,
        plugin: &str,
        function: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<String, Failure> {
        assert_eq!((host.name_label.as_str(), plugin), ("xcp-2", "nvmetcp"));
        self.asked.lock().unwrap().push(function.to_owned());
        if self.down.contains(&function) || self.down.contains(&"*") {
            return Err(Failure::new("HOST_OFFLINE", &["xcp-2"]));
        }
        let ctx = Context::fake(HostRoot::at(&self.root), Box::new(FakeRunner::new()));
        member_reply(&ctx, function, args)
    }
}

struct Fixture {
    master: XapiHost,
    member: HostRoot,
    _member_dir: tempfile::TempDir,
}

/// A master (`xcp-1`, this host) and one member (`xcp-2`) with the SR attached.
fn pool(down: &[&'static str]) -> Fixture {
    let member_dir = tempfile::tempdir().unwrap();
    let member = HostRoot::at(member_dir.path());
    crate::sr_state::save(
        &member,
        &crate::sr_state::one_tcp_path(SR, VG, "nqn.x", "uuid.8d30ade900c54fe69fbcbe2c924ffcdc", 1 << 30, 0),
    )
    .unwrap();
    let config = Config { hosts: vec!["xcp-1".into(), "xcp-2".into()], ..Config::default() };
    let backend = Member { root: member_dir.path().to_owned(), down: down.to_vec(), asked: Mutex::default() };
    let master = XapiHost::master(Emulator::new(config, backend), "xcp-1");
    Fixture { master, member, _member_dir: member_dir }
}

/// `host` serves `volume` with `leaf` as its leaf.
fn serve(host: &HostRoot, volume: &str, leaf: &str) {
    let dir = host.path(&format!("{RUN_BASE}/{SR}"));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = OpenDisk { device: "/dev/nbd3".into(), leaf: qcow2(leaf), handle: Handle::Tapdisk { pid: 7, minor: 3 } };
    std::fs::write(dir.join(format!("{volume}.json")), serde_json::to_string(&disk).unwrap()).unwrap();
}

fn qcow2(lv: &str) -> Image {
    Image::new(ImageFormat::Qcow2, format!("/dev/{VG}/{lv}")).unwrap()
}

impl Fixture {
    fn pool(&self) -> Pool<'_> {
        Pool { root: &self.master.root, sr_uuid: SR, vg: VG }
    }
}

#[test]
fn the_host_serving_a_volume_is_found_and_its_volumes_are_busy() {
    let f = pool(&[]);
    assert_eq!(f.pool().serving_host("vol-a").unwrap(), None);
    assert!(f.pool().open_on_others().unwrap().is_empty());
    serve(&f.member, "vol-a", "node-1");
    assert_eq!(f.pool().serving_host("vol-a").unwrap(), Some(("xcp-2".to_owned(), format!("/dev/{VG}/node-1"))));
    let open = OpenOn { host: "xcp-2".into(), volume: "vol-a".into(), mergeable: true };
    assert_eq!(f.pool().open_on_others().unwrap(), [open]);
    // A machine that is no XCP-ng host has no other host.
    let lone = tempfile::tempdir().unwrap();
    let root = HostRoot::at(lone.path());
    assert_eq!(Pool { root: &root, sr_uuid: SR, vg: VG }.open_on_others().unwrap(), []);
}

#[test]
fn a_member_that_cannot_answer_is_never_taken_to_serve_nothing() {
    let f = pool(&["*"]);
    let err = f.pool().serving_host("vol-a").unwrap_err();
    assert!(err.to_string().contains("xcp-2"), "{err}");
    assert!(f.pool().open_on_others().is_err());
    // Nor is an LV removed under it.
    let refused = f.pool().release("node-1").unwrap_err();
    assert!(matches!(refused, OpError::ActiveElsewhere { ref lv, .. } if lv == "node-1"), "{refused}");
}

#[test]
fn the_swap_is_not_requested_from_a_member_that_cannot_be_asked_first() {
    // Unreachable before the switch: the disk certainly writes its old leaf.
    let f = pool(&["*"]);
    serve(&f.member, "vol-a", "node-1");
    let running = ServedOn { pool: f.pool(), host: "xcp-2".into(), volume: "vol-a".into() };
    let err = running.swap(&qcow2("node-2")).unwrap_err();
    assert!(matches!(err, EngineError::NotSwappedOnHost { .. }) && err.left_old_leaf(), "{err}");
    assert_eq!(running.host().as_deref(), Some("xcp-2"), "the journal names the host");
    // A member that no longer serves the volume: not swapped either.
    let f = pool(&[]);
    let running = ServedOn { pool: f.pool(), host: "xcp-2".into(), volume: "vol-a".into() };
    let err = running.swap(&qcow2("node-2")).unwrap_err();
    assert!(err.left_old_leaf() && err.to_string().contains("no longer serves volume vol-a"), "{err}");
}

#[test]
fn a_lost_answer_to_the_swap_leaves_the_outcome_to_replay() {
    let f = pool(&["chain_swap"]);
    serve(&f.member, "vol-a", "node-1");
    let running = ServedOn { pool: f.pool(), host: "xcp-2".into(), volume: "vol-a".into() };
    let err = running.swap(&qcow2("node-2")).unwrap_err();
    assert!(matches!(err, EngineError::SwapUnknownOnHost { .. }) && !err.left_old_leaf(), "{err}");
    assert!(err.to_string().contains("stays journalled"), "{err}");
    // A swap the member already made (asked again) is success.
    let f = pool(&[]);
    serve(&f.member, "vol-a", "node-2");
    let running = ServedOn { pool: f.pool(), host: "xcp-2".into(), volume: "vol-a".into() };
    running.swap(&qcow2("node-2")).unwrap();
}

#[test]
fn replay_believes_only_a_member_that_names_the_new_leaf() {
    let f = pool(&[]);
    let runner = FakeRunner::new();
    let probe = || PoolProbe { here: HereProbe { runner: &runner, host: &f.master.root, sr_uuid: SR }, pool: f.pool() };
    let (old, new) = (qcow2("node-1"), qcow2("node-2"));
    assert_eq!(probe().serving("vol-a", &old, &new), Serving::NotOpen);
    serve(&f.member, "vol-a", "node-1");
    assert_eq!(probe().serving("vol-a", &old, &new), Serving::Unknown);
    serve(&f.member, "vol-a", "node-2");
    assert_eq!(probe().serving("vol-a", &old, &new), Serving::NewLeaf);
    let down = pool(&["*"]);
    let probe =
        PoolProbe { here: HereProbe { runner: &runner, host: &down.master.root, sr_uuid: SR }, pool: down.pool() };
    assert_eq!(probe.serving("vol-a", &old, &new), Serving::Unknown, "an unreachable member: replay waits");
}

#[test]
fn release_asks_every_host_and_refuses_what_a_member_has_open() {
    let f = pool(&[]);
    serve(&f.member, "vol-a", "node-2");
    let refused = f.pool().release("node-2").unwrap_err();
    assert!(
        refused.to_string().contains("xcp-2") && refused.to_string().contains("NVMETCP_VOLUME_ACTIVE"),
        "{refused}"
    );
    // Not mapped on the member: nothing to deactivate there.
    f.pool().release("node-7").unwrap();
}
