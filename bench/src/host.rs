//! The host side: plugin-call overhead against its floors, then the test-bed
//! scenarios, then the report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nvmetcp_testbed::Scenario;
use smapi_harness::{Caller, PluginTree};

use crate::report::{self, Measures};
use crate::stats::Samples;

/// How much to measure.
pub struct Plan {
    /// Whole-process calls timed per measure.
    pub calls: usize,
    /// Repetitions of slow operations (attach, create).
    pub repeat: usize,
    /// Volume counts at which `SR.ls` is timed.
    pub sizes: Vec<usize>,
    /// Seconds per fio job.
    pub runtime: u32,
    /// Seconds of writes around each path cut.
    pub stall_seconds: u32,
}

impl Plan {
    fn new(short: bool) -> Self {
        if short {
            Self { calls: 20, repeat: 3, sizes: vec![10, 30], runtime: 2, stall_seconds: 18 }
        } else {
            Self { calls: 200, repeat: 10, sizes: vec![10, 100, 1000], runtime: 10, stall_seconds: 22 }
        }
    }
}

fn env_path(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(name).map(PathBuf::from).ok_or_else(|| format!("{name} is not set: run bench/run"))?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{name}={} does not exist: run bench/run", path.display()))
    }
}

fn time_dir(dir: &Path, n: usize) -> Result<Samples, String> {
    let params = serde_json::json!({"dbg": "bench"});
    let mut samples = Samples::default();
    for _ in 0..n {
        let started = Instant::now();
        let reply = Caller::new().call(dir, "Plugin.Query", &params).map_err(|e| e.to_string())?;
        samples.push(started.elapsed());
        if reply.exit_code != 0 {
            return Err(format!("Plugin.Query in {} failed: {}", dir.display(), reply.stdout));
        }
    }
    Ok(samples)
}

/// A directory whose `Plugin.Query` is a minimal Python 3 entry point doing
/// the same JSON in and out.
fn python_entry(work: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = work.join("python-plugin");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let script = dir.join("Plugin.Query");
    let query = serde_json::to_string(&sm_driver::dispatch::query(sm_driver::smapi::method::PluginKind::Volume))
        .map_err(|e| e.to_string())?;
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env python3\nimport json, sys\nparams = json.load(sys.stdin)\n\
             assert isinstance(params.get('dbg'), str)\nsys.stdout.write(json.dumps(json.loads({query:?})))\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn rss_of(bench: &Path, plugin: &Path, method: &str, params: &str) -> Result<i64, String> {
    #[allow(clippy::disallowed_methods)] // the bench runs itself as an isolated child
    let output = std::process::Command::new(bench)
        .args(["rss", method, params])
        .env("NVMETCP_GUEST_STEP", "1")
        .env("NVMETCP_PLUGIN", plugin)
        .output()
        .map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| String::from_utf8_lossy(&output.stderr).into_owned())
}

fn scenario(name: &str, prelude: &str, body: &str, timeout: u32) -> Scenario {
    Scenario::script(name, &format!("{prelude}\n{}\n{body}", include_str!("scenarios.sh"))).timeout_secs(timeout)
}

