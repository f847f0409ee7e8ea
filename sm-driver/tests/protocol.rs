//! The plugin binary driven through method links exactly as
//! xapi-storage-script drives it: `<dir>/<Method> --json`, named parameters
//! on stdin, one JSON document on stdout. The harness rejects any reply that
//! is not exactly one JSON value (or a complete error record), so every test
//! here also checks that nothing else reaches stdout.

#![allow(clippy::unwrap_used)] // test helpers: a failed step is a failed test

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use smapi_harness::{Caller, Outcome, PluginTree, Reply};

const BINARY: &str = env!("CARGO_BIN_EXE_nvmetcp-plugin");

/// Links for implemented and unimplemented methods alike, one in lower case
/// to show the binary matches names case-insensitively.
fn tree() -> PluginTree {
    PluginTree::new(
        Path::new(BINARY),
        &[
            "Plugin.Query",
            "plugin.diagnostics",
            "SR.attach",
            "SR.stat",
            "SR.frobnicate",
            "Volume.create",
            "Volume.enable_cbt",
        ],
        &["Plugin.Query", "Plugin.diagnostics", "Datapath.attach", "Datapath.open", "SR.attach"],
    )
    .unwrap()
}

/// A caller whose logs go nowhere observable (a socket nobody listens on).
fn caller() -> Caller {
    Caller::new().env("NVMETCP_SYSLOG_SOCKET", "/nonexistent/log")
}

/// Checks what every reply must satisfy in protocol mode, then returns it.
fn checked(reply: Reply) -> Reply {
    assert!(reply.stdout.ends_with('\n') && reply.stdout.matches('\n').count() == 1, "one line: {:?}", reply.stdout);
    match &reply.outcome {
        Outcome::Success(_) => assert_eq!(reply.exit_code, 0),
        Outcome::Failure { .. } => assert_ne!(reply.exit_code, 0),
    }
    reply
}

fn call(dir: &Path, method: &str, params: &Value) -> Reply {
    checked(caller().call(dir, method, params).unwrap())
}

fn call_raw(dir: &Path, method: &str, stdin: &str) -> Reply {
    checked(caller().call_raw(dir, method, stdin.as_bytes()).unwrap())
}

#[test]
fn volume_plugin_query_matches_the_golden_shape() {
    let tree = tree();
    let reply = call(&tree.volume_dir(), "Plugin.Query", &json!({"dbg": "debug"}));
    let value = reply.value();
    assert_eq!(value["plugin"], "nvmetcp");
    assert_eq!(value["required_api_version"], "5.0");
    assert_eq!(value["required_cluster_stack"], json!([]));
    let features: Vec<&str> = value["features"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
    assert!(features.contains(&"SR_CREATE") && features.contains(&"VDI_CREATE"), "{features:?}");
    assert!(features.contains(&"VDI_SNAPSHOT") && features.contains(&"VDI_CLONE"), "issue 18 ships: {features:?}");
    for key in ["transport", "discovery", "portals", "nqn", "namespace", "force", "iopolicy", "dhchap_password"] {
        assert!(value["configuration"][key].as_str().is_some_and(|d| !d.is_empty()), "{key} undocumented");
    }
    let fields: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        [
            "configuration",
            "copyright",
            "description",
            "features",
            "name",
            "plugin",
            "required_api_version",
            "required_cluster_stack",
            "vendor",
            "version"
        ]
    );
}

#[test]
fn datapath_plugin_query_names_the_uri_scheme() {
    let tree = tree();
    let value = call(&tree.datapath_dir(), "Plugin.Query", &json!({"dbg": "register"})).value().clone();
    assert_eq!(value["plugin"], "nvmetcp");
    assert_eq!(value["required_api_version"], "5.0");
    assert_eq!(value["configuration"], json!({}));
    assert_ne!(value["name"], call(&tree.volume_dir(), "Plugin.Query", &json!({"dbg": "d"})).value()["name"]);
}

#[test]
fn method_names_match_case_insensitively() {
    let tree = tree();
    // The harness finds `Plugin.Query` for `plugin.query` as xapi does, and the
    // lower-case link `plugin.diagnostics` must be understood by the binary.
    assert_eq!(call(&tree.volume_dir(), "plugin.query", &json!({"dbg": "d"})).value()["plugin"], "nvmetcp");
    let report = call(&tree.volume_dir(), "Plugin.Diagnostics", &json!({"dbg": "d"})).value().clone();
    assert!(report.as_str().is_some_and(|r| r.contains("kernel:") && r.contains("NVMe subsystems:")), "{report}");
}

