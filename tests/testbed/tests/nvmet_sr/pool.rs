//! A pool of two test-bed guests for the cross-host scenarios: the master's
//! emulated XAPI relays `host.call_plugin` for the member through the shared
//! directory, and the member answers with its real host plugin
//! (`/etc/xapi.d/plugins/nvmetcp`, the plugin binary as xapi runs it). The
//! other way round, a member's emulated XAPI relays its calls to the master
//! (`serve-member-xapi`: a member forwarding a volume call to the master).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sm_driver::host::HostRoot;
use sm_driver::xapi_fixture::XapiHost;
use xapi_client::codec::{decode_envelope, parse_response, write_call, MethodResponse};
use xapi_client::Value;
use xapi_emulator::{Backend, Config, Emulator, Failure, HostInfo};

/// The master's name in the emulated pool; the member is [`MEMBER`].
const MASTER: &str = "master";
const MEMBER: &str = "member";

/// Relays plugin calls to the host `to`: `ask-N.json` out, `answer-N.json` back.
struct Relay {
    to: &'static str,
    dir: PathBuf,
    next: std::sync::atomic::AtomicU32,
}

impl Backend for Relay {
    fn call_plugin(
        &self,
        host: &HostInfo,
        plugin: &str,
        function: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<String, Failure> {
        if host.name_label != self.to || plugin != "nvmetcp" {
            return Err(Failure::new("XENAPI_MISSING_PLUGIN", &[plugin]));
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ask = serde_json::json!({ "function": function, "args": args }).to_string();
        let tmp = self.dir.join(format!("ask-{n}.tmp"));
        std::fs::write(&tmp, ask).unwrap();
        std::fs::rename(&tmp, self.dir.join(format!("ask-{n}.json"))).unwrap();
        let answer = self.dir.join(format!("answer-{n}.json"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !answer.exists() {
            if Instant::now() > deadline {
                return Err(Failure::new("HOST_OFFLINE", &[&host.name_label]));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let answer: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(answer).unwrap()).unwrap();
        if let Some(value) = answer["value"].as_str() {
            return Ok(value.to_owned());
        }
        let failure: Vec<String> = serde_json::from_value(answer["failure"].clone()).unwrap();
        let params: Vec<&str> = failure[1..].iter().map(String::as_str).collect();
        Err(Failure::new(&failure[0], &params))
    }
}

/// `serve-two-hosts DIR`: the master's XAPI on the dom0 socket for a pool of
/// `master` (this host, named in `/etc/xensource-inventory`) and `member`,
/// whose plugin calls go through `DIR`; serves until killed.
pub fn serve_two_hosts(args: &[String]) -> ExitCode {
    let [dir] = args else {
        eprintln!("usage: serve-two-hosts DIR");
        return ExitCode::FAILURE;
    };
    std::fs::create_dir_all(dir).unwrap();
    let config = Config { hosts: vec![MASTER.into(), MEMBER.into()], ..Config::default() };
    let relay = Relay { to: MEMBER, dir: dir.into(), next: 0.into() };
    let _xapi = XapiHost::serve(HostRoot::at("/"), Emulator::new(config, relay), MASTER);
    println!("serving");
    loop {
        std::thread::park();
    }
}

/// `serve-member-xapi DIR`: on the member, its own XAPI on the dom0 socket
/// for the same pool, as `member` (named in `/etc/xensource-inventory`),
/// whose plugin calls to the master go through `DIR`; serves until killed.
pub fn serve_member_xapi(args: &[String]) -> ExitCode {
    let [dir] = args else {
        eprintln!("usage: serve-member-xapi DIR");
        return ExitCode::FAILURE;
    };
    std::fs::create_dir_all(dir).unwrap();
    let config = Config { hosts: vec![MASTER.into(), MEMBER.into()], ..Config::default() };
    let relay = Relay { to: MASTER, dir: dir.into(), next: 0.into() };
    let _xapi = XapiHost::serve(HostRoot::at("/"), Emulator::new(config, relay), MEMBER);
    println!("serving");
    loop {
        std::thread::park();
    }
}

/// `answer-plugin DIR PLUGIN`: on the member, answers every `ask-N.json` in
/// `DIR` by running the host plugin `PLUGIN` with the XML-RPC call xapi would
/// pass; runs until killed.
pub fn answer_plugin(args: &[String]) -> ExitCode {
    let [dir, plugin] = args else {
        eprintln!("usage: answer-plugin DIR PLUGIN");
        return ExitCode::FAILURE;
    };
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir).unwrap();
    for n in 0.. {
        let ask = dir.join(format!("ask-{n}.json"));
        while !ask.exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let ask: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ask).unwrap()).unwrap();
        let function = ask["function"].as_str().unwrap();
        let args: BTreeMap<String, String> = serde_json::from_value(ask["args"].clone()).unwrap();
        let call = write_call(function, &[Value::from("OpaqueRef:session"), Value::map(&args)]);
        #[allow(clippy::disallowed_methods)] // test tooling: runs the host plugin as xapi does
        let output = std::process::Command::new(plugin).arg(call).output().unwrap();
        let reply = String::from_utf8(output.stdout).unwrap();
        let answer = match parse_response(&reply) {
            Ok(MethodResponse::Value(value)) => match decode_envelope(value) {
                Ok(Value::String(text)) => serde_json::json!({ "value": text }),
                Ok(other) => serde_json::json!({ "failure": ["NOT_A_STRING", format!("{other:?}")] }),
                Err(Some(f)) => {
                    let failure: Vec<String> = std::iter::once(f.code).chain(f.params).collect();
                    serde_json::json!({ "failure": failure })
                }
                Err(None) => serde_json::json!({ "failure": ["NOT_AN_ENVELOPE", reply] }),
            },
            _ => serde_json::json!({ "failure": ["BAD_REPLY", reply] }),
        };
        eprintln!("answered {function} {args:?}: {answer}");
        let tmp = dir.join(format!("answer-{n}.tmp"));
        std::fs::write(&tmp, answer.to_string()).unwrap();
        std::fs::rename(&tmp, dir.join(format!("answer-{n}.json"))).unwrap();
    }
    ExitCode::SUCCESS
}

/// `register-sr SOCKET SR_UUID`: records in the master's emulated XAPI what
/// `xe sr-create` would have left for the SR the plugin made: the SR and the
/// member's plugged PBD (the relay's plug is a no-op: the member attached it
/// itself). `nvmetcp status` lists SRs and hosts from these records.
pub fn register_sr(args: &[String]) -> ExitCode {
    let [socket, uuid] = args else {
        eprintln!("usage: register-sr SOCKET SR_UUID");
        return ExitCode::FAILURE;
    };
    let client = xapi_client::Client::new(xapi_client::Endpoint::Unix(socket.into()), xapi_client::Timeouts::default());
    let session = client.login(&xapi_client::Credentials::local_root(), "nvmet_sr").unwrap();
    let introduced = session
        .call(
            "SR.introduce",
            vec![
                Value::from(uuid.as_str()),
                Value::from("pool"),
                Value::from(""),
                Value::from(sm_driver::plugin::SR_TYPE),
                Value::from("user"),
                Value::from(true),
                Value::map(&BTreeMap::new()),
            ],
        )
        .unwrap();
    let sr = xapi_client::api::SrRef::decode(&introduced, "SR ref").unwrap();
    let hosts = xapi_client::api::host::get_all_records(&session).unwrap();
    let member = hosts.iter().find(|(_, h)| h.name_label == MEMBER).unwrap();
    let pbd = xapi_client::api::pbd::create(&session, &member.0, &sr, &BTreeMap::new()).unwrap();
    xapi_client::api::pbd::plug(&session, &pbd).unwrap();
    println!("registered {uuid}");
    ExitCode::SUCCESS
}

/// `forget-sr SOCKET SR_UUID`: undoes [`register_sr`] (PBDs unplugged and
/// destroyed, the SR forgotten), so later steps see the pool as before.
pub fn forget_sr(args: &[String]) -> ExitCode {
    let [socket, uuid] = args else {
        eprintln!("usage: forget-sr SOCKET SR_UUID");
        return ExitCode::FAILURE;
    };
    let client = xapi_client::Client::new(xapi_client::Endpoint::Unix(socket.into()), xapi_client::Timeouts::default());
    let session = client.login(&xapi_client::Credentials::local_root(), "nvmet_sr").unwrap();
    let sr = xapi_client::api::sr::get_by_uuid(&session, uuid).unwrap();
    for pbd in xapi_client::api::sr::get_record(&session, &sr).unwrap().pbds {
        xapi_client::api::pbd::unplug(&session, &pbd).unwrap();
        xapi_client::api::pbd::destroy(&session, &pbd).unwrap();
    }
    xapi_client::api::sr::forget(&session, &sr).unwrap();
    ExitCode::SUCCESS
}
