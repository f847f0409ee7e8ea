//! The XAPI host plugin `/etc/xapi.d/plugins/nvmetcp`, reached with
//! `host.call_plugin(host, "nvmetcp", <function>, args)` so one tool on the
//! pool master can ask every host about itself (the admin command's
//! `doctor --pool` and `status`).
//!
//! xapi runs the plugin with one argument, an XML-RPC `methodCall` whose
//! method is the function and whose parameters are the session ref and a
//! struct of string arguments; the plugin prints one XML-RPC
//! `methodResponse` holding XAPI's envelope: `Success` with a string value, or
//! `Failure` with `[code, params…]`, which xapi raises as an API error. The
//! session ref is never used or logged.

use std::collections::BTreeMap;

use xapi_client::codec::{failure, parse_call, success, write_response, Encoding};
use xapi_client::Value;

use crate::cmd::Runner;
use crate::context::Context;
use crate::diagnostics;
use crate::error::ErrorCode;
use crate::host::HostRoot;
use crate::nvme::identity::load_or_create;
use crate::nvme::names::{Portal, Transport};
use crate::plugin::VERSION;
use crate::smapi::method::PluginKind;

/// The functions, with what each returns.
const FUNCTIONS: &[(&str, &str)] = &[
    ("host_identity", "JSON {\"hostnqn\", \"hostid\", \"version\"}: this host's NVMe identity, created if missing"),
    ("diagnostics", "text: the Plugin.diagnostics report of this host"),
    ("doctor", "JSON [check…]: nvmetcp doctor's checks on this host; args transport=tcp|rdma, portals=a[:p],…"),
    ("status", "JSON: every nvmetcp SR attached on this host with each path's state"),
    ("pool_role", "text: this host's pool role from pool.conf (master, member, standalone or unknown)"),
    ("volume_mapped", "JSON {\"mapped\"}: whether volume args vg, lv is mapped (device-mapper) on this host"),
    (
        crate::pool_forward::FUNCTION,
        "JSON {\"result\"} or {\"error\"}: on the master, runs the Volume call args method, request (its JSON) a member forwarded",
    ),
];

fn identity(host: &HostRoot) -> Result<String, (ErrorCode, Vec<String>)> {
    let identity = load_or_create(host).map_err(|e| (ErrorCode::HostNotReady, vec![e.to_string()]))?;
    let json = serde_json::json!({
        "hostnqn": identity.nqn.as_str(),
        "hostid": identity.id.to_string(),
        "version": VERSION,
    });
    Ok(json.to_string())
}

fn doctor(
    host: &HostRoot,
    runner: &dyn Runner,
    args: &BTreeMap<String, String>,
) -> Result<String, (ErrorCode, Vec<String>)> {
    let bad = |why: String| (ErrorCode::BadPluginCall, vec![why]);
    let transport = match args.get("transport").map(String::as_str) {
        None | Some("") => Transport::Tcp,
        Some(t) => t.parse().map_err(|_| bad(format!("transport={t:?}: use tcp or rdma")))?,
    };
    let portals =
        crate::nvme::names::portal_list(args.get("portals").map(String::as_str).unwrap_or_default(), Portal::IO_PORT)
            .map_err(|e| bad(format!("portals: {}", e.why)))?;
    let checks = crate::doctor::run(host, runner, &crate::doctor::DoctorInput { transport, portals });
    serde_json::to_string(&checks).map_err(|e| (ErrorCode::InternalError, vec![e.to_string()]))
}

fn answer(ctx: &Context, function: &str, args: &BTreeMap<String, String>) -> Result<String, (ErrorCode, Vec<String>)> {
    let (host, runner) = (&ctx.host, ctx.runner.as_ref());
    if let Some(outcome) = crate::chain_member::answer(ctx, function, args) {
        return outcome;
    }
    match function {
        "host_identity" => identity(host),
        "diagnostics" => Ok(diagnostics::report(PluginKind::Volume, host, runner)),
        "doctor" => doctor(host, runner, args),
        "status" => serde_json::to_string(&crate::status::report(host))
            .map_err(|e| (ErrorCode::InternalError, vec![e.to_string()])),
        crate::writer_guard::ROLE_FUNCTION => Ok(crate::writer_guard::role_answer(host)),
        crate::pool_forward::FUNCTION => crate::pool_forward::answer(ctx, args),
        crate::pool_mappings::FUNCTION => {
            crate::pool_mappings::answer(host, args).map_err(|why| (ErrorCode::BadPluginCall, vec![why]))
        }
        other => {
            let known: Vec<String> = FUNCTIONS
                .iter()
                .chain(crate::chain_member::FUNCTIONS)
                .map(|(name, what)| format!("{name} ({what})"))
                .collect();
            Err((
                ErrorCode::UnknownFunction,
                vec![format!("the nvmetcp host plugin has no function {other:?}; it has: {}", known.join("; "))],
            ))
        }
    }
}

