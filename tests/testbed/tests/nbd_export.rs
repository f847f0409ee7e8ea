//! The NBD serving side on the real kernel NBD driver, in the test bed: a
//! file-backed block device (on the guest's tmpfs, so it survives the
//! serving process) exported as `/dev/nbdN` through generic netlink, checked
//! with `fio --verify=crc32c`, the server SIGKILLed and restarted under I/O.
//!
//! Same two-role design as `nvmet_fabric.rs`: on the host it boots the guest;
//! in the guest the scenario runs this binary with `NVMETCP_GUEST_STEP=1`.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a test program

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use nvmetcp_initiator::block::BlockDevice;
use nvmetcp_initiator::nbd::export::{limit_request_size, Export, ExportConfig};
use nvmetcp_initiator::nbd::kernel::NbdNetlink;
use nvmetcp_initiator::testing::FileDevice;
use nvmetcp_testbed::{run_suite, Scenario};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("NVMETCP_GUEST_STEP").is_some() {
        return match guest_step(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("step failed: {message}");
                ExitCode::FAILURE
            }
        };
    }
    if args.iter().any(|a| a == "--list") {
        println!("nbd_export: test");
        return ExitCode::SUCCESS;
    }
    let exe = std::env::current_exe().unwrap().display().to_string();
    run_suite("nbd", &scenarios(&exe))
}

fn scenarios(exe: &str) -> Vec<Scenario> {
    vec![Scenario::script(
        "nbd-export-restart",
        &format!(
            r#"
export NVMETCP_GUEST_STEP=1
T="{exe}"
modprobe nbd nbds_max=4
img=/srv/testbed/ns.img
# 96 MiB of 4 KiB blocks, 64 KiB transfers (requests bigger than that are split).
$T serve "$img" 24576 state nvmetcp:sr-a >serve1.log 2>&1 &
server=$!
tb_wait 10 "the export" test -s state
read -r index kpid <state
dev=/dev/nbd$index
tb_log "serving $dev (kernel records pid $kpid, server $server)"
[ "$kpid" = "$server" ]
[ "$(cat /sys/block/nbd$index/pid)" = "$server" ]
[ "$(blockdev --getss "$dev")" = 4096 ]
[ "$(blockdev --getsize64 "$dev")" = $((24576 * 4096)) ]
[ "$(cat /sys/block/nbd$index/queue/max_sectors_kb)" = 64 ]
$T status "$index" | tee status
grep -qx "nbd$index connected" status
# A second export cannot take another SR's device.
$T adopt-check "$img" 24576 "$index" "$kpid" nvmetcp:sr-b 2>&1 | tee refused || true
grep -q "not this SR's device" refused

# fio writes with crc32c checksums while the server is SIGKILLed twice and
# restarted; then it reads everything back and verifies.
fio --name=verify --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 --numjobs=1 \
    --rw=randwrite --bsrange=4k-128k --size=64M --verify=crc32c --verify_fatal=1 \
    --do_verify=1 --output=fio.log &
fio=$!
for round in 1 2; do
    sleep 3
    kill -0 "$fio" || tb_fail "fio ended before round $round: the kill would not be under I/O"
    tb_log "round $round: SIGKILL server $server under I/O"
    kill -9 "$server"
    wait "$server" || true
    sleep 1
    $T serve "$img" 24576 state nvmetcp:sr-a >>serve2.log 2>&1 &
    server=$!
    tb_wait 10 "the restarted server to pick the device back up" grep -q "picked back up" serve2.log
    sed -i 's/picked back up/picked up (seen)/' serve2.log
done
wait "$fio" || {{ cat fio.log; tb_fail "fio failed"; }}
cat fio.log
grep -q "err= 0" fio.log
if dmesg | grep -E "I/O error, dev nbd$index|Buffer I/O error on dev nbd$index"; then
    tb_fail "the host saw I/O errors"
fi
dmesg | grep "nbd$index" | tail -5 || true
tb_log "RSS of the server: $(grep VmHWM /proc/$server/status)"
hwm=$(awk '/VmHWM/ {{print $2}}' /proc/$server/status)
[ "$hwm" -lt 65536 ]
$T disconnect "$index"
wait "$server"
tb_wait 10 "the device to empty" sh -c "! test -e /sys/block/nbd$index/pid"
cp serve1.log serve2.log "$SCENARIO_OUT/" || true
cp fio.log "$SCENARIO_OUT/"
tb_log "disconnected; server exited 0"
"#
        ),
    )
    .timeout_secs(400)]
}

const BLOCK: u32 = 4096;
const MAX_TRANSFER: u32 = 64 * 1024;

fn config(backend: &str) -> ExportConfig {
    // Short timeouts so requests of a killed server are retried quickly.
    ExportConfig { io_timeout_secs: 5, dead_conn_timeout_secs: 60, ..ExportConfig::for_backend(backend) }
}

fn guest_step(args: &[String]) -> Result<(), String> {
    let (step, rest) = args.split_first().ok_or("no step")?;
    let sys = Path::new("/sys");
    match (step.as_str(), rest) {
        ("serve", [image, blocks, state, backend]) => {
            let device: Arc<dyn BlockDevice> = Arc::new(
                FileDevice::open(Path::new(image), BLOCK, blocks.parse().unwrap(), MAX_TRANSFER)
                    .map_err(|e| e.to_string())?,
            );
            let export = match std::fs::read_to_string(state) {
                Ok(recorded) => {
                    let mut words = recorded.split_whitespace();
                    let index = words.next().unwrap().parse().unwrap();
                    let pid = words.next().unwrap().parse().unwrap();
                    let export = Export::adopt(device, config(backend), index, pid, sys).map_err(|e| e.to_string())?;
                    eprintln!("nbd{index} picked back up");
                    export
                }
                Err(_) => {
                    let export = Export::create(device, config(backend)).map_err(|e| e.to_string())?;
                    let index = export.index();
                    limit_request_size(sys, index, MAX_TRANSFER);
                    std::fs::write(state, format!("{index} {}\n", std::process::id())).map_err(|e| e.to_string())?;
                    eprintln!("nbd{index} connected");
                    export
                }
            };
            export.wait();
            eprintln!("disconnected");
        }
        ("adopt-check", [image, blocks, index, pid, backend]) => {
            let device: Arc<dyn BlockDevice> = Arc::new(
                FileDevice::open(Path::new(image), BLOCK, blocks.parse().unwrap(), MAX_TRANSFER)
                    .map_err(|e| e.to_string())?,
            );
            let pid: u32 = pid.parse().unwrap();
            match Export::adopt(device, config(backend), index.parse().unwrap(), pid, sys) {
                Ok(_) => return Err("another SR's device was adopted".into()),
                Err(error) => println!("{error}"),
            }
        }
        ("status", [index]) => {
            let netlink = NbdNetlink::open().map_err(|e| e.to_string())?;
            for device in netlink.status(Some(index.parse().unwrap())).map_err(|e| e.to_string())? {
                println!("nbd{} {}", device.index, if device.connected { "connected" } else { "idle" });
            }
        }
        ("disconnect", [index]) => {
            NbdNetlink::open()
                .map_err(|e| e.to_string())?
                .disconnect(index.parse().unwrap())
                .map_err(|e| e.to_string())?;
        }
        _ => return Err(format!("unknown step {args:?}")),
    }
    Ok(())
}
