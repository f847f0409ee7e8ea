//! `Volume.snapshot` on the master of a volume in use on a member, in
//! process: the master's VG is [`FakeVg`] (LVM and `qemu-img` answered from
//! its own state), its XAPI the in-process emulator ([`XapiHost`]), whose
//! `host.call_plugin` runs the member's real plugin functions
//! (`volume_mapped`, [`crate::chain_member`]) on a host tree of its own;
//! the member's LVM and `tap-ctl` are recorded. Issue 18: a plain volume a
//! member's engine serves is snapshotted there (pause first, then swap); one
//! it hands to blkback, or serves read-only, is refused saying why; a
//! layered volume no engine serves is snapshotted at rest only when no host
//! has it active.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use xapi_emulator::{Backend, Config, Emulator, Failure, HostInfo};

use crate::cmd::{args_of, CmdError, Command, Output, Program, Runner};
use crate::context::Context;
use crate::engine::{Access, Handle, Image, ImageFormat, OpenDisk};
use crate::error::to_error_record;
use crate::nvme::sysfs::fixture::SysfsTree;
use crate::pool_mappings::{self, dm_name};
use crate::smapi::method::{Method, PluginKind};
use crate::smapi::params::Params;
use crate::snapshot::fake_vg::FakeVg;
use crate::snapshot::served::{open_here, record_opened};
use crate::xapi_fixture::XapiHost;

pub(super) const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
const NQN: &str = "nqn.2024-01.io.example:array";
const WWID: &str = "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc";
/// [`FakeVg`]'s VG.
pub(super) const VG: &str = "vgx";
pub(super) const KEY: &str = "vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
/// What the master's `/proc/sys/kernel/random/uuid` gives the snapshot.
pub(super) const UUID: &str = "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e12";
/// tap-ctl's command list with the qcow2 driver's commands
/// (`xcp-ng/blktap control/tap-ctl.c` `usage()`).
pub(super) const HELP_QCOW2: &str =
    "usage: tap-ctl COMMAND [OPTIONS]\nCOMMAND := { list | spawn | pause | unpause | commit | query }\n";

/// A host with the SR attached over one live path.
fn attached_host(role: &str) -> SysfsTree {
    let tree = SysfsTree::new();
    tree.controller("nvme0", "tcp", NQN, "traddr=10.0.0.1,trsvcid=4420", "nqn.h:h", "live");
    tree.head("nvme-subsys0", "nvme0n1", NQN, 1, WWID, 2048);
    tree.path_device("nvme0", "nvme0c0n1");
    tree.write("/etc/xensource/pool.conf", role);
    let state = crate::sr_state::one_tcp_path(SR, VG, NQN, WWID, 1 << 30, 1 << 29);
    crate::sr_state::save(&tree.host(), &state).unwrap();
    tree
}

/// The member's LVM (activation) and `tap-ctl` (a tapdisk with qcow2,
/// answering `query` with the text in `.1`), every command line
/// recorded, LVM's `--config` left out; `.2` has those run with a
/// `read_only_volume_list`.
#[derive(Clone, Default)]
pub(super) struct MemberTools(Arc<Mutex<Vec<String>>>, pub(super) Arc<Mutex<String>>, Arc<Mutex<Vec<String>>>);

impl Runner for MemberTools {
    fn resolve(&self, program: Program) -> Result<PathBuf, CmdError> {
        Ok(Path::new("/usr/sbin").join(program.name()))
    }

    fn start_detached(&self, command: &Command) -> Result<u32, CmdError> {
        panic!("the member starts nothing for a swap: {command}")
    }

    fn run(&self, command: &Command) -> Result<Output, CmdError> {
        let mut args = args_of(command);
        let config = args.iter().position(|a| a == "--config").and_then(|at| args.drain(at..=at + 1).nth(1));
        let line = format!("{} {}", command.program().name(), args.join(" ")).trim_end().to_owned();
        if config.is_some_and(|c| c.contains("read_only_volume_list")) {
            self.2.lock().unwrap().push(line.clone());
        }
        self.0.lock().unwrap().push(line);
        let stdout = match command.program() {
            Program::TapCtl if args.is_empty() => HELP_QCOW2.to_owned(),
            Program::TapCtl if args[0] == "query" => self.1.lock().unwrap().clone(),
            Program::TapCtl | Program::Lvm => String::new(),
            other => panic!("the member runs no {} for a swap", other.name()),
        };
        Ok(Output { stdout, stderr: String::new() })
    }
}

