//! The admin command against the XAPI emulator with a multi-host pool: a host
//! that fails to plug, duplicate host NQNs, a missing SM record, a missing
//! host plugin, a namespace holding data, degraded paths, remote logins.

#![allow(clippy::unwrap_used)] // test helpers: a failed step is a failed test

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use nvmetcp_admin::console::Console;
use nvmetcp_admin::{run, Local};
use sm_driver::agent::status::AgentReport;
use sm_driver::cmd::FakeRunner;
use sm_driver::doctor::{Check, Verdict};
use sm_driver::status::{HostReport, PathReport, SrReport};
use sm_driver::xapi_fixture::XapiHost;
use xapi_client::Value;
use xapi_emulator::{Backend, Config, Emulator, Failure, HostInfo, SmType};

/// How one emulated host behaves.
#[derive(Clone, Default)]
struct HostBehaviour {
    nqn: String,
    plug_failure: Option<Failure>,
    no_plugin: bool,
    degraded: bool,
}

/// A pool whose hosts behave as configured, and whose storage offers one
/// namespace holding `holds`.
struct FakePool {
    hosts: BTreeMap<String, HostBehaviour>,
    holds: String,
    attached: Mutex<BTreeMap<String, String>>,
}

impl FakePool {
    fn behaviour(&self, host: &HostInfo) -> HostBehaviour {
        self.hosts.get(&host.name_label).cloned().unwrap_or_default()
    }
}

const NQN: &str = "nqn.2010-06.com.example:array1";
const NAMESPACE: &str = "uuid:6e1c4b1a-0d4e-4c3e-9f1a-2b3c4d5e6f70";

impl Backend for FakePool {
    fn sr_probe(&self, _host: &HostInfo, config: &BTreeMap<String, String>) -> Result<Vec<Value>, Failure> {
        let mut configuration = config.clone();
        configuration.insert("nqn".into(), NQN.into());
        configuration.insert("namespace".into(), NAMESPACE.into());
        let extra: BTreeMap<String, String> = [
            ("nsid".to_owned(), "1".to_owned()),
            ("size".to_owned(), (64u64 << 30).to_string()),
            ("paths".to_owned(), "2/2 paths live".to_owned()),
            ("holds".to_owned(), self.holds.clone()),
        ]
        .into();
        Ok(vec![Value::record([
            ("configuration", Value::map(&configuration)),
            ("complete", Value::Bool(true)),
            ("extra_info", Value::map(&extra)),
        ])])
    }

    fn pbd_plug(&self, host: &HostInfo, sr_uuid: &str, _config: &BTreeMap<String, String>) -> Result<(), Failure> {
        if let Some(failure) = self.behaviour(host).plug_failure {
            return Err(failure);
        }
        self.attached.lock().unwrap().insert(host.name_label.clone(), sr_uuid.to_owned());
        Ok(())
    }