/// SR.attach on a fresh host against two `nvme connect` one after the
/// other, and those two in parallel (Linux creates controllers one at a time
/// under `nvmf_dev_mutex`, `drivers/nvme/host/fabrics.c`, so parallel
/// connects gain little); then the LVM calls of one attach. The SR is left
/// detached.
const ATTACH: &str = r#"
attach="{\"dbg\":\"a\",\"configuration\":$STORED}"
detach="{\"dbg\":\"d\",\"sr\":\"$H\"}"
: >"$SCENARIO_OUT/attach.txt"
for _ in $(seq "$REPEAT"); do
    call SR.detach "$detach" >/dev/null; no_paths "$nqn"
    t0=$EPOCHREALTIME; call SR.attach "$attach" >/dev/null; t1=$EPOCHREALTIME
    call SR.detach "$detach" >/dev/null; no_paths "$nqn"
    t2=$EPOCHREALTIME
    nvme connect -t tcp -a 10.99.0.1 -s 4420 -n "$nqn" >/dev/null
    nvme connect -t tcp -a 10.99.0.2 -s 4420 -n "$nqn" >/dev/null
    t3=$EPOCHREALTIME
    nvme disconnect -n "$nqn" >/dev/null; no_paths "$nqn"
    t4=$EPOCHREALTIME
    nvme connect -t tcp -a 10.99.0.1 -s 4420 -n "$nqn" >/dev/null &
    nvme connect -t tcp -a 10.99.0.2 -s 4420 -n "$nqn" >/dev/null &
    wait
    t5=$EPOCHREALTIME
    # The one LVM read an attach must make (the namespace holds this SR),
    # made by the plugin's own code (sm_driver::lvm) on the head.
    head=$(tb_head "$nqn")
    t6=$EPOCHREALTIME
    "$B" lvm-report "$head" >/dev/null
    t7=$EPOCHREALTIME
    nvme disconnect -n "$nqn" >/dev/null; no_paths "$nqn"
    echo "$(ms "$t0" "$t1") $(ms "$t2" "$t3") $(ms "$t4" "$t5") $(ms "$t6" "$t7")" >>"$SCENARIO_OUT/attach.txt"
done
"$B" count-lvm SR.attach "$attach" >"$SCENARIO_OUT/sr_attach_lvm.json"
call SR.detach "$detach" >/dev/null; no_paths "$nqn"
"#;

const CONTROL: &str = r#"
# 8 GiB, sparse on tmpfs: room for a thousand 4 MiB volumes, only metadata is written.
nqn=$(tb_simple_target bench 8192 10.99.0.1 10.99.0.2)
sr_up "$nqn" 10.99.0.1,10.99.0.2
ATTACH_MEASURES
call SR.attach "$attach" >/dev/null
stat="{\"dbg\":\"s\",\"sr\":\"$H\"}"
"$B" time-calls SR.stat "$stat" "$CALLS" >"$SCENARIO_OUT/sr_stat.json"
"$B" rss SR.stat "$stat" >"$SCENARIO_OUT/sr_stat_rss.json"
NVMETCP_PLUGIN=$NOOP "$B" time-calls Plugin.Query '{"dbg":"b"}' "$CALLS" >"$SCENARIO_OUT/noop.json"
"$B" time-calls Plugin.Query '{"dbg":"b"}' "$CALLS" >"$SCENARIO_OUT/query.json"
volume="{\"dbg\":\"v\",\"sr\":\"$H\",\"name\":\"b\",\"description\":\"\",\"size\":4194304,\"sharable\":false}"
"$B" time-calls Volume.create "$volume" "$REPEAT" >"$SCENARIO_OUT/volume_create.json"
: >"$SCENARIO_OUT/lvcreate.txt"
# Column 1: bare lvcreate. Column 2: one report of the VG, then lvcreate: the
# floor of a checked metadata write (the writer guard and the budget read the
# VG before every change, issue 16).
for i in $(seq "$REPEAT"); do
    t0=$EPOCHREALTIME; lvm lvcreate -q -L 4m -n "bare$i" "$VG" >/dev/null; t1=$EPOCHREALTIME
    lvm lvs "$VG" >/dev/null; lvm lvcreate -q -L 4m -n "read$i" "$VG" >/dev/null; t2=$EPOCHREALTIME
    printf '%s %s\n' "$(ms "$t0" "$t1")" "$(ms "$t1" "$t2")" >>"$SCENARIO_OUT/lvcreate.txt"
done
for i in $(seq "$REPEAT"); do lvm lvremove -q -f "$VG/bare$i" "$VG/read$i" >/dev/null; done
have=$REPEAT
for size in $SIZES; do
    "$B" time-calls Volume.create "$volume" $((size - have)) >/dev/null
    have=$size
    "$B" time-calls SR.ls "{\"dbg\":\"l\",\"sr\":\"$H\"}" 5 >"$SCENARIO_OUT/sr_ls_$size.json"
    "$B" count-lvm SR.ls "{\"dbg\":\"l\",\"sr\":\"$H\"}" >"$SCENARIO_OUT/sr_ls_lvm_$size.json"
    : >"$SCENARIO_OUT/lvs_$size.txt"
    for _ in 1 2 3 4 5; do
        t0=$EPOCHREALTIME; lvm lvs "$VG" >/dev/null; t1=$EPOCHREALTIME
        ms "$t0" "$t1" >>"$SCENARIO_OUT/lvs_$size.txt"
    done