/// The member `xcp-2`: its plugin functions on its own tree and tools;
/// while `down`, it fails every call as an unreachable host does, and with
/// `down_after_start` it goes down once it has answered a merge's start
/// (with `lose_start_answer`, that answer is lost too).
struct Member {
    tree: SysfsTree,
    tools: MemberTools,
    asked: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
    down_after_start: Arc<AtomicBool>,
    lose_start_answer: Arc<AtomicBool>,
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
        if self.down.load(Ordering::SeqCst) {
            return Err(Failure::new("HOST_OFFLINE", &["xcp-2"]));
        }
        if function == pool_mappings::FUNCTION {
            return pool_mappings::answer(&self.tree.host(), args).map_err(|e| Failure::new("NVMETCP_BAD_CALL", &[&e]));
        }
        let ctx = Context::fake(self.tree.host(), Box::new(self.tools.clone()));
        let reply = super::tests::member_reply(&ctx, function, args);
        if args.get("action").is_some_and(|a| a == "start") && self.down_after_start.load(Ordering::SeqCst) {
            self.down.store(true, Ordering::SeqCst);
            if self.lose_start_answer.load(Ordering::SeqCst) {
                return Err(Failure::new("HOST_OFFLINE", &["xcp-2"]));
            }
        }
        reply
    }
}

/// The master `xcp-1` (this host, its VG in memory) and the member `xcp-2`.
pub(super) struct TwoHosts {
    pub(super) master: XapiHost,
    pub(super) master_tree: SysfsTree,
    pub(super) vg: Writer,
    pub(super) member: SysfsTree,
    pub(super) tools: MemberTools,
    pub(super) asked: Arc<Mutex<Vec<String>>>,
    /// The member fails every call.
    pub(super) down: Arc<AtomicBool>,
    /// The member goes down once it has answered a merge's start.
    pub(super) down_after_start: Arc<AtomicBool>,
    /// With `down_after_start`, that answer is lost.
    pub(super) lose_start_answer: Arc<AtomicBool>,
}

/// [`FakeVg`] whose VG names the master as its metadata writer.
#[derive(Clone)]
pub(super) struct Writer {
    pub(super) vg: Arc<FakeVg>,
    master: String,
}

impl Runner for Writer {
    fn resolve(&self, program: Program) -> Result<PathBuf, CmdError> {
        self.vg.resolve(program)
    }

    fn start_detached(&self, command: &Command) -> Result<u32, CmdError> {
        self.vg.start_detached(command)
    }

    fn run(&self, command: &Command) -> Result<Output, CmdError> {
        let output = self.vg.run(command)?;
        let report = |a: &String| a == "vgs" || a == "fullreport";
        if command.program() == Program::Lvm && args_of(command).first().is_some_and(report) {
            let tags = format!("nvmetcp.uuid={SR},nvmetcp.writer={},nvmetcp_sr", self.master);
            return Ok(Output {
                stdout: output.stdout.replace(r#""vg_tags":"""#, &format!(r#""vg_tags":"{tags}""#)),
                ..output
            });
        }
        Ok(output)
    }
}

pub(super) fn pool(vg: FakeVg) -> TwoHosts {
    let member = attached_host("slave:10.0.0.1\n");
    let tools = MemberTools::default();
    let asked = Arc::new(Mutex::default());
    let (down, down_after_start) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let lose_start_answer = Arc::new(AtomicBool::new(false));
    let backend = Member {
        tree: member.clone(),
        tools: tools.clone(),
        asked: Arc::clone(&asked),
        down: Arc::clone(&down),
        down_after_start: Arc::clone(&down_after_start),
        lose_start_answer: Arc::clone(&lose_start_answer),
    };
    let config = Config { hosts: vec!["xcp-1".into(), "xcp-2".into()], ..Config::default() };
    let master_tree = attached_host("master\n");
    master_tree.write("/proc/sys/kernel/random/uuid", &format!("{UUID}\n"));
    let master = XapiHost::serve(master_tree.host(), Emulator::new(config, backend), "xcp-1");
    let vg = Writer { vg: Arc::new(vg), master: master.uuid.clone() };
    TwoHosts { master, master_tree, vg, member, tools, asked, down, down_after_start, lose_start_answer }
}

impl TwoHosts {
    /// `Volume.snapshot` of [`KEY`] on the master: the new volume, or the
    /// error record's code and message.
    pub(super) fn snapshot(&self) -> Result<serde_json::Value, (String, String)> {
        self.volume_call("Volume.snapshot", KEY)
    }