    fn call_plugin(
        &self,
        host: &HostInfo,
        plugin: &str,
        function: &str,
        _args: &BTreeMap<String, String>,
    ) -> Result<String, Failure> {
        let behaviour = self.behaviour(host);
        if behaviour.no_plugin || plugin != "nvmetcp" {
            return Err(Failure::new("XENAPI_MISSING_PLUGIN", &[plugin]));
        }
        let json = match function {
            "host_identity" => serde_json::json!({"hostnqn": behaviour.nqn, "hostid": "x", "version": "0.1.0"}),
            "doctor" => serde_json::to_value(vec![Check {
                name: "native multipath".into(),
                verdict: Verdict::Pass,
                detail: "nvme_core.multipath=Y".into(),
                fix: String::new(),
            }])
            .unwrap(),
            "status" => {
                let srs = self
                    .attached
                    .lock()
                    .unwrap()
                    .get(&host.name_label)
                    .map(|uuid| {
                        let path = |portal: &str, live: bool| PathReport {
                            transport: "tcp".into(),
                            portal: portal.into(),
                            controller: Some("nvme0".into()),
                            state: if live { "live".into() } else { "connecting".into() },
                            ana_state: Some("optimized".into()),
                            live,
                        };
                        let paths = vec![path("10.0.1.10:4420", true), path("10.0.2.10:4420", !behaviour.degraded)];
                        let summary = if behaviour.degraded {
                            "degraded: 1/2 paths live (10.0.2.10:4420 connecting)".to_owned()
                        } else {
                            "2/2 paths live".to_owned()
                        };
                        vec![SrReport {
                            sr_uuid: uuid.clone(),
                            nqn: NQN.into(),
                            namespace: NAMESPACE.into(),
                            iopolicy: Some("round-robin".into()),
                            summary,
                            paths,
                            error: None,
                            initiator: Some(if behaviour.degraded { "userspace (/dev/nbd0)" } else { "kernel" }.into()),
                        }]
                    })
                    .unwrap_or_default();
                // The degraded host's agent is stopped.
                let agent = AgentReport {
                    running: !behaviour.degraded,
                    last_xapi_publish: Some(1_764_620_000),
                    last_rrd_write: Some(1_764_620_000),
                    rrdd_registered: true,
                    summary: if behaviour.degraded {
                        "not running (last seen 90s ago; systemctl status nvmetcp-agent)".into()
                    } else {
                        "running (pid 42); published to XAPI 3s ago, RRD written 2s ago".into()
                    },
                };
                let initiator = if behaviour.degraded {
                    "userspace initiator (Linux 4.19.19+1 has no nvme_tcp; XCP-ng 8.x kernels have none)"
                } else {
                    "kernel initiator (Linux 6.12.0: nvme_tcp loaded)"
                };
                let report = HostReport {
                    hostnqn: behaviour.nqn.clone(),
                    srs,
                    agent: Some(agent),
                    initiator: Some(initiator.into()),
                };
                serde_json::to_value(report).unwrap()
            }
            other => return Err(Failure::new("NVMETCP_UNKNOWN_FUNCTION", &[other])),
        };
        Ok(json.to_string())
    }
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

struct Pool {
    local: Local,
    xapi: XapiHost,
}

/// A pool of `hosts`; the command runs on the first, the master.
fn pool(hosts: &[(&str, HostBehaviour)], holds: &str, sm: bool) -> Pool {
    let config = Config {
        hosts: hosts.iter().map(|(name, _)| (*name).to_owned()).collect(),
        sm_types: if sm { vec![SmType::named("nvmetcp")] } else { vec![SmType::named("lvm")] },
        ..Config::default()
    };
    let backend = FakePool {
        hosts: hosts.iter().map(|(n, b)| ((*n).to_owned(), b.clone())).collect(),
        holds: holds.to_owned(),
        attached: Mutex::new(BTreeMap::new()),
    };
    let xapi = XapiHost::master(Emulator::new(config, backend), hosts[0].0);
    Pool { local: Local { host: xapi.root.clone(), runner: Box::new(FakeRunner::new()) }, xapi }
}

fn healthy(nqn: &str) -> HostBehaviour {
    HostBehaviour { nqn: nqn.into(), ..HostBehaviour::default() }
}

/// Runs `nvmetcp <args>`; returns (exit status, stdout, stderr).
fn nvmetcp(pool: &Pool, args: &[&str]) -> (i32, String, String) {
    let (out, err) = (Buffer::default(), Buffer::default());
    let mut console = Console::new(Box::new(out.clone()), Box::new(err.clone()), false);
    let argv: Vec<String> = std::iter::once("nvmetcp").chain(args.iter().copied()).map(str::to_owned).collect();
    let status = run(&argv, &pool.local, &mut console, false);
    (status, out.text(), err.text())
}

const CREATE: &[&str] = &["sr-create", "--name", "NVMe array", "--portals", "10.0.1.10,10.0.2.10", "--nqn", NQN];

#[test]
fn sr_create_reports_each_host_and_what_to_do_for_the_one_that_failed() {
    let broken = HostBehaviour {
        nqn: "nqn.2014-08.org.nvmexpress:uuid:3".into(),
        plug_failure: Some(Failure::new(
            "SR_BACKEND_FAILURE_NVMETCP_NO_PATH",
            &["no path to subsystem nqn.2010-06.com.example:array1 could be connected: 10.0.1.10:4420 refused"],
        )),
        ..HostBehaviour::default()
    };
    let pool = pool(
        &[("xcp-ng-1", healthy("nqn.a:1")), ("xcp-ng-2", healthy("nqn.a:2")), ("xcp-ng-3", broken)],
        "nothing: empty",
        true,
    );
    let (status, out, err) = nvmetcp(&pool, CREATE);
    assert_eq!(status, 3, "{out}\n{err}");
    assert!(out.contains("SR 'NVMe array'") && out.contains("created"), "{out}");
    let line = |host: &str| out.lines().find(|l| l.trim_start().starts_with(host)).unwrap_or_default().to_owned();
    assert!(line("xcp-ng-1").contains("attached") && line("xcp-ng-1").contains("2/2 paths live"), "{out}");
    assert!(line("xcp-ng-3").contains("NOT ATTACHED"), "{out}");
    assert!(out.contains("10.0.1.10:4420 refused") && out.contains("xe pbd-plug uuid="), "{out}");
    assert!(out.contains("attached on 2 of 3 hosts"), "{out}");
    assert!(err.contains("1/3") && err.contains("2/3") && err.contains("3/3"), "progress is shown: {err}");
    let srs = pool.xapi.emulator.records("SR");
    assert_eq!(srs.len(), 1);
    let pbd = &pool.xapi.emulator.records("PBD")[0].1;
    let config = pbd.as_struct("PBD").unwrap()["device_config"].as_string_map("dc").unwrap();
    assert_eq!(config["namespace"], NAMESPACE, "the namespace is named by its identity");
    assert!(!config.contains_key("force"));
}

#[test]
fn sr_create_refuses_a_namespace_holding_data_unless_forced() {
    let pool = pool(&[("xcp-ng-1", healthy("nqn.a:1"))], "it holds TYPE=\"xfs\"", true);
    let (status, _, err) = nvmetcp(&pool, CREATE);
    assert_eq!(status, 1, "{err}");
    assert!(
        err.contains("holds data (it holds TYPE=\"xfs\"): nothing was changed") && err.contains("--force"),
        "{err}"
    );
    assert!(pool.xapi.emulator.records("SR").is_empty(), "nothing was made");
    let mut forced = CREATE.to_vec();
    forced.push("--force");
    let (status, out, err) = nvmetcp(&pool, &forced);
    assert_eq!(status, 0, "{out}{err}");
    let pbd = &pool.xapi.emulator.records("PBD")[0].1;
    assert_eq!(pbd.as_struct("PBD").unwrap()["device_config"].as_string_map("dc").unwrap()["force"], "true");
}

#[test]
fn sr_create_without_the_sm_record_says_to_restart_the_toolstack() {
    let pool = pool(&[("xcp-ng-1", healthy("nqn.a:1"))], "nothing: empty", false);
    let (status, _, err) = nvmetcp(&pool, CREATE);
    assert_eq!(status, 1);
    assert!(err.contains("xe-toolstack-restart"), "{err}");
}

/// A host whose paths cannot be read is not counted healthy: the command
/// decides from the typed path states, never from the summary's words.
#[test]
fn sr_create_with_a_host_whose_paths_are_unknown_is_partial() {
    let unreadable = || HostBehaviour { no_plugin: true, ..healthy("nqn.a:2") };
    let two_hosts = || pool(&[("xcp-ng-1", healthy("nqn.a:1")), ("xcp-ng-2", unreadable())], "nothing: empty", true);
    let (status, out, err) = nvmetcp(&two_hosts(), CREATE);
    assert_eq!(status, 3, "{out}\n{err}");
    let line = out.lines().find(|l| l.trim_start().starts_with("xcp-ng-2")).unwrap_or_default();
    assert!(line.contains("attached") && line.contains("unknown ("), "{out}");
    let mut json = CREATE.to_vec();
    json.push("--json");
    let (_, out, _) = nvmetcp(&two_hosts(), &json);
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let health: Vec<&str> = parsed["hosts"].as_array().unwrap().iter().map(|h| h["health"].as_str().unwrap()).collect();
    assert_eq!(health, ["all_live", "unknown"], "{out}");
}

#[test]
fn doctor_pool_finds_duplicate_nqns_missing_plugins_and_registration() {
    let missing = HostBehaviour { no_plugin: true, ..healthy("nqn.a:3") };
    let pool = pool(
        &[("xcp-ng-1", healthy("nqn.clone")), ("xcp-ng-2", healthy("nqn.clone")), ("xcp-ng-3", missing)],
        "",
        false,
    );
    let (status, out, _) = nvmetcp(&pool, &["doctor", "--pool", "--portals", "10.0.1.10"]);
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("FAIL  host NQNs unique") && out.contains("xcp-ng-1 and xcp-ng-2 share nqn.clone"), "{out}");
    assert!(out.contains("FAIL  plugin installed") && out.contains("install the nvmetcp RPM on this host"), "{out}");
    assert!(out.contains("FAIL  SR type registered") && out.contains("xe-toolstack-restart"), "{out}");
    assert!(out.contains("PASS  native multipath"), "{out}");
    let (_, json, _) = nvmetcp(&pool, &["doctor", "--pool", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["hosts"].as_array().unwrap().len(), 3);
    assert_eq!(parsed["summary"]["failed"], 3);
}

#[test]
fn a_healthy_pool_passes_doctor() {
    let pool = pool(&[("xcp-ng-1", healthy("nqn.a:1")), ("xcp-ng-2", healthy("nqn.a:2"))], "", true);
    let (status, out, _) = nvmetcp(&pool, &["doctor", "--pool"]);
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("PASS  host NQNs unique") && out.contains("2 hosts, 2 distinct NQNs"), "{out}");
}