#[test]
fn diagnostics_is_a_useful_text_report() {
    let tree = tree();
    let report = call(&tree.datapath_dir(), "Plugin.diagnostics", &json!({"dbg": "d"})).value().clone();
    let report = report.as_str().unwrap();
    for needle in ["datapath plugin", "kernel: ", "nvme_tcp", "native multipath", "/etc/nvme/hostnqn", "lvm"] {
        assert!(report.contains(needle), "missing {needle:?} in\n{report}");
    }
}

#[test]
fn malformed_requests_get_invalid_request_errors() {
    let tree = tree();
    let dir = tree.volume_dir();
    for (stdin, needle) in [
        ("", "not valid JSON"),
        ("{\"dbg\":", "not valid JSON"),
        ("{\"dbg\":\"a\"} {\"dbg\":\"b\"}", "not valid JSON"),
        ("[\"dbg\"]", "an array, not a JSON object"),
        ("\"dbg\"", "a string, not a JSON object"),
        ("\u{feff}{}", "not valid JSON"),
    ] {
        let reply = call_raw(&dir, "Plugin.Query", stdin);
        let (code, params) = reply.failure();
        assert_eq!(code, "NVMETCP_INVALID_REQUEST", "{stdin:?}");
        assert!(params[0].contains(needle), "{stdin:?}: {params:?}");
    }
}

#[test]
fn missing_and_ill_typed_parameters_are_named() {
    let tree = tree();
    let dir = tree.volume_dir();
    let reply = call(&dir, "Plugin.Query", &json!({}));
    assert_eq!(reply.failure().0, "NVMETCP_INVALID_PARAMETER");
    assert_eq!(reply.failure().1[1..], ["Plugin.query", "dbg"]);
    let reply = call(&dir, "SR.attach", &json!({"dbg": "d"}));
    assert_eq!(reply.failure().1[0], "SR.attach needs the parameter 'configuration' (an object of strings)");
    let reply = call(&dir, "SR.attach", &json!({"dbg": "d", "configuration": {"nqn": 5}}));
    let (code, params) = reply.failure();
    assert_eq!(code, "NVMETCP_INVALID_PARAMETER");
    assert_eq!(
        params[0],
        "SR.attach: parameter 'configuration' must be an object of strings, not an object {\"nqn\":5}"
    );
    let reply = call(
        &dir,
        "Volume.create",
        &json!({"dbg": "d", "sr": "s", "name": "n", "description": "", "size": 1.5, "sharable": false}),
    );
    assert_eq!(reply.failure().1[2], "size");
    let reply = call(&dir, "Plugin.Query", &json!({"dbg": 7}));
    assert!(reply.failure().1[0].contains("'dbg' must be a string, not a number 7"));
}

#[test]
fn unknown_and_unimplemented_methods_are_explicit() {
    let tree = tree();
    let reply = call(&tree.volume_dir(), "SR.frobnicate", &json!({"dbg": "d"}));
    assert_eq!(reply.failure().0, "NVMETCP_UNKNOWN_METHOD");
    assert_eq!(reply.failure().1[1], "SR.frobnicate");
    let reply = call(&tree.datapath_dir(), "SR.attach", &json!({"dbg": "d", "configuration": {}}));
    assert_eq!(reply.failure().1[0], "'SR.attach' is not a method of the nvmetcp datapath plugin");
    let reply = call(&tree.volume_dir(), "Volume.enable_cbt", &json!({"dbg": "d", "sr": "x", "key": "k"}));
    let (code, params) = reply.failure();
    assert_eq!(code, "Unimplemented");
    assert!(params[0].starts_with("Volume.enable_cbt is not implemented by nvmetcp"), "{params:?}");
    assert_eq!(params[1], "Volume.enable_cbt");
    let reply =
        call(&tree.datapath_dir(), "Datapath.open", &json!({"dbg": "d", "uri": "nvmetcp://x", "persistent": true}));
    assert_eq!(reply.failure().1[1], "Datapath.open");
    let reply =
        call(&tree.datapath_dir(), "Datapath.attach", &json!({"dbg": "d", "uri": "nvmetcp://x", "domain": "5"}));
    let (code, params) = reply.failure();
    assert_eq!(code, "NVMETCP_VOLUME_INVALID");
    assert!(params[0].contains("\"nvmetcp://x\" is not an nvmetcp volume URI"), "{params:?}");
}

