//! The fabric layer against the real kernel NVMe/TCP target and initiator, in
//! the test bed.
//!
//! This test binary plays two roles. On the host (the normal `cargo test`
//! run) it boots one test-bed guest with the scenarios below and checks each
//! one passed. Inside the guest, the scenarios set targets up with the
//! test bed's shell building blocks and run *this same binary* (visible at the
//! same path over 9p) with `NVMETCP_GUEST_STEP=1` and a step name, which calls
//! the fabric layer for real: discovery, attach, resolve, health, release.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a test program

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nvmetcp_testbed::{run_suite, two_role_main, Scenario};
use sm_driver::cmd::SystemRunner;
use sm_driver::host::HostRoot;
use sm_driver::nvme::checks::{ensure_auth_support, ensure_multipath, ensure_transport};
use sm_driver::nvme::connect::PathOrigin;
use sm_driver::nvme::discovery::{discover, Network, TcpNetwork, DISCOVERY_TIMEOUT};
use sm_driver::nvme::fabrics::KernelFabrics;
use sm_driver::nvme::health::{health, set_iopolicy, IoPolicy};
use sm_driver::nvme::identity::load_or_create;
use sm_driver::nvme::names::{DhchapKey, InterfaceName, Nqn, Portal, Transport};
use sm_driver::nvme::options::{Authentication, ConnectOptions, Timers};
use sm_driver::nvme::resolve::{resolve_head, APPEAR_TIMEOUT};
use sm_driver::nvme::sysfs::{controllers, NamespaceIdentity};
use sm_driver::nvme::users::{attach, release};

fn main() -> ExitCode {
    two_role_main("nvmet_fabric", guest_step, |exe| run_suite("fabric", &scenarios(exe)))
}