    /// `method` (a Volume call taking `key`) on the master: its answer, or
    /// the error record's code and message.
    pub(super) fn volume_call(&self, method: &str, key: &str) -> Result<serde_json::Value, (String, String)> {
        let ctx = Context::fake(self.master.root.clone(), Box::new(self.vg.clone()));
        let body = format!(r#"{{"dbg":"t","sr":"nvmetcp://sr/{SR}","key":"{key}"}}"#);
        let params = Params::from_json(Method::lookup(method).unwrap(), &body).unwrap();
        crate::dispatch::dispatch(&ctx, PluginKind::Volume, &params).map_err(|f| {
            let record = to_error_record(&f, "xcp-1");
            (record.code, record.params.join(" "))
        })
    }

    /// The member has [`KEY`]'s LV mapped (a VM uses it there).
    fn mapped_on_member(&self) {
        self.member.write("/sys/block/dm-0/dm/name", &format!("{}\n", dm_name(VG, KEY)));
    }

    /// The member's engine serves [`KEY`] (plain: its raw LV), with `access`.
    pub(super) fn served_on_member(&self, access: Access) {
        self.mapped_on_member();
        let leaf = Image::new(ImageFormat::Raw, format!("/dev/{VG}/{KEY}")).unwrap();
        let disk =
            OpenDisk { device: "/dev/xen/blktap-2/tapdev3".into(), leaf, handle: Handle::Tapdisk { pid: 7, minor: 3 } };
        record_opened(&self.member.host(), SR, KEY, &disk, access).unwrap();
    }

    pub(super) fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    pub(super) fn member_ran(&self) -> Vec<String> {
        self.tools.0.lock().unwrap().clone()
    }

    /// Forgets what the member ran so far.
    pub(super) fn forget_member_ran(&self) {
        self.tools.0.lock().unwrap().clear();
        self.tools.2.lock().unwrap().clear();
    }

    /// What the member ran with a `read_only_volume_list`.
    pub(super) fn member_ran_read_only(&self) -> Vec<String> {
        self.tools.2.lock().unwrap().clone()
    }
}

pub(super) fn plain() -> FakeVg {
    FakeVg::named(VG, &[]).with_volumes(crate::volume::meta::VOLUME_TAG, &[KEY])
}

/// Issue 18: the master's snapshot of a plain volume a member's engine
/// serves goes through that member (`ServedOn`, `chain_swap`): asked
/// whether it serves it, then to switch; the member activates the new leaf,
/// pauses the disk, resumes it on the new leaf, then reloads the old one
/// read-only; the SR's chain says the volume writes its new qcow2 leaf on
/// the raw node the snapshot keeps.
#[test]
fn a_plain_volume_a_members_engine_serves_is_snapshotted_through_that_member() {
    let pool = pool(plain());
    pool.served_on_member(Access::ReadWrite);
    let snapshot = pool.snapshot().unwrap();
    let snap_key = format!("vol-{UUID}");
    let leaf = format!("node-{UUID}");
    assert_eq!(snapshot["key"], snap_key.as_str(), "{snapshot}");
    assert_eq!(pool.asked(), ["volume_mapped", "chain_serving", "chain_serving", "chain_swap"]);
    let ran = pool.member_ran();
    let at = |start: &str| ran.iter().position(|c| c.starts_with(start)).unwrap_or_else(|| panic!("{start}: {ran:?}"));
    let activated = at(&format!("lvm lvchange -ay {VG}/{leaf}"));
    let (paused, resumed) = (at("tap-ctl pause -p 7 -m 3"), at("tap-ctl unpause -p 7 -m 3"));
    assert!(activated < paused && paused < resumed, "activate, pause, then switch: {ran:?}");
    assert_eq!(ran[resumed], format!("tap-ctl unpause -p 7 -m 3 -a qcow2:/dev/{VG}/{leaf}"));
    assert!(ran[resumed + 1..].iter().any(|c| c.contains(&format!("-ay {VG}/{KEY}"))), "old leaf reloaded: {ran:?}");
    // The member's handle names the new leaf; the SR's chain agrees.
    let served = open_here(&pool.member.host(), SR, KEY).unwrap();
    assert_eq!(served.leaf.path_str(), format!("/dev/{VG}/{leaf}"));
    let shape = pool.vg.vg.shape();
    let has = |lv: &str, tag: &str| shape[lv].iter().any(|t| t == tag);
    assert!(has(KEY, "nf=raw") && has(KEY, &format!("nn={leaf}")), "{shape:?}");
    assert!(has(&leaf, "nf=qcow2") && has(&leaf, &format!("np={KEY}")), "{shape:?}");
    assert!(has(&snap_key, &format!("nn={KEY}")), "the snapshot holds the raw node: {shape:?}");
    assert!(shape.values().flatten().all(|t| !t.starts_with("nj=")), "a journal is left: {shape:?}");
    // qemu-img read the old leaf to write the new one's header: the master
    // loaded it read-only (and let it go after), as the member alone writes it.
    let read_write = pool.vg.vg.state().loaded_read_write.clone();
    assert!(!read_write.iter().any(|lv| lv == KEY), "the old leaf read-write on two hosts: {read_write:?}");
    assert!(pool.vg.vg.ran(0, "lvm lvchange").iter().any(|c| c.contains(&format!("-ay {VG}/{KEY}"))), "read here");
}

/// Issue 18: a member that hands the volume to its VM through blkback is
/// refused, naming the host, both reasons and `nvmetcp doctor` there; the
/// member is never asked to switch and nothing is created.
#[test]
fn a_plain_volume_a_member_hands_to_blkback_is_refused_naming_the_host() {
    let pool = pool(plain());
    pool.mapped_on_member();
    let before = pool.vg.vg.shape();
    let (code, message) = pool.snapshot().unwrap_err();
    assert_eq!(code, "NVMETCP_SNAPSHOT_REFUSED", "{message}");
    for said in
        ["on host(s) xcp-2", "blkback", "no qcow2 driver", "datapath = blkback", "`nvmetcp doctor` on that host"]
    {
        assert!(message.contains(said), "{said:?} missing: {message}");
    }
    assert_eq!(pool.asked(), ["volume_mapped", "chain_serving"]);
    assert!(pool.member_ran().is_empty(), "{:?}", pool.member_ran());
    assert_eq!(pool.vg.vg.shape(), before);
}

/// Issue 18: a volume a member's engine serves read-only (a snapshot volume
/// attached for XO's export) is never swapped onto a writable leaf:
/// `chain_swap` refuses it, the disk is never paused, and the master undoes
/// the snapshot and says why.
#[test]
fn a_volume_a_member_serves_read_only_is_refused_by_its_chain_swap() {
    let pool = pool(plain());
    pool.served_on_member(Access::ReadOnly);
    let before = pool.vg.vg.shape();
    let (code, message) = pool.snapshot().unwrap_err();
    assert_eq!(code, "NVMETCP_SNAPSHOT_REFUSED", "{message}");
    assert!(
        message.contains(&format!(
            "host xcp-2 did not switch the disk to the new leaf: volume {KEY} is attached read-only there"
        )),
        "{message}"
    );
    assert!(message.contains("detach it first"), "{message}");
    assert_eq!(pool.asked().last().map(String::as_str), Some("chain_swap"));
    assert!(pool.member_ran().iter().all(|c| !c.starts_with("tap-ctl")), "{:?}", pool.member_ran());
    assert_eq!(pool.vg.vg.shape(), before, "the snapshot is undone");
    assert_eq!(open_here(&pool.member.host(), SR, KEY).unwrap().leaf.path_str(), format!("/dev/{VG}/{KEY}"));
}

/// `376a09d`: a layered volume no host's engine serves is checked in use
/// before it is snapshotted at rest: active on a member, it is refused
/// naming that host; active nowhere, it is snapshotted at rest.
#[test]
fn a_layered_volume_no_engine_serves_is_snapshotted_at_rest_only_when_in_use_nowhere() {
    let layered = || {
        let pool = pool(plain());
        pool.snapshot().unwrap();
        pool.master_tree.write("/proc/sys/kernel/random/uuid", "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e13\n");
        pool
    };
    let pool = layered();
    pool.mapped_on_member();
    let before = pool.vg.vg.shape();
    pool.asked.lock().unwrap().clear();
    let (code, message) = pool.snapshot().unwrap_err();
    assert_eq!(code, "NVMETCP_SNAPSHOT_REFUSED", "{message}");
    assert!(message.contains("on host(s) xcp-2"), "{message}");
    assert_eq!(pool.asked(), ["chain_serving", "volume_mapped", "chain_serving"]);
    assert_eq!(pool.vg.vg.shape(), before, "nothing is created");

    let pool = layered();
    pool.asked.lock().unwrap().clear();
    let snapshot = pool.snapshot().unwrap();
    assert_eq!(snapshot["key"], "vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e13", "{snapshot}");
    assert!(!pool.asked().contains(&"chain_swap".to_owned()), "at rest: {:?}", pool.asked());
    assert!(pool.member_ran().is_empty(), "{:?}", pool.member_ran());
}
