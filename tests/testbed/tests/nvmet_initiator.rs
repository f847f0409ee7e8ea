//! The userspace NVMe/TCP host (`nvmetcp-initiator`'s multipath device)
//! against the real kernel target in the test bed: connect, identify,
//! known data written and read back, compared with what the kernel's own
//! initiator reads (and the other way round), header and data digests, a
//! path cut and restored under verified I/O, and throughput beside the
//! kernel initiator's on the same namespace.
//!
//! Same two-role design as `nvmet_fabric.rs`: on the host this boots one
//! guest; inside it, the scenarios run this binary with `NVMETCP_GUEST_STEP=1`.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr, clippy::cast_possible_truncation)] // a test program

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nvmetcp_initiator::block::{BlockDevice, Outcome, Request};
use nvmetcp_initiator::config::parse_uuid;
use nvmetcp_initiator::{
    AuthKeys, DhchapSecret, HostIdentity, IoPolicy, Multipath, MultipathConfig, NamespaceIdentity, TransportOptions,
};
use nvmetcp_testbed::{run_suite, two_role_main, Scenario};

fn main() -> ExitCode {
    two_role_main("nvmet_initiator", guest_step, |exe| run_suite("initiator", &scenarios(exe)))
}

fn scenarios(exe: &str) -> Vec<Scenario> {
    let step = exe.to_owned();
    vec![
        Scenario::script(
            "uinit-data",
            &format!(
                r#"
export NVMETCP_GUEST_STEP=1
T="{step}"
nqn=$(tb_simple_target ui 64 10.99.0.1 10.99.0.2)
uuid=$(cat "$TB_CFG/subsystems/$nqn/namespaces/1/device_uuid")
$T write "$nqn" "$uuid" 0 8 expected 10.99.0.1:4420 10.99.0.2:4420 | tee state
grep -q "10.99.0.1:4420 Live Some(Optimized)" state
grep -q "10.99.0.2:4420 Live Some(Optimized)" state
tb_connect "$nqn" 10.99.0.1
has_head() {{ [ -n "$(tb_head "$nqn")" ]; }}
tb_wait 20 "the kernel's head" has_head
dev=$(tb_head "$nqn")
dd if="$dev" of=kernel-read bs=1M count=8 iflag=direct status=none
cmp expected kernel-read
tb_log "the kernel initiator reads what the userspace host wrote"
dd if=/dev/urandom of=kernel-wrote bs=1M count=8 status=none
dd if=kernel-wrote of="$dev" bs=1M seek=8 oflag=direct status=none
NVMETCP_DIGESTS=1 $T compare "$nqn" "$uuid" 8 8 kernel-wrote 10.99.0.2:4420 | tee digests
grep -q "identical" digests
tb_log "the userspace host (with digests) reads what the kernel wrote"
$T write "$nqn" 11111111-2222-3333-4444-555555555555 0 1 x 10.99.0.1:4420 >wrong 2>&1 && tb_fail "a wrong identity was accepted"
grep -q "another namespace sits at this NSID" wrong
echo "kernel: $(dd if="$dev" of=/dev/null bs=1M count=48 iflag=direct 2>&1 | tail -1)" | tee throughput
nvme disconnect -n "$nqn" >/dev/null
$T bench "$nqn" "$uuid" 48 10.99.0.1:4420 | tee -a throughput
cp throughput "$SCENARIO_OUT/throughput"
"#
            ),
        ),
        Scenario::script(
            "uinit-auth",
            &format!(
                r#"
export NVMETCP_GUEST_STEP=1
T="{step}"
nqn=$TB_NQN_PREFIX:ua
trap '[ $? = 0 ] || dmesg | grep nvmet | tail -20 >&2' EXIT
tb_modules; tb_net_up 10.99.0.1; tb_subsystem "$nqn"; tb_namespace "$nqn" 1 32; tb_port 1 10.99.0.1; tb_link 1 "$nqn"
uuid=$(cat "$TB_CFG/subsystems/$nqn/namespaces/1/device_uuid")
host=$(cat /etc/nvme/hostnqn)
dir=$TB_CFG/hosts/$host
# Target hash, host key transformation and length: every hash, with and without a transformed key.
for case in "sha256 1 32" "sha384 2 48" "sha512 3 64" "sha256 0 32"; do
    set -- $case
    key=$(nvme gen-dhchap-key --nqn "$host" --hmac="$2" --key-length="$3")
    ctrl=$(nvme gen-dhchap-key --nqn "$nqn" --hmac="$2" --key-length="$3")
    [ -e "$dir" ] || tb_allow_host "$nqn" "$host" "$key" "$ctrl"
    echo "$key" >"$dir/dhchap_key"; echo "$ctrl" >"$dir/dhchap_ctrl_key"
    echo "hmac($1)" >"$dir/dhchap_hash"; echo null >"$dir/dhchap_dhgroup"
    NVMETCP_HOST_KEY=$key $T write "$nqn" "$uuid" 0 1 out 10.99.0.1:4420 | grep -q "Live"
    NVMETCP_HOST_KEY=$key NVMETCP_CTRL_KEY=$ctrl $T write "$nqn" "$uuid" 1 1 out 10.99.0.1:4420 | grep -q "Live"
    tb_log "DH-HMAC-CHAP hmac($1), NULL group, key transform $2: host and bidirectional authentication"
done
# The RFC 7919 groups: the session key augments both challenges.
for group in ffdhe2048 ffdhe3072; do
    echo "$group" >"$dir/dhchap_dhgroup"
    NVMETCP_HOST_KEY=$key NVMETCP_CTRL_KEY=$ctrl $T write "$nqn" "$uuid" 2 1 out 10.99.0.1:4420 | grep -q "Live"
    tb_log "DH-HMAC-CHAP hmac(sha256), $group: bidirectional authentication"
done
echo null >"$dir/dhchap_dhgroup"
wrong=$(nvme gen-dhchap-key --nqn "$host")
$T write "$nqn" "$uuid" 0 1 out 10.99.0.1:4420 >nokey 2>&1 && tb_fail "no key was accepted"
grep -q "the target requires DH-HMAC-CHAP: configure the host key" nokey
NVMETCP_HOST_KEY=$wrong $T write "$nqn" "$uuid" 0 1 out 10.99.0.1:4420 >wrongkey 2>&1 && tb_fail "a wrong key was accepted"
grep -q "refused the host's credentials" wrongkey
NVMETCP_HOST_KEY=$key NVMETCP_CTRL_KEY=$wrong $T write "$nqn" "$uuid" 0 1 out 10.99.0.1:4420 >wrongctrl 2>&1 && tb_fail "a controller with the wrong key was trusted"
grep -q "the controller failed to prove its key" wrongctrl
if grep -qF -e "${{key#DHHC-1:}}" -e "${{wrong#DHHC-1:}}" -e "${{ctrl#DHHC-1:}}" nokey wrongkey wrongctrl; then tb_fail "a key reached the output"; fi
tb_log "missing, wrong host and wrong controller keys refused, no key in the output"
"#
            ),
        ),
        Scenario::script(
            "uinit-failover",
            &format!(
                r#"
export NVMETCP_GUEST_STEP=1
T="{step}"
nqn=$(tb_simple_target uf 32 10.99.0.1 10.99.0.2)
uuid=$(cat "$TB_CFG/subsystems/$nqn/namespaces/1/device_uuid")
NVMETCP_KATO=3 $T soak "$nqn" "$uuid" stop 400 10.99.0.1:4420 10.99.0.2:4420 >soak 2>&1 &
pid=$!
state() {{ grep '^paths:' soak | tail -n 1; }}
both_live() {{ state | grep -q "=Live .*=Live$"; }}
one_down() {{ state | grep -q "Connecting"; }}
tb_wait 60 "I/O over both paths" both_live
for round in 1 2 3; do
    tb_unlink 2 "$nqn"; tb_wait 30 "path 2 to drop" one_down
    tb_link 2 "$nqn"; tb_wait 30 "path 2 back" both_live
    tb_unlink 1 "$nqn"; tb_wait 30 "path 1 to drop" one_down
    tb_link 1 "$nqn"; tb_wait 30 "path 1 back" both_live
    tb_addr_del 10.99.0.2; tb_wait 30 "keep-alive to notice" one_down
    tb_addr_add 10.99.0.2; tb_wait 60 "address 2 back" both_live
    tb_log "round $round: 3 cuts and restores under verified I/O"
done
touch stop
wait "$pid" || {{ cat soak; tb_fail "the soak failed"; }}
cat soak
grep -q "errors 0 mismatches 0" soak
grep -Eq "losses (9|[1-9][0-9])" soak
cp soak "$SCENARIO_OUT/soak"
"#
            ),
        ),
    ]
}

