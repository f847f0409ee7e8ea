//! The SR methods through their method links, exactly as xapi-storage-script
//! calls them (`<dir>/SR.attach --json`, parameters on stdin, one JSON value
//! on stdout), over the real kernel NVMe/TCP target with two ports, in the
//! test bed.
//!
//! On the host this binary builds the plugin, boots one guest with the
//! scenarios below and checks each passed. In the guest, scenarios call this
//! binary back (`NVMETCP_GUEST_STEP=1 … call <Method> <json>`), which invokes
//! the plugin through a plugin tree of method links with `smapi-harness` and
//! prints `OK <value>` or `ERR <code> <params>` on one line.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a test program

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nvmetcp_testbed::{plugin_binary, run_suite, Scenario};

#[path = "nvmet_sr/faults.rs"]
mod faults;
#[path = "nvmet_sr/pool.rs"]
mod pool;
#[path = "nvmet_sr/pool_snapshot.rs"]
mod pool_snapshot;
use sm_driver::host::HostRoot;
use sm_driver::xapi_fixture::XapiHost;
use smapi_harness::{Caller, Outcome, PluginTree};

const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";

fn admin_binary() -> PathBuf {
    nvmetcp_testbed::shipped_binary("nvmetcp")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("NVMETCP_GUEST_STEP").is_some() {
        if args.first().is_some_and(|a| a == "serve-xapi") {
            return serve_xapi(&args[1..]);
        }
        if args.first().is_some_and(|a| a == "serve-pool") {
            return serve_pool(&args[1..]);
        }
        if args.first().is_some_and(|a| a == "serve-two-hosts") {
            return pool::serve_two_hosts(&args[1..]);
        }
        if args.first().is_some_and(|a| a == "serve-member-xapi") {
            return pool::serve_member_xapi(&args[1..]);
        }
        if args.first().is_some_and(|a| a == "register-sr") {
            return pool::register_sr(&args[1..]);
        }
        if args.first().is_some_and(|a| a == "forget-sr") {
            return pool::forget_sr(&args[1..]);
        }
        if args.first().is_some_and(|a| a == "answer-plugin") {
            return pool::answer_plugin(&args[1..]);
        }
        if args.first().is_some_and(|a| a == "serve-agent-pool") {
            return serve_agent_pool(&args[1..]);
        }
        return guest_call(&args);
    }
    if args.iter().any(|a| a == "--list") {
        println!("nvmet_sr: test");
        return ExitCode::SUCCESS;
    }
    host_side()
}

/// Shell helpers shared by the scenarios: `call METHOD JSON`, `ok`/`err` checks.
const PRELUDE: &str = r#"
export NVMETCP_GUEST_STEP=1
call() { "$T" call "$@" | tee -a calls.log; }
expect_ok() { local out; out=$(call "$@"); case $out in "OK "*) echo "${out#OK }" ;; *) tb_fail "$1 failed: $out"; return 1 ;; esac; }
expect_err() { local code=$1 out; shift; out=$(call "$@"); case $out in "ERR $code "*) echo "$out" ;; *) tb_fail "$1: expected $code, got: $out"; return 1 ;; esac; }
stat_sr() { expect_ok SR.stat "{\"dbg\":\"stat\",\"sr\":\"nvmetcp://sr/$SR\"}"; }
"#;

/// The `host-agent` scenario (see `sm_driver::agent`).
const HOST_AGENT: &str = r#"
nqn=$(tb_simple_target agent 64 10.99.0.1 10.99.0.2)
stored=$(expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"10.99.0.1,10.99.0.2\",\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"agent\",\"description\":\"\"}")
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
out=/tmp/agent-xapi
mkdir -p /var/lib/xcp
"$T" serve-agent-pool "$SR" "$out" "$stored" &
xapi=$!
tb_wait 10 "the emulated XAPI" test -e "$out/messages"
ln -sf "$(dirname "$NVMETCP")/nvmetcp-plugin" /tmp/nvmetcp-agent
NVMETCP_LOG_STDERR=1 /tmp/nvmetcp-agent 2>agent.log &
agent=$!
counts() { grep ' mpath-' "$out/updates" | grep -v '(removed)$' | awk '{print $4 $5}' | tr '\n' ' '; }
seen() { [ "$(grep -c "$1" "$out/updates")" -ge "$2" ]; }
said() { [ "$(grep -c "^$1 " "$out/messages")" = "$2" ]; }
# The key is mpath-<device_config:namespace> of this host's PBD (what XO's patched getIscsiPaths reads).
namespace=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["namespace"])' "$stored")
tb_wait 10 "[2, 2] published" seen "^PBD other_config mpath-$namespace \[2, 2\]$" 1
# SR.stat points xapi at this SR's xcp-rrdd plugin, the file the agent writes.
stat_sr | grep -q "xeno+shm:///nvmetcp-sr-$SR" || tb_fail "SR.stat does not name the SR's RRD plugin"
# Reaction: whether controller $1's path is usable as the kernel (and the agent) define it (controller
# live, ANA optimized or non-optimized), and the instant (ns) that first is, or is not, so: polled every
# 20 ms with shell builtins only, so the poll itself does not lag under emulation.
usable() { local v a; read -r v <"$1/state" && [ "$v" = live ] || return 1; for a in "$1"/nvme*c*n*/ana_state; do [ -e "$a" ] || continue; read -r v <"$a"; case $v in optimized|non-optimized) ;; *) return 1 ;; esac; done; }
now_ns() { local t=$EPOCHREALTIME; echo "${t/./}000"; }
usable_when() { local want=$1 i=0; while :; do if usable "$2"; then [ "$want" = yes ] && break; else [ "$want" = no ] && break; fi; i=$((i + 1)); [ "$i" -lt 3000 ] || return 1; sleep 0.02; done; now_ns; }
logged_at() { date -d "$(grep -m1 "$1" agent.log | cut -d' ' -f1)" +%s%N; }
grep -q '^PBD other_config multipathed true$' "$out/updates" || tb_fail "multipathed not set"
grep -q '^SR sm_config multipathable true$' "$out/updates" || tb_fail "multipathable not set"
# Event 1: the port stops serving the subsystem. The change is timed from before the cut
# (unlinking can take seconds while the target tears the controllers down).
ctrl_of_2() { grep -l 'traddr=10.99.0.2,' /sys/class/nvme/nvme*/address | head -1 | xargs dirname; }
c2=$(ctrl_of_2)
usable_when no "$c2" >change.ns &
timer=$!
tb_unlink 2 "$nqn"
wait "$timer" || tb_fail "the kernel did not notice the cut"
changed=$(cat change.ns)
tb_wait 30 "[1, 2] published" seen '\[1, 2\]' 1
published=$(( ($(date +%s%N) - changed) / 1000000 ))
# When the agent saw it: its own log line (RFC 3339, UTC) for the alert.
tb_log "agent: $(grep -m1 'lost NVMe path 10.99.0.2' agent.log)"
reacted=$(( ($(logged_at 'lost NVMe path 10.99.0.2') - changed) / 1000000 ))
tb_log "reaction to a lost path: the agent saw it ${reacted} ms after the path stopped being usable; XAPI had [1, 2] after ${published} ms"
[ "$reacted" -le 1000 ] && [ "$reacted" -ge -1000 ] || tb_fail "the agent took ${reacted} ms to notice a lost path"
tb_wait 30 "one path-lost message" said NVMETCP_PATH_LOST 1
usable_when yes "$c2" >change.ns &
timer=$!
tb_link 2 "$nqn"
wait "$timer" || tb_fail "the path did not come back"
changed=$(cat change.ns)
tb_wait 60 "[2, 2] again" seen '\[2, 2\]' 2
tb_wait 30 "one paths-restored message" said NVMETCP_PATHS_RESTORED 1
reacted=$(( ($(logged_at 'all NVMe paths to SR') - changed) / 1000000 ))
tb_log "reaction to a restored path: the agent saw it ${reacted} ms after the path was usable again"
[ "$reacted" -le 1000 ] && [ "$reacted" -ge -1000 ] || tb_fail "the agent took ${reacted} ms to notice a restored path"
# Event 2: the address goes away (keep-alive notices), then comes back.
tb_addr_del 10.99.0.2
tb_wait 40 "[1, 2] for the address cut" seen '\[1, 2\]' 2
tb_addr_add 10.99.0.2
tb_wait 60 "[2, 2] after the address returns" seen '\[2, 2\]' 3
tb_wait 30 "the second restore message" said NVMETCP_PATHS_RESTORED 2
cat "$out/messages"
said NVMETCP_PATH_LOST 2 && said NVMETCP_PATHS_RESTORED 2 || tb_fail "not exactly one lost and one restored message per event"
said NVMETCP_LAST_PATH_LOST 0 || tb_fail "a last-path alert with a path live"
[ "$(counts)" = "[2,2] [1,2] [2,2] [1,2] [2,2] " ] || tb_fail "PBD other_config updates: $(counts)"
grep -Eq "^NVMETCP_PATH_LOST 3 SR $SR Host xcp-host-7( \(.+\))? lost NVMe path 10.99.0.2:4420 \(controller nvme[0-9]+: [a-z]+\) to SR $SR; 1/2 paths live.$" "$out/messages" || tb_fail "the path-lost message does not name host (its name_label), portal and controller state"
grep -q "^NVMETCP_PATHS_RESTORED 4 SR $SR " "$out/messages" || tb_fail "the restored message's priority or object"
# A flapping port: 10 cuts in 20 s.
before=$(wc -l <"$out/messages")
for _ in $(seq 10); do tb_unlink 2 "$nqn"; sleep 1; tb_link 2 "$nqn"; sleep 1; done
tb_wait 60 "both paths back after the flapping" tb_has_live_paths "$nqn" 2
tb_wait 30 "[2, 2] last" sh -c "grep ' mpath-' $out/updates | grep -v removed | tail -1 | grep -q '\[2, 2\]'"
sleep 1
flap=$(( $(wc -l <"$out/messages") - before ))
tb_log "flapping: $flap messages for 10 cuts in 20 s"
[ "$flap" -le 3 ] || tb_fail "a flapping port sent $flap messages"
# SR I/O statistics: a read job at a known rate, read back from the plugin file.
head=$(tb_head "$nqn")
# 50 IOPS: a rate even a software-emulated guest sustains steadily.
fio --name=known --filename="$head" --rw=randread --bs=4k --direct=1 --ioengine=psync --rate_iops=50 --time_based --runtime=16 --output-format=json --output=fio.json &
job=$!
sleep 13
python3 - "/dev/shm/metrics/nvmetcp-sr-$SR" >rrd.txt <<'PY'
# Decodes xcp-rrdd protocol v2 as its design note describes it.
import json, struct, sys, time, zlib
b = open(sys.argv[1], "rb").read()
assert b[:11] == b"DATASOURCES", "header"
data_crc, meta_crc, n = struct.unpack(">III", b[11:23])
data = b[23:23 + 8 + 8 * n]
assert zlib.crc32(data) & 0xFFFFFFFF == data_crc, "data checksum"
(ts,) = struct.unpack(">Q", data[:8])
assert abs(time.time() - ts) < 15, "stale reading"
at = 23 + 8 + 8 * n
(length,) = struct.unpack(">I", b[at:at + 4])
meta = b[at + 4:at + 4 + length]
assert zlib.crc32(meta) & 0xFFFFFFFF == meta_crc, "metadata checksum"
sources = list(json.loads(meta)["datasources"].items())
assert len(sources) == n
for i, (name, m) in enumerate(sources):
    raw = data[8 + 8 * i:16 + 8 * i]
    value = struct.unpack(">d", raw)[0] if m["value_type"] == "float" else struct.unpack(">q", raw)[0]
    print(name, value, m["owner"], m["type"], m["units"])