/// The scenarios, all in one boot.
fn scenarios(exe: &str) -> Vec<Scenario> {
    let step = exe.to_owned();
    vec![
        Scenario::script(
            "fabric-multipath",
            &format!(
                r#"
export NVMETCP_GUEST_STEP=1
T="{step}"
nqn=$(tb_simple_target fab 64 10.99.0.1 10.99.0.2)
uuid=$(cat "$TB_CFG/subsystems/$nqn/namespaces/1/device_uuid")
$T identity
$T discover 10.99.0.1:4420 10.99.0.2:4420 | tee discovered
grep -qx "$nqn tcp:10.99.0.1:4420 tcp:10.99.0.2:4420" discovered
$T attach sr1 "$nqn" tcp 10.99.0.1 10.99.0.2 | tee first
[ "$(grep -c '^created ' first)" = 2 ]
$T attach sr1 "$nqn" tcp 10.99.0.1 10.99.0.2 | tee second
[ "$(grep -c '^reused ' second)" = 2 ]
dev=$($T resolve "$nqn" 1 "$uuid")
tb_log "resolved $dev"
[ "$dev" = "$(tb_head "$nqn")" ]
heads=(/dev/nvme*n1)
[ ${{#heads[@]}} = 1 ]
$T health "$nqn" 2 10.99.0.1 10.99.0.2
$T resolve "$nqn" 1 11111111-2222-3333-4444-555555555555 && tb_fail "a wrong identity was accepted"
tb_unlink 2 "$nqn"
tb_wait 15 "the path to drop" tb_has_live_paths "$nqn" 1
$T health "$nqn" 1 10.99.0.1 10.99.0.2 | tee degraded
grep -q "degraded: 1/2 paths live (10.99.0.2:4420 connecting)" degraded
dd if=/dev/urandom of=block bs=64k count=1 status=none
dd if=block of="$dev" bs=64k oflag=direct status=none
dd if="$dev" of=readback bs=64k count=1 iflag=direct status=none
cmp block readback
tb_log "I/O goes on over one path"
tb_link 2 "$nqn"
tb_wait 30 "both paths back" tb_has_live_paths "$nqn" 2
$T health "$nqn" 2 10.99.0.1 10.99.0.2
$T attach sr2 "$nqn" tcp 10.99.0.1 10.99.0.2 >/dev/null
$T release sr1 | tee released1
grep -qx "disconnected:" released1
[ "$(tb_live_paths "$nqn")" = 2 ]
$T release sr2 | tee released2
grep -q "disconnected: nvme" released2
tb_wait 10 "the head to go away" sh -c "! test -e $dev"
$T release sr2 | grep -qx "disconnected:"
tb_log "released: no controller left"
"#
            ),
        ),
        Scenario::script(
            "fabric-referrals",
            &format!(
                r#"
export NVMETCP_GUEST_STEP=1
T="{step}"
nqn=$(tb_simple_target ref 32 10.99.0.1 10.99.0.2)
ref=$TB_CFG/ports/1/referrals/to-port-2
mkdir "$ref"
echo tcp >"$ref/addr_trtype"; echo ipv4 >"$ref/addr_adrfam"
echo 10.99.0.2 >"$ref/addr_traddr"; echo 4420 >"$ref/addr_trsvcid"
echo 1 >"$ref/enable"
$T discover 10.99.0.1:4420 | tee discovered
grep -qx "$nqn tcp:10.99.0.1:4420 tcp:10.99.0.2:4420" discovered
rmdir "$ref"
# the subsystem's active namespace list, as SR.probe waits for it (NSID order, gaps kept)
tb_namespace "$nqn" 3 16
listed=$($T active-namespaces "$nqn" 10.99.0.1:4420)
[ "$listed" = "1 3" ] || tb_fail "active namespace list: $listed"
"#
            ),
        ),
        Scenario::script(
            "fabric-unreachable",
            &format!(
                r#"
export NVMETCP_GUEST_STEP=1
T="{step}"
nqn=$(tb_simple_target gone 32 10.99.0.1)
start=$(cut -d' ' -f1 /proc/uptime)
$T attach sr "$nqn" tcp 10.99.0.9 10.99.0.1:4999 10.99.0.1 | tee out || true
end=$(cut -d' ' -f1 /proc/uptime)
grep -q "^failed 10.99.0.9:4420: portal 10.99.0.9:4420 (subsystem $nqn) is unreachable from this host (no answer within 5s" out
grep -q "^failed 10.99.0.1:4999: portal 10.99.0.1:4999 (subsystem $nqn) is unreachable from this host (nothing listens.*): .*refused" out
grep -q "^created nvme" out
awk -v s="$start" -v e="$end" 'BEGIN {{ exit !(e - s < 20) }}' || tb_fail "took too long"
$T discover 10.99.0.9:4420 | tee disc || true
grep -q "discovery controller 10.99.0.9:4420 is unreachable" disc
$T release sr
"#
            ),
        ),
        Scenario::script(
            "fabric-auth",
            &format!(
                r#"
export NVMETCP_GUEST_STEP=1
T="{step}"
nqn=$TB_NQN_PREFIX:auth
tb_modules; tb_net_up 10.99.0.1; tb_subsystem "$nqn"; tb_namespace "$nqn" 1 32; tb_port 1 10.99.0.1; tb_link 1 "$nqn"
$T identity >/dev/null
host=$(cat /etc/nvme/hostnqn)
key=$(nvme gen-dhchap-key --nqn "$host"); ctrl=$(nvme gen-dhchap-key --nqn "$nqn"); wrong=$(nvme gen-dhchap-key --nqn "$host")
tb_allow_host "$nqn" "$host" "$key" "$ctrl"
$T attach nokey "$nqn" tcp 10.99.0.1 | tee out || true
grep -q "^failed 10.99.0.1:4420: cannot connect to subsystem $nqn at 10.99.0.1:4420: authentication failed" out
NVMETCP_HOST_KEY=$wrong $T attach wrong "$nqn" tcp 10.99.0.1 | tee out || true
grep -q "^failed 10.99.0.1:4420: .*authentication failed" out
if grep -q -- "$wrong" out; then tb_fail "a key reached the output"; fi
NVMETCP_HOST_KEY=$key NVMETCP_CTRL_KEY=$ctrl $T attach right "$nqn" tcp 10.99.0.1 | tee out
grep -q "^created nvme" out
$T resolve "$nqn" 1 >/dev/null
$T release right
"#
            ),
        ),
        Scenario::script(
            "fabric-rdma",
            &format!(
                r#"
export NVMETCP_GUEST_STEP=1
T="{step}"
nqn=$TB_NQN_PREFIX:rdma
TB_RDMA=1 tb_modules
tb_net_up 10.99.0.1
rdma link add rxe0 type rxe netdev "$TB_LINK"
tb_log "soft-RoCE: $(rdma link show | tr '\n' ' ')"
tb_subsystem "$nqn"; tb_namespace "$nqn" 1 32
tb_port 1 10.99.0.1 4420 rdma
tb_link 1 "$nqn"
uuid=$(cat "$TB_CFG/subsystems/$nqn/namespaces/1/device_uuid")
$T attach sr "$nqn" rdma 10.99.0.1 | tee out
grep -q "^created nvme" out
[ "$(cat /sys/class/nvme/nvme*/transport)" = rdma ]
dev=$($T resolve "$nqn" 1 "$uuid")
[ "$dev" = "$(tb_head "$nqn")" ]
dd if="$dev" of=/dev/null bs=64k count=16 iflag=direct status=none
$T attach sr "$nqn" rdma 10.99.0.1 | grep -q "^reused "
$T release sr | grep -q "disconnected: nvme"
tb_log "NVMe/RDMA over soft-RoCE: connected, resolved, read, released"
rdma link delete rxe0
"#
            ),
        ),
        Scenario::script(
            "fabric-malicious",
            &format!(
                r#"
export NVMETCP_GUEST_STEP=1
T="{step}"
$T malicious
"#
            ),
        ),
    ]
}

fn guest_step(args: &[String]) -> Result<(), String> {
    let host = HostRoot::system();
    let runner = SystemRunner::new();
    let (step, rest) = args.split_first().ok_or("no step")?;
    match step.as_str() {
        "identity" => {
            let identity = load_or_create(&host).map_err(|e| e.to_string())?;
            println!("{} {}", identity.nqn, identity.id);
        }
        "discover" => {
            let identity = load_or_create(&host).map_err(|e| e.to_string())?;
            let endpoints: Vec<Portal> =
                rest.iter().map(|e| Portal::parse(e, Portal::DISCOVERY_PORT).unwrap()).collect();
            let found = discover(&endpoints, &identity, DISCOVERY_TIMEOUT);
            for failure in &found.failures {
                println!("{failure}");
            }
            for subsystem in found.subsystems {
                let ports: Vec<String> = subsystem.ports.iter().map(|(t, p)| format!("{t}:{p}")).collect();
                println!("{} {}", subsystem.nqn, ports.join(" "));
            }
        }
        "active-namespaces" => {
            let [nqn, portal] = rest else { return Err("active-namespaces NQN PORTAL".into()) };
            let identity = load_or_create(&host).map_err(|e| e.to_string())?;
            let portal = Portal::parse(portal, Portal::IO_PORT).map_err(|e| e.to_string())?;
            let nsids =
                TcpNetwork.active_namespaces(portal, nqn, &identity, DISCOVERY_TIMEOUT).map_err(|e| e.to_string())?;
            let shown: Vec<String> = nsids.iter().map(ToString::to_string).collect();
            println!("{}", shown.join(" "));
        }
        "attach" => {
            let [user, nqn, transport, portals @ ..] = rest else {
                return Err("attach USER NQN TRANSPORT PORTAL...".into());
            };
            let transport: Transport =
                transport.parse().map_err(|e: sm_driver::nvme::names::InvalidValue| e.to_string())?;
            ensure_transport(&host, &runner, transport).map_err(|e| e.to_string())?;
            ensure_multipath(&host).map_err(|e| e.to_string())?;
            let identity = load_or_create(&host).map_err(|e| e.to_string())?;
            let key = |var: &str| std::env::var(var).ok().map(|k| k.parse::<DhchapKey>().unwrap());
            let auth = Authentication { host_key: key("NVMETCP_HOST_KEY"), ctrl_key: key("NVMETCP_CTRL_KEY") };
            if auth.host_key.is_some() {
                ensure_auth_support(&host, &KernelFabrics::new(host.clone())).map_err(|e| e.to_string())?;
            }
            let options: Vec<ConnectOptions> = portals
                .iter()
                .map(|p| ConnectOptions {
                    transport,
                    portal: Portal::parse(p, Portal::IO_PORT).unwrap(),
                    subsystem: nqn.parse().unwrap(),
                    host: identity.clone(),
                    host_iface: None,
                    host_traddr: None,
                    timers: Timers::default(),
                    auth: auth.clone(),
                })
                .collect();
            let results = attach(&host, &KernelFabrics::new(host.clone()), &TcpNetwork, user, &options)
                .map_err(|e| e.to_string())?;
            let mut ok = true;
            for (opts, result) in options.iter().zip(results) {
                match result {
                    Ok(path) => {
                        let how = if path.origin == PathOrigin::Created { "created" } else { "reused" };
                        println!("{how} {} {} {}", path.controller, opts.portal, path.state);
                    }
                    Err(error) => {
                        ok = false;
                        println!("failed {}: {}", opts.portal, sm_driver::error_chain::chain(&error));
                    }
                }
            }
            if !ok {
                return Err("some paths failed".into());
            }
            set_iopolicy(&host, nqn, IoPolicy::RoundRobin).map_err(|e| e.to_string())?;
        }
        "resolve" => {
            let [nqn, nsid, expected @ ..] = rest else { return Err("resolve NQN NSID [IDENTITY]".into()) };
            let expected = expected.first().map(|e| NamespaceIdentity::parse(e).unwrap());
            let nqn: Nqn = nqn.parse().unwrap();
            let found = resolve_head(&host, &nqn, nsid.parse().unwrap(), expected.as_ref(), APPEAR_TIMEOUT)
                .map_err(|e| e.to_string())?;
            println!("{}", found.device.display());
        }
        "health" => {
            let [nqn, expect_live, portals @ ..] = rest else { return Err("health NQN LIVE PORTAL...".into()) };
            let identity = load_or_create(&host).map_err(|e| e.to_string())?;
            let keys: Vec<_> = portals
                .iter()
                .map(|p| {
                    ConnectOptions {
                        transport: Transport::Tcp,
                        portal: Portal::parse(p, Portal::IO_PORT).unwrap(),
                        subsystem: nqn.parse().unwrap(),
                        host: identity.clone(),
                        host_iface: None,
                        host_traddr: None,
                        timers: Timers::default(),
                        auth: Authentication::default(),
                    }
                    .key()
                })
                .collect();
            let status = health(&host, &keys).map_err(|e| e.to_string())?;
            println!("{} (iopolicy {})", status.summary(), status.iopolicy.as_deref().unwrap_or_default());
            if status.live().to_string() != *expect_live {
                return Err(format!("expected {expect_live} live paths"));
            }
        }
        "release" => {
            let [user] = rest else { return Err("release USER".into()) };
            let released = release(&host, user).map_err(|e| e.to_string())?;
            println!("disconnected:{}", released.disconnected.iter().map(|n| format!(" {n}")).collect::<String>());
        }
        "malicious" => malicious(&host)?,
        other => return Err(format!("unknown step {other}")),
    }
    Ok(())
}

/// Field values that try to smuggle options are rejected before anything
/// reaches the kernel: no controller appears.
fn malicious(host: &HostRoot) -> Result<(), String> {
    let before = controllers(host).map_err(|e| e.to_string())?.len();
    let started = Instant::now();
    let nqns = ["nqn.x,traddr=10.99.0.1", "nqn.x\ntransport=tcp", "nqn.x=y", "nqn.a b"];
    for bad in nqns {
        if bad.parse::<Nqn>().is_ok() {
            return Err(format!("NQN {bad:?} accepted"));
        }
    }
    for bad in ["10.99.0.1,nqn=x", "10.99.0.1:4420,hostnqn=x", "10.99.0.1\nnqn=x", "[::1]:4420,x"] {
        if Portal::parse(bad, 4420).is_ok() {
            return Err(format!("portal {bad:?} accepted"));
        }
    }
    for bad in ["eth0,x", "eth0\ntransport=rdma", "a=b"] {
        if bad.parse::<InterfaceName>().is_ok() {
            return Err(format!("interface {bad:?} accepted"));
        }
    }
    let mut timers = Timers::default();
    for (name, bad) in
        [("keep_alive_tmo", "5,nqn=x"), ("ctrl_loss_tmo", "-1\nx"), ("nr_io_queues", "4,duplicate_connect")]
    {
        if timers.set(name, bad).is_ok() {
            return Err(format!("{name}={bad:?} accepted"));
        }
    }
    if "DHHC-1:00:ia6zGodOr5SEG2U6ZlzCNX3CoGKlUcO+aHF2Ypw6lSGGKBUq:,nqn=x".parse::<DhchapKey>().is_ok() {
        return Err("a key with a trailing option accepted".into());
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = controllers(host).map_err(|e| e.to_string())?.len();
    if after != before {
        return Err(format!("{} controller(s) appeared", after - before));
    }
    println!("all rejected in {:?}, no controller created", started.elapsed());
    Ok(())
}