fn open(nqn: &str, uuid: &str, portals: &[String]) -> Result<Multipath, String> {
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"));
    let host =
        HostIdentity::parse(&read("/etc/nvme/hostnqn")?, &read("/etc/nvme/hostid")?).map_err(|e| e.to_string())?;
    let digests = std::env::var_os("NVMETCP_DIGESTS").is_some();
    let config = MultipathConfig {
        subsystem_nqn: nqn.to_owned(),
        namespace: NamespaceIdentity { nsid: 1, uuid: Some(parse_uuid("uuid", uuid).map_err(|e| e.to_string())?) },
        portals: portals.iter().map(|p| p.parse().unwrap()).collect(),
        host,
        auth: match std::env::var("NVMETCP_HOST_KEY") {
            Ok(key) => Some(AuthKeys {
                host: DhchapSecret::new("dhchap_secret", &key).map_err(|e| e.to_string())?,
                ctrl: match std::env::var("NVMETCP_CTRL_KEY") {
                    Ok(c) => Some(DhchapSecret::new("dhchap_ctrl_secret", &c).map_err(|e| e.to_string())?),
                    Err(_) => None,
                },
            }),
            Err(_) => None,
        },
        iopolicy: IoPolicy::RoundRobin,
        transport: TransportOptions {
            // Short in the path-cut soak (a removed address is noticed by
            // keep-alive), the kernel's default elsewhere.
            keep_alive_tmo: Duration::from_secs(
                std::env::var("NVMETCP_KATO").ok().and_then(|k| k.parse().ok()).unwrap_or(5),
            ),
            reconnect_delay: Duration::from_secs(1),
            // The guest is emulated on a shared machine: commands can be slow.
            connect_timeout: Duration::from_secs(20),
            hdr_digest: digests,
            data_digest: digests,
            ..TransportOptions::default()
        },
    };
    Multipath::open(config).map_err(|e| e.to_string())
}