PY
wait "$job"
cat rrd.txt
id=${SR:0:8}
iops=$(awk -v n="iops_read_$id" '$1 == n {print $2}' rrd.txt)
fio_iops=$(python3 -c 'import json; print(json.load(open("fio.json"))["jobs"][0]["read"]["iops"])')
tb_log "RRD iops_read_$id = $iops; fio measured $fio_iops read IOPS (job rate 50)"
awk -v v="$iops" -v f="$fio_iops" 'BEGIN { exit !(v >= 0.9 * f && v <= 1.1 * f) }' || tb_fail "iops_read_$id is $iops, not fio's $fio_iops within 10 %"
grep -q "^nvmetcp_paths_live_$id 2 host gauge paths$" rrd.txt || tb_fail "nvmetcp_paths_live_$id"
for ds in iops_write io_throughput_read io_throughput_write read_latency write_latency; do
    grep -q "^${ds}_$id " rrd.txt || tb_fail "no ${ds}_$id"
done
kill "$agent" "$xapi"; wait "$agent" "$xapi" 2>/dev/null || true
grep -q "WARN" agent.log && cat agent.log >&2
rm -f /etc/xensource-inventory /run/nvmetcp/agent.json "/dev/shm/metrics/nvmetcp-sr-$SR" /var/lib/xcp/xapi
expect_ok SR.destroy "{\"dbg\":\"x\",\"sr\":\"nvmetcp://sr/$SR\"}" >/dev/null
"#;

fn script(exe: &str, body: &str) -> String {
    format!("T={exe}\nSR={SR}\nNVMETCP={}\n{PRELUDE}\n{body}", admin_binary().display())
}

