//! Issue 18, reset-on-boot disks on a pool member, in process: the member
//! `xcp-2` runs what xapi-storage-script runs at such a VM's start and
//! shutdown (`Volume.clone`, `Volume.set`, `Volume.destroy`,
//! `Volume.unset`) through [`crate::entry::execute`], as the plugin binary
//! does. The in-process XAPI emulator ([`XapiHost`], one instance served on
//! both hosts' dom0 sockets) runs `host.call_plugin` as the real host plugin
//! ([`crate::host_plugin::run`]) of the host called: the master `xcp-1`,
//! whose VG is [`FakeVg`], or the member. The member runs no command at
//! all; the master's VG shows what it wrote.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use xapi_client::codec::{decode_envelope, parse_response, write_call, MethodResponse};
use xapi_client::Value;
use xapi_emulator::{Backend, Config, Emulator, Failure, HostInfo};

use super::answer;
use crate::cmd::{CmdError, Command, Output, Program, Runner};
use crate::context::Context;
use crate::entry::{execute, CallRequest, Input};
use crate::error::ErrorCode;
use crate::host::HostRoot;
use crate::nvme::sysfs::fixture::SysfsTree;
use crate::smapi::method::PluginKind;
use crate::snapshot::fake_vg::FakeVg;
use crate::xapi_fixture::XapiHost;

const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
const NQN: &str = "nqn.2024-01.io.example:array";
const WWID: &str = "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc";
/// [`FakeVg`]'s VG.
const VG: &str = "vgx";
/// The reset-on-boot disk's volume.
const KEY: &str = "vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
/// What the master's `/proc/sys/kernel/random/uuid` gives the clone.
const UUID: &str = "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e12";

/// A host with the SR attached over one live path, in pool role `role`.
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

/// The master's LVM and `qemu-img`: the shared [`FakeVg`].
#[derive(Clone)]
struct MasterTools(Arc<FakeVg>);

impl Runner for MasterTools {
    fn resolve(&self, program: Program) -> Result<PathBuf, CmdError> {
        self.0.resolve(program)
    }

    fn start_detached(&self, command: &Command) -> Result<u32, CmdError> {
        self.0.start_detached(command)
    }

    fn run(&self, command: &Command) -> Result<Output, CmdError> {
        self.0.run(command)
    }
}

/// The member's tools: a forwarded call runs none.
struct NoTools;

impl Runner for NoTools {
    fn resolve(&self, program: Program) -> Result<PathBuf, CmdError> {
        panic!("the member resolves no {} for a forwarded call", program.name())
    }

    fn start_detached(&self, command: &Command) -> Result<u32, CmdError> {
        panic!("the member starts nothing for a forwarded call: {command}")
    }

    fn run(&self, command: &Command) -> Result<Output, CmdError> {
        panic!("the member runs nothing for a forwarded call: {command}")
    }
}

