//! The NBD serving side on the real kernel NBD driver, in the test bed: a
//! file-backed block device (on the guest's tmpfs, so it survives the
//! serving process) exported as `/dev/nbdN` through generic netlink, checked
//! with `fio --verify=crc32c`, the server SIGKILLed and restarted under I/O;
//! then the per-SR daemon (the same library the plugin binary's
//! `--initiator-daemon` runs, started without systemd) and the door; then
//! the SR story through the method links on a guest that cannot load
//! `nvme_tcp` (as XCP-ng 8.x), over the plugin's own daemon and supervisor
//! with the userspace NVMe/TCP host on the kernel target: SR.probe, a
//! retried SR.create, fio verifying through a volume while paths are cut,
//! the daemon is SIGKILLed and every path is down for 60 s, and each
//! initiator reading back what the other wrote.
//!
//! Same two-role design as `nvmet_fabric.rs`: on the host it boots the guest;
//! in the guest the scenario runs this binary with `NVMETCP_GUEST_STEP=1`.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a test program

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use nvmetcp_initiator::block::BlockDevice;
use nvmetcp_initiator::daemon::config::SrId;
use nvmetcp_initiator::daemon::run::run;
use nvmetcp_initiator::daemon::{door, Layout};
use nvmetcp_initiator::nbd::export::{limit_request_size, Export, ExportConfig};
use nvmetcp_initiator::nbd::kernel::NbdNetlink;
use nvmetcp_initiator::testing::FileDevice;
use nvmetcp_testbed::{plugin_binary, run_suite, two_role_main, Scenario};
use smapi_harness::{Caller, Outcome, PluginTree};

#[path = "nbd_export/linux_4_19.rs"]
mod linux_4_19;

fn main() -> ExitCode {
    two_role_main("nbd_export", guest_step, host_side)
}

fn host_side(exe: &str) -> ExitCode {
    // The SR scenario calls the plugin binary itself: build it, as installed.
    if !nvmetcp_testbed::build_under_test() {
        println!("0 passed, 1 failed");
        return ExitCode::FAILURE;
    }
    run_suite("nbd", &scenarios(exe))
}

