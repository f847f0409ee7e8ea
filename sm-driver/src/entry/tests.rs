//! Tests of argv handling and of one call end to end, in process.

use super::{execute, parse_args, CallRequest, Input, Invocation, UsageError};
use crate::cmd::FakeRunner;
use crate::context::Context;
use crate::host::HostRoot;
use crate::smapi::method::PluginKind;

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn call(kind: PluginKind, method: &str, input: Input) -> Invocation {
    Invocation::Call(CallRequest { kind, method: method.to_owned(), input, verbose: false })
}

#[test]
fn links_name_the_method_and_their_directory_the_plugin() {
    let volume = "/usr/libexec/xapi-storage-script/volume/org.xen.xapi.storage.nvmetcp/Plugin.Query";
    assert_eq!(
        parse_args(volume, &args(&["--json"])),
        Ok(call(PluginKind::Volume, "Plugin.Query", Input::JsonOnStdin))
    );
    let datapath = "/usr/libexec/xapi-storage-script/datapath/nvmetcp/Plugin.Query";
    assert_eq!(
        parse_args(datapath, &args(&["--json"])),
        Ok(call(PluginKind::Datapath, "Plugin.Query", Input::JsonOnStdin))
    );
    let unknown = "/usr/libexec/xapi-storage-script/volume/org.xen.xapi.storage.nvmetcp/SR.frobnicate";
    assert_eq!(
        parse_args(unknown, &args(&["--json"])),
        Ok(call(PluginKind::Volume, "SR.frobnicate", Input::JsonOnStdin))
    );
}

#[test]
fn people_name_the_method_as_the_first_word() {
    let bin = "/usr/bin/nvmetcp-plugin";
    assert_eq!(
        parse_args(bin, &args(&["SR.stat", "sr=x"])),
        Ok(call(PluginKind::Volume, "SR.stat", Input::Words(args(&["sr=x"]))))
    );
    assert_eq!(
        parse_args(bin, &args(&["Datapath.attach", "uri=u", "domain=0"])),
        Ok(call(PluginKind::Datapath, "Datapath.attach", Input::Words(args(&["uri=u", "domain=0"]))))
    );
    assert_eq!(
        parse_args(bin, &args(&["--datapath", "Plugin.Query"])),
        Ok(call(PluginKind::Datapath, "Plugin.Query", Input::Words(vec![])))
    );
    assert_eq!(parse_args(bin, &args(&["--help"])), Ok(Invocation::Help));
    assert_eq!(parse_args(bin, &args(&["--version"])), Ok(Invocation::Version));
    assert_eq!(parse_args(bin, &[]), Err(UsageError::NoMethod));
    assert_eq!(parse_args(bin, &args(&["--frob"])), Err(UsageError::UnknownOption("--frob".into())));
    assert_eq!(parse_args(bin, &args(&["SR.stat", "--json", "sr=x"])), Err(UsageError::JsonAndWords));
}

fn context() -> Context {
    Context::fake(HostRoot::at("/nonexistent"), Box::new(FakeRunner::new()))
}

#[test]
fn unreadable_stdin_is_an_invalid_request() {
    struct Exploding;
    impl std::io::Read for Exploding {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("stdin closed early"))
        }
    }
    let request = CallRequest {
        kind: PluginKind::Volume,
        method: "Plugin.Query".into(),
        input: Input::JsonOnStdin,
        verbose: false,
    };
    let reply = execute(&context(), &request, &mut Exploding);
    assert_eq!(reply.exit_code, 1);
    let record: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
    assert_eq!(record["code"], "NVMETCP_INVALID_REQUEST");
    assert_eq!(record["backtrace"]["error"], "cannot read the parameters from stdin: stdin closed early");
}

#[test]
fn a_panicking_handler_becomes_an_internal_error() {
    let method = crate::smapi::method::Method::lookup("SR.stat").unwrap();
    let failure = super::contain_panics(method, || panic!("index out of bounds")).unwrap_err();
    let record = crate::error::to_error_record(&failure, "h1");
    assert_eq!(record.code, "NVMETCP_INTERNAL_ERROR");
    assert_eq!(
        record.params[0],
        "internal error in SR.stat: index out of bounds; please report it with /var/log/SMlog"
    );
    let ok = super::contain_panics(method, || Ok(serde_json::Value::Null)).unwrap();
    assert!(ok.is_null());
}

#[test]
fn unimplemented_and_unknown_methods_are_distinct_errors() {
    let run = |kind, method: &str| {
        let request = CallRequest { kind, method: method.into(), input: Input::JsonOnStdin, verbose: false };
        let reply = execute(&context(), &request, &mut &b"{\"dbg\":\"d\",\"sr\":\"s\",\"key\":\"k\"}"[..]);
        assert_eq!(reply.exit_code, 1);
        serde_json::from_str::<serde_json::Value>(&reply.stdout).unwrap()
    };
    assert_eq!(run(PluginKind::Volume, "Volume.enable_cbt")["code"], "Unimplemented");
    assert_eq!(run(PluginKind::Volume, "SR.frobnicate")["code"], "NVMETCP_UNKNOWN_METHOD");
    let wrong_plugin = run(PluginKind::Datapath, "SR.stat");
    assert_eq!(wrong_plugin["code"], "NVMETCP_UNKNOWN_METHOD");
    assert_eq!(wrong_plugin["params"][0], "'SR.stat' is not a method of the nvmetcp datapath plugin");
}