/// Each host's real host plugin, reached through `host.call_plugin`.
struct Plugins {
    master: HostRoot,
    vg: Arc<FakeVg>,
    member: HostRoot,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Backend for Plugins {
    fn call_plugin(
        &self,
        host: &HostInfo,
        plugin: &str,
        function: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<String, Failure> {
        assert_eq!(plugin, "nvmetcp");
        self.asked.lock().unwrap().push(format!("{} {function}", host.name_label));
        let ctx = match host.name_label.as_str() {
            "xcp-1" => Context::fake(self.master.clone(), Box::new(MasterTools(Arc::clone(&self.vg)))),
            _ => Context::fake(self.member.clone(), Box::new(NoTools)),
        };
        let args = Value::record(args.iter().map(|(k, v)| (k.as_str(), Value::from(v.as_str()))));
        let request = write_call(function, &[Value::from("OpaqueRef:session"), args]);
        let reply = crate::host_plugin::run(&ctx, &request);
        let MethodResponse::Value(envelope) = parse_response(&reply).unwrap() else { panic!("{reply}") };
        match decode_envelope(envelope) {
            Ok(value) => Ok(value.as_str("r").unwrap().to_owned()),
            Err(failure) => {
                let failure = failure.unwrap();
                let params: Vec<&str> = failure.params.iter().map(String::as_str).collect();
                Err(Failure::new(&failure.code, &params))
            }
        }
    }
}

/// The master `xcp-1` and the member `xcp-2`, one XAPI between them.
struct Pool {
    master: XapiHost,
    member: XapiHost,
    vg: Arc<FakeVg>,
    asked: Arc<Mutex<Vec<String>>>,
    _trees: (SysfsTree, SysfsTree),
}

fn pool() -> Pool {
    let master_tree = attached_host("master\n");
    master_tree.write("/proc/sys/kernel/random/uuid", &format!("{UUID}\n"));
    master_tree.write("/proc/sys/kernel/hostname", "xcp-1\n");
    let member_tree = attached_host("slave:10.0.0.1\n");
    let vg = Arc::new(FakeVg::named(VG, &[]).with_volumes(crate::volume::meta::VOLUME_TAG, &[KEY]));
    let asked = Arc::new(Mutex::default());
    let plugins = Plugins {
        master: master_tree.host(),
        vg: Arc::clone(&vg),
        member: member_tree.host(),
        asked: Arc::clone(&asked),
    };
    let config = Config { hosts: vec!["xcp-1".into(), "xcp-2".into()], ..Config::default() };
    let emulator = Emulator::new(config, plugins);
    let master = XapiHost::serve(master_tree.host(), emulator.clone(), "xcp-1");
    let member = XapiHost::serve(member_tree.host(), emulator, "xcp-2");
    vg.state().vg_tags =
        vec![format!("nvmetcp.uuid={SR}"), format!("nvmetcp.writer={}", master.uuid), "nvmetcp_sr".into()];
    Pool { master, member, vg, asked, _trees: (master_tree, member_tree) }
}

/// Runs `method` on `host` as xapi-storage-script does: the reply's JSON
/// and exit status. `runner` answers the host's commands.
fn call_with(host: &HostRoot, runner: Box<dyn Runner>, method: &str, body: &str) -> (serde_json::Value, i32) {
    let ctx = Context::fake(host.clone(), runner);
    let request =
        CallRequest { kind: PluginKind::Volume, method: method.into(), input: Input::JsonOnStdin, verbose: false };
    let reply = execute(&ctx, &request, &mut body.as_bytes());
    (serde_json::from_str(&reply.stdout).unwrap(), reply.exit_code)
}

fn volume(key: &str, extra: &str) -> String {
    format!(r#"{{"dbg":"t","sr":"nvmetcp://sr/{SR}","key":"{key}"{extra}}}"#)
}

impl Pool {
    /// `method` on the member, which runs no command.
    fn on_member(&self, method: &str, body: &str) -> (serde_json::Value, i32) {
        call_with(&self.member.root, Box::new(NoTools), method, body)
    }

    /// `method` on the master itself.
    fn on_master(&self, method: &str, body: &str) -> (serde_json::Value, i32) {
        call_with(&self.master.root, Box::new(MasterTools(Arc::clone(&self.vg))), method, body)
    }

    /// The plugin functions called since the last look, as `host function`.
    fn asked(&self) -> Vec<String> {
        std::mem::take(&mut *self.asked.lock().unwrap())
    }
}

/// Issue 18: a VM with a reset-on-boot disk starts and stops on a member:
/// `Volume.clone`, `Volume.set clone-on-boot`, `Volume.destroy` of the
/// clone and `Volume.unset` run on the master, which writes its VG; the
/// member prints the master's replies as its own and runs nothing.
#[test]
fn a_reset_on_boot_disk_starts_and_stops_on_a_member_through_the_master() {
    let pool = pool();
    let before = pool.vg.shape();
    let (clone, code) = pool.on_member("Volume.clone", &volume(KEY, ""));
    assert_eq!(code, 0, "{clone}");
    let clone_key = format!("vol-{UUID}");
    assert_eq!(clone["key"], clone_key.as_str(), "{clone}");
    assert!(pool.vg.shape().contains_key(&clone_key), "the master's VG holds the clone: {:?}", pool.vg.shape());
    let asked = pool.asked();
    assert_eq!(asked.first().map(String::as_str), Some("xcp-1 volume_call"), "{asked:?}");
    assert_eq!(asked.iter().filter(|a| a.ends_with("volume_call")).count(), 1, "{asked:?}");

    let set = format!(r#","k":"clone-on-boot","v":"{clone_key}""#);
    let (reply, code) = pool.on_member("Volume.set", &volume(KEY, &set));
    assert_eq!(code, 0, "{reply}");
    let (stat, _) = pool.on_master("Volume.stat", &volume(KEY, ""));
    assert_eq!(stat["keys"]["clone-on-boot"], clone_key.as_str(), "the master stored it: {stat}");

    let (reply, code) = pool.on_member("Volume.destroy", &volume(&clone_key, ""));
    assert_eq!(code, 0, "{reply}");
    let (reply, code) = pool.on_member("Volume.unset", &volume(KEY, r#","k":"clone-on-boot""#));
    assert_eq!((code, &reply), (0, &serde_json::Value::Null), "{reply}");
    let (stat, _) = pool.on_master("Volume.stat", &volume(KEY, ""));
    assert!(stat["keys"].get("clone-on-boot").is_none(), "{stat}");
    let after = pool.vg.shape();
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "the clone is gone: {after:?}");
    let asked = pool.asked();
    assert_eq!(asked.iter().filter(|a| a.ends_with("volume_call")).count(), 3, "{asked:?}");
}

/// The master's failure comes back to the member as the master's own
/// record (its code, its message), not as a transport error.
#[test]
fn a_failure_on_the_master_is_the_members_error_record() {
    let pool = pool();
    let before = pool.vg.shape();
    let missing = "vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9eff";
    let (record, code) = pool.on_member("Volume.clone", &volume(missing, ""));
    assert_eq!(code, 1, "{record}");
    let (on_master, _) = pool.on_master("Volume.clone", &volume(missing, ""));
    assert_eq!(record["code"], on_master["code"], "{record}");
    assert_eq!(record["params"], on_master["params"], "{record}");
    assert!(record["params"][0].as_str().unwrap().contains(missing), "{record}");
    assert_eq!(pool.vg.shape(), before);
}

/// A member whose master cannot be reached (no XAPI answers) writes nothing
/// and says so: `NVMETCP_POOL_UNREACHABLE`, naming the call and the master.
#[test]
fn a_member_that_cannot_reach_the_master_writes_nothing() {
    let member = attached_host("slave:10.0.0.1\n");
    let (record, code) = call_with(&member.host(), Box::new(NoTools), "Volume.clone", &volume(KEY, ""));
    assert_eq!((code, record["code"].as_str()), (1, Some("NVMETCP_POOL_UNREACHABLE")), "{record}");
    let message = record["params"][0].as_str().unwrap();
    for said in ["Volume.clone writes LVM metadata", "(master: 10.0.0.1)", "nothing was written", "xe host-list"] {
        assert!(message.contains(said), "{said:?} missing: {message}");
    }
    assert_eq!(record["params"][1], "Volume.clone");
}

/// The master's side takes only the forwarded methods, parses the request
/// again, and runs nothing on a host that is not the master (a forwarded
/// call is never forwarded again); the member passes that refusal on.
#[test]
fn the_master_side_refuses_other_methods_bad_requests_and_non_masters() {
    let pool = pool();
    let master = Context::fake(pool.master.root.clone(), Box::new(MasterTools(Arc::clone(&pool.vg))));
    let args = |method: &str, request: &str| {
        BTreeMap::from([("method".to_owned(), method.to_owned()), ("request".to_owned(), request.to_owned())])
    };
    for method in ["SR.destroy", "Volume.stat", "Datapath.attach", ""] {
        let (code, why) = answer(&master, &args(method, &volume(KEY, ""))).unwrap_err();
        assert_eq!(code, ErrorCode::BadPluginCall, "{method}");
        assert!(why[0].contains("is not one of Volume.create"), "{why:?}");
    }
    let reply = answer(&master, &args("Volume.set", &volume(KEY, r#","k":"x""#))).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["error"]["code"], "NVMETCP_INVALID_PARAMETER", "the request is parsed again: {reply}");
    let member = Context::fake(pool.member.root.clone(), Box::new(NoTools));
    let (code, why) = answer(&member, &args("Volume.clone", &volume(KEY, ""))).unwrap_err();
    assert_eq!(code, ErrorCode::NotMaster, "{why:?}");
    // XAPI's master is no master by its own pool.conf: the member prints its refusal.
    std::fs::write(pool.master.root.path("/etc/xensource/pool.conf"), "slave:10.0.0.2\n").unwrap();
    let before = pool.vg.shape();
    let (record, code) = pool.on_member("Volume.clone", &volume(KEY, ""));
    assert_eq!((code, record["code"].as_str()), (1, Some("NVMETCP_NOT_MASTER")), "{record}");
    assert!(record["params"][0].as_str().unwrap().contains("but it is not the master"), "{record}");
    assert_eq!(pool.vg.shape(), before);
}