/// Answers one plugin call: `request` is the `methodCall` xapi passed as the
/// only argument; `ctx` is this host. Returns the `methodResponse` document
/// to print.
#[must_use]
pub fn run(ctx: &Context, request: &str) -> String {
    let outcome = match parse_call(request) {
        Err(e) => Err((ErrorCode::BadPluginCall, vec![format!("the request is not an XML-RPC call: {e}")])),
        Ok((function, params)) => {
            let args: BTreeMap<String, String> =
                params.get(1).and_then(|v| v.as_string_map("args").ok()).unwrap_or_default();
            let span = tracing::info_span!("host_plugin", function = %function, args = args.len());
            let _entered = span.enter();
            let outcome = answer(ctx, &function, &args);
            if let Err((code, _)) = &outcome {
                tracing::error!(%code, "host plugin call failed");
            }
            outcome
        }
    };
    let envelope = match outcome {
        Ok(text) => success(Value::String(text)),
        Err((code, params)) => failure(code.as_str(), &params),
    };
    write_response(&envelope, Encoding::Xapi)
}

#[cfg(test)]
mod tests {
    use xapi_client::codec::{decode_envelope, parse_response, write_call, MethodResponse};
    use xapi_client::Value;

    use super::run;
    use crate::cmd::FakeRunner;
    use crate::host::HostRoot;

    fn ctx(host: &HostRoot) -> crate::context::Context {
        crate::context::Context::fake(host.clone(), Box::new(FakeRunner::new()))
    }

    fn call(host: &HostRoot, function: &str) -> Result<Value, (String, Vec<String>)> {
        let request = write_call(function, &[Value::from("OpaqueRef:session"), Value::record::<&str>([])]);
        let reply = run(&ctx(host), &request);
        let MethodResponse::Value(envelope) = parse_response(&reply).unwrap() else { panic!("{reply}") };
        decode_envelope(envelope).map_err(|f| {
            let f = f.unwrap();
            (f.code, f.params)
        })
    }

    #[test]
    fn host_identity_is_created_once_and_reported_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        std::fs::create_dir_all(host.path("/proc/sys/kernel/random")).unwrap();
        std::fs::write(host.path("/proc/sys/kernel/random/uuid"), "5c1e5c1e-0000-4000-8000-00000000a11e\n").unwrap();
        let first = call(&host, "host_identity").unwrap();
        let json: serde_json::Value = serde_json::from_str(first.as_str("r").unwrap()).unwrap();
        assert!(json["hostnqn"].as_str().unwrap().starts_with("nqn.2014-08.org.nvmexpress:uuid:"), "{json}");
        assert_eq!(call(&host, "host_identity").unwrap(), first, "a second call keeps the identity");
    }

    #[test]
    fn unknown_functions_and_garbage_are_failures_that_say_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        let (code, params) = call(&host, "format_disks").unwrap_err();
        assert_eq!(code, "NVMETCP_UNKNOWN_FUNCTION");
        assert!(params[0].contains("host_identity") && params[0].contains("status"), "{params:?}");
        let reply = run(&ctx(&host), "<not xml");
        assert!(reply.contains("NVMETCP_BAD_PLUGIN_CALL"), "{reply}");
    }

    #[test]
    fn doctor_and_status_answer_json() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        let request = write_call(
            "doctor",
            &[
                Value::from("OpaqueRef:s"),
                Value::record([("transport", Value::from("rdma")), ("portals", Value::from("192.0.2.1"))]),
            ],
        );
        let reply = run(&ctx(&host), &request);
        let MethodResponse::Value(envelope) = parse_response(&reply).unwrap() else { panic!() };
        let text = decode_envelope(envelope).unwrap();
        let checks: Vec<crate::doctor::Check> = serde_json::from_str(text.as_str("r").unwrap()).unwrap();
        assert!(checks.iter().any(|c| c.name == "kernel module nvme_rdma"), "{checks:?}");
        assert!(checks.iter().any(|c| c.name == "MTU towards 192.0.2.1"), "{checks:?}");
        // RDMA portals have no TCP listener: reachability is the ping of the MTU check.
        assert!(!checks.iter().any(|c| c.name.starts_with("portal ")), "{checks:?}");
        let status = call(&host, "status").unwrap();
        let report: crate::status::HostReport = serde_json::from_str(status.as_str("r").unwrap()).unwrap();
        assert!(report.srs.is_empty());
        let bad = write_call("doctor", &[Value::from("s"), Value::record([("transport", Value::from("fc"))])]);
        assert!(run(&ctx(&host), &bad).contains("use tcp or rdma"));
    }

    #[test]
    fn diagnostics_is_the_plugin_report() {
        let dir = tempfile::tempdir().unwrap();
        let text = call(&HostRoot::at(dir.path()), "diagnostics").unwrap();
        assert!(text.as_str("r").unwrap().contains("kernel modules:"), "{text:?}");
    }
}