fn scenarios(exe: &str) -> Vec<Scenario> {
    vec![
        // Two hosts, two kernels: the master (this guest, also the target) and a
        // pool member (the peer guest), replaying a live migration. Neither can
        // load nvme_tcp (as XCP-ng 8.3): both run the SR over the userspace
        // initiator. (pool-snapshot runs both over the kernel's.)
        Scenario::script(
            "pool-master",
            &script(
                exe,
                r#"
nqn=$TB_NQN_PREFIX:pool
tb_modules; tb_subsystem "$nqn"; tb_namespace "$nqn" 1 128; tb_port 1 10.98.0.1; tb_link 1 "$nqn"
# This host keeps its target but cannot load nvme_tcp, until the scenario ends.
trap 'rm -f /etc/modprobe.d/testbed-no-nvme-tcp.conf' EXIT
modprobe -r nvme_tcp
echo "install nvme_tcp /bin/false" >/etc/modprobe.d/testbed-no-nvme-tcp.conf
modprobe nbd nbds_max=4
# The pool: this host is its master; XAPI relays plugin calls to the member.
mkdir -p /etc/xensource /var/lib/xcp && echo master >/etc/xensource/pool.conf
"$T" serve-two-hosts /shared/plugin >xapi.out &
xapi=$!
tb_wait 20 "the emulated pool" grep -q serving xapi.out
stored=$(expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"10.98.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"pool\",\"description\":\"\"}")
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
grep -Eq '"initiator": ?"userspace"' "/run/nvmetcp/srs/$SR.json" || tb_fail "the master without nvme_tcp did not attach over the userspace initiator"
ls /sys/class/nvme 2>/dev/null | grep -q . && tb_fail "a kernel NVMe controller exists on the master without nvme_tcp"
sr="\"sr\":\"nvmetcp://sr/$SR\""
vol=$(expect_ok Volume.create "{\"dbg\":\"v\",$sr,\"name\":\"vm disk\",\"description\":\"\",\"size\":8388608,\"sharable\":false}")
key=$(echo "$vol" | sed 's/.*"key":"\([^"]*\)".*/\1/')
uri=$(echo "$vol" | sed 's/.*"uri":\["\([^"]*\)".*/\1/')
expect_ok Volume.set "{\"dbg\":\"s\",$sr,\"key\":\"$key\",\"k\":\"vdi-type\",\"v\":\"user\"}" >/dev/null
dp="\"uri\":\"$uri\",\"domain\":\"3\""
backend=$(expect_ok Datapath.attach "{\"dbg\":\"da\",$dp}")
path=$(echo "$backend" | sed 's/.*"BlockDevice",{"path":"\([^"]*\)".*/\1/')
expect_ok Datapath.activate "{\"dbg\":\"dv\",$dp}" >/dev/null
head -c 2M /dev/urandom >/shared/pattern
dd if=/shared/pattern of="$path" bs=1M oflag=direct status=none
printf '%s' "$stored" >/shared/config
printf '%s %s\n' "$key" "$uri" >/shared/volume
tb_signal volume-in-use
tb_await member-attached 180
# The admin command on the member without nvme_tcp, through this master's
# XAPI: it names the userspace initiator and the member's live path.
"$T" register-sr /var/lib/xcp/xapi "$SR" >/dev/null || tb_fail "cannot record the SR in the emulated XAPI"
A="$NVMETCP --host unix:/var/lib/xcp/xapi"
$A status >member-status.txt || true
cat member-status.txt
grep -Eq '^  member +.*1/1 paths live.*initiator userspace \(/dev/nbd[0-9]+\)' member-status.txt || tb_fail "status does not show the member healthy over the userspace initiator"
grep -Eq '^    tcp 10\.98\.0\.1:4420 +userspace cntlid [0-9]+ live' member-status.txt || tb_fail "status does not show the member's live path over the userspace initiator"
$A doctor --pool --portals 10.98.0.1 >member-doctor.txt || true
cat member-doctor.txt
awk '/^host member/ {on = 1; next} /^(host|pool)/ {on = 0} on' member-doctor.txt >member-checks.txt
# doctor runs the member's own checks there. nvme_tcp exists on this guest but
# will not load: doctor and status must name the initiator the SR runs on, not
# what modules.dep suggests.
grep -Eq '^  member +userspace initiator \(SR.attach could not load nvme_tcp' member-status.txt || tb_fail "status does not say the member runs the userspace initiator"
grep -Eq 'PASS +NVMe/TCP initiator +userspace initiator' member-checks.txt || tb_fail "doctor does not say the member uses the userspace initiator"
grep -Eq 'PASS +portal 10\.98\.0\.1:4420 reachable +answers as NVMe/TCP' member-checks.txt || tb_fail "doctor on the member: portal"
grep -Eq 'PASS +host NQN and ID' member-checks.txt || tb_fail "doctor on the member: host NQN"
"$T" forget-sr /var/lib/xcp/xapi "$SR" || tb_fail "cannot forget the SR in the emulated XAPI"
# the migration's downtime window: the source lets go
expect_ok Datapath.deactivate "{\"dbg\":\"dd\",$dp}" >/dev/null
expect_ok Datapath.detach "{\"dbg\":\"dt\",$dp}" >/dev/null
# The volume is mapped on the member only: destroy and resize from here are refused.
# The guest's LVM sees NVMe heads only; this master's PV is the SR's /dev/nbdN.
lv_of_key() { lvs --config 'devices { global_filter = [ "a|^/dev/nbd[0-9]+$|", "r|.*|" ] }' --noheadings -o lv_size --units b --nosuffix "nvmetcp_${SR//-/}/$key" 2>/dev/null | tr -d ' '; }
size=$(lv_of_key)
expect_err NVMETCP_VOLUME_ACTIVE Volume.destroy "{\"dbg\":\"x\",$sr,\"key\":\"$key\"}" | grep -q 'member' || tb_fail "the refusal does not name the member"
expect_err NVMETCP_VOLUME_ACTIVE Volume.resize "{\"dbg\":\"r\",$sr,\"key\":\"$key\",\"new_size\":16777216}" >/dev/null
[ "$(lv_of_key)" = "$size" ] || tb_fail "a refused destroy or resize changed the LV (size $(lv_of_key), was $size)"
tb_log "destroy and resize refused while the member maps the volume"
tb_signal source-deactivated
tb_await member-done 180
expect_ok Volume.resize "{\"dbg\":\"r\",$sr,\"key\":\"$key\",\"new_size\":16777216}" >/dev/null
tb_signal resized
tb_await member-saw-resize 180
expect_ok Volume.destroy "{\"dbg\":\"x\",$sr,\"key\":\"$key\"}" >/dev/null
expect_ok SR.destroy "{\"dbg\":\"x\",$sr}" >/dev/null
[ ! -e "/run/nvmetcp/initiator/$SR.json" ] || tb_fail "SR.destroy left the master's initiator running"
tb_signal master-done
kill "$xapi"
"#,
            ),
        )
        .timeout_secs(600),
        Scenario::script(
            "pool-member",
            &script(
                exe,
                r#"
tb_modules
# This member cannot load nvme_tcp (as XCP-ng 8.3); nor can the master.
modprobe -r nvme_tcp
echo "install nvme_tcp /bin/false" >/etc/modprobe.d/testbed-no-nvme-tcp.conf
modprobe nbd nbds_max=4
mkdir -p /etc/xensource && echo "slave:10.98.0.1" >/etc/xensource/pool.conf
echo "INSTALLATION_UUID='member'" >/etc/xensource-inventory
# This host's XAPI plugin, answering the master's questions as xapi would run it.
mkdir -p /etc/xapi.d/plugins && ln -sf "$(dirname "$NVMETCP")/nvmetcp-plugin" /etc/xapi.d/plugins/nvmetcp
"$T" answer-plugin /shared/plugin /etc/xapi.d/plugins/nvmetcp 2>answers.log &
answers=$!
tb_await volume-in-use 240
stored=$(cat /shared/config)
read -r key uri </shared/volume
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
grep -Eq '"initiator": ?"userspace"' "/run/nvmetcp/srs/$SR.json" || tb_fail "the member without nvme_tcp did not attach over the userspace initiator"
ls /sys/class/nvme 2>/dev/null | grep -q . && tb_fail "a kernel NVMe controller exists on the member without nvme_tcp"
sr="\"sr\":\"nvmetcp://sr/$SR\""
expect_ok Volume.stat "{\"dbg\":\"st\",$sr,\"key\":\"$key\"}" | grep -q '"vdi-type":"user"' || tb_fail "the member does not see the master's volume"
dp="\"uri\":\"$uri\",\"domain\":\"7\""
# the destination attaches while the source is still active
backend=$(expect_ok Datapath.attach "{\"dbg\":\"da\",$dp}")
path=$(echo "$backend" | sed 's/.*"BlockDevice",{"path":"\([^"]*\)".*/\1/')
tb_signal member-attached
tb_await source-deactivated 180
expect_ok Datapath.activate "{\"dbg\":\"dv\",$dp}" >/dev/null
dd if="$path" of=readback bs=1M count=2 iflag=direct status=none
cmp /shared/pattern readback || tb_fail "the member reads other data than the master wrote"
tb_log "the member reads what the master wrote, after the handover"
# A member forwards metadata writes to the master through its XAPI; none answers here.
expect_err NVMETCP_POOL_UNREACHABLE Volume.set "{\"dbg\":\"s\",$sr,\"key\":\"$key\",\"k\":\"x\",\"v\":\"y\"}" | grep -q 'nothing was written' || tb_fail "a member that cannot reach the master did not say nothing was written"
expect_ok Datapath.deactivate "{\"dbg\":\"dd\",$dp}" >/dev/null
expect_ok Datapath.detach "{\"dbg\":\"dt\",$dp}" >/dev/null
tb_signal member-done
tb_await resized 180
expect_ok Volume.stat "{\"dbg\":\"st\",$sr,\"key\":\"$key\"}" | grep -q '"virtual_size":16777216' || tb_fail "resize not seen"
expect_ok Datapath.attach "{\"dbg\":\"da2\",$dp}" >/dev/null
[ "$(blockdev --getsize64 "$(readlink -f "$path")")" = 16777216 ] || tb_fail "the member's device did not pick up the resize"
expect_ok Datapath.detach "{\"dbg\":\"dt2\",$dp}" >/dev/null
# A role that cannot be trusted writes nothing, with the master live beside it.
vg=nvmetcp_${SR//-/}
# The guest's LVM sees NVMe heads only; this member's PV is the SR's /dev/nbdN.
lvs_sr() { lvs --config 'devices { global_filter = [ "a|^/dev/nbd[0-9]+$|", "r|.*|" ] }' --noheadings -o lv_name,lv_size,lv_tags "$vg"; }
before=$(lvs_sr | md5sum)
for role in broken "" missing; do
    if [ "$role" = missing ]; then rm -f /etc/xensource/pool.conf; else printf '%s\n' "$role" >/etc/xensource/pool.conf; fi
    expect_err NVMETCP_POOL_ROLE_UNKNOWN Volume.create "{\"dbg\":\"v\",$sr,\"name\":\"lost\",\"description\":\"\",\"size\":4194304,\"sharable\":false}" >/dev/null
    expect_err NVMETCP_POOL_ROLE_UNKNOWN Volume.set "{\"dbg\":\"s\",$sr,\"key\":\"$key\",\"k\":\"x\",\"v\":\"y\"}" >/dev/null
done
# A second master (an emergency transition while the master lives): the VG names the real one.
echo master >/etc/xensource/pool.conf
expect_err NVMETCP_SECOND_WRITER Volume.create "{\"dbg\":\"v\",$sr,\"name\":\"lost\",\"description\":\"\",\"size\":4194304,\"sharable\":false}" >/dev/null
[ "$(lvs_sr | md5sum)" = "$before" ] || tb_fail "a member of unknown role, or a second master, wrote LVM metadata"
echo "slave:10.98.0.1" >/etc/xensource/pool.conf
expect_ok SR.detach "{\"dbg\":\"d\",$sr}" >/dev/null
[ ! -e "/run/nvmetcp/initiator/$SR.json" ] || tb_fail "SR.detach left the member's initiator running"
rm /etc/modprobe.d/testbed-no-nvme-tcp.conf
tb_signal member-saw-resize
tb_await master-done 180
kill "$answers"
cat answers.log
grep 'answered volume_mapped' answers.log | grep -qF 'mapped\":true' || tb_fail "the master never asked this host about its mapping"
"#,
            ),
        )
        .on_peer()
        .timeout_secs(600),
        Scenario::script(
            "pool-snapshot",
            &script(exe, &format!("{}\n{}", pool_snapshot::HELPERS, pool_snapshot::MASTER)),
        )
        // 817 s on a quiet host; over 1400 s at a load average of 8 on 2
        // cores, where the member's wait for the merges (1200 s) needs room.
        .timeout_secs(2100),
        Scenario::script(
            "pool-snapshot-member",
            &script(exe, &format!("{}\n{}", pool_snapshot::HELPERS, pool_snapshot::MEMBER)),
        )
        .on_peer()
        .timeout_secs(2100),
        Scenario::script(
            "sr-lifecycle",
            &script(
                exe,
                r#"
nqn=$(tb_simple_target sr 128 10.99.0.1 10.99.0.2)
cfg="\"discovery\":\"10.99.0.1:4420,10.99.0.2:4420\",\"nqn\":\"$nqn\""
# probe-free create by NSID; the stored config names the namespace by identity
stored=$(expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{$cfg,\"namespace\":\"1\"},\"name\":\"fast ✓\",\"description\":\"two paths\"}")
echo "$stored" | grep -q "\"sr_uuid\":\"$SR\""
echo "$stored" | grep -q "\"namespace\":\"uuid\."
[ -z "$(ls /sys/class/nvme)" ] || tb_fail "SR.create left a connection behind"
handle=$(expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}")
[ "$handle" = "\"nvmetcp://sr/$SR\"" ]
[ "$(expect_ok SR.attach "{\"dbg\":\"a2\",\"configuration\":$stored}")" = "$handle" ]
[ "$(tb_live_paths "$nqn")" = 2 ]
expect_ok Plugin.diagnostics '{"dbg":"diag"}' | grep -q "SR $SR: VG nvmetcp_" || tb_fail "diagnostics does not show the attached SR"
stat=$(stat_sr)
echo "$stat" | grep -q '"health":\["Healthy","2/2 paths live"\]'
echo "$stat" | grep -q '"name":"fast ✓"'
echo "$stat" | grep -q '"total_space":1[0-9]\{8\}'
[ "$(expect_ok SR.ls "{\"dbg\":\"l\",\"sr\":\"nvmetcp://sr/$SR\"}")" = "[]" ]
tb_unlink 2 "$nqn"
tb_wait 15 "a path to drop" tb_has_live_paths "$nqn" 1
stat_sr | grep -q '"health":\["Healthy","degraded: 1/2 paths live (10.99.0.2:4420 connecting)"\]'
head=$(tb_head "$nqn")
dd if="$head" of=/dev/null bs=1M count=4 iflag=direct status=none || tb_fail "I/O stopped on 1/2 paths"
tb_link 2 "$nqn"
tb_wait 30 "both paths back" tb_has_live_paths "$nqn" 2
tb_target_down
tb_wait 20 "no path" tb_has_live_paths "$nqn" 0
stat=$(stat_sr)
echo "$stat" | grep -q '"health":\["Unreachable","no path live: 0/2'
echo "$stat" | grep -q '"total_space":1[0-9]\{8\}'
expect_err NVMETCP_NO_PATH SR.ls "{\"dbg\":\"l\",\"sr\":\"nvmetcp://sr/$SR\"}" | grep -q 'no path live' || tb_fail "SR.ls must fail, not list nothing"
tb_target_up
tb_wait 30 "both paths back" tb_has_live_paths "$nqn" 2
expect_ok SR.set_name "{\"dbg\":\"n\",\"sr\":\"nvmetcp://sr/$SR\",\"new_name\":\"renamed, with = and ✓\"}"
expect_ok SR.set_description "{\"dbg\":\"n\",\"sr\":\"nvmetcp://sr/$SR\",\"new_description\":\"line1\nline2\"}"
stat=$(stat_sr)
echo "$stat" | grep -q '"name":"renamed, with = and ✓"'
echo "$stat" | grep -q '"description":"line1\\nline2"'
expect_ok SR.detach "{\"dbg\":\"d\",\"sr\":\"nvmetcp://sr/$SR\"}"
[ -z "$(ls /sys/class/nvme)" ] || tb_fail "SR.detach left controllers"
expect_ok SR.detach "{\"dbg\":\"d2\",\"sr\":\"nvmetcp://sr/$SR\"}"
expect_err Sr_not_attached SR.stat "{\"dbg\":\"s\",\"sr\":\"nvmetcp://sr/$SR\"}"
# xapi's destroy: attach, then destroy without detach
expect_ok SR.attach "{\"dbg\":\"a3\",\"configuration\":$stored}"
vg=nvmetcp_$(echo "$SR" | tr -d -)
lvcreate -q -y -n stray -L 4M "$vg"
expect_err NVMETCP_SR_NOT_EMPTY SR.destroy "{\"dbg\":\"x\",\"sr\":\"nvmetcp://sr/$SR\"}" | grep -q 'still holds 1 volume'
lvremove -q -y "$vg/stray"
expect_ok SR.destroy "{\"dbg\":\"x\",\"sr\":\"nvmetcp://sr/$SR\"}"
[ -z "$(ls /sys/class/nvme)" ] || tb_fail "SR.destroy left controllers"
expect_ok SR.destroy "{\"dbg\":\"x2\",\"sr\":\"nvmetcp://sr/$SR\"}" >/dev/null
if blkid -p /srv/testbed/sr-ns1.img; then tb_fail "SR.destroy left a signature on the namespace"; fi
tb_log "SR lifecycle complete"
"#,
            ),
        ),
        Scenario::script(
            "sr-refuses-data",
            &script(
                exe,
                r#"
nqn=$(tb_simple_target full 64 10.99.0.1)
mkfs.ext4 -q -F /srv/testbed/full-ns1.img
cfg="\"portals\":\"10.99.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\""
out=$(expect_err NVMETCP_NAMESPACE_IN_USE SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{$cfg},\"name\":\"n\",\"description\":\"\"}")
echo "$out" | grep -q 'device-config:force=true'
[ -z "$(ls /sys/class/nvme)" ] || tb_fail "a refused create left a connection"
img=/srv/testbed/full-ns1.img
hash() { md5sum "$img" | cut -d' ' -f1; }
refused() { # why, then the device-config: refused with the reason, the namespace unchanged
    local why=$1 before out; shift
    before=$(hash)
    out=$(expect_err NVMETCP_NAMESPACE_IN_USE SR.create "{\"dbg\":\"c\",\"uuid\":\"${U:-$SR}\",\"configuration\":{$1},\"name\":\"n\",\"description\":\"\"}") || return 1
    echo "$out" | grep -q "$why" || tb_fail "refused, but not because '$why': $out"
    [ "$(hash)" = "$before" ] || tb_fail "a refused create ($why) changed the namespace"
}
refused 'it holds TYPE=ext4' "$cfg"
expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{$cfg,\"force\":\"true\"},\"name\":\"n\",\"description\":\"\"}" >/dev/null
# Another nvmetcp SR is never overwritten, with or without force.
U=11111111-2222-3333-4444-555555555555 refused "holds nvmetcp SR $SR" "$cfg"
U=11111111-2222-3333-4444-555555555555 refused 'force never overwrites an nvmetcp SR' "$cfg,\"force\":\"true\""
# SR.destroy wipes what it wrote: on a clean namespace a re-create needs no force.
dd if=/dev/zero of="$img" bs=1M count=64 conv=notrunc status=none
for round in 1 2; do
    stored=$(expect_ok SR.create "{\"dbg\":\"c$round\",\"uuid\":\"$SR\",\"configuration\":{$cfg},\"name\":\"n\",\"description\":\"\"}") || break
    expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
    expect_ok SR.destroy "{\"dbg\":\"x\",\"sr\":\"nvmetcp://sr/$SR\"}" >/dev/null
done
[ "$(head -c 16M "$img" | tr -d '\000' | wc -c)" = 0 ] || tb_fail "SR.destroy left its metadata on the namespace"
# Data past the first MiB with no signature, and a lone backup GPT at the end, are found.
printf 'data' | dd of="$img" bs=1k seek=40960 conv=notrunc status=none
dd if=/dev/urandom of="$img" bs=256k count=1 seek=160 conv=notrunc status=none
refused 'a sampled scan found data' "$cfg"
dd if=/dev/zero of="$img" bs=1M count=64 conv=notrunc status=none
printf 'EFI PART' | dd of="$img" bs=512 seek=$((64 * 2048 - 1)) conv=notrunc status=none
refused 'its last MiB' "$cfg"
tb_log "every refusal left the namespace's hash unchanged"
"#,
            ),
        ),
        Scenario::script(
            "sr-bad-config",
            &script(
                exe,
                r#"
nqn=$(tb_simple_target cfg 32 10.99.0.1)
create() { expect_err NVMETCP_INVALID_CONFIG SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{$1},\"name\":\"n\",\"description\":\"\"}"; }
create "\"portal\":\"10.99.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\"" | grep -q 'device-config:portal is not an nvmetcp setting (did you mean portals?)'
create "\"portals\":\"10.99.0.1,nqn=x\",\"nqn\":\"$nqn\",\"namespace\":\"1\"" | grep -q 'device-config:portals='
create "\"portals\":\"10.99.0.1\",\"namespace\":\"1\"" | grep -q 'device-config:nqn is required'
create "\"portals\":\"10.99.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\",\"keep_alive_tmo\":\"0\"" | grep -q 'device-config:keep_alive_tmo'
create "\"portals\":\"10.99.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\",\"transport\":\"fc\"" | grep -q 'device-config:transport'
[ -z "$(ls /sys/class/nvme)" ] || tb_fail "bad configuration reached the kernel"
out=$(expect_err NVMETCP_NO_PATH SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"10.99.0.1:4999\",\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"n\",\"description\":\"\"}")
echo "$out" | grep -q 'on host testbed[a-z]*: no path to subsystem'
echo "$out" | grep -q '10.99.0.1:4999'
"#,
            ),
        ),
        Scenario::script(
            "sr-concurrent-attach",
            &script(
                exe,
                r#"
nqn=$(tb_simple_target conc 64 10.99.0.1 10.99.0.2)
cfg="\"portals\":\"10.99.0.1,10.99.0.2\",\"nqn\":\"$nqn\""
stored=$(expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{$cfg,\"namespace\":\"1\"},\"name\":\"n\",\"description\":\"\"}")
call SR.attach "{\"dbg\":\"a1\",\"configuration\":$stored}" >one &
call SR.attach "{\"dbg\":\"a2\",\"configuration\":$stored}" >two &
wait
grep -qx "OK \"nvmetcp://sr/$SR\"" one
grep -qx "OK \"nvmetcp://sr/$SR\"" two
[ "$(ls /sys/class/nvme | wc -l)" = 2 ] || tb_fail "expected exactly two controllers, got $(ls /sys/class/nvme)"
stat_sr | grep -q '2/2 paths live'
expect_ok SR.detach "{\"dbg\":\"d\",\"sr\":\"nvmetcp://sr/$SR\"}"
"#,
            ),
        ),
        Scenario::script(
            "sr-probe",
            &script(
                exe,
                r#"
nqn=$(tb_simple_target probe 64 10.99.0.1 10.99.0.2)
other=$TB_NQN_PREFIX:probe-other
tb_subsystem "$other"; tb_namespace "$other" 1 32; tb_namespace "$other" 2 16; tb_link 1 "$other"
# every namespace of a subsystem, in NSID order (a fresh controller's scan adds them one by one)
both_of_other() {
    echo "$1" | grep -oE "\"nqn\":\"[^\"]*\"|\"nsid\":\"[0-9]*\"" | tr '\n' ' ' |
        grep -qF "\"nqn\":\"$other\" \"nsid\":\"1\" \"nqn\":\"$other\" \"nsid\":\"2\"" ||
        tb_fail "probe did not list namespaces 1 and 2 of $other in order: $1"
}
disc="\"discovery\":\"10.99.0.1:4420,10.99.0.2:4420\""
out=$(expect_ok SR.probe "{\"dbg\":\"p\",\"configuration\":{$disc}}")
both_of_other "$out"
echo "$out" | grep -q "\"nqn\":\"$nqn\""
echo "$out" | grep -q "\"nqn\":\"$other\""
echo "$out" | grep -q '"complete":false'
echo "$out" | grep -q '"nsid":"1"'
[ -z "$(ls /sys/class/nvme)" ] || tb_fail "probe left connections"
out=$(expect_ok SR.probe "{\"dbg\":\"p\",\"configuration\":{\"portals\":\"10.99.0.1,10.99.0.2\"}}")
echo "$out" | grep -q "\"nqn\":\"$nqn\"" || tb_fail "probe with only portals did not list the subsystem: $out"
echo "$out" | grep -q "\"nqn\":\"$other\"" || tb_fail "probe with only portals missed a subsystem: $out"
both_of_other "$out"
[ -z "$(ls /sys/class/nvme)" ] || tb_fail "probe with only portals left connections"
out=$(expect_ok SR.probe "{\"dbg\":\"p\",\"configuration\":{$disc,\"nqn\":\"$nqn\"}}")
echo "$out" | grep -q '"complete":true'
if echo "$out" | grep -q '"sr":'; then tb_fail "an SR was reported on an empty namespace"; fi
stored=$(expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{$disc,\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"probed ✓\",\"description\":\"\"}")
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
out=$(expect_ok SR.probe "{\"dbg\":\"p\",\"configuration\":{$disc,\"nqn\":\"$nqn\"}}")
echo "$out" | grep -q "\"sr_uuid\":\"$SR\""
echo "$out" | grep -q '"name":"probed ✓"'
echo "$out" | grep -q '"health":\["Healthy","2/2 paths live"\]'
[ "$(tb_live_paths "$nqn")" = 2 ] || tb_fail "probe disturbed the attached SR's paths"
expect_ok SR.detach "{\"dbg\":\"d\",\"sr\":\"nvmetcp://sr/$SR\"}"
"#,
            ),
        ),
        Scenario::script(
            "sr-host-settings",
            &script(
                exe,
                r#"
nqn=$TB_NQN_PREFIX:secured
tb_modules; tb_net_up 10.99.0.1; tb_subsystem "$nqn"; tb_namespace "$nqn" 1 32; tb_port 1 10.99.0.1; tb_link 1 "$nqn"
host=$(cat /etc/nvme/hostnqn)
key=$(nvme gen-dhchap-key --nqn "$host"); ctrl=$(nvme gen-dhchap-key --nqn "$nqn")
tb_allow_host "$nqn" "$host" "$key" "$ctrl"
create="{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"10.99.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"n\",\"description\":\"\"}"
expect_err NVMETCP_NO_PATH SR.create "$create" | grep -q 'authentication failed'
mkdir -p /etc/nvmetcp/dhchap
printf '%s\n' "$key" >"/etc/nvmetcp/dhchap/$nqn.key"
printf '%s\n' "$ctrl" >"/etc/nvmetcp/dhchap/$nqn.ctrl-key"
chmod 644 "/etc/nvmetcp/dhchap/$nqn.key"
expect_err NVMETCP_HOST_NOT_READY SR.create "$create" | grep -q 'run chmod 600'
chmod 600 /etc/nvmetcp/dhchap/*
stored=$(expect_ok SR.create "$create")
printf 'host_iface = %s\n' "$TB_LINK" >/etc/nvmetcp/host.conf
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
grep -q "host_iface=$TB_LINK" /sys/class/nvme/nvme*/address || tb_fail "host.conf's host_iface not applied"
stat_sr | grep -q '1/1 paths live'
expect_ok SR.detach "{\"dbg\":\"d\",\"sr\":\"nvmetcp://sr/$SR\"}" >/dev/null
rm -rf /etc/nvmetcp
# The same keys as XAPI secrets named by device-config, read over the dom0 socket.
mkdir -p /var/lib/xcp
printf '%s\n%s\n' "$key" "$ctrl" | "$T" serve-xapi /var/lib/xcp/xapi >secrets.txt &
xapi=$!
for _ in $(seq 100); do [ -s secrets.txt ] && break; sleep 0.1; done
read -r key_uuid ctrl_uuid <secrets.txt
with_secrets="${stored%\}},\"dhchap_password_secret\":\"$key_uuid\",\"dhchap_ctrl_password_secret\":\"$ctrl_uuid\"}"
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$with_secrets}" >/dev/null
stat_sr | grep -q '1/1 paths live'
expect_ok SR.detach "{\"dbg\":\"d\",\"sr\":\"nvmetcp://sr/$SR\"}" >/dev/null
wrong="${stored%\}},\"dhchap_password_secret\":\"00000000-0000-4000-8000-000000000000\"}"
expect_err NVMETCP_SECRET SR.attach "{\"dbg\":\"a\",\"configuration\":$wrong}" | grep -q 'UUID_INVALID'
kill "$xapi"; wait "$xapi" 2>/dev/null || true; rm -f /var/lib/xcp/xapi
expect_err NVMETCP_SECRET SR.attach "{\"dbg\":\"a\",\"configuration\":$with_secrets}" | grep -q 'cannot connect to XAPI'
[ "$(tb_live_paths "$nqn")" = 0 ] || tb_fail "a failed attach left paths behind"
if grep -qF -- "${key#DHHC-1:??:}" calls.log; then tb_fail "a key reached a reply"; fi
if grep -qF -- "${ctrl#DHHC-1:??:}" calls.log; then tb_fail "a key reached a reply"; fi
"#,
            ),
        ),
        // The admin command on a pool of one host whose XAPI is the emulator and
        // whose storage calls run the real plugin on the real kernel target.
        Scenario::script(
            "admin-command",
            &script(
                exe,
                r#"
nqn=$(tb_simple_target admin 64 10.99.0.1 10.99.0.2)
"$T" serve-pool /tmp/pool.sock &
pool=$!
tb_wait 10 "the emulated pool" test -S /tmp/pool.sock
A="$NVMETCP --host unix:/tmp/pool.sock"
$A doctor --pool --portals 10.99.0.1,10.99.0.2 >doctor.txt || true
cat doctor.txt
grep -Eq 'PASS +kernel module nvme_tcp +loaded' doctor.txt || tb_fail "doctor: transport"
grep -Eq 'PASS +native multipath' doctor.txt || tb_fail "doctor: multipath"
grep -Eq 'PASS +connect options +Linux [^ ]+ takes every connect option nvmetcp sends \(it lists them\)' doctor.txt || tb_fail "doctor: connect options"
grep -Eq 'PASS +portal 10.99.0.2:4420 reachable +answers as NVMe/TCP in [0-9]+ ms' doctor.txt || tb_fail "doctor: portal"
grep -Eq 'PASS +MTU towards 10.99.0.1 +[a-z0-9]+ MTU [0-9]+' doctor.txt || tb_fail "doctor: MTU"
grep -Eq 'PASS +SR type registered' doctor.txt || tb_fail "doctor: SM record"
$A probe --portals 10.99.0.1 --nqn "$nqn" >probe.txt
cat probe.txt
grep -q "subsystem $nqn" probe.txt && grep -q 'nothing: empty' probe.txt && grep -q '64.0 MiB' probe.txt || tb_fail "probe"
$A sr-create --name "admin ✓" --portals 10.99.0.1,10.99.0.2 --nqn "$nqn" >create.txt || tb_fail "sr-create exited $?"
cat create.txt
grep -q "SR 'admin ✓'" create.txt && grep -q '2/2 paths live' create.txt || tb_fail "sr-create summary"
sr=$(awk '/^SR / {print $(NF-1)}' create.txt)
$A status >status.txt || tb_fail "status of a healthy SR exited $?"
grep -q 'tcp 10.99.0.2:4420' status.txt && grep -q '2/2 paths live' status.txt || tb_fail "status"
tb_unlink 2 "$nqn"
tb_wait 10 "path 2 to drop" sh -c "! $A status >/dev/null"
rc=0; $A status >degraded.txt || rc=$?
cat degraded.txt
[ "$rc" = 3 ] && grep -q 'DEGRADED: 1/2 PATHS LIVE' degraded.txt || tb_fail "status of a degraded SR (exit $rc)"
tb_link 2 "$nqn"
tb_wait 30 "path 2 to return" $A status
$A probe --portals 10.99.0.1 --nqn "$nqn" | grep -q "nvmetcp SR 'admin ✓' ($sr)" || tb_fail "probe does not show the new SR"
rc=0; $A sr-create --name again --portals 10.99.0.1 --nqn "$nqn" 2>again.txt || rc=$?
[ "$rc" = 1 ] && grep -q 'already holds the nvmetcp SR' again.txt || tb_fail "a second create on the same namespace (exit $rc)"
expect_ok SR.destroy "{\"dbg\":\"x\",\"sr\":\"nvmetcp://sr/$sr\"}" >/dev/null
kill "$pool"
"#,
            ),
        ),
        // The host agent on the real kernel with an emulated XAPI on the dom0
        // socket: a port cut, then an address cut, each restored; a flapping
        // port; the RRD file against a rate-limited fio job.
        Scenario::script("host-agent", &script(exe, HOST_AGENT)),
        // Xen Orchestra's plugin (xo/xo-server-nvmetcp) through the real
        // `xen-api` client, against the emulated XAPI whose storage calls run
        // the real plugin on the kernel target: probe, create, forget and
        // reattach, bad portals.
        Scenario::script("xo-plugin", &xo_plugin_script()),
        // A VM must be able to shut down while the array is unreachable: its
        // volume is deactivated and detached with no path live at all.
        Scenario::script(
            "datapath-outage",
            &script(
                exe,
                r#"
nqn=$(tb_simple_target outage 64 10.99.0.1 10.99.0.2)
stored=$(expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"10.99.0.1,10.99.0.2\",\"nqn\":\"$nqn\",\"namespace\":\"1\",\"fast_io_fail_tmo\":\"5\"},\"name\":\"n\",\"description\":\"\"}")
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
volume=$(expect_ok Volume.create "{\"dbg\":\"v\",\"sr\":\"nvmetcp://sr/$SR\",\"name\":\"vm disk\",\"description\":\"\",\"size\":8388608,\"sharable\":false}")
uri=$(echo "$volume" | python3 -c 'import json, sys; print(json.load(sys.stdin)["uri"][0])')
dp="{\"dbg\":\"p\",\"uri\":\"$uri\",\"domain\":\"0\"}"
expect_ok Datapath.attach "$dp" >/dev/null
expect_ok Datapath.activate "$dp" >/dev/null
mapping=$(ls /dev/mapper | grep -- '-vol--')
tb_unlink 1 "$nqn"; tb_unlink 2 "$nqn"
tb_wait 30 "every path to be down" tb_has_live_paths "$nqn" 0
started=$(date +%s)
expect_ok Datapath.deactivate "$dp" >/dev/null
expect_ok Datapath.detach "$dp" >/dev/null
[ $(($(date +%s) - started)) -le 10 ] || tb_fail "deactivate and detach took more than 10 s with no path"
if dmsetup info "$mapping" >/dev/null 2>&1; then tb_fail "the volume's mapping is still there"; fi
expect_ok Datapath.detach "$dp" >/dev/null
tb_link 1 "$nqn"; tb_link 2 "$nqn"
tb_wait 60 "the paths to return" tb_has_live_paths "$nqn" 2
stat_sr | grep -q '2/2 paths live'
expect_ok Datapath.attach "$dp" >/dev/null
expect_ok Datapath.deactivate "$dp" >/dev/null
expect_ok Volume.destroy "{\"dbg\":\"x\",\"sr\":\"nvmetcp://sr/$SR\",\"key\":\"$(echo "$volume" | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')\"}" >/dev/null
expect_ok SR.destroy "{\"dbg\":\"x\",\"sr\":\"nvmetcp://sr/$SR\"}" >/dev/null
"#,
            ),
        ),
        Scenario::script(
            "volume-datapath",
            &script(
                exe,
                r#"
nqn=$(tb_simple_target vol 128 10.99.0.1 10.99.0.2)
stored=$(expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"10.99.0.1,10.99.0.2\",\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"n\",\"description\":\"\"}")
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
sr="\"sr\":\"nvmetcp://sr/$SR\""
# xapi's VDI.create: Volume.create, then Volume.set vdi-type
vol=$(expect_ok Volume.create "{\"dbg\":\"v\",$sr,\"name\":\"disk ✓\",\"description\":\"d\",\"size\":10000000,\"sharable\":false}")
key=$(echo "$vol" | sed 's/.*"key":"\([^"]*\)".*/\1/')
uri=$(echo "$vol" | sed 's/.*"uri":\["\([^"]*\)".*/\1/')
echo "$vol" | grep -q '"virtual_size":12582912' || tb_fail "10 MB should be rounded up to 3 extents: $vol"
echo "$uri" | grep -q "^nvmetcp://$SR/vol-"
v="$sr,\"key\":\"$key\""
expect_ok Volume.set "{\"dbg\":\"s\",$v,\"k\":\"vdi-type\",\"v\":\"user\"}" >/dev/null
expect_ok Volume.stat "{\"dbg\":\"st\",$v}" | grep -q '"vdi-type":"user"'
# xapi-storage-script runs Volume.stat before every datapath call
dp_call() { expect_ok Volume.stat "{\"dbg\":\"st\",$v}" >/dev/null && expect_ok "$@"; }
# every datapath call is preceded by Volume.stat, as xapi-storage-script does
dp="\"uri\":\"$uri\",\"domain\":\"5\""
backend=$(dp_call Datapath.attach "{\"dbg\":\"da\",$dp}")
echo "$backend" | grep -q '\["XenDisk",{"backend_type":"vbd"'
path=$(echo "$backend" | sed 's/.*"BlockDevice",{"path":"\([^"]*\)".*/\1/')
dp_call Datapath.activate "{\"dbg\":\"dv\",$dp}" >/dev/null
[ -b "$(readlink -f "$path")" ] || tb_fail "$path is not a block device"
head -c 4M /dev/urandom >pattern
dd if=pattern of="$path" bs=1M oflag=direct status=none
dp_call Datapath.deactivate "{\"dbg\":\"dd\",$dp}" >/dev/null
dp_call Datapath.detach "{\"dbg\":\"dt\",$dp}" >/dev/null
dp_call Datapath.detach "{\"dbg\":\"dt2\",$dp}" >/dev/null
[ ! -e "$path" ] || tb_fail "$path still there after deactivate"
dp_call Datapath.attach "{\"dbg\":\"da2\",\"uri\":\"$uri\",\"domain\":\"\"}" >/dev/null
dp_call Datapath.activate "{\"dbg\":\"dv2\",\"uri\":\"$uri\",\"domain\":\"\"}" >/dev/null
dd if="$path" of=readback bs=1M count=4 iflag=direct status=none
cmp pattern readback
tb_log "pattern written through the datapath device read back after detach and re-attach"
expect_err NVMETCP_VOLUME_ACTIVE Volume.destroy "{\"dbg\":\"x\",$v}" >/dev/null
expect_err NVMETCP_VOLUME_ACTIVE Volume.resize "{\"dbg\":\"r\",$v,\"new_size\":20000000}" >/dev/null
dp_call Datapath.deactivate "{\"dbg\":\"dd2\",$dp}" >/dev/null
dp_call Datapath.detach "{\"dbg\":\"dt3\",$dp}" >/dev/null
expect_ok Volume.resize "{\"dbg\":\"r\",$v,\"new_size\":20000000}" >/dev/null
expect_ok Volume.stat "{\"dbg\":\"st\",$v}" | grep -q '"virtual_size":20971520'
expect_err NVMETCP_VOLUME_INVALID Volume.resize "{\"dbg\":\"r\",$v,\"new_size\":4194304}" | grep -q 'shrinking'
big=$(printf 'é%.0s' $(seq 1 2100))
expect_ok Volume.set "{\"dbg\":\"s\",$v,\"k\":\"a=b\nc ✓\",\"v\":\"v=1\n2\"}" >/dev/null
expect_ok Volume.set "{\"dbg\":\"s\",$v,\"k\":\"big\",\"v\":\"$big\"}" >/dev/null
expect_ok Volume.set_name "{\"dbg\":\"s\",$v,\"new_name\":\"renamed ✓\"}" >/dev/null
listed=$(expect_ok SR.ls "{\"dbg\":\"l\",$sr}")
echo "$listed" | grep -qF '"a=b\nc ✓":"v=1\n2"'
echo "$listed" | grep -qF "\"big\":\"$big\""
echo "$listed" | grep -q '"name":"renamed ✓"'
echo "$listed" | grep -q '"vdi-type":"user"'
expect_ok Volume.unset "{\"dbg\":\"u\",$v,\"k\":\"big\"}" >/dev/null
expect_ok Volume.unset "{\"dbg\":\"u\",$v,\"k\":\"big\"}" >/dev/null
if expect_ok Volume.stat "{\"dbg\":\"st\",$v}" | grep -q '"big"'; then tb_fail "unset key still there"; fi
expect_ok Volume.destroy "{\"dbg\":\"x\",$v}" >/dev/null
expect_ok Volume.destroy "{\"dbg\":\"x2\",$v}" >/dev/null
expect_err Volume_does_not_exist Volume.stat "{\"dbg\":\"st\",$v}" >/dev/null
[ "$(expect_ok SR.ls "{\"dbg\":\"l\",$sr}")" = "[]" ]
# Remanence: the next volume lands on the destroyed one's extents and reads none of its data.
vol=$(expect_ok Volume.create "{\"dbg\":\"v2\",$sr,\"name\":\"next\",\"description\":\"\",\"size\":20971520,\"sharable\":false}")
key=$(echo "$vol" | sed 's/.*"key":"\([^"]*\)".*/\1/')
uri=$(echo "$vol" | sed 's/.*"uri":\["\([^"]*\)".*/\1/')
v="$sr,\"key\":\"$key\""
dp="\"uri\":\"$uri\",\"domain\":\"6\""
path=$(dp_call Datapath.attach "{\"dbg\":\"da\",$dp}" | sed 's/.*"BlockDevice",{"path":"\([^"]*\)".*/\1/')
dp_call Datapath.activate "{\"dbg\":\"dv\",$dp}" >/dev/null
dd if="$path" of=reused bs=1M count=4 iflag=direct status=none
[ "$(tr -d '\000' <reused | wc -c)" = 0 ] || tb_fail "a new volume reads data of the destroyed one (no discard on destroy)"
tb_log "a volume created on a destroyed volume's extents reads zeros"
dp_call Datapath.deactivate "{\"dbg\":\"dd\",$dp}" >/dev/null
dp_call Datapath.detach "{\"dbg\":\"dt\",$dp}" >/dev/null
# Metadata budget: 64 KiB values on one volume are refused before the SR's metadata area fills.
value=$(head -c 65536 /dev/zero | tr '\0' 'x')
refused=0
for i in $(seq 1 35); do
    out=$(call Volume.set "{\"dbg\":\"s$i\",$v,\"k\":\"key$i\",\"v\":\"$value\"}")
    case $out in
        "OK "*) ;;
        "ERR NVMETCP_METADATA_FULL "*) refused=$i; break ;;
        *) tb_fail "Volume.set $i: $out"; break ;;
    esac
done
[ "$refused" -gt 1 ] || tb_fail "the metadata budget never refused a 64 KiB value"
tb_log "the $refused-th 64 KiB value was refused with NVMETCP_METADATA_FULL"
expect_ok Volume.set_name "{\"dbg\":\"n\",$v,\"new_name\":\"still writable\"}" >/dev/null
expect_ok SR.set_name "{\"dbg\":\"n\",$sr,\"new_name\":\"still writable\"}" >/dev/null
expect_ok Volume.destroy "{\"dbg\":\"x3\",$v}" >/dev/null
# This SR's archives only: other scenarios of the same boot leave their own VGs' archives.
ls /etc/lvm/archive 2>/dev/null | grep -c "^nvmetcp_${SR//-/}_" | { read -r n; [ "$n" -le 10 ] || tb_fail "$n metadata archives kept for the SR"; }
expect_ok SR.destroy "{\"dbg\":\"x\",$sr}" >/dev/null
"#,
            ),
        )
        // Up to 35 metadata writes of 64 KiB: past 300 s at a load average of 7.
        .timeout_secs(600),
        Scenario::script(
            "volume-kills",
            &script(
                exe,
                r#"
# Kill the plugin (and the lvm it runs) at many points inside mutating calls:
# afterwards SR.ls must succeed, every value must be the old or the new one, and
# every LV must be a listed volume (nothing orphaned).
nqn=$(tb_simple_target kill 256 10.99.0.1)
stored=$(expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"10.99.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"n\",\"description\":\"\"}")
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
sr="\"sr\":\"nvmetcp://sr/$SR\""
vg=nvmetcp_$(echo "$SR" | tr -d -)
vol=$(expect_ok Volume.create "{\"dbg\":\"v\",$sr,\"name\":\"target\",\"description\":\"\",\"size\":4194304,\"sharable\":false}")
key=$(echo "$vol" | sed 's/.*"key":"\([^"]*\)".*/\1/')
v="$sr,\"key\":\"$key\""
value() { printf 'marker-%s-' "$1"; printf 'x%.0s' $(seq 1 3000); }
expect_ok Volume.set "{\"dbg\":\"s0\",$v,\"k\":\"payload\",\"v\":\"$(value 0)\"}" >/dev/null
killer() { sleep "$1"; pkill -9 -f 'org.xen.xapi.storage.nvmetcp/Volume' ; pkill -9 -x lvm; true; }
prev=0
interrupted=0
for i in $(seq 1 16); do
    delay=$(awk -v i="$i" 'BEGIN { printf "%.3f", i * 0.05 }')
    killer "$delay" &
    out=$(call Volume.set "{\"dbg\":\"k$i\",$v,\"k\":\"payload\",\"v\":\"$(value "$i")\"}")
    wait
    case $out in "OK "*) ;; *) interrupted=$((interrupted + 1)) ;; esac
    listed=$(expect_ok SR.ls "{\"dbg\":\"l$i\",$sr}")
    now=$(echo "$listed" | grep -o 'marker-[0-9]*-' | head -1)
    [ "$now" = "marker-$i-" ] || [ "$now" = "marker-$prev-" ] || tb_fail "after a kill at ${delay}s the value is '$now', neither marker-$prev- nor marker-$i-"
    [ "$(echo "$listed" | grep -o 'xxxxxxxxxx' | wc -l)" -ge 300 ] || tb_fail "a torn value after a kill at ${delay}s"
    prev=${now#marker-}; prev=${prev%-}
    killer "$delay" &
    call Volume.create "{\"dbg\":\"c$i\",$sr,\"name\":\"v$i\",\"description\":\"\",\"size\":4194304,\"sharable\":false}" >/dev/null
    wait
    listed=$(expect_ok SR.ls "{\"dbg\":\"m$i\",$sr}")
    lvs_count=$(lvs --noheadings -o lv_name "$vg" | grep -c 'vol-')
    listed_count=$(echo "$listed" | grep -o '"key":"vol-' | wc -l)
    [ "$lvs_count" = "$listed_count" ] || tb_fail "after a kill at ${delay}s: $lvs_count LVs but $listed_count volumes listed"
done
tb_log "16 kills inside Volume.set ($interrupted interrupted) and 16 inside Volume.create: always old or new, nothing orphaned"
[ "$interrupted" -gt 0 ] || tb_fail "no call was ever interrupted: the kill test tested nothing"
"#,
            ),
        ),
        Scenario::script(
            "sr-create-kills",
            &script(
                exe,
                r#"
# SR.create killed at many points (between pvcreate and vgcreate among them): the
# retry without force succeeds, and no registry user of the killed call is left.
nqn=$(tb_simple_target createkill 64 10.99.0.1)
other=22222222-3333-4444-5555-666666666666
cfg2="\"portals\":\"10.99.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\""
create2() { call SR.create "{\"dbg\":\"$1\",\"uuid\":\"$other\",\"configuration\":{$cfg2},\"name\":\"k\",\"description\":\"\"}"; }
killed=0
for i in $(seq 1 6); do
    delay=$(awk -v i="$i" 'BEGIN { printf "%.3f", i * 0.15 }')
    ( sleep "$delay"; pkill -9 -f 'org.xen.xapi.storage.nvmetcp/SR.create'; pkill -9 -x lvm; true ) &
    out=$(create2 "kc$i")
    wait
    case $out in "OK "*) ;; *) killed=$((killed + 1)) ;; esac
    out=$(create2 "rc$i")
    case $out in "OK "*) stored2=${out#OK } ;; *) tb_fail "the retry of an SR.create killed at ${delay}s failed: $out"; break ;; esac
    if grep -q '"create-' /run/nvmetcp/fabric-users.json; then tb_fail "a create's registry user outlived it"; fi
    expect_ok SR.attach "{\"dbg\":\"a$i\",\"configuration\":$stored2}" >/dev/null
    expect_ok SR.destroy "{\"dbg\":\"x$i\",\"sr\":\"nvmetcp://sr/$other\"}" >/dev/null
done
tb_log "6 kills inside SR.create ($killed interrupted): every retry succeeded without force"
"#,
            ),
        ),
        Scenario::script("path-faults", &script(exe, faults::PATH_FAULTS)).timeout_secs(600),
        Scenario::script("call-kills", &script(exe, faults::CALL_KILLS)).timeout_secs(600),
        Scenario::script("namespace-swap", &script(exe, faults::NAMESPACE_SWAP)),
        // Last: it changes this host's pool role.
        Scenario::script(
            "sr-pool-member",
            &script(
                exe,
                r#"
nqn=$(tb_simple_target member 64 10.99.0.1)
stored=$(expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"10.99.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"before\",\"description\":\"\"}")
mkdir -p /etc/xensource
echo "slave:10.0.0.1" >/etc/xensource/pool.conf
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
stat_sr | grep -q '"name":"before"'
expect_err NVMETCP_NOT_MASTER SR.set_name "{\"dbg\":\"n\",\"sr\":\"nvmetcp://sr/$SR\",\"new_name\":\"x\"}" | grep -q 'runs on the pool master only'
expect_err NVMETCP_NOT_MASTER SR.destroy "{\"dbg\":\"x\",\"sr\":\"nvmetcp://sr/$SR\"}" >/dev/null
expect_err NVMETCP_NOT_MASTER SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"10.99.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"n\",\"description\":\"\"}" >/dev/null
echo master >/etc/xensource/pool.conf
expect_ok SR.set_name "{\"dbg\":\"n\",\"sr\":\"nvmetcp://sr/$SR\",\"new_name\":\"after\"}" >/dev/null
echo "slave:10.0.0.1" >/etc/xensource/pool.conf
stat_sr | grep -q '"name":"after"' || tb_fail "the member does not see the master's change"
# A role that cannot be trusted writes nothing: 'broken', empty, missing on an XCP-ng host.
sr="\"sr\":\"nvmetcp://sr/$SR\""
before=$(lvm lvs --noheadings -o lv_name,lv_tags 2>/dev/null | md5sum)
for role in broken "" missing; do
    if [ "$role" = missing ]; then
        rm -f /etc/xensource/pool.conf; echo "INSTALLATION_UUID='tb'" >/etc/xensource-inventory
    else
        printf '%s\n' "$role" >/etc/xensource/pool.conf
    fi
    expect_err NVMETCP_POOL_ROLE_UNKNOWN Volume.create "{\"dbg\":\"v\",$sr,\"name\":\"lost\",\"description\":\"\",\"size\":4194304,\"sharable\":false}" | grep -q 'Nothing was written' || tb_fail "role '$role': no clear refusal"
    expect_err NVMETCP_POOL_ROLE_UNKNOWN SR.set_name "{\"dbg\":\"n\",$sr,\"new_name\":\"lost\"}" >/dev/null
done
rm -f /etc/xensource-inventory
[ "$(lvm lvs --noheadings -o lv_name,lv_tags 2>/dev/null | md5sum)" = "$before" ] || tb_fail "a host of unknown role wrote LVM metadata"
stat_sr | grep -q '"name":"after"' || tb_fail "a host of unknown role renamed the SR"
rm -f /etc/xensource/pool.conf
expect_ok SR.destroy "{\"dbg\":\"x\",\"sr\":\"nvmetcp://sr/$SR\"}" >/dev/null
"#,
            ),
        ),
    ]
}

fn host_side() -> ExitCode {
    if !nvmetcp_testbed::build_under_test() {
        println!("0 passed, 1 failed");
        return ExitCode::FAILURE;
    }

    let exe = std::env::current_exe().unwrap().display().to_string();
    run_suite("sr", &scenarios(&exe))
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Where `tests/xapi-peers/prepare` installed the `xen-api` client.
fn peers_dir() -> PathBuf {
    std::env::var_os("NVMETCP_PEERS_DIR")
        .map_or_else(|| repository_root().join(".testbed-cache/xapi-peers"), PathBuf::from)
}

fn xo_plugin_script() -> String {
    format!(
        r#"
[ -d "{peers}/node/node_modules/xen-api" ] || tb_fail "xen-api is not installed in {peers}: run tests/xapi-peers/prepare"
nqn=$(tb_simple_target xo 64 10.99.0.1 10.99.0.2)
"{emulator}" --plugin "{plugin}" >emulator.url 2>emulator.log &
emulator=$!
tb_wait 10 "the emulated pool" test -s emulator.url
rc=0
NVMETCP_XAPI_URL=$(head -n 1 emulator.url) NVMETCP_XO_NQN=$nqn NVMETCP_XO_PORTALS=10.99.0.1,10.99.0.2 \
    NVMETCP_PEERS_DIR="{peers}" node --test --test-reporter=spec "{root}/xo/xo-server-nvmetcp/test/testbed/storage.test.mjs" \
    >node.log 2>&1 || rc=$?
cat node.log
kill "$emulator"
[ "$rc" = 0 ] || tb_fail "the Xen Orchestra plugin's test-bed tests failed (exit $rc)"
"#,
        emulator = nvmetcp_testbed::built_binary("xapi-emulator").display(),
        plugin = plugin_binary().display(),
        peers = peers_dir().display(),
        root = repository_root().display(),
    )
}

/// `serve-xapi SOCKET` with one value per line on stdin (keys stay out of
/// argv): an emulated XAPI on the dom0 socket holding each value as a secret;
/// prints their UUIDs on one line, then serves until killed.
fn serve_xapi(args: &[String]) -> ExitCode {
    let [socket] = args else {
        eprintln!("usage: serve-xapi SOCKET <values");
        return ExitCode::FAILURE;
    };
    let values: Vec<String> = std::io::stdin().lines().map_while(Result::ok).filter(|l| !l.is_empty()).collect();
    let emulator = xapi_emulator::Emulator::new(xapi_emulator::Config::default(), xapi_emulator::AcceptAll);
    let _ = std::fs::remove_file(socket);
    emulator.listen_unix(Path::new(socket)).unwrap();
    let client = xapi_client::Client::new(xapi_client::Endpoint::Unix(socket.into()), xapi_client::Timeouts::default());
    let session = client.login(&xapi_client::Credentials::local_root(), "nvmet_sr").unwrap();
    let uuids: Vec<String> = values
        .iter()
        .map(|value| {
            let secret = xapi_client::api::secret::create(&session, &xapi_client::Secret::new(value.as_str())).unwrap();
            xapi_client::api::secret::get_uuid(&session, &secret).unwrap()
        })
        .collect();
    drop(session);
    println!("{}", uuids.join(" "));
    loop {
        std::thread::park();
    }
}

/// `serve-pool SOCKET`: an emulated XAPI for a pool of this one host, whose
/// storage calls run the real plugin; serves until killed.
fn serve_pool(args: &[String]) -> ExitCode {
    let [socket] = args else {
        eprintln!("usage: serve-pool SOCKET");
        return ExitCode::FAILURE;
    };
    let backend = xapi_emulator::PluginBackend::new(&plugin_binary()).unwrap();
    let config = xapi_emulator::Config { hosts: vec!["testbed".into()], ..xapi_emulator::Config::default() };
    let emulator = xapi_emulator::Emulator::new(config, backend);
    let _ = std::fs::remove_file(socket);
    emulator.listen_unix(Path::new(socket)).unwrap();
    loop {
        std::thread::park();
    }
}

/// `serve-agent-pool SR_UUID OUT DEVICE_CONFIG_JSON`: an emulated XAPI on
/// the dom0 socket for a pool of this one host, holding SR `SR_UUID`
/// (introduced, with this host's PBD), with this host's UUID written to
/// `/etc/xensource-inventory` as on dom0. Every 200 ms it writes what the
/// host agent published to `OUT/updates` (`PBD other_config KEY VALUE` /
/// `SR sm_config KEY VALUE`, one line per change, in order) and
/// `OUT/messages` (`NAME PRIORITY CLASS UUID BODY`); serves until killed.
fn serve_agent_pool(args: &[String]) -> ExitCode {
    use xapi_client::api::{pbd, sr};
    let [sr_uuid, out, device_config] = args else {
        eprintln!("usage: serve-agent-pool SR_UUID OUT DEVICE_CONFIG_JSON");
        return ExitCode::FAILURE;
    };
    let device_config: std::collections::BTreeMap<String, String> = serde_json::from_str(device_config).unwrap();
    // A name_label unlike the guest's hostname: alerts must name the host as XAPI does.
    let config = xapi_emulator::Config { hosts: vec!["xcp-host-7".into()], ..xapi_emulator::Config::default() };
    let emulator = xapi_emulator::Emulator::new(config, xapi_emulator::AcceptAll);
    let xapi = XapiHost::serve(HostRoot::at("/"), emulator, "xcp-host-7");
    let session = &xapi.session;
    let params = [sr_uuid.as_str(), "agent", "", "nvmetcp", "user"].map(xapi_client::Value::from);
    let mut params: Vec<xapi_client::Value> = params.into();
    params.push(xapi_client::Value::Bool(true));
    params.push(xapi_client::Value::map(&std::collections::BTreeMap::new()));
    let sr_ref =
        xapi_client::api::SrRef(session.call("SR.introduce", params).unwrap().as_str("SR ref").unwrap().into());
    pbd::create(session, &xapi.me, &sr_ref, &device_config).unwrap();
    assert_eq!(sr::get_by_uuid(session, sr_uuid).unwrap(), sr_ref);
    let emulator = &xapi.emulator;
    std::fs::create_dir_all(out).unwrap();
    loop {
        let updates: String = emulator
            .map_updates()
            .into_iter()
            .map(|u| format!("{} {} {} {}\n", u.class, u.field, u.key, u.value.unwrap_or_else(|| "(removed)".into())))
            .collect();
        let messages: String = emulator
            .records("message")
            .into_iter()
            .map(|(_, m)| {
                let field = |name: &str| m.as_struct("message").unwrap()[name].as_str(name).unwrap().to_owned();
                format!(
                    "{} {} {} {} {}\n",
                    field("name"),
                    field("priority"),
                    field("cls"),
                    field("obj_uuid"),
                    field("body")
                )
            })
            .collect();
        std::fs::write(Path::new(out).join("updates.tmp"), updates).unwrap();
        std::fs::rename(Path::new(out).join("updates.tmp"), Path::new(out).join("updates")).unwrap();
        std::fs::write(Path::new(out).join("messages.tmp"), messages).unwrap();
        std::fs::rename(Path::new(out).join("messages.tmp"), Path::new(out).join("messages")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `call METHOD JSON`: one call through the method links, one line out.
fn guest_call(args: &[String]) -> ExitCode {
    let [step, method, params] = args else {
        eprintln!("usage: call METHOD JSON");
        return ExitCode::FAILURE;
    };
    assert_eq!(step, "call");
    let tree = PluginTree::new(Path::new(&plugin_binary()), &[method.as_str()], &[method.as_str()]).unwrap();
    let params: serde_json::Value = serde_json::from_str(params).unwrap();
    let dir = if method.starts_with("Datapath.") { tree.datapath_dir() } else { tree.volume_dir() };
    match Caller::new().call(&dir, method, &params) {
        Ok(reply) => match reply.outcome {
            Outcome::Success(value) => println!("OK {value}"),
            Outcome::Failure { code, params, .. } => println!("ERR {code} {}", serde_json::to_string(&params).unwrap()),
        },
        Err(violation) => println!("PROTOCOL-VIOLATION {violation}"),
    }
    ExitCode::SUCCESS
}