#[test]
fn status_shows_every_path_and_flags_a_degraded_host() {
    let degraded = HostBehaviour { degraded: true, ..healthy("nqn.a:2") };
    let pool = pool(&[("xcp-ng-1", healthy("nqn.a:1")), ("xcp-ng-2", degraded)], "nothing: empty", true);
    let (created, out, err) = nvmetcp(&pool, CREATE);
    assert_eq!(created, 3, "a degraded host makes the create partial: {out}{err}");
    let (status, out, _) = nvmetcp(&pool, &["status"]);
    assert_eq!(status, 3, "{out}");
    assert!(out.contains("SR 'NVMe array'"), "{out}");
    assert!(out.contains("DEGRADED: 1/2 PATHS LIVE"), "{out}");
    assert!(out.contains("tcp 10.0.2.10:4420") && out.contains("connecting optimized"), "{out}");
    assert!(out.contains("iopolicy round-robin"), "{out}");
    let (_, json, _) = nvmetcp(&pool, &["status", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["healthy"], false);
    assert_eq!(parsed["srs"][0]["hosts"].as_array().unwrap().len(), 2);
    assert!(out.contains("Host agents"), "{out}");
    assert!(out.contains("initiator userspace (/dev/nbd0)") && out.contains("initiator kernel"), "{out}");
    assert!(
        out.contains("NVMe/TCP initiators") && out.contains("userspace initiator (Linux 4.19.19+1 has no nvme_tcp"),
        "{out}"
    );
    assert!(out.contains("running (pid 42); published to XAPI 3s ago"), "{out}");
    assert!(out.contains("not running (last seen 90s ago"), "{out}");
    assert_eq!(parsed["agents"]["xcp-ng-1"]["running"], true);
    assert_eq!(parsed["agents"]["xcp-ng-2"]["running"], false);
}

#[test]
fn probe_lists_namespaces_and_what_they_hold() {
    let pool = pool(&[("xcp-ng-1", healthy("nqn.a:1"))], "it holds TYPE=\"LVM2_member\"", true);
    let (status, out, _) = nvmetcp(&pool, &["probe", "--discovery", "10.0.1.10"]);
    assert_eq!(status, 0, "{out}");
    assert!(out.contains(&format!("subsystem {NQN}")), "{out}");
    assert!(out.contains(NAMESPACE) && out.contains("64.0 GiB") && out.contains("LVM2_member"), "{out}");
    let (status, _, err) = nvmetcp(&pool, &["probe"]);
    assert_eq!(status, 2);
    assert!(err.contains("--portals") && err.contains("--discovery"), "{err}");
}

#[test]
fn remote_logins_take_the_password_from_a_file_never_argv() {
    let pool = pool(&[("xcp-ng-1", healthy("nqn.a:1"))], "", true);
    let url = pool.xapi.emulator.listen_http().unwrap();
    let (status, _, err) = nvmetcp(&pool, &["--host", &url, "status"]);
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("--password-file"), "{err}");
    let file = pool.local.host.path("/pw");
    std::fs::write(&file, "wrong\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (status, _, err) = nvmetcp(&pool, &["--host", &url, "--password-file", file.to_str().unwrap(), "status"]);
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("can be read by others (mode 644): run chmod 600"), "{err}");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (status, _, err) = nvmetcp(&pool, &["--host", &url, "--password-file", file.to_str().unwrap(), "status"]);
    assert_eq!(status, 4, "{err}");
    assert!(err.contains("SESSION_AUTHENTICATION_FAILED") && !err.contains("wrong"), "{err}");
    std::fs::write(&file, "xenroot\n").unwrap();
    let (status, out, err) = nvmetcp(&pool, &["--host", &url, "--password-file", file.to_str().unwrap(), "status"]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains("no nvmetcp SR"), "{out}");
    let (status, _, err) = nvmetcp(&pool, &["bogus"]);
    assert_eq!(status, 2, "{err}");
}