#[test]
fn error_records_carry_a_backtrace() {
    let tree = tree();
    let reply = call(&tree.volume_dir(), "Volume.enable_cbt", &json!({"dbg": "d", "sr": "x", "key": "k"}));
    let record: Value = serde_json::from_str(&reply.stdout).unwrap();
    let files = record["backtrace"]["files"].as_array().unwrap();
    assert!(files[0].as_str().unwrap().ends_with(".rs"), "{record}");
    assert!(record["backtrace"]["lines"][0].as_i64().unwrap() > 0);
    assert_eq!(record["backtrace"]["error"], record["params"][0]);
}

/// Receives what the plugin logs through a syslog socket of our own.
fn syslog_lines(f: impl FnOnce(&Caller)) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    f(&Caller::new().env("NVMETCP_SYSLOG_SOCKET", path.to_str().unwrap()));
    let mut lines = Vec::new();
    let mut buffer = vec![0; 65536];
    while let Ok(n) = socket.recv(&mut buffer) {
        lines.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    lines
}

#[test]
fn logs_go_to_syslog_local2_with_the_call_context() {
    let tree = tree();
    let lines = syslog_lines(|caller| {
        let ok = caller.call(&tree.volume_dir(), "Plugin.Query", &json!({"dbg": "OpaqueRef:42\n{\"trace\":1}"}));
        assert!(ok.unwrap().stderr.is_empty(), "nothing on stderr when syslog works");
        let failed = caller.call(
            &tree.volume_dir(),
            "Volume.enable_cbt",
            &json!({"dbg": "OpaqueRef:43", "sr": "my-sr", "key": "vol-7"}),
        );
        assert_eq!(failed.unwrap().failure().0, "Unimplemented");
    });
    assert!(lines.iter().all(|l| l.starts_with('<') && l.contains(">nvmetcp[")), "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains('\n')), "one record per line: {lines:#?}");
    let started = lines.iter().find(|l| l.contains("call started") && l.contains("OpaqueRef:42")).unwrap();
    assert!(started.starts_with("<151>"), "LOCAL2 (18) * 8 + debug (7): {started}");
    assert!(started.contains("method=Plugin.query"), "{started}");
    let failed = lines.iter().find(|l| l.contains("call failed")).unwrap();
    assert!(failed.starts_with("<147>"), "LOCAL2 error: {failed}");
    assert!(failed.contains("dbg=OpaqueRef:43") && failed.contains("sr=my-sr"), "{failed}");
    assert!(failed.contains("Volume.enable_cbt is not implemented") && failed.contains("volume=vol-7"), "{failed}");
}

#[test]
fn calls_work_without_syslog() {
    let tree = tree();
    let reply = call(&tree.volume_dir(), "Plugin.Query", &json!({"dbg": "d"}));
    assert_eq!(reply.value()["plugin"], "nvmetcp");
    assert!(reply.stderr.contains("syslog is unavailable"), "{}", reply.stderr);
}

/// Runs the binary as a person would.
fn run_binary(args: &[&str]) -> (i32, String, String) {
    #[allow(clippy::disallowed_methods)] // running the product binary, as a person would
    let output = std::process::Command::new(BINARY)
        .args(args)
        .env("NVMETCP_SYSLOG_SOCKET", "/nonexistent/log")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.code().unwrap(), text(output.stdout), text(output.stderr))
}

#[test]
fn people_get_the_same_answers_pretty_printed() {
    let (code, stdout, _) = run_binary(&["Plugin.Query"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("{\n  \""), "{stdout}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["plugin"], "nvmetcp");
    let (code, stdout, _) = run_binary(&["Volume.enable_cbt", "sr=x", "key=k"]);
    assert_eq!(code, 1);
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["code"], "Unimplemented");
    let (code, stdout, _) = run_binary(&["--datapath", "Plugin.Query"]);
    assert_eq!((code, serde_json::from_str::<Value>(&stdout).unwrap()["name"].as_str()), (0, Some("nvmetcp datapath")));
}

#[test]
fn help_version_and_usage_errors() {
    let (code, stdout, _) = run_binary(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("USAGE") && stdout.contains("volume plugin:   Plugin.Query Plugin.diagnostics"),
        "{stdout}"
    );
    let (code, stdout, _) = run_binary(&["--version"]);
    assert_eq!((code, stdout.starts_with("nvmetcp-plugin ")), (0, true));
    let (code, stdout, stderr) = run_binary(&["--bogus"]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert!(stderr.contains("unknown option '--bogus'"), "{stderr}");
    let (code, stdout, stderr) = run_binary(&[]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert!(stderr.contains("no method given"), "{stderr}");
}