fn scenarios(exe: &str) -> Vec<Scenario> {
    vec![
        Scenario::script(
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
        .timeout_secs(400),
        Scenario::script(
            "nbd-daemon",
            &format!(
                r#"
export NVMETCP_GUEST_STEP=1
T="{exe}"
modprobe nbd nbds_max=4
sr=0c9b6a43-6f3e-4bd4-9c3e-5e0d0c1a2b3c
dir=/run/nvmetcp/initiator
state=$dir/$sr.json
mkdir -p "$dir"
cat >"$dir/$sr.conf" <<CONF
sr = $sr
subsystem_nqn = nqn.2014-08.org.example:file
nsid = 1
portal = 127.0.0.1:4420
host_nqn = $(cat /etc/nvme/hostnqn)
host_id = $(cat /etc/nvme/hostid)
dhchap_secret = DHHC-1:00:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0:
nbd_connections = 3
nbd_io_timeout = 5
nbd_dead_conn_timeout = 60
CONF
chmod 644 "$dir/$sr.conf"
if $T daemon "$sr" 2>refused.log; then tb_fail "a configuration others can read was accepted"; fi
grep -q "mode 0600" refused.log
grep -q '"phase": "failed"' "$state"
if grep -q c2VjcmV0 "$state" refused.log; then tb_fail "the key leaked"; fi
chmod 600 "$dir/$sr.conf"
export NVMETCP_TEST_IMAGE=/srv/testbed/daemon.img
$T daemon "$sr" >daemon1.log 2>&1 &
daemon=$!
tb_wait 10 "the daemon to serve" grep -q '"phase": "serving"' "$state"
dev=$($T device "$sr")
tb_log "the daemon serves $dev"
[ "$(cat "/sys/block/${{dev#/dev/}}/pid")" = "$daemon" ]
tb_wait 5 "three live connections in the state" grep -q '"live_connections": 3' "$state"
dd if=/dev/urandom of=data bs=1M count=4 status=none
dd if=data of="$dev" bs=1M oflag=direct status=none
# SIGKILL under I/O; the restarted daemon picks the same device back up.
dd if=/dev/urandom of="$dev" bs=64k count=300 seek=128 oflag=direct status=none &
writer=$!
sleep 1
kill -9 "$daemon"
$T daemon "$sr" >daemon2.log 2>&1 &
daemon=$!
tb_wait 10 "the restarted daemon to serve" grep -q "\"daemon_pid\": $daemon," "$state"
wait "$writer" || tb_fail "writes failed across the daemon's restart"
[ "$($T device "$sr")" = "$dev" ]
dd if="$dev" of=back bs=1M count=4 iflag=direct status=none
cmp data back
tb_wait 5 "the replaced connections in the state" grep -q '"live_connections": 3' "$state"
cp "$state" "$SCENARIO_OUT/state.json"
if dmesg | grep -E "I/O error, dev ${{dev#/dev/}}"; then tb_fail "the host saw I/O errors"; fi
# SR.detach: the supervisor stops the daemon, the door tears the device down.
kill "$daemon"; wait "$daemon" || true
$T tear-down "$sr"
tb_wait 10 "the device to empty" sh -c "! test -e /sys/block/${{dev#/dev/}}/pid"
[ ! -e "$state" ] && [ ! -e "$dir/$sr.conf" ]
$T tear-down "$sr"
tb_log "torn down; safe to repeat"
"#
            ),
        )
        .timeout_secs(200),
    Scenario::script(
        "nbd-sr-userspace",
        &format!(
            r#"
export NVMETCP_GUEST_STEP=1
T="{exe}"
SR=7d1e6a20-3c4b-4f5e-8a9b-0c1d2e3f4a5b
modprobe nbd nbds_max=4
nqn=$(tb_simple_target us 128 10.99.0.1 10.99.0.2)
# As on XCP-ng 8.2/8.3: this host cannot load nvme_tcp.
no_nvme_tcp() {{
    modprobe -r nvme_tcp
    echo "install nvme_tcp /bin/false" >/etc/modprobe.d/testbed-no-nvme-tcp.conf
    if modprobe nvme_tcp 2>/dev/null; then tb_fail "nvme_tcp still loads"; fi
}}
no_nvme_tcp
# As on XCP-ng 8.2/8.3: only Linux 4.19's system calls. Every plugin call below,
# and the supervisor and daemon it starts, runs under a seccomp filter that
# answers each later call ENOSYS, as 4.19 does (nbd_export/linux_4_19.rs).
uring() {{ fio --name=uring --filename=/run/uring.img --size=1M --rw=write --ioengine=io_uring "$@"; }}
uring >uring.log 2>&1 || tb_fail "fio's io_uring engine fails without the filter, so it cannot show the filter works: $(cat uring.log)"
if "$T" linux-4.19 sh -c 'fio --name=uring --filename=/run/uring.img --size=1M --rw=write --ioengine=io_uring' >uring.log 2>&1; then
    tb_fail "io_uring (Linux 5.1) works under the 4.19 system-call filter"
fi
grep -q "Function not implemented" uring.log || tb_fail "io_uring under the 4.19 filter failed, but not with ENOSYS: $(cat uring.log)"
call() {{ "$T" linux-4.19 "$T" call "$@" | tee -a calls.log; }}
on_4_19() {{ grep -Eq '^Seccomp:[[:space:]]+2$' "/proc/$1/status" || tb_fail "$2 (pid $1) does not run under the 4.19 system-call filter"; }}
expect_ok() {{ local out; out=$(call "$@"); case $out in "OK "*) echo "${{out#OK }}" ;; *) tb_fail "$1 failed: $out"; return 1 ;; esac; }}
sr="\"sr\":\"nvmetcp://sr/$SR\""
state=/run/nvmetcp/initiator/$SR.json
live() {{ [ "$(grep -c '"status": "live"' "$state")" = "$1" ]; }}
cfg="\"portals\":\"10.99.0.1,10.99.0.2\",\"nqn\":\"$nqn\",\"keep_alive_tmo\":\"3\",\"reconnect_delay\":\"1\",\"iopolicy\":\"round-robin\""
# SR.probe lists every namespace, in NSID order, over the userspace initiator's admin queue.
tb_namespace "$nqn" 2 16
probed=$(expect_ok SR.probe "{{\"dbg\":\"p\",\"configuration\":{{$cfg}}}}")
[ "$(echo "$probed" | grep -o '"nsid":"[0-9]*"' | tr '\n' ' ')" = '"nsid":"1" "nsid":"2" ' ] || tb_fail "SR.probe over the userspace initiator: $probed"
echo "$probed" | grep -q '"initiator":"userspace"' || tb_fail "SR.probe does not say it used the userspace initiator: $probed"
stored=$(expect_ok SR.create "{{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{{$cfg,\"namespace\":\"1\"}},\"name\":\"on 8.3\",\"description\":\"\"}}")
echo "$stored" | grep -q '"namespace":"uuid\.' || tb_fail "SR.create recorded no stable identity: $stored"
[ ! -e "$state" ] || tb_fail "SR.create left its initiator running"
ls /sys/class/nvme 2>/dev/null | grep -q . && tb_fail "a kernel NVMe controller exists on a host without nvme_tcp"
# SR.probe reads the namespaces over the userspace initiator: the SR just made
# is reported with its uuid and name, as over the kernel's; nothing stays served.
probed=$(expect_ok SR.probe "{{\"dbg\":\"p2\",\"configuration\":{{$cfg}}}}")
echo "$probed" | grep -q "\"sr_uuid\":\"$SR\"" && echo "$probed" | grep -q '"name":"on 8.3"' || tb_fail "SR.probe over the userspace initiator does not report the SR: $probed"
echo "$probed" | grep -q '"holds":"nothing: empty"' || tb_fail "SR.probe does not say namespace 2 is empty: $probed"
if ls /sys/block/nbd*/pid 2>/dev/null | grep -q .; then tb_fail "SR.probe left an NBD device connected"; fi
# A probe killed while it reads a namespace leaves its NBD device connected;
# the next probe disconnects it (probe_devices.rs), by its record.
served_pid() {{ cat /sys/block/nbd*/pid 2>/dev/null | head -1 || true; }}
killed=""
for attempt in 1 2 3 4 5; do
    call SR.probe "{{\"dbg\":\"pk\",\"configuration\":{{$cfg}}}}" >/dev/null 2>&1 &
    prober=$!
    for i in $(seq 1 400); do pid=$(served_pid); [ -n "$pid" ] && break; sleep 0.02; done
    if [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; then killed=$pid; fi
    wait "$prober" || true
    [ -n "$killed" ] && [ "$(served_pid)" = "$killed" ] && break
    killed=""
done
[ -n "$killed" ] || tb_fail "no SR.probe could be killed while it served a namespace (5 tries)"
tb_log "SR.probe $killed killed while serving; its device is still connected"
expect_ok SR.probe "{{\"dbg\":\"p3\",\"configuration\":{{$cfg}}}}" >/dev/null
if ls /sys/block/nbd*/pid 2>/dev/null | grep -q .; then tb_fail "the next SR.probe did not disconnect what the killed one left: $(cat /sys/block/nbd*/pid)"; fi
# The killed probe's own reads failed with it: the kernel logged them for its
# device, whose number the SR's device may take next. The I/O error check
# below is about the SR's device.
dmesg -C
expect_ok SR.attach "{{\"dbg\":\"a\",\"configuration\":$stored}}" >/dev/null
daemon=$(sed -n 's/.*"daemon_pid": \([0-9]*\),.*/\1/p' "$state")
on_4_19 "$daemon" "the initiator daemon"
expect_ok SR.attach "{{\"dbg\":\"a2\",\"configuration\":$stored}}" >/dev/null
[ "$(sed -n 's/.*"daemon_pid": \([0-9]*\),.*/\1/p' "$state")" = "$daemon" ] || tb_fail "a second SR.attach restarted the daemon"
# SR.create retried (its reply lost) after this host attached the SR: its initiator stays up.
again=$(expect_ok SR.create "{{\"dbg\":\"c2\",\"uuid\":\"$SR\",\"configuration\":{{$cfg,\"namespace\":\"1\"}},\"name\":\"on 8.3\",\"description\":\"\"}}")
[ "$again" = "$stored" ] || tb_fail "the retried SR.create returned $again, not $stored"
[ "$(sed -n 's/.*"daemon_pid": \([0-9]*\),.*/\1/p' "$state")" = "$daemon" ] && grep -q '"phase": "serving"' "$state" || tb_fail "a retried SR.create stopped the attached SR's initiator"
grep -Eq '"initiator": ?"userspace"' /run/nvmetcp/srs/$SR.json || tb_fail "the attach state does not say userspace"
tb_wait 30 "both paths live" live 2
expect_ok SR.stat "{{\"dbg\":\"s\",$sr}}" | tee stat.json | grep -q '"Healthy","2/2 paths live"' || tb_fail "SR.stat: $(cat stat.json)"
vol=$(expect_ok Volume.create "{{\"dbg\":\"v\",$sr,\"name\":\"vm disk\",\"description\":\"\",\"size\":33554432,\"sharable\":false}}")
key=$(echo "$vol" | sed 's/.*"key":"\([^"]*\)".*/\1/')
uri=$(echo "$vol" | sed 's/.*"uri":\["\([^"]*\)".*/\1/')
expect_ok Volume.set "{{\"dbg\":\"s\",$sr,\"key\":\"$key\",\"k\":\"vdi-type\",\"v\":\"user\"}}" >/dev/null
dp="\"uri\":\"$uri\",\"domain\":\"3\""
attach_volume() {{
    path=$(expect_ok Datapath.attach "{{\"dbg\":\"da\",$dp}}" | sed 's/.*"BlockDevice",{{"path":"\([^"]*\)".*/\1/')
    expect_ok Datapath.activate "{{\"dbg\":\"dv\",$dp}}" >/dev/null
    [ -b "$(readlink -f "$path")" ] || tb_fail "$path is not a block device"
}}
detach_volume() {{
    expect_ok Datapath.deactivate "{{\"dbg\":\"dd\",$dp}}" >/dev/null
    expect_ok Datapath.detach "{{\"dbg\":\"dt\",$dp}}" >/dev/null
}}
attach_volume
dev=$(sed -n 's/.*"index": \([0-9]*\),.*/nbd\1/p' "$state")
tb_log "the volume $path is on /dev/$dev, served by daemon $daemon"
rm -f stop fio.failed
(
    while [ ! -e stop ]; do
        fio --name=verify --filename="$path" --direct=1 --ioengine=libaio --iodepth=8 --rw=randwrite \
            --bsrange=4k-1m --size=24M --verify=crc32c --verify_fatal=1 >>fio.log 2>&1 || {{ touch fio.failed; break; }}
    done
) &
loop=$!
fio_ok() {{ [ ! -e fio.failed ] || {{ cat fio.log; tail -40 "$log"; tb_fail "fio failed $1"; }}; }}
log=/var/log/nvmetcp/initiator-$SR.log
show() {{ cat "$state"; cp "$state" "$SCENARIO_OUT/state-at-failure.json"; tail -40 "$log"; return 1; }}
started=$(date +%s)
for cut in $(seq 1 20); do
    if [ $((cut % 4)) = 0 ]; then
        tb_addr_del 10.99.0.2; tb_wait 40 "keep-alive to notice address 2 gone (cut $cut)" live 1 || show
        [ "$cut" = 4 ] && {{ expect_ok SR.stat "{{\"dbg\":\"s\",$sr}}" | grep -q 'degraded: 1/2 paths live' || tb_fail "SR.stat is not degraded"; }}
        tb_addr_add 10.99.0.2
    else
        tb_unlink 2 "$nqn"; tb_wait 30 "path 2 to drop (cut $cut)" live 1 || show
        tb_link 2 "$nqn"
    fi
    tb_wait 60 "path 2 back (cut $cut)" live 2 || show
    fio_ok "at cut $cut"
done
tb_log "20 cuts of one of two paths in $(( $(date +%s) - started )) s under verified writes"
runs() {{ grep -c "err= 0" fio.log || true; }}
more_runs() {{ [ "$(runs)" -gt "$1" ]; }}
# SIGKILL of the daemon under I/O: the supervisor restarts it, and the new
# daemon picks the kernel's NBD connections back up (dead-connection timeout).
before=$(runs)
killed=$(date +%s)
kill -9 "$daemon"
restarted() {{ grep -q '"phase": "serving"' "$state" && ! grep -q "\"daemon_pid\": $daemon," "$state"; }}
tb_wait 30 "the supervisor to restart the killed daemon" restarted || show
daemon=$(sed -n 's/.*"daemon_pid": \([0-9]*\),.*/\1/p' "$state")
tb_wait 30 "both paths live after the restart" live 2 || show
on_4_19 "$daemon" "the daemon its supervisor restarted"
[ "$(sed -n 's/.*"index": \([0-9]*\),.*/nbd\1/p' "$state")" = "$dev" ] || tb_fail "the restarted daemon serves another device"
# Requests the killed daemon had taken are resent at the kernel's NBD I/O
# timeout (10 s; it was fast_io_fail_tmo + 30 = 120 s): the run under way ends
# and verifies well within 90 s, where the old timeout could not.
tb_wait 90 "a verified fio run after the SIGKILL" more_runs "$before" || show
tb_log "fio verified again $(( $(date +%s) - killed )) s after the SIGKILL"
grep -q '^nbd_io_timeout = 10$' /run/nvmetcp/initiator/$SR.conf || tb_fail "the daemon's NBD I/O timeout: $(grep nbd_ /run/nvmetcp/initiator/$SR.conf)"
fio_ok "across the daemon's SIGKILL"
tb_log "SIGKILL of the daemon under I/O: restarted as $daemon on /dev/$dev, fio went on verifying"
grep -q "restarting" "$log" || tb_fail "the initiator's log does not show the restart"
# Every path down for 60 s under I/O: held (fast_io_fail_tmo 90), then resumed.
before=$(runs)
tb_target_down
tb_wait 40 "no path live" live 0 || show
down=$(date +%s)
sleep 60
[ ! -e fio.failed ] || {{ cat fio.log; tb_fail "fio failed while no path was live"; }}
tb_target_up
outage=$(( $(date +%s) - down ))
tb_wait 60 "both paths back after the outage" live 2 || show
tb_wait 90 "a verified fio run after the outage" more_runs "$before" || show
fio_ok "across $outage s with no path"
tb_log "all paths down $outage s under I/O: held, then resumed and verified"
sleep 5
touch stop
wait "$loop"
fio_ok "across the cuts"
runs=$(grep -c "err= 0" fio.log)
tb_log "$runs verified fio runs, 0 errors"
[ "$runs" -ge 2 ] || tb_fail "fio did not complete two runs across the cuts"
cp "$state" "$SCENARIO_OUT/state.json"
if grep -E "err= *[1-9]|verify: bad" fio.log; then tb_fail "fio saw errors"; fi
if dmesg | grep -E "I/O error, dev $dev|Buffer I/O error on dev (dm-|$dev)"; then tb_fail "the host saw I/O errors"; fi
hwm=$(awk '/VmHWM/ {{print $2}}' "/proc/$daemon/status")
tb_log "peak RSS of the daemon: $hwm KiB"
[ "$hwm" -lt 65536 ] || tb_fail "the daemon's peak RSS $hwm KiB exceeds 64 MiB"
head -c 4M /dev/urandom >userspace.data
dd if=userspace.data of="$path" bs=1M oflag=direct status=none
# The SR's NBD device disconnected by another program (nbd-client -d): the
# daemon says so and what to do, and never serves the SR on a new device
# behind the VMs; detach and attach bring it back with every byte (below).
"$T" disconnect "${{dev#nbd}}"
tb_wait 10 "the daemon to report its device lost" grep -q '"phase": "device-lost"' "$state" || show
expect_ok SR.stat "{{\"dbg\":\"s\",$sr}}" | grep -q 'NBD device was disconnected outside nvmetcp' || tb_fail "SR.stat does not say the device was disconnected"
out=$(call Datapath.attach "{{\"dbg\":\"da\",\"uri\":\"$uri\",\"domain\":\"4\"}}")
echo "$out" | grep -q 'disconnected outside nvmetcp' || tb_fail "Datapath.attach on a lost device: $out"
sleep 3
[ "$(sed -n 's/.*"daemon_pid": \([0-9]*\),.*/\1/p' "$state")" = "$daemon" ] && grep -q '"phase": "device-lost"' "$state" || tb_fail "the daemon did not stay to report the lost device"
[ "$(ls /sys/block/nbd*/pid 2>/dev/null | grep -vc "/$dev/")" = 0 ] || tb_fail "a new NBD device was set up behind the VMs"
tb_log "the device disconnected by another program: reported, not replaced"
detach_volume
expect_ok SR.detach "{{\"dbg\":\"d\",$sr}}" >/dev/null
tb_wait 10 "the NBD device to be disconnected" sh -c "! test -e /sys/block/$dev/pid"
[ ! -e "$state" ] && [ ! -e /run/nvmetcp/initiator/$SR.conf ] || tb_fail "SR.detach left the initiator's files"
[ ! -e /run/nvmetcp/initiator/$SR.supervisor ] || tb_fail "SR.detach left the supervisor"
# The same SR through the kernel initiator: what userspace wrote reads back.
rm /etc/modprobe.d/testbed-no-nvme-tcp.conf
modprobe nvme_tcp
expect_ok SR.attach "{{\"dbg\":\"ak\",\"configuration\":$stored}}" >/dev/null
grep -Eq '"initiator": ?"kernel"' /run/nvmetcp/srs/$SR.json || tb_fail "nvme_tcp loads, yet the kernel initiator was not chosen"
attach_volume
dd if="$path" of=kernel.read bs=1M count=4 iflag=direct status=none
cmp userspace.data kernel.read || tb_fail "the kernel initiator reads other data than userspace wrote"
head -c 4M /dev/urandom >kernel.data
dd if=kernel.data of="$path" bs=1M seek=8 oflag=direct status=none
detach_volume
expect_ok SR.detach "{{\"dbg\":\"dk\",$sr}}" >/dev/null
tb_wait 20 "the kernel's controllers to go" sh -c "! ls /sys/class/nvme | grep -q ."
no_nvme_tcp
expect_ok SR.attach "{{\"dbg\":\"a3\",\"configuration\":$stored}}" >/dev/null
attach_volume
dd if="$path" of=userspace.read bs=1M skip=8 count=4 iflag=direct status=none
cmp kernel.data userspace.read || tb_fail "the userspace initiator reads other data than the kernel wrote"
tb_log "data written through either initiator reads back identically through the other"
detach_volume
expect_ok Volume.destroy "{{\"dbg\":\"x\",$sr,\"key\":\"$key\"}}" >/dev/null
expect_ok SR.destroy "{{\"dbg\":\"x\",$sr}}" >/dev/null
[ ! -e "$state" ] || tb_fail "SR.destroy left the initiator running"
cp calls.log fio.log "$log" "$SCENARIO_OUT/" || true
rm /etc/modprobe.d/testbed-no-nvme-tcp.conf
"#
        ),
    )
    .timeout_secs(900),
    ]
}

/// `call METHOD JSON`: one call through the method links, exactly as
/// xapi-storage-script makes it; `OK <value>` or `ERR <code> <params>`.
fn call(method: &str, params: &str) -> Result<(), String> {
    let plugin = plugin_binary();
    let tree = PluginTree::new(&plugin, &[method], &[method]).map_err(|e| e.to_string())?;
    let params: serde_json::Value = serde_json::from_str(params).map_err(|e| e.to_string())?;
    let dir = if method.starts_with("Datapath.") { tree.datapath_dir() } else { tree.volume_dir() };
    match Caller::new().call(&dir, method, &params) {
        Ok(reply) => match reply.outcome {
            Outcome::Success(value) => println!("OK {value}"),
            Outcome::Failure { code, params, .. } => println!("ERR {code} {}", serde_json::to_string(&params).unwrap()),
        },
        Err(violation) => println!("PROTOCOL-VIOLATION {violation}"),
    }
    Ok(())
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
        ("daemon", [sr]) => {
            let sr = SrId::parse(sr).map_err(|e| e.to_string())?;
            let image = std::env::var("NVMETCP_TEST_IMAGE").unwrap_or_default();
            run(&sr, &Layout::system(), 0, |_config| {
                FileDevice::open(Path::new(&image), BLOCK, 8192, MAX_TRANSFER).map(Arc::new).map_err(|e| e.to_string())
            })
            .map_err(|e| e.to_string())?;
        }
        ("device", [sr]) => {
            let sr = SrId::parse(sr).map_err(|e| e.to_string())?;
            println!("{}", door::device(&Layout::system(), &sr).map_err(|e| e.to_string())?.path);
        }
        ("tear-down", [sr]) => {
            let sr = SrId::parse(sr).map_err(|e| e.to_string())?;
            door::tear_down(&Layout::system(), &sr).map_err(|e| e.to_string())?;
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
        ("call", [method, params]) => call(method, params)?,
        ("linux-4.19", [program, args @ ..]) => {
            linux_4_19::enforce()?;
            #[allow(clippy::disallowed_methods)] // test tooling: runs the guest step under the filter
            let failed = std::process::Command::new(program).args(args).exec();
            return Err(format!("cannot run {program}: {failed}"));
        }
        _ => return Err(format!("unknown step {args:?}")),
    }
    Ok(())
}
