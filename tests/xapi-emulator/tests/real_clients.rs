//! Real XAPI clients against the emulator: the official Python SDK (PyPI
//! `XenAPI`) and Xen Orchestra's connector (npm `xen-api`, over JSON-RPC,
//! XML-RPC and its automatic choice) log in, list SM records, create a
//! shared nvmetcp SR and read it back. A mismatch with real XAPI found this
//! way is fixed in the emulator. The clients are installed by
//! `tests/xapi-peers/prepare`; without them this test fails.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // a test program running the peers directly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use xapi_emulator::{AcceptAll, Config, Emulator};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn peers() -> PathBuf {
    let dir =
        std::env::var_os("NVMETCP_PEERS_DIR").map_or_else(|| root().join(".testbed-cache/xapi-peers"), PathBuf::from);
    assert!(
        dir.join("venv/bin/python").exists() && dir.join("node/node_modules/xen-api").exists(),
        "the real XAPI clients are not installed in {}: run tests/xapi-peers/prepare",
        dir.display()
    );
    dir
}

fn emulated_pool() -> String {
    let config = Config { hosts: vec!["xcp-ng-1".into(), "xcp-ng-2".into(), "xcp-ng-3".into()], ..Config::default() };
    Emulator::new(config, AcceptAll).listen_http().unwrap()
}

/// Runs `command`, killing it after two minutes.
fn run(mut command: Command) -> Output {
    let mut child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn assert_passed(who: &str, output: &Output, checks: &[&str]) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{who} failed ({}):\n{stdout}\n{stderr}", output.status);
    for check in checks {
        assert!(
            stdout.lines().any(|l| l == format!("ok: {check}")),
            "{who} did not report {check:?}:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn python_xenapi_sdk_creates_and_reads_a_shared_sr() {
    let peers = peers();
    let mut command = Command::new(peers.join("venv/bin/python"));
    command.arg(root().join("tests/xapi-peers/xenapi_peer.py")).arg(emulated_pool());
    let output = run(command);
    assert_passed(
        "XenAPI (Python)",
        &output,
        &[
            "logged in",
            "a wrong password is refused",
            "SM records list nvmetcp",
            "the SR is a shared nvmetcp SR",
            "strings keep their spaces",
            "int64 fields arrive as decimal strings",
            "one PBD per host",
            "a plugged SR cannot be forgotten",
            "Async.SR.scan finished through its task",
            "logged out",
        ],
    );
}

#[test]
fn xen_orchestra_connector_creates_and_reads_a_shared_sr_over_each_transport() {
    let peers = peers();
    // Node resolves `xen-api` next to the script, so the script runs from
    // the directory that holds the installed package.
    let script = peers.join("node/xen_api_peer.mjs");
    std::fs::copy(root().join("tests/xapi-peers/xen_api_peer.mjs"), &script).unwrap();
    for transport in ["json-rpc", "xml-rpc", "auto"] {
        let mut command = Command::new("node");
        command.arg(&script).arg(emulated_pool()).arg(transport);
        let output = run(command);
        assert_passed(
            &format!("xen-api ({transport})"),
            &output,
            &[
                "connected and logged in",
                "SM records list nvmetcp",
                "SR.create returned an SR ref",
                "the SR is a shared nvmetcp SR",
                "strings keep their spaces",
                "one PBD per host",
                "the event-fed cache holds the SR",
                "Async.SR.scan finished through its task",
                "an async result ref decoded from task.result",
                "disconnected",
            ],
        );
    }
}