#[test]
fn people_get_pretty_json_and_dbg_defaults() {
    let request = CallRequest {
        kind: PluginKind::Volume,
        method: "plugin.query".into(),
        input: Input::Words(vec![]),
        verbose: false,
    };
    let reply = execute(&context(), &request, &mut std::io::empty());
    assert_eq!(reply.exit_code, 0);
    assert!(reply.stdout.starts_with("{\n"), "{}", reply.stdout);
    let value: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
    assert_eq!(value["plugin"], "nvmetcp");
}

#[test]
fn the_xapi_plugins_directory_makes_it_the_host_plugin() {
    let plugin = "/etc/xapi.d/plugins/nvmetcp";
    assert_eq!(parse_args(plugin, &args(&["<methodCall/>"])), Ok(Invocation::HostPlugin("<methodCall/>".into())));
    assert_eq!(parse_args(plugin, &args(&[])), Err(UsageError::HostPluginArgs));
    assert_eq!(
        parse_args("/usr/libexec/nvmetcp/nvmetcp-plugin", &args(&["--post-install"])),
        Ok(Invocation::PostInstall)
    );
    assert_eq!(parse_args("nvmetcp-plugin", &args(&["--list-links"])), Ok(Invocation::ListLinks));
}

#[test]
fn the_initiator_daemon_takes_exactly_the_sr_uuid() {
    let binary = "/usr/libexec/nvmetcp/nvmetcp-plugin";
    let sr = "0c9b6a43-6f3e-4bd4-9c3e-5e0d0c1a2b3c";
    assert_eq!(parse_args(binary, &args(&["--initiator-daemon", sr])), Ok(Invocation::InitiatorDaemon(sr.to_owned())));
    let wrong = Err(UsageError::InitiatorDaemonArgs("--initiator-daemon"));
    assert_eq!(parse_args(binary, &args(&["--initiator-daemon"])), wrong);
    assert_eq!(parse_args(binary, &args(&["--initiator-daemon", sr, "x"])), wrong);
    let supervise = parse_args(binary, &args(&["--initiator-supervise", sr]));
    assert_eq!(supervise, Ok(Invocation::InitiatorSupervise(sr.to_owned())));
    let wrong = Err(UsageError::InitiatorDaemonArgs("--initiator-supervise"));
    assert_eq!(parse_args(binary, &args(&["--initiator-supervise"])), wrong);
}

#[test]
fn the_link_list_is_the_implemented_methods_of_each_plugin() {
    let links = super::links();
    assert!(links.lines().any(|l| l == "volume/org.xen.xapi.storage.nvmetcp Plugin.Query"), "{links}");
    assert!(links.lines().any(|l| l == "datapath/nvmetcp Datapath.activate"), "{links}");
    let count = |kind| crate::dispatch::implemented(kind).len();
    assert_eq!(links.lines().count(), count(PluginKind::Volume) + count(PluginKind::Datapath));
    // Issue 18: snapshots and clones ship (xapi derives VDI_SNAPSHOT and VDI_CLONE from these).
    for method in ["Volume.snapshot", "Volume.clone"] {
        let link = format!("volume/org.xen.xapi.storage.nvmetcp {method}");
        assert!(links.lines().any(|l| l == link), "no {method} link: {links}");
    }
}

/// A handler's error record names this host (read through the injected
/// root, not the real one) and the line where the error was raised, not one
/// shared line of the plumbing.
#[test]
fn handler_errors_name_this_host_and_where_they_were_raised() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
    std::fs::write(dir.path().join("proc/sys/kernel/hostname"), "xcp-a\n").unwrap();
    let ctx = Context::fake(HostRoot::at(dir.path()), Box::new(FakeRunner::new()));
    let run = |method: &str, body: &str| {
        let request =
            CallRequest { kind: PluginKind::Volume, method: method.into(), input: Input::JsonOnStdin, verbose: false };
        let reply = execute(&ctx, &request, &mut body.as_bytes());
        assert_eq!(reply.exit_code, 1, "{}", reply.stdout);
        serde_json::from_str::<serde_json::Value>(&reply.stdout).unwrap()
    };
    let attach = run("SR.attach", r#"{"dbg":"d","uuid":"u","configuration":{"nqn":"bad nqn"}}"#);
    let stat = run("SR.stat", r#"{"dbg":"d","sr":"nvmetcp://sr/3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11"}"#);
    let handle = run("SR.stat", r#"{"dbg":"d","sr":"not-a-handle"}"#);
    for record in [&attach, &stat, &handle] {
        assert!(record["params"][0].as_str().unwrap().starts_with("on host xcp-a: "), "{record}");
        assert!(record["backtrace"]["error"].as_str().unwrap().starts_with("on host xcp-a: "), "{record}");
    }
    assert_eq!(attach["backtrace"]["files"][0], "sm-driver/src/sr/attach.rs", "{attach}");
    assert_eq!(stat["backtrace"]["files"][0], "sm-driver/src/sr/stat.rs", "{stat}");
    // A handle is parsed once, into the typed request, before any handler runs.
    assert_eq!(handle["backtrace"]["files"][0], "sm-driver/src/request.rs", "{handle}");
}

#[test]
fn the_agent_link_runs_the_agent_and_takes_no_arguments() {
    let agent = "/usr/libexec/nvmetcp/nvmetcp-agent";
    assert_eq!(parse_args(agent, &[]), Ok(Invocation::Agent));
    assert_eq!(parse_args(agent, &args(&["--help"])), Ok(Invocation::Help));
    assert_eq!(parse_args(agent, &args(&["SR.stat"])), Err(UsageError::UnknownOption("SR.stat".into())));
    assert!(super::usage().contains("nvmetcp-agent"));
}