#[test]
fn host_setup_shows_a_diff_then_applies_once() {
    let mut pool = pool(&[("xcp-ng-1", healthy("nqn.a:1"))], "", true);
    let (status, out, _) = nvmetcp(&pool, &["host-setup"]);
    assert_eq!(status, 0);
    assert!(out.contains("+ net.ipv4.conf.all.arp_ignore = 2") && out.contains("nothing was written"), "{out}");
    assert!(!pool.local.host.exists("/etc/sysctl.d/90-nvmetcp.conf"));
    std::fs::create_dir_all(pool.local.host.path("/etc/sysctl.d")).unwrap();
    let runner = FakeRunner::new().then(Ok(sm_driver::cmd::Output { stdout: String::new(), stderr: String::new() }));
    pool.local.runner = Box::new(runner);
    let (status, out, _) = nvmetcp(&pool, &["host-setup", "--apply"]);
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("written and loaded"), "{out}");
    let (_, again, _) = nvmetcp(&pool, &["host-setup"]);
    assert!(again.contains("up to date"), "{again}");
}

#[test]
fn help_has_examples_and_exit_codes() {
    let pool = pool(&[("xcp-ng-1", healthy("nqn.a:1"))], "", true);
    let (status, out, _) = nvmetcp(&pool, &["--help"]);
    assert_eq!(status, 0);
    assert!(out.contains("EXAMPLES") && out.contains("EXIT STATUS") && out.contains("nvmetcp sr-create"), "{out}");
}