fn run(dev: &Multipath, request: Request) -> Outcome {
    let (tx, rx) = mpsc::channel();
    dev.submit(request, Box::new(move |o| tx.send(o).unwrap()));
    rx.recv_timeout(Duration::from_secs(120)).map_err(|_| nvmetcp_initiator::block::IoError::Closing)?
}

/// The byte pattern of the `mib`-th MiB written by `write`.
fn pattern(mib: u64) -> Vec<u8> {
    let mut state = mib.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn print_state(dev: &Multipath) {
    for p in dev.state().paths {
        println!(
            "{} {:?} {:?} queues {} errors {} losses {}",
            p.portal, p.status, p.ana, p.io_queues, p.errors, p.losses
        );
    }
}

fn guest_step(args: &[String]) -> Result<(), String> {
    let (step, rest) = args.split_first().ok_or("no step")?;
    match (step.as_str(), rest) {
        // write NQN UUID START_MIB MIB FILE PORTAL...: known data, in pieces of
        // several sizes, read back and compared; FILE gets what was written.
        ("write", [nqn, uuid, start, mib, file, portals @ ..]) => {
            let dev = open(nqn, uuid, portals)?;
            let g = dev.geometry();
            println!("geometry {g} max_transfer {}", g.max_transfer);
            let (start, mib): (u64, u64) = (start.parse().unwrap(), mib.parse().unwrap());
            let mut all = Vec::new();
            for m in start..start + mib {
                let data = pattern(m);
                let base = m << 20;
                let mut at = 0usize;
                for size in [4096usize, 8192, 65536, 131_072, 262_144].iter().cycle() {
                    if at >= data.len() {
                        break;
                    }
                    let n = (*size).min(data.len() - at);
                    run(&dev, Request::Write { offset: base + at as u64, data: data[at..at + n].to_vec(), fua: false })
                        .map_err(|e| format!("write at {}: {e}", base + at as u64))?;
                    at += n;
                }
                let back = run(&dev, Request::Read { offset: base, len: 1 << 20 }).map_err(|e| e.to_string())?;
                if back != data {
                    return Err(format!("MiB {m} read back differently"));
                }
                all.extend(data);
            }
            run(&dev, Request::Flush).map_err(|e| e.to_string())?;
            std::fs::write(file, all).map_err(|e| e.to_string())?;
            print_state(&dev);
        }
        // compare NQN UUID START_MIB MIB FILE PORTAL...
        ("compare", [nqn, uuid, start, mib, file, portals @ ..]) => {
            let dev = open(nqn, uuid, portals)?;
            let expected = std::fs::read(file).map_err(|e| e.to_string())?;
            let (start, mib): (u64, u32) = (start.parse().unwrap(), mib.parse().unwrap());
            let back = run(&dev, Request::Read { offset: start << 20, len: mib << 20 }).map_err(|e| e.to_string())?;
            if back != expected {
                return Err("the data differs from what the kernel wrote".into());
            }
            println!("identical: {} bytes", back.len());
        }
        // bench NQN UUID MIB PORTAL...: sequential 1 MiB writes then reads, 8 in flight.
        ("bench", [nqn, uuid, mib, portals @ ..]) => {
            let dev = open(nqn, uuid, portals)?;
            let mib: u64 = mib.parse().unwrap();
            for write in [true, false] {
                let start = Instant::now();
                let (tx, rx) = mpsc::channel::<Result<(), nvmetcp_initiator::block::IoError>>();
                let mut in_flight = 0;
                for m in 0..mib {
                    if in_flight == 8 {
                        rx.recv().unwrap().map_err(|e| e.to_string())?;
                        in_flight -= 1;
                    }
                    let tx = tx.clone();
                    let request = if write {
                        Request::Write { offset: m << 20, data: vec![0x5a; 1 << 20], fua: false }
                    } else {
                        Request::Read { offset: m << 20, len: 1 << 20 }
                    };
                    dev.submit(request, Box::new(move |o: Outcome| tx.send(o.map(|_| ())).unwrap()));
                    in_flight += 1;
                }
                for _ in 0..in_flight {
                    rx.recv().unwrap().map_err(|e| e.to_string())?;
                }
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "userspace {}: {mib} MiB in {secs:.2} s, {:.1} MB/s",
                    if write { "write" } else { "read" },
                    (mib << 20) as f64 / secs / 1e6
                );
            }
        }
        // soak NQN UUID STOPFILE MAX_SECONDS PORTAL...: writes and verifies
        // blocks from 4 threads while the scenario cuts paths, until STOPFILE
        // appears.
        ("soak", [nqn, uuid, stop_file, seconds, portals @ ..]) => {
            let dev = Arc::new(open(nqn, uuid, portals)?);
            let until = Instant::now() + Duration::from_secs(seconds.parse().unwrap());
            let stop_file = std::path::PathBuf::from(stop_file);
            let errors = Arc::new(AtomicU64::new(0));
            let mismatches = Arc::new(AtomicU64::new(0));
            let ops = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let workers: Vec<_> = (0..4u64)
                .map(|w| {
                    let (dev, errors, mismatches, ops) =
                        (Arc::clone(&dev), Arc::clone(&errors), Arc::clone(&mismatches), Arc::clone(&ops));
                    let stop_file = stop_file.clone();
                    std::thread::spawn(move || {
                        let mut round = 0u64;
                        while Instant::now() < until && !stop_file.exists() {
                            round += 1;
                            let offset = (w * 64 + round % 64) * 65536;
                            let data: Vec<u8> = (0..65536u64).map(|i| (i ^ round ^ w) as u8).collect();
                            if let Err(e) = run(&dev, Request::Write { offset, data: data.clone(), fua: false }) {
                                eprintln!("write error: {e}");
                                errors.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            match run(&dev, Request::Read { offset, len: 65536 }) {
                                Ok(back) if back == data => {}
                                Ok(_) => {
                                    mismatches.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    eprintln!("read error: {e}");
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            ops.fetch_add(2, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            let monitor = {
                let (dev, stop) = (Arc::clone(&dev), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let s: Vec<String> =
                            dev.state().paths.iter().map(|p| format!("{}={:?}", p.portal, p.status)).collect();
                        eprintln!("paths: {}", s.join(" "));
                        std::thread::sleep(Duration::from_millis(500));
                    }
                })
            };
            for w in workers {
                w.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            monitor.join().unwrap();
            let losses: u64 = dev.state().paths.iter().map(|p| p.losses).sum();
            println!(
                "ops {} errors {} mismatches {} losses {losses}",
                ops.load(Ordering::Relaxed),
                errors.load(Ordering::Relaxed),
                mismatches.load(Ordering::Relaxed)
            );
            print_state(&dev);
            if errors.load(Ordering::Relaxed) + mismatches.load(Ordering::Relaxed) > 0 {
                return Err("I/O errors or mismatches under path cuts".into());
            }
        }
        _ => return Err(format!("unknown step {step} {rest:?}")),
    }
    Ok(())
}