done
"$B" count-lvm Volume.create "$volume" >"$SCENARIO_OUT/volume_create_lvm.json"
"#;

const ATTACH_ONLY: &str = r#"
nqn=$(tb_simple_target bench 1024 10.99.0.1 10.99.0.2)
sr_up "$nqn" 10.99.0.1,10.99.0.2
ATTACH_MEASURES
"#;

const DATA: &str = r#"
nqn=$(tb_simple_target bench 96 10.99.0.1 10.99.0.2)
raw=$TB_NQN_PREFIX:raw; single=$TB_NQN_PREFIX:single
tb_subsystem "$raw"; tb_namespace "$raw" 1 64; tb_link 1 "$raw"; tb_link 2 "$raw"
tb_subsystem "$single"; tb_namespace "$single" 1 64; tb_link 1 "$single"
sr_up "$nqn" 10.99.0.1,10.99.0.2
volume=$(volume_device 50331648)
nvme connect -t tcp -a 10.99.0.1 -s 4420 -n "$raw" >/dev/null
nvme connect -t tcp -a 10.99.0.2 -s 4420 -n "$raw" >/dev/null
nvme connect -t tcp -a 10.99.0.1 -s 4420 -n "$single" >/dev/null
tb_wait 10 "the raw heads" test -n "$(tb_head "$raw" 1 2>/dev/null)"
tb_wait 10 "the single-path head" test -n "$(tb_head "$single" 1 2>/dev/null)"
head=$(tb_head "$raw" 1); one=$(tb_head "$single" 1)
for target in volume:$volume head:$head single:$one; do
    name=${target%%:*}; dev=${target#*:}
    for job in read:1m write:1m randread:4k randwrite:4k; do
        rw=${job%%:*}; bs=${job#*:}
        fio --name=bench --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 --rw="$rw" --bs="$bs" \
            --size=40m --runtime="$RUNTIME" --time_based --output-format=json >"$SCENARIO_OUT/fio_${name}_$rw.json"
    done
done
"#;

const STALL: &str = r#"
nqn=$(tb_simple_target bench 96 10.99.0.1 10.99.0.2)
sr_up "$nqn" 10.99.0.1,10.99.0.2
dev=$(volume_device 33554432)
for cut in port address; do
    "$B" io-stall "$dev" "$STALL_SECONDS" >"$SCENARIO_OUT/stall_$cut.json" &
    writer=$!
    sleep 2
    t0=$EPOCHREALTIME
    if [ "$cut" = port ]; then tb_unlink 2 "$nqn"; else tb_addr_del 10.99.0.2; fi
    tb_wait 30 "the cut to be noticed" tb_has_live_paths "$nqn" 1
    t1=$EPOCHREALTIME
    sleep 2
    if [ "$cut" = port ]; then tb_link 2 "$nqn"; else tb_addr_add 10.99.0.2; fi
    t2=$EPOCHREALTIME
    tb_wait 60 "the path to be live again" tb_has_live_paths "$nqn" 2
    t3=$EPOCHREALTIME
    wait "$writer"
    echo "{\"noticed_ms\": $(ms "$t0" "$t1"), \"live_again_ms\": $(ms "$t2" "$t3")}" >"$SCENARIO_OUT/path_$cut.json"
done
"#;

/// The userspace initiator (the plugin's `--initiator-daemon`, served as
/// `/dev/nbdN`) against the kernel initiator on one namespace of one target,
/// job by job (interleaved, so drift hits both alike); the daemon's CPU
/// ticks per job and its peak resident memory.
const USERSPACE: &str = r#"
modprobe nbd nbds_max=4
nqn=$(tb_simple_target ub 160 10.99.0.1 10.99.0.2)
uuid=$(cat "$TB_CFG/subsystems/$nqn/namespaces/1/device_uuid")
nvme connect -t tcp -a 10.99.0.1 -s 4420 -n "$nqn" >/dev/null
nvme connect -t tcp -a 10.99.0.2 -s 4420 -n "$nqn" >/dev/null
tb_wait 10 "the kernel's head" test -n "$(tb_head "$nqn" 1 2>/dev/null)"
kernel=$(tb_head "$nqn" 1)
daemon_dir=/run/nvmetcp/initiator; state=$daemon_dir/$SR.json
mkdir -p "$daemon_dir"
(umask 077 && cat >"$daemon_dir/$SR.conf") <<CONF
sr = $SR
subsystem_nqn = $nqn
nsid = 1
namespace_uuid = $uuid
portal = 10.99.0.1:4420
portal = 10.99.0.2:4420
host_nqn = $(cat /etc/nvme/hostnqn)
host_id = $(cat /etc/nvme/hostid)
CONF
"$PLUGIN" --initiator-daemon "$SR" >daemon.log 2>&1 &
daemon=$!
tb_wait 60 "the userspace initiator to serve" grep -q '"phase": "serving"' "$state"
user=/dev/nbd$(json_field '["nbd"]["index"]' <"$state")
tb_log "kernel initiator: $kernel; userspace initiator: $user (daemon $daemon)"
getconf CLK_TCK >"$SCENARIO_OUT/clk_tck"
ticks() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
for job in read:1m:16 write:1m:16 randread:4k:16 randread:4k:64 randwrite:4k:16 randwrite:4k:64; do
    IFS=: read -r rw bs qd <<<"$job"
    for side in kernel:$kernel userspace:$user; do
        name=${side%%:*}; dev=${side#*:}
        t0=$(ticks)
        fio --name=bench --filename="$dev" --direct=1 --ioengine=libaio --iodepth="$qd" --rw="$rw" --bs="$bs" \
            --size=128m --runtime="$RUNTIME" --time_based --output-format=json >"$SCENARIO_OUT/fio_${name}_${rw}_$qd.json"
        echo $(($(ticks) - t0)) >"$SCENARIO_OUT/ticks_${name}_${rw}_$qd"
    done
done
awk '/VmHWM/ {print $2}' "/proc/$daemon/status" >"$SCENARIO_OUT/daemon_hwm_kib"
cp daemon.log "$SCENARIO_OUT/" || true
kill "$daemon"; wait "$daemon" || true
nvme disconnect -n "$nqn" >/dev/null
"#;

/// The snapshot engine's cost, at rest: `Volume.snapshot` (journal, new
/// leaf, its qcow2 header, the snapshot's record, commit point, the old
/// leaf shrunk, journal removed) against the bare `lvcreate` + `qemu-img
/// create` it cannot do without; then fio through the master's engine
/// (`datapath = engine`: qemu-storage-daemon over NBD in the test bed) on
/// a raw volume, and on the same volume once it is a one-layer chain (a
/// qcow2 leaf over the raw LV), job by job.
const SNAPSHOT: &str = r#"
modprobe nbd nbds_max=4
nqn=$(tb_simple_target bench 512 10.99.0.1)
sr_up "$nqn" 10.99.0.1
mkdir -p /etc/nvmetcp && echo "datapath = engine" >/etc/nvmetcp/host.conf
size=33554432
new_key() {
    call Volume.create "{\"dbg\":\"v\",\"sr\":\"$H\",\"name\":\"$1\",\"description\":\"\",\"size\":$size,\"sharable\":false}" |
        json_field '["key"]'
}
base=$(new_key timed)
leaf=$(qemu-img measure -O qcow2 --size "$size" -o cluster_size=65536 --output=json | json_field '["fully-allocated"]')
lvm lvchange -q -ay "$VG/$base"
: >"$SCENARIO_OUT/bare_snapshot.txt"
for i in $(seq "$REPEAT"); do
    t0=$EPOCHREALTIME
    lvm lvcreate -q -L "${leaf}b" -n "bare$i" "$VG" >/dev/null
    qemu-img create -q -f qcow2 -o cluster_size=65536 -b "/dev/$VG/$base" -F raw "/dev/$VG/bare$i" "$size"
    t1=$EPOCHREALTIME
    ms "$t0" "$t1" >>"$SCENARIO_OUT/bare_snapshot.txt"
done
for i in $(seq "$REPEAT"); do lvm lvremove -q -f "$VG/bare$i" >/dev/null; done
lvm lvchange -q -an "$VG/$base"
"$B" time-calls Volume.snapshot "{\"dbg\":\"s\",\"sr\":\"$H\",\"key\":\"$base\"}" "$REPEAT" >"$SCENARIO_OUT/snapshot.json"
io=$(new_key io)
dp="\"uri\":\"nvmetcp://$SR/$io\",\"domain\":\"0\""
for chain in raw layer; do
    [ "$chain" = raw ] || call Volume.snapshot "{\"dbg\":\"s\",\"sr\":\"$H\",\"key\":\"$io\"}" >/dev/null
    call Datapath.attach "{\"dbg\":\"p\",$dp}" >attach.json
    call Datapath.activate "{\"dbg\":\"p\",$dp}" >/dev/null
    dev=$(python3 -c 'import json,sys; v=json.load(sys.stdin); print([i[1]["path"] for i in v["implementations"] if i[0] == "BlockDevice"][0])' <attach.json)
    for job in read:1m write:1m randread:4k randwrite:4k; do
        rw=${job%%:*}; bs=${job#*:}
        fio --name=bench --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 --rw="$rw" --bs="$bs" \
            --size=24m --runtime="$RUNTIME" --time_based --output-format=json >"$SCENARIO_OUT/fio_${chain}_$rw.json"
    done
    call Datapath.deactivate "{\"dbg\":\"p\",$dp}" >/dev/null
    call Datapath.detach "{\"dbg\":\"p\",$dp}" >/dev/null
done
rm -f /etc/nvmetcp/host.conf
"#;

/// Only the snapshot engine's measures (`bench/run --snapshot`).
///
/// # Errors
/// A missing prerequisite or a failed scenario.
pub fn run_snapshot(short: bool) -> Result<(), String> {
    let prelude = prelude(&Plan::new(short))?;
    let scenarios = [scenario("snapshot", &prelude, SNAPSHOT, 900)];
    let load_before = report::load_average();
    let run = nvmetcp_testbed::run("bench", &scenarios).map_err(|e| e.to_string())?;
    let result = run.scenario("snapshot");
    if !result.passed() {
        return Err(format!("scenario snapshot failed; its log:\n{}", result.log));
    }
    report::write_snapshot(result, short, &load_before)
}

/// Runs only the userspace initiator against the kernel's
/// (`bench/run --userspace`: a few minutes, while working on the initiator).
///
/// # Errors
/// A missing prerequisite or a failed scenario.
#[allow(clippy::print_stderr)] // progress of a command-line run
pub fn run_userspace(short: bool) -> Result<(), String> {
    let prelude = prelude(&Plan::new(short))?;
    eprintln!("bench: the userspace initiator against the kernel's ({} mode)", if short { "short" } else { "full" });
    let scenarios = [scenario("userspace-initiator", &prelude, USERSPACE, 600)];
    let run = nvmetcp_testbed::run("bench", &scenarios).map_err(|e| e.to_string())?;
    let result = run.scenario("userspace-initiator");
    if !result.passed() {
        return Err(format!("scenario userspace-initiator failed; its log:\n{}", result.log));
    }
    report::write_userspace(result, short)
}

/// Only the SR.attach measures (`bench/run --attach`): one short scenario,
/// its rows printed with the machine's load.
///
/// # Errors
/// A missing prerequisite or a failed scenario.
pub fn run_attach(short: bool) -> Result<(), String> {
    let prelude = prelude(&Plan::new(short))?;
    let body = ATTACH_ONLY.replace("ATTACH_MEASURES", ATTACH);
    let scenarios = [scenario("attach", &prelude, &body, 1200)];
    let load_before = report::load_average();
    let run = nvmetcp_testbed::run("bench", &scenarios).map_err(|e| e.to_string())?;
    let result = run.scenario("attach");
    if !result.passed() {
        return Err(format!("scenario attach failed; its log:\n{}", result.log));
    }
    report::write_attach(result, short, &load_before)
}

/// The variables every scenario script starts with.
fn prelude(plan: &Plan) -> Result<String, String> {
    let plugin = env_path("NVMETCP_BENCH_PLUGIN")?;
    let noop = env_path("NVMETCP_BENCH_NOOP")?;
    let bench = std::env::current_exe().map_err(|e| e.to_string())?;
    let sizes: Vec<String> = plan.sizes.iter().map(ToString::to_string).collect();
    Ok(format!(
        "B={}\nPLUGIN={}\nNOOP={}\nREPEAT={}\nCALLS={}\nSIZES=\"{}\"\nRUNTIME={}\nSTALL_SECONDS={}",
        bench.display(),
        plugin.display(),
        noop.display(),
        plan.repeat,
        plan.calls,
        sizes.join(" "),
        plan.runtime,
        plan.stall_seconds
    ))
}

/// Runs everything and writes the report.
///
/// # Errors
/// A missing prerequisite or a failed scenario.
#[allow(clippy::print_stderr)] // progress of a long command-line run
pub fn run(short: bool) -> Result<(), String> {
    let plan = Plan::new(short);
    let plugin = env_path("NVMETCP_BENCH_PLUGIN")?;
    let noop = env_path("NVMETCP_BENCH_NOOP")?;
    let bench = std::env::current_exe().map_err(|e| e.to_string())?;
    let work = std::env::temp_dir().join(format!("nvmetcp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;

    eprintln!("bench: plugin call overhead on the host ({} calls each)", plan.calls);
    let plugin_tree = PluginTree::new(&plugin, &["Plugin.Query"], &[]).map_err(|e| e.to_string())?;
    let noop_tree = PluginTree::new(&noop, &["Plugin.Query"], &[]).map_err(|e| e.to_string())?;
    let python = python_entry(&work)?;
    // Interleaved rounds, so drift on a noisy machine hits all three alike.
    let (mut query, mut floor, mut py) = (Samples::default(), Samples::default(), Samples::default());
    let rounds = 5;
    for _ in 0..rounds {
        query.0.extend(time_dir(&plugin_tree.volume_dir(), plan.calls / rounds)?.0);
        floor.0.extend(time_dir(&noop_tree.volume_dir(), plan.calls / rounds)?.0);
        py.0.extend(time_dir(&python, (plan.calls / rounds / 4).max(2))?.0);
    }
    let query_rss = rss_of(&bench, &plugin, "Plugin.Query", r#"{"dbg":"bench"}"#)?;

    eprintln!("bench: the test bed ({} mode)", if short { "short" } else { "full" });
    let prelude = prelude(&plan)?;
    let control_timeout = if short { 600 } else { 7200 };
    let control = CONTROL.replace("ATTACH_MEASURES", ATTACH);
    let scenarios = [
        scenario("control-plane", &prelude, &control, control_timeout),
        scenario("data-path", &prelude, DATA, 900),
        scenario("path-cut", &prelude, STALL, 300),
        scenario("userspace-initiator", &prelude, USERSPACE, 600),
        scenario("snapshot", &prelude, SNAPSHOT, 900),
    ];
    let run = nvmetcp_testbed::run("bench", &scenarios).map_err(|e| e.to_string())?;
    for s in &scenarios {
        let result = run.scenario(s.name());
        if !result.passed() {
            return Err(format!("scenario {} failed; its log:\n{}", s.name(), result.log));
        }
    }
    let measures = Measures {
        short,
        plan,
        query,
        noop: floor,
        python: py,
        query_rss_kib: query_rss,
        control: run.scenario("control-plane").clone(),
        data: run.scenario("data-path").clone(),
        stall: run.scenario("path-cut").clone(),
        userspace: run.scenario("userspace-initiator").clone(),
        snapshot: run.scenario("snapshot").clone(),
    };
    let _ = std::fs::remove_dir_all(&work);
    report::write(&measures)
}
