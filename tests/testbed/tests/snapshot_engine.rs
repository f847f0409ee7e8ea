//! The datapath engine (`sm_driver::engine`) with qemu-storage-daemon on
//! real qcow2 chains on real LVs on the kernel NVMe/TCP target, in the test
//! bed: a swap to a new leaf under `fio --verify`, the snapshot point held
//! exactly by the frozen node, ten successive layers merged back into the raw
//! base with the data intact.
//!
//! The chain operations of `sm_driver::snapshot::ops` (snapshot, clone,
//! destroy, the collector, journal replay) run on the same real LVM, with the
//! process SIGKILLed at every journal step and replay checked afterwards.
//!
//! The `links-*` scenarios drive the same model through the plugin's method
//! links, as xapi-storage-script calls them: `SR.attach` replaying the
//! journal of a plugin SIGKILLed mid-snapshot, a snapshotted volume served
//! by the engine (`vbd3`) snapshotted again under `fio --verify`, then
//! resized (refused while served, grown halted, its snapshots unchanged,
//! collected back to one LV of the new size), and the
//! snapshot's five `Volume.set`, revert, reset-on-boot and ten snapshots
//! destroyed back to one node by the collector, and the snapshots of a disk
//! the engine serves destroyed under `fio --verify`, merged by that engine,
//! with the collector SIGKILLed at each step of that merge.
//!
//! Same two-role design as `nvmet_fabric.rs`: on the host this binary boots
//! one guest with the scenarios; in the guest they call it back with
//! `NVMETCP_GUEST_STEP=1` and a step (`open`, `swap`, `merge`, `close`), which
//! drives the engine for real. Each step keeps the open disk's handle in a
//! JSON state file, as the datapath keeps it between plugin calls.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a test program

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nvmetcp_testbed::{plugin_binary, run_suite, two_role_main, Scenario};
use sm_driver::cmd::SystemRunner;
use sm_driver::engine::qsd::Qsd;
use sm_driver::engine::{Access, CommitState, DiskName, Engine, Image, ImageFormat, OpenDisk};
use sm_driver::host::HostRoot;
use sm_driver::lvm::Lvm;
use sm_driver::snapshot::graph::Graph;
use sm_driver::snapshot::ops::{Chains, Faults, NewNames, NothingOpen};
use sm_driver::snapshot::qemu_img::QemuImg;
use sm_driver::snapshot::served::{self, unmergeable_lvs, HereProbe, MergeHere, ServedHere};
use smapi_harness::{Caller, Outcome, PluginTree};

const RUN_BASE: &str = "/run/nvmetcp/engine";

/// The links scenarios' SR uuids, one each (a failed scenario leaves its SR).
const SR_PREFIX: &str = "6b1f0e2a-4c3d-4e5f-8a9b-0c1d2e3f4a5";

fn main() -> ExitCode {
    two_role_main("snapshot_engine", guest_step, |exe| {
        // The plugin binary must be current: the links scenarios call it.
        if !nvmetcp_testbed::build_under_test() {
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
        run_suite("engine", &scenarios(exe))
    })
}

/// `call METHOD JSON`: the method through a plugin tree of method links,
/// as xapi-storage-script runs it; prints `OK <value>` or `ERR <code> <params>`.
fn call_step(method: &str, params: &str) -> Result<(), String> {
    let plugin = plugin_binary();
    let tree = PluginTree::new(&plugin, &[method], &[method]).map_err(|e| e.to_string())?;
    let params: serde_json::Value = serde_json::from_str(params).map_err(|e| format!("{params}: {e}"))?;
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

fn image(format: &str, path: &str) -> Result<Image, String> {
    let format = match format {
        "raw" => ImageFormat::Raw,
        "qcow2" => ImageFormat::Qcow2,
        other => return Err(format!("unknown format {other}")),
    };
    Image::new(format, path).map_err(|e| e.to_string())
}

fn load(state: &str) -> Result<OpenDisk, String> {
    let text = std::fs::read_to_string(state).map_err(|e| format!("{state}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{state}: {e}"))
}

fn save(state: &str, disk: &OpenDisk) -> Result<(), String> {
    std::fs::write(state, serde_json::to_string(disk).unwrap()).map_err(|e| format!("{state}: {e}"))
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn guest_step(args: &[String]) -> Result<(), String> {
    let runner = SystemRunner::new();
    let host = HostRoot::system();
    let engine = Qsd::new(&runner, &host, RUN_BASE);
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["features"] => {
            let features = engine.features().map_err(|e| chain(&e))?;
            println!("qcow2={} online_commit={}", features.qcow2, features.online_commit);
        }
        ["open", name, format, path, state] => {
            let name = DiskName::new(name).map_err(|e| e.to_string())?;
            let disk = engine.open(&name, &image(format, path)?, Access::ReadWrite).map_err(|e| chain(&e))?;
            save(state, &disk)?;
            println!("{}", disk.device.display());
        }
        ["swap", state, format, path] => {
            let disk = load(state)?;
            let swapped = engine.swap_leaf(&disk, &image(format, path)?).map_err(|e| chain(&e))?;
            save(state, &swapped)?;
        }
        ["merge", state, top_format, top, base_format, base] => {
            let mut disk = load(state)?;
            let (top, base) = (image(top_format, top)?, image(base_format, base)?);
            engine.start_commit(&disk, &top, &base).map_err(|e| chain(&e))?;
            let deadline = Instant::now() + Duration::from_secs(240);
            loop {
                match engine.commit_state(&disk).map_err(|e| chain(&e))? {
                    CommitState::Done => break,
                    CommitState::Failed(why) => return Err(format!("merge failed: {why}")),
                    CommitState::Idle => return Err("the merge disappeared".to_owned()),
                    CommitState::Running { .. } if Instant::now() > deadline => return Err("merge too slow".to_owned()),
                    CommitState::Running { .. } => std::thread::sleep(Duration::from_millis(200)),
                }
            }
            if disk.leaf == top {
                // The leaf itself was merged: the base takes its place.
                disk.leaf = base;
                save(state, &disk)?;
            }
        }
        ["close", state] => engine.close(&load(state)?).map_err(|e| chain(&e))?,
        ["chains", device, vg, rest @ ..] => chains_step(&runner, device, vg, rest)?,
        ["call", method, params] => call_step(method, params)?,
        _ => return Err(format!("unknown step {args:?}")),
    }
    Ok(())
}

/// SIGKILLs this process at the step named by `NVMETCP_FAULT_AT`.
struct KillAt(Option<String>);

impl Faults for KillAt {
    fn reached(&self, step: &str) {
        if self.0.as_deref() == Some(step) {
            eprintln!("killed at {step}");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The SR the `chains-*` scenarios' served volumes are kept under, as the
/// plugin keeps them (`sm_driver::snapshot::served`'s handles).
const CHAINS_SR: &str = "chains";

const VOLUME_TAG: &str = "nvmetcp_vol";
/// The virtual size of the chain scenarios' volumes (small: TCG is slow).
const SIZE: u64 = 16 << 20;

fn chains_step(runner: &SystemRunner, device: &str, vg: &str, args: &[&str]) -> Result<(), String> {
    let lvm = Lvm::new(runner, std::path::Path::new(device), true).map_err(|e| chain(&e))?;
    let faults = KillAt(std::env::var("NVMETCP_FAULT_AT").ok());
    let vg: sm_driver::ids::VgName = vg.parse().map_err(|e| chain(&e))?;
    let chains = Chains::new(&lvm, QemuImg::new(runner), &vg, VOLUME_TAG, &faults);
    let names = |leaf: &str, volume: &str, clone_leaf: Option<&str>| NewNames {
        leaf: leaf.to_owned(),
        volume: volume.to_owned(),
        clone_leaf: clone_leaf.map(str::to_owned),
        record: Vec::new(),
    };
    let host = HostRoot::system();
    let served_engine = || served::engine(runner, &host).map_err(|e| chain(&e));
    match args {
        ["snapshot", volume, snapshot, leaf] => {
            chains.snapshot(volume, &names(leaf, snapshot, None), SIZE, None).map_err(|e| chain(&e))?;
        }
        // The plugin's own door to a served volume's engine and its handle.
        ["snapshot-running", volume, snapshot, leaf] => {
            let disk = served::open_here(&host, CHAINS_SR, volume).ok_or("the volume is not served")?;
            let engine = served_engine()?;
            let running = ServedHere {
                engine,
                host: &host,
                sr_uuid: CHAINS_SR,
                volume,
                disk,
                faults: &faults,
                lvm: &lvm,
                vg: &vg,
            };
            chains.snapshot(volume, &names(leaf, snapshot, None), SIZE, Some(&running)).map_err(|e| chain(&e))?;
        }
        ["clone", volume, clone, leaf, clone_leaf] => {
            chains.snapshot(volume, &names(leaf, clone, Some(clone_leaf)), SIZE, None).map_err(|e| chain(&e))?;
        }
        ["destroy", volume] => chains.destroy(volume).map_err(|e| chain(&e))?,
        ["collect"] => println!("{} steps", chains.collect(&NothingOpen).map_err(|e| chain(&e))?),
        // `Volume.destroy` of a volume of SR `sr` and the collector after
        // it, as the plugin on the master runs them, merging online in a
        // chain this host's engine serves (the plugin's handles of `sr`).
        ["destroy-online", sr, volume] => {
            let merging = MergeHere { runner, host: &host, sr_uuid: sr };
            let chains = chains.with_merging(&merging);
            chains.destroy(volume).map_err(|e| chain(&e))?;
            let lvs = lvm.lvs(&vg).map_err(|e| chain(&e))?;
            let graph = Graph::from_lvs(&lvs, VOLUME_TAG).map_err(|e| chain(&e))?;
            let busy = unmergeable_lvs(&host, sr, &graph);
            let probe = HereProbe { runner, host: &host, sr_uuid: sr };
            let (steps, _) = chains.collect_in(&probe, &busy, lvs).map_err(|e| chain(&e))?;
            println!("{steps} steps");
        }
        ["replay"] => println!("{} entries", chains.replay(&NothingOpen).map_err(|e| chain(&e))?),
        ["replay-running"] => {
            let probe = HereProbe { runner, host: &host, sr_uuid: CHAINS_SR };
            println!("{} entries", chains.replay(&probe).map_err(|e| chain(&e))?);
        }
        // A volume served as `Datapath.attach` serves a layered one.
        ["serve", volume, format, path] => {
            let name = DiskName::new(volume).map_err(|e| e.to_string())?;
            let disk = served_engine()?.open(&name, &image(format, path)?, Access::ReadWrite).map_err(|e| chain(&e))?;
            served::record(&host, CHAINS_SR, volume, &disk).map_err(|e| chain(&e))?;
            println!("{}", disk.device.display());
        }
        ["unserve", volume] => {
            if let Some(disk) = served::open_here(&host, CHAINS_SR, volume) {
                served_engine()?.close(&disk).map_err(|e| chain(&e))?;
                served::forget(&host, CHAINS_SR, volume);
            }
        }
        ["served-leaf", volume] => {
            let disk = served::open_here(&host, CHAINS_SR, volume).ok_or("the volume is not served")?;
            println!("{}", disk.leaf.path_str());
        }
        // The volume's leaf as `FORMAT PATH`, and its chain's length.
        ["leaf", volume] => {
            let graph = chains.graph().map_err(|e| chain(&e))?;
            let nodes = graph.chain(volume).map_err(|e| e.to_string())?;
            println!("{} /dev/{vg}/{} {}", nodes[0].format.qemu_name(), nodes[0].lv, nodes.len());
        }
        _ => return Err(format!("unknown chains step {args:?}")),
    }
    Ok(())
}

/// Shell helpers: a VG on the target's namespace, qcow2 layers in LVs.
const PRELUDE: &str = r#"
export NVMETCP_GUEST_STEP=1
SIZE=$((64 * 1024 * 1024))
trap 'for s in *.disk; do [ -e "$s" ] && "$T" close "$s"; done' EXIT
vg_on_target() { # NAME -> the VG name
    local nqn head
    nqn=$(tb_simple_target "$1" 1024 10.99.0.1) || return 1
    tb_connect "$nqn" 10.99.0.1 || return 1
    tb_wait 15 "the namespace head" tb_head "$nqn" >/dev/null
    head=$(tb_head "$nqn")
    pvcreate -q "$head" >&2 && vgcreate -q "vg$1" "$head" >&2 && echo "vg$1"
}
# The LV size of a qcow2 leaf of the virtual size, fully allocated.
leaf_bytes() {
    qemu-img measure -O qcow2 --size "$SIZE" -o cluster_size=65536 --output=json |
        sed -n 's/.*"fully-allocated": *\([0-9]*\).*/\1/p'
}
layer() { # VG NAME PARENT PARENT_FORMAT: an LV holding a qcow2 backed by PARENT
    lvcreate -q -L "$(leaf_bytes)b" -n "$2" "$1" >&2 &&
        qemu-img create -q -f qcow2 -o cluster_size=65536 -b "$3" -F "$4" "/dev/$1/$2" "$SIZE"
}
sum() { sha256sum <"$1" | cut -d' ' -f1; }
chain_sum() { # IMAGE [FORMAT]: the checksum of the chain ending at IMAGE, read offline
    qemu-img convert -U -f "${2:-qcow2}" -O raw "$1" /tmp/chain.raw && sum /tmp/chain.raw && rm -f /tmp/chain.raw
}
# The chain operations on real LVM: `ops VERB ARGS` on the VG $vg of device $head.
ops() { "$T" chains "$head" "$vg" "$@"; }
volume_sum() { # VOLUME: the checksum of the volume's data through its chain
    local format path depth
    read -r format path depth < <(ops leaf "$1")
    chain_sum "$path" "$format"
}
depth_of() { local format path depth; read -r format path depth < <(ops leaf "$1"); echo "$depth"; }
write_volume() { # VOLUME PATTERN OFFSET_MIB: 1 MiB of PATTERN into the volume's leaf
    local format path depth
    read -r format path depth < <(ops leaf "$1")
    qemu-io -f "$format" -c "write -P $2 ${3}M 1M" "$path" >/dev/null
}
no_journal() { ! lvs --noheadings -o lv_tags "$vg" | grep -q 'nj='; }
lv_count() { lvs --noheadings -o lv_name "$vg" | wc -l; }
killed_at() { # STEP VERB ARGS: the operation must die at STEP
    if NVMETCP_FAULT_AT=$1 ops "${@:2}"; then tb_fail "not killed at $1"; fi
    tb_log "killed at $1"
}
"#;

/// Shell helpers of the `links-*` scenarios: an SR through the method
/// links, its volumes' keys, data and chains.
const LINKS_PRELUDE: &str = r#"
call() { "$T" call "$@" | tee -a calls.log; }
expect_ok() { local out; out=$(call "$@"); case $out in "OK "*) echo "${out#OK }" ;; *) tb_fail "$1 failed: $out"; return 1 ;; esac; }
expect_err() { local code=$1 out; shift; out=$(call "$@"); case $out in "ERR $code "*) echo "$out" ;; *) tb_fail "$1: expected $code, got: $out"; return 1 ;; esac; }
json() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }
sr="\"sr\":\"nvmetcp://sr/$SR\""
vg=nvmetcp_$(echo "$SR" | tr -d -)
sr_up() { # NAME: an SR on a target of its own, attached; sets $stored and $head
    local nqn
    nqn=$(tb_simple_target "$1" 1024 10.99.0.1) || return 1
    stored=$(expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"10.99.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"$1\",\"description\":\"\"}")
    attach_sr
    head=$(pvs --noheadings -o pv_name -S vg_name="$vg" | tr -d ' ')
}
attach_sr() { expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null; }
new_volume() { # NAME -> key; 16 MiB
    json "$(expect_ok Volume.create "{\"dbg\":\"v\",$sr,\"name\":\"$1\",\"description\":\"d\",\"size\":16777216,\"sharable\":false}")" 'v["key"]'
}
snapshot() { json "$(expect_ok Volume.snapshot "{\"dbg\":\"sn\",$sr,\"key\":\"$1\"}")" 'v["key"]'; }
clone() { json "$(expect_ok Volume.clone "{\"dbg\":\"cl\",$sr,\"key\":\"$1\"}")" 'v["key"]'; }
set_key() { expect_ok Volume.set "{\"dbg\":\"s\",$sr,\"key\":\"$1\",\"k\":\"$2\",\"v\":\"$3\"}" >/dev/null; }
stat_of() { expect_ok Volume.stat "{\"dbg\":\"st\",$sr,\"key\":\"$1\"}"; }
destroy() { expect_ok Volume.destroy "{\"dbg\":\"d\",$sr,\"key\":\"$1\"}" >/dev/null; }
ls_keys() { json "$(expect_ok SR.ls "{\"dbg\":\"l\",$sr}")" '" ".join(sorted(x["key"] for x in v))'; }
dp() { echo "\"uri\":\"nvmetcp://$SR/$1\",\"domain\":\"3\""; }
plug() { # VOLUME -> its block device, attached and active as for a VM
    local backend
    backend=$(expect_ok Datapath.attach "{\"dbg\":\"da\",$(dp "$1")}") || return 1
    expect_ok Datapath.activate "{\"dbg\":\"dv\",$(dp "$1")}" >/dev/null
    json "$backend" '[i[1]["path"] for i in v["implementations"] if i[0] == "BlockDevice"][0]'
}
unplug() {
    expect_ok Datapath.deactivate "{\"dbg\":\"dd\",$(dp "$1")}" >/dev/null
    expect_ok Datapath.detach "{\"dbg\":\"dt\",$(dp "$1")}" >/dev/null
}
node_of() { lvs --noheadings -o lv_tags "$vg/$1" | tr ',' '\n' | sed -n 's/^ *nn=//p'; }
lv_bytes() { lvs --noheadings --units b --nosuffix -o lv_size "$vg/$1" | tr -d ' '; }
# NODE FULL_BYTES WHEN SNAPSHOT: NODE, the old leaf of SNAPSHOT (taken WHEN),
# is shrunk from FULL_BYTES to its image end rounded up to whole extents (the
# callers keep the image end well below FULL_BYTES), and checks clean.
shrunk_to() {
    local size end extent
    [ "$(node_of "$4")" = "$1" ] || tb_fail "the snapshot ($3) does not refer to the old leaf $1"
    size=$(lv_bytes "$1")
    end=$(json "$(qemu-img check -U --output=json "/dev/$vg/$1")" 'v["image-end-offset"]') ||
        tb_fail "qemu-img check fails on the shrunk node $1 ($3)"
    extent=$(vgs --noheadings --units b --nosuffix -o vg_extent_size "$vg" | tr -d ' ')
    tb_log "$3: the old leaf $1 went from $2 to $size bytes (image end $end, extent $extent)"
    [ $(((end + extent - 1) / extent * extent)) -lt "$2" ] ||
        tb_fail "the old leaf $1 holds too much to shrink: the scenario writes too much ($3)"
    [ "$size" -lt "$2" ] || tb_fail "the old leaf $1 was not shrunk ($3)"
    [ "$size" -eq $(((end + extent - 1) / extent * extent)) ] ||
        tb_fail "the old leaf $1 is not its image end rounded up to an extent ($3)"
}
# Reads and writes through a chain with its LVs active for that moment only
# (the plugin leaves no chain LV active: an active one is a volume in use).
# (While an engine has a chain open, vgchange -an deactivates none of the
# VG: every LV stays active, and an active volume is one in use.)
read_sum() { vgchange -q -ay "$vg" >&2; volume_sum "$1"; vgchange -q -an "$vg" >/dev/null 2>&1 || true; }
write_vol() { vgchange -q -ay "$vg" >&2; write_volume "$@"; vgchange -q -an "$vg" >/dev/null 2>&1 || true; }
# VOLUME...: their checksums on one line, the VG active once for all.
read_sums() {
    vgchange -q -ay "$vg" >&2
    local v out=""
    for v in "$@"; do out="$out $(volume_sum "$v")"; done
    vgchange -q -an "$vg" >/dev/null 2>&1 || true
    echo "${out# }"
}
"#;

fn scenarios(exe: &str) -> Vec<Scenario> {
    let script = |body: &str| format!("T={exe}\n{PRELUDE}\n{body}");
    let links = |last: char, body: &str| {
        let plugin = plugin_binary();
        format!("T={exe}\nSR={SR_PREFIX}{last}\nPLUGIN={}\n{PRELUDE}\n{LINKS_PRELUDE}\n{body}", plugin.display())
    };
    vec![
        Scenario::script("links-snapshot-killed", &links('b', LINKS_SNAPSHOT_KILLED)).timeout_secs(1200),
        Scenario::script("links-running-snapshot", &links('c', LINKS_RUNNING_SNAPSHOT)).timeout_secs(1500),
        Scenario::script("links-snapshot-clone-collect", &links('d', LINKS_SNAPSHOT_CLONE_COLLECT)).timeout_secs(1800),
        Scenario::script("links-online-merge", &links('e', LINKS_ONLINE_MERGE)).timeout_secs(1500),
        Scenario::script(
            "engine-swap-under-io",
            &script(
                r#"
$T features | tee features
grep -qx "qcow2=true online_commit=true" features
vg=$(vg_on_target swap)
lvcreate -q -L 64m -n vol-a "$vg"
base=/dev/$vg/vol-a
dev=$($T open vol-a raw "$base" a.disk)
tb_log "serving $base on $dev"
fio --name=fill --filename="$dev" --rw=write --bs=64k --size=64m --direct=1 \
    --verify=crc32c --do_verify=1 --output=fill.log || { cat fill.log; tb_fail "fio fill"; }
before=$(sum "$dev")

# Quiescent snapshot: the frozen base holds exactly the data at that point.
layer "$vg" l1 "$base" raw
$T swap a.disk qcow2 "/dev/$vg/l1"
[ "$(sum "$base")" = "$before" ] || tb_fail "the base differs from the disk at the snapshot point"
[ "$(sum "$dev")" = "$before" ] || tb_fail "the disk changed across the swap"
dd if=/dev/urandom of="$dev" bs=64k count=16 seek=100 oflag=direct status=none
[ "$(sum "$base")" = "$before" ] || tb_fail "a write after the snapshot reached the base"
[ "$(sum "$dev")" != "$before" ] || tb_fail "the write did not reach the disk"

# Snapshot under fio --verify: swap to l2 while random writes run.
layer "$vg" l2 "/dev/$vg/l1" qcow2
fio --name=live --filename="$dev" --rw=randwrite --bs=16k --size=32m --direct=1 \
    --verify=crc32c --do_verify=1 --iodepth=4 --ioengine=libaio --output=live.log &
fio_pid=$!
sleep 2
kill -0 $fio_pid || tb_fail "fio ended before the swap (too fast to prove anything)"
$T swap a.disk qcow2 "/dev/$vg/l2"
tb_log "swapped to l2 under I/O"
frozen=$(chain_sum "/dev/$vg/l1")
wait $fio_pid || { cat live.log; tb_fail "fio --verify failed across the swap"; }
grep -q "err= 0" live.log || { cat live.log; tb_fail "fio reported errors"; }
[ "$(chain_sum "/dev/$vg/l1")" = "$frozen" ] || tb_fail "the snapshot node changed after the swap"
qemu-img check -U -q "/dev/$vg/l1" && qemu-img check -U -q "/dev/$vg/l2"
qemu-img info -U "/dev/$vg/l2" | tee l2.info
grep -q "backing file: /dev/$vg/l1" l2.info
$T close a.disk
rm -f a.disk
"#,
            ),
        )
        .timeout_secs(400),
        Scenario::script(
            "engine-ten-layers-merged",
            &script(
                r#"
vg=$(vg_on_target chain)
lvcreate -q -L 64m -n vol-b "$vg"
base=/dev/$vg/vol-b
dev=$($T open vol-b raw "$base" b.disk)
dd if=/dev/urandom of="$dev" bs=1M count=64 oflag=direct status=none
parent=$base parent_format=raw
for i in $(seq 1 10); do
    layer "$vg" "s$i" "$parent" "$parent_format"
    $T swap b.disk qcow2 "/dev/$vg/s$i"
    # Each layer gets its own data: 1 MiB at offset i MiB.
    dd if=/dev/urandom of="$dev" bs=1M count=1 seek="$i" oflag=direct status=none
    parent=/dev/$vg/s$i parent_format=qcow2
done
expected=$(sum "$dev")
qemu-img info -U --backing-chain "/dev/$vg/s10" | grep -c "^image:" | tee depth
[ "$(cat depth)" = 11 ] || tb_fail "the chain is not 11 nodes deep"
# The collector's order: each unreferenced node into the base (an
# intermediate commit; QEMU relinks its child), then the leaf (an active
# commit: the base becomes the leaf).
for i in $(seq 1 9); do
    $T merge b.disk qcow2 "/dev/$vg/s$i" raw "$base"
    [ "$(sum "$dev")" = "$expected" ] || tb_fail "data changed merging s$i"
    lvremove -q -f "$vg/s$i"
done
qemu-img info -U "/dev/$vg/s10" | tee s10.info
grep -q "backing file: $base" s10.info || tb_fail "s10 was not relinked to the base"
$T merge b.disk qcow2 "/dev/$vg/s10" raw "$base"
[ "$(sum "$dev")" = "$expected" ] || tb_fail "data changed merging the leaf"
grep -q "\"path\":\"$base\"" b.disk || tb_fail "the disk does not write to the base now"
dd if=/dev/urandom of="$dev" bs=64k count=1 seek=3 oflag=direct status=none
expected=$(sum "$dev")
$T close b.disk
rm -f b.disk
lvremove -q -f "$vg/s10"
[ "$(sum "$base")" = "$expected" ] || tb_fail "the raw base does not hold the disk's data"
[ "$(lvs --noheadings -o lv_name "$vg" | wc -l)" = 1 ] || tb_fail "the chain was not collected to one node"
"#,
            ),
        )
        .timeout_secs(500),
        Scenario::script(
            "chains-snapshot-clone-killed",
            &script(
                r#"
vg=$(vg_on_target kill)
head=$(pvs --noheadings -o pv_name | tr -d ' ')
# A volume from before snapshots: a raw LV with its data.
lvcreate -q -L 16m -n vol-a --addtag nvmetcp_vol "$vg"
lvchange -q -ay "$vg/vol-a"
dd if=/dev/urandom of="/dev/$vg/vol-a" bs=1M count=16 oflag=direct status=none
a0=$(volume_sum vol-a)
lvs_before=$(lv_count)

# A snapshot killed before its commit point is undone: nothing left over.
for step in leaf-created leaf-header volume-created; do
    killed_at "$step" snapshot vol-a "snap-$step" "leaf-$step"
    ops replay
    no_journal || tb_fail "a journal entry survived replay after $step"
    [ "$(lv_count)" = "$lvs_before" ] || { lvs "$vg"; tb_fail "an LV was orphaned by a kill at $step"; }
    [ "$(volume_sum vol-a)" = "$a0" ] || tb_fail "vol-a's data changed after a kill at $step"
done
# Killed after it: finished, the snapshot holds the snapshot point.
killed_at committed snapshot vol-a snap-1 leaf-1
ops replay
no_journal || tb_fail "a journal entry survived replay after committed"
[ "$(volume_sum snap-1)" = "$a0" ] || tb_fail "the snapshot does not hold the snapshot point"
[ "$(depth_of vol-a)" = 2 ] || tb_fail "vol-a is not on its new leaf"
write_volume vol-a 0x5a 3
a1=$(volume_sum vol-a)
[ "$a1" != "$a0" ] || tb_fail "the write did not reach vol-a"
[ "$(volume_sum snap-1)" = "$a0" ] || tb_fail "a write to vol-a reached its snapshot"

# A clone killed at each step, then one that completes.
for step in leaf-created clone-leaf volume-created; do
    before=$(lv_count)
    killed_at "$step" clone vol-a "clone-$step" "cleaf-$step" "cown-$step"
    ops replay
    [ "$(lv_count)" = "$before" ] || { lvs "$vg"; tb_fail "a clone killed at $step orphaned an LV"; }
done
ops clone vol-a clone-1 leaf-2 cown-1
[ "$(volume_sum clone-1)" = "$a1" ] || tb_fail "the clone does not hold vol-a's data"
write_volume clone-1 0x33 7
[ "$(volume_sum vol-a)" = "$a1" ] || tb_fail "a write to the clone reached vol-a"

"#,
            ),
        )
        .timeout_secs(600),
        Scenario::script(
            "chains-collect-killed",
            &script(
                r#"
vg=$(vg_on_target gc)
head=$(pvs --noheadings -o pv_name | tr -d ' ')
lvcreate -q -L 16m -n vol-a --addtag nvmetcp_vol "$vg"
lvchange -q -ay "$vg/vol-a"
dd if=/dev/urandom of="/dev/$vg/vol-a" bs=1M count=16 oflag=direct status=none
# Four snapshots, each followed by a write, a clone in the middle.
for i in 1 2 3 4; do
    ops snapshot vol-a "snap-$i" "leaf-$i"
    write_volume vol-a "0x$((i + 10))" "$i"
    if [ "$i" = 2 ]; then
        ops clone vol-a clone-1 leaf-c cown-1
        write_volume clone-1 0x33 9
    fi
done
expected=$(volume_sum vol-a)
snap3=$(volume_sum snap-3)
tb_log "vol-a is $(depth_of vol-a) nodes deep"
for v in snap-1 snap-2 snap-4 clone-1; do ops destroy "$v"; done
# The collector killed at each of its steps once; replay finishes each.
for step in removed merge-journal merge-committed merge-relinked merge-retargeted; do
    killed_at "$step" collect
    ops replay
    [ "$(volume_sum vol-a)" = "$expected" ] || tb_fail "vol-a's data changed after a collector kill at $step"
    [ "$(volume_sum snap-3)" = "$snap3" ] || tb_fail "snap-3's data changed after a collector kill at $step"
done
ops collect
no_journal || tb_fail "the collector left a journal entry"
[ "$(volume_sum vol-a)" = "$expected" ] || tb_fail "vol-a's data changed in the collection"
[ "$(volume_sum snap-3)" = "$snap3" ] || tb_fail "snap-3, still referenced, lost data"
tb_log "after collection: vol-a $(depth_of vol-a) nodes, snap-3 $(depth_of snap-3) nodes, $(lv_count) LVs"
ops destroy snap-3
ops collect
[ "$(depth_of vol-a)" = 1 ] || { lvs -o lv_name,lv_tags "$vg"; tb_fail "the chain was not collected to one node"; }
[ "$(lv_count)" = 1 ] || { lvs -o lv_name,lv_tags "$vg"; tb_fail "LVs were left after the collection"; }
[ "$(volume_sum vol-a)" = "$expected" ] || tb_fail "vol-a's data changed in the last merge"
"#,
            ),
        )
        .timeout_secs(900),
        Scenario::script(
            "chains-running-snapshot",
            &script(
                r#"
vg=$(vg_on_target run)
head=$(pvs --noheadings -o pv_name | tr -d ' ')
lvcreate -q -L 16m -n vol-a --addtag nvmetcp_vol "$vg"
lvchange -q -ay "$vg/vol-a"
trap 'ops unserve vol-a' EXIT
dev=$(ops serve vol-a raw "/dev/$vg/vol-a")
fio --name=fill --filename="$dev" --rw=write --bs=64k --size=16m --direct=1 \
    --verify=crc32c --do_verify=1 --output=fill.log || { cat fill.log; tb_fail "fio fill"; }
a0=$(sum "$dev")
before=$(lv_count)

# Killed before the engine switched (the journal at Swapping; then the
# handle saying a swap was asked): the engine writes the old leaf (the
# handle, or the engine asked by replay, says so), so replay undoes.
for step in swapping swap-asked; do
    killed_at "$step" snapshot-running vol-a "snap-$step" "leaf-$step"
    ops replay-running
    no_journal || tb_fail "a journal entry survived replay ($step)"
    [ "$(lv_count)" = "$before" ] || { lvs "$vg"; tb_fail "an LV was orphaned by a kill at $step"; }
    [ "$(depth_of vol-a)" = 1 ] || tb_fail "vol-a moved off its leaf ($step)"
    [ "$(ops served-leaf vol-a)" = "/dev/$vg/vol-a" ] || tb_fail "the handle does not name the leaf in use ($step)"
done

# Killed after the engine switched, before the handle (swap-done) or the
# volume's LV (swapped) said so: the engine writes the new leaf, so
# replay finishes, and the handle names the leaf the engine writes.
depth=1
for step in swap-done swapped; do
    killed_at "$step" snapshot-running vol-a "snap-$step" "leaf-$step"
    ops replay-running
    depth=$((depth + 1))
    no_journal || tb_fail "a journal entry survived replay ($step)"
    [ "$(depth_of vol-a)" = "$depth" ] || tb_fail "vol-a is not on the leaf its engine writes ($step)"
    [ "$(ops served-leaf vol-a)" = "/dev/$vg/leaf-$step" ] || tb_fail "the handle does not name the new leaf ($step)"
    [ "$(volume_sum "snap-$step")" = "$a0" ] || tb_fail "the snapshot does not hold the snapshot point ($step)"
    [ "$(sum "$dev")" = "$a0" ] || tb_fail "the disk changed across the swap ($step)"
done

# A snapshot of the running volume under fio --verify.
fio --name=live --filename="$dev" --rw=randwrite --bs=4k --size=16m --direct=1 \
    --verify=crc32c --do_verify=1 --iodepth=4 --ioengine=libaio --output=live.log &
fio_pid=$!
sleep 2
kill -0 $fio_pid || tb_fail "fio ended before the snapshot"
ops snapshot-running vol-a snap-2 leaf-2
frozen=$(volume_sum snap-2)
wait $fio_pid || { cat live.log; tb_fail "fio --verify failed across the snapshot"; }
grep -q "err= 0" live.log || { cat live.log; tb_fail "fio reported errors"; }
[ "$(volume_sum snap-2)" = "$frozen" ] || tb_fail "the snapshot changed after it was taken"
[ "$(volume_sum snap-swapped)" = "$a0" ] || tb_fail "an earlier snapshot changed"
# The engine caches qcow2 metadata while open: compare the chain once closed.
served=$(sum "$dev")
ops unserve vol-a
[ "$served" = "$(volume_sum vol-a)" ] || tb_fail "the model's chain is not what the disk served"
no_journal || tb_fail "a journal entry was left"
"#,
            ),
        )
        .timeout_secs(600),
    ]
}

/// `Volume.snapshot`, `Volume.clone` and `Volume.destroy` (which runs the
/// collector's merges) SIGKILLed through their links, as xapi-storage-script
/// runs them, while their journal is on the VG (watched with `lvs`, so the
/// kill lands between journal steps whatever the machine's speed); after
/// each, `SR.attach` replays the journal and collects. Every volume holds
/// the disk's data throughout (the disk is not written), so one checksum
/// checks them all. While the killed destroy's merge is journalled, the
/// disk's `Datapath.attach` is refused (`NVMETCP_CHAIN_BUSY`) and leaves
/// nothing open.
const LINKS_SNAPSHOT_KILLED: &str = r#"
sr_up killed
a=$(new_volume "vm disk")
lvchange -q -ay "$vg/$a" && dd if=/dev/urandom of="/dev/$vg/$a" bs=1M count=16 oflag=direct status=none
a0=$(sum "/dev/$vg/$a")
lvchange -q -an "$vg/$a"
links=/tmp/kill-links/org.xen.xapi.storage.nvmetcp
mkdir -p "$links"
for m in Volume.snapshot Volume.clone Volume.destroy; do ln -sf "$PLUGIN" "$links/$m"; done
journal_tags() { lvs --noheadings -o lv_tags "$vg" | { grep -o 'nj=' || true; } | wc -l; }
running() { local state; state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$state" != Z ]; }
# METHOD KEY TAGS: the call SIGKILLed once TAGS journal tags are on the
# VG (a snapshot: 1 on its new leaf, 2 once its volume exists; a clone: 1,
# then 3 with its own leaf and volume; a merge: 1), then SR.attach; a
# killed call's method is appended to ./killed.
kill_call() {
    local pid rc=0 tags=0
    printf '%s' "{\"dbg\":\"k\",$sr,\"key\":\"$2\"}" >request.json
    "$links/$1" --json <request.json >/dev/null 2>&1 &
    pid=$!
    while running "$pid"; do
        tags=$(journal_tags)
        if [ "$tags" -ge "$3" ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
    done
    wait "$pid" || rc=$?
    case $rc in 137) echo "$1" >>killed ;; 0) ;; *) tb_fail "$1 failed ($rc)" ;; esac
    tb_log "$1 waiting for $3 journal tags: rc $rc with $tags tags, $(lv_count) LVs"
    # While its merge is journalled, the disk's chain is not served (the
    # engine opens it, reads the journal, closes it again, and says why).
    if [ "$rc" = 137 ] && [ "$1" = Volume.destroy ]; then
        [ "$(journal_tags)" -ge 1 ] || tb_fail "the killed destroy left no journal entry"
        expect_err NVMETCP_CHAIN_BUSY Datapath.attach "{\"dbg\":\"da\",$(dp "$a")}" | grep -q 'is changing its chain' ||
            tb_fail "a disk whose chain has a merge journalled was not refused saying why"
        [ -z "$(ls "/run/nvmetcp/engine/$SR" 2>/dev/null)" ] || tb_fail "the refused disk is still recorded open"
        echo busy >>killed
        tb_log "Datapath.attach refused while the merge is journalled"
    fi
    attach_sr
    no_journal || { lvs -o lv_name,lv_tags "$vg"; tb_fail "SR.attach left a journal entry ($1 killed at $tags tags)"; }
    for sum in $(read_sums $(ls_keys)); do
        [ "$sum" = "$a0" ] || tb_fail "a volume lost data ($1 killed at $tags tags): $(ls_keys)"
    done
}
: >killed
# Before the commit point (a snapshot's new leaf only) and after its
# volume exists (a clone's three LVs); chains-snapshot-clone-killed kills
# the same operations in process at every step.
kill_call Volume.snapshot "$a" 1
kill_call Volume.clone "$a" 3
# Two snapshots in a row: destroying the first leaves a node no volume
# refers to, which the collector merges with its only child (journalled).
s1=$(snapshot "$a")
snapshot "$a" >/dev/null
kill_call Volume.destroy "$s1" 1
tb_log "killed: $(sort killed | uniq -c | tr -s ' \n' ' '); $(ls_keys | wc -w) volumes, $(lv_count) LVs"
for m in snapshot clone destroy; do
    grep -q "$m" killed || tb_fail "no Volume.$m was killed mid-journal (each finished before its journal was seen)"
done
grep -qx busy killed || tb_fail "no Datapath.attach was tried while a merge was journalled"
for v in $(ls_keys); do [ "$v" = "$a" ] || destroy "$v"; done
[ "$(lv_count)" = 1 ] || { lvs -o lv_name,lv_tags "$vg"; tb_fail "an LV was orphaned by the kills"; }
[ "$(read_sum "$a")" = "$a0" ] || tb_fail "the disk's data changed"
"#;

/// A running VM's plain (never snapshotted) disk: through blkback (the
/// default) its snapshot is refused with the reason and the fix; with
/// `datapath = engine` in host.conf the master's engine serves it (`vbd3`)
/// and it is snapshotted while `fio --verify` writes to it, then again.
const LINKS_RUNNING_SNAPSHOT: &str = r#"
trap 'rm -f /etc/nvmetcp/host.conf' EXIT
sr_up running
a=$(new_volume "vm disk")
backend=$(expect_ok Datapath.attach "{\"dbg\":\"da\",$(dp "$a")}")
expect_ok Datapath.activate "{\"dbg\":\"dv\",$(dp "$a")}" >/dev/null
[ "$(json "$backend" 'v["implementations"][0][1]["backend_type"]')" = vbd ] || tb_fail "not blkback by default: $backend"
path=$(json "$backend" '[i[1]["path"] for i in v["implementations"] if i[0] == "BlockDevice"][0]')
dd if=/dev/urandom of="$path" bs=1M count=16 oflag=direct status=none
a0=$(sum "$path")
expect_err NVMETCP_SNAPSHOT_REFUSED Volume.snapshot "{\"dbg\":\"sn\",$sr,\"key\":\"$a\"}" | grep -q 'datapath = engine' ||
    tb_fail "a snapshot of a disk running on blkback was not refused with the reason and the fix"
unplug "$a"
[ "$(ls_keys)" = "$a" ] || tb_fail "the refused snapshot left a volume: $(ls_keys)"

# The master serves plain volumes through its engine: no offline snapshot first.
mkdir -p /etc/nvmetcp && echo "datapath = engine" >/etc/nvmetcp/host.conf
backend=$(expect_ok Datapath.attach "{\"dbg\":\"da\",$(dp "$a")}")
expect_ok Datapath.activate "{\"dbg\":\"dv\",$(dp "$a")}" >/dev/null
[ "$(json "$backend" 'v["implementations"][0][1]["backend_type"]')" = vbd3 ] || tb_fail "a plain volume not served as vbd3: $backend"
dev=$(json "$backend" '[i[1]["path"] for i in v["implementations"] if i[0] == "BlockDevice"][0]')
tb_log "the engine serves $a on $dev"
[ "$(sum "$dev")" = "$a0" ] || tb_fail "the engine does not serve the volume's data"
expect_err NVMETCP_VOLUME_ACTIVE Volume.destroy "{\"dbg\":\"d\",$sr,\"key\":\"$a\"}" >/dev/null
# Over the first half only: what lands on the new leaf must leave it room
# to shrink when the next snapshot freezes it (its LV holds a full image).
fio --name=live --filename="$dev" --rw=randwrite --bs=4k --size=8m --direct=1 \
    --verify=crc32c --do_verify=1 --iodepth=4 --ioengine=libaio --output=live.log &
fio_pid=$!
sleep 2
kill -0 $fio_pid || tb_fail "fio ended before the snapshot"
s1=$(snapshot "$a")
tb_log "snapshot $s1 of the running plain disk taken under I/O"
frozen=$(read_sum "$s1")
wait $fio_pid || { cat live.log; tb_fail "fio --verify failed across the running snapshot"; }
grep -q "err= 0" live.log || { cat live.log; tb_fail "fio reported errors"; }
[ "$(read_sum "$s1")" = "$frozen" ] || tb_fail "the snapshot changed after it was taken"
# Once more, now that the disk is a qcow2 leaf over its raw LV.
dd if=/dev/urandom of="$dev" bs=1M count=2 seek=3 oflag=direct status=none
before=$(sum "$dev")
old_leaf=$(node_of "$a")
full=$(lv_bytes "$old_leaf")
s2=$(snapshot "$a")
shrunk_to "$old_leaf" "$full" running "$s2"
[ "$(read_sum "$s2")" = "$before" ] || tb_fail "the second snapshot does not hold the snapshot point"
[ "$(read_sum "$s1")" = "$frozen" ] || tb_fail "the first snapshot changed"
dd if=/dev/urandom of="$dev" bs=1M count=1 seek=9 oflag=direct status=none
served=$(sum "$dev")
unplug "$a"
[ "$(read_sum "$a")" = "$served" ] || tb_fail "the chain does not hold what the engine served"
[ "$(read_sum "$s2")" = "$before" ] || tb_fail "a write after the second snapshot reached it"
# The snapshot volume itself attached, as XO's export does: its node (the
# one the disk's leaf is backed by) is opened read-only and never written.
sdev=$(plug "$s2")
tb_log "the snapshot $s2 attached on $sdev"
[ "$(sum "$sdev")" = "$before" ] || tb_fail "the attached snapshot does not serve the snapshot point"
if dd if=/dev/urandom of="$sdev" bs=64k count=1 oflag=direct status=none 2>/dev/null; then
    tb_fail "a write to the attached snapshot volume was accepted"
fi
tb_log "the write to the attached snapshot was refused"
unplug "$s2"
[ "$(read_sum "$s2")" = "$before" ] || tb_fail "attaching the snapshot changed its node"
[ "$(read_sum "$a")" = "$served" ] || tb_fail "attaching the snapshot changed the disk's data"
# At rest, the old leaf shrinks too.
old_leaf=$(node_of "$a")
full=$(lv_bytes "$old_leaf")
s3=$(snapshot "$a")
vgchange -q -ay "$vg" >&2
shrunk_to "$old_leaf" "$full" "at rest" "$s3"
vgchange -q -an "$vg" >/dev/null 2>&1 || true
[ "$(read_sum "$s3")" = "$served" ] || tb_fail "the snapshot taken at rest does not hold the disk's data"

# xe vdi-resize of the disk with snapshots: refused while it runs, done halted.
resize() { echo "{\"dbg\":\"rz\",$sr,\"key\":\"$a\",\"new_size\":$1}"; }
plug "$a" >/dev/null
expect_err NVMETCP_VOLUME_ACTIVE Volume.resize "$(resize 25165824)" | grep -q 'halt the VM, then resize' ||
    tb_fail "a resize of the running disk with snapshots was not refused saying to halt the VM"
unplug "$a"
expect_err NVMETCP_VOLUME_INVALID Volume.resize "$(resize 8388608)" >/dev/null
expect_ok Volume.resize "$(resize 25165824)" >/dev/null
size_of() { json "$(stat_of "$1")" 'v["virtual_size"]'; }
[ "$(size_of "$a")" = 25165824 ] && [ "$(size_of "$s3")" = 16777216 ] ||
    tb_fail "after the resize: the disk is $(size_of "$a") bytes, its snapshot $(size_of "$s3")"
no_journal && [ -z "$(lvs --noheadings -o lv_active "$vg" | tr -d ' ')" ] || tb_fail "the resize left a journal or an active LV"
write_vol "$a" 0x55 20
grown=$(read_sum "$a")
[ "$(read_sums "$s1" "$s2" "$s3")" = "$frozen $before $served" ] || tb_fail "the resize or a write past the old end changed a snapshot"
s4=$(snapshot "$a")
[ "$(size_of "$s4")" = 25165824 ] || tb_fail "a snapshot of the resized disk is $(size_of "$s4") bytes"
tb_log "resized at rest to 24 MiB, written past the old end; the snapshots unchanged"
# Every snapshot destroyed: the collector merges each resized layer into a
# smaller node, growing it first (the raw base last), back to one LV.
for s in "$s1" "$s2" "$s3" "$s4"; do destroy "$s"; done
no_journal || tb_fail "a journal entry was left"
[ "$(depth_of "$a")" = 1 ] && [ "$(lv_count)" = 1 ] || { lvs -o lv_name,lv_size,lv_tags "$vg"; tb_fail "not collected to one node"; }
[ "$(lv_bytes "$a")" = 25165824 ] && [ "$(size_of "$a")" = 25165824 ] ||
    tb_fail "the collected disk is not 24 MiB: LV $(lv_bytes "$a"), $(stat_of "$a")"
[ "$(read_sum "$a")" = "$grown" ] || tb_fail "the collected disk does not hold its data"
tb_log "collected back to one LV of 24 MiB, the data intact"
# (Collection of ten snapshots, clones and revert: links-snapshot-clone-collect.)
"#;

/// Issue 18's online merge: XO's snapshot -> export -> delete cycle on a
/// running VM. Two snapshots of a disk the master's engine serves, taken
/// and destroyed while `fio --verify` writes to it: the collector asks the
/// engine to merge (the node under the leaf, then the leaf itself into the
/// raw LV) and the chain is back to one node with the disk still running.
///
/// Then its kill test: with a snapshot kept, a new one is taken and
/// destroyed with the collector SIGKILLed at each of the online merge's
/// journal steps in turn (`destroy-online`: the plugin's destroy and
/// collector, in process, with `NVMETCP_FAULT_AT`), the engine merging the
/// running leaf into the node under it. `SR.attach` resolves each kill, and
/// a last one past the engine's pivot is resolved by the disk's
/// `Datapath.deactivate` when the VM stops. After each: no journal entry,
/// no LV that is neither a volume `SR.ls` lists nor a node of one's chain,
/// the chain as deep as before, the kept snapshot's data unchanged.
/// Throughout: no fio error, no kernel I/O error; at the end, one node
/// holding what the engine served.
const LINKS_ONLINE_MERGE: &str = r#"
trap 'rm -f /etc/nvmetcp/host.conf stop' EXIT
sr_up online
a=$(new_volume "vm disk")
mkdir -p /etc/nvmetcp && echo "datapath = engine" >/etc/nvmetcp/host.conf
dev=$(plug "$a")
errors0=$(dmesg | grep -c 'I/O error' || true)
# fio --verify in rounds until told to stop: a round's writes are checked at its end.
rm -f stop fio.failed
( r=0; while [ ! -e stop ]; do r=$((r + 1))
    fio --name=live --filename="$dev" --rw=randwrite --bs=4k --size=8m --direct=1 --verify=crc32c \
        --do_verify=1 --iodepth=4 --ioengine=libaio --output="fio-$r.log" || { echo "$r" >fio.failed; break; }
  done ) &
fio_pid=$!
sleep 2
s1=$(snapshot "$a")
s2=$(snapshot "$a")
tb_log "two snapshots of the running disk taken under I/O; $(depth_of "$a") nodes deep"
[ "$(depth_of "$a")" = 3 ] || tb_fail "two snapshots did not make the chain three deep"
destroy "$s1"
tb_log "the first snapshot destroyed: $(depth_of "$a") nodes deep"
destroy "$s2"
if [ "$(depth_of "$a")" != 1 ]; then
    # A merge that outlasted the collector's patience: the next run finishes it.
    tb_log "a merge was still running; SR.attach runs the collector again"
    attach_sr
fi
no_journal || tb_fail "a journal entry was left"
[ "$(depth_of "$a")" = 1 ] || { lvs -o lv_name,lv_tags "$vg"; tb_fail "the running disk's chain was not merged back to one node"; }
[ "$(lv_count)" = 1 ] || { lvs -o lv_name,lv_tags "$vg"; tb_fail "LVs were left after the merges"; }
[ "$(ls_keys)" = "$a" ] || tb_fail "SR.ls after the merges: $(ls_keys)"

# The kill test.
# VOLUME...: their checksums, through the chain the engine has open (and
# so active: read_sums would leave every LV active, since vgchange -an
# deactivates none while one is open, and an active volume is in use).
open_sums() {
    local v out=""
    for v in "$@"; do out="$out $(volume_sum "$v")"; done
    echo "${out# }"
}
# The VG in one look: "journal=ENTRIES depth=DEPTH_OF_A orphans=LVS", the
# orphans being the LVs neither a volume SR.ls lists nor a node of one's chain.
shape() {
    lvs --noheadings --separator ' ' -o lv_name,lv_tags "$vg" | python3 -c '
import sys
a, keys = sys.argv[1], sys.argv[2].split()
tags = {p[0]: (p[1].split(",") if len(p) > 1 else []) for p in (l.split() for l in sys.stdin) if p}
def tag(lv, key):
    return next((t[len(key):] for t in tags.get(lv, []) if t.startswith(key)), None)
seen, todo = set(), list(keys)
while todo:
    lv = todo.pop()
    if lv not in seen:
        seen.add(lv)
        todo += [n for n in (tag(lv, "nn="), tag(lv, "np=")) if n]
depth, node = 0, tag(a, "nn=") or a
while node:
    depth, node = depth + 1, tag(node, "np=")
journal = sum(t.startswith("nj=") for ts in tags.values() for t in ts)
print("journal=%d depth=%d orphans=%s" % (journal, depth, ",".join(sorted(set(tags) - seen))))' "$a" "$(ls_keys)"
}
# VOLUME STEP: VOLUME destroyed, the collector killed at STEP of its merge.
killed_destroy() {
    killed_at "$2" destroy-online "$SR" "$1"
    case $(shape) in journal=0*) tb_fail "the collector killed at $2 left no journal entry" ;; esac
}
# The raw LV (s0's) <- the leaf; each round's snapshot freezes the leaf, and
# its destruction merges the new leaf into it.
s0=$(snapshot "$a")
kept=$(open_sums "$s0")
keys=$(printf '%s\n' "$a" "$s0" | LC_ALL=C sort | tr '\n' ' ')
# STEP HOW: after a kill at STEP and HOW, the chain two deep, the disk and
# s0 (only they) listed, s0's data unchanged.
resolved() {
    local now sums
    now=$(shape)
    [ "$now" = "journal=0 depth=2 orphans=" ] ||
        { lvs -o lv_name,lv_tags "$vg"; tb_fail "killed at $1, then $2: $now (expected depth 2)"; }
    [ "$(ls_keys)" = "${keys% }" ] || tb_fail "killed at $1, then $2: SR.ls $(ls_keys)"
    if [ "$2" = Datapath.deactivate ]; then sums=$(read_sums "$s0"); else sums=$(open_sums "$s0"); fi
    [ "$sums" = "$kept" ] || tb_fail "killed at $1, then $2: the kept snapshot's data changed"
    tb_log "killed at $1, resolved by $2: $now"
}
for step in merge-journal merge-engine-started merge-engine-done; do
    s=$(snapshot "$a")
    killed_destroy "$s" "$step"
    attach_sr
    resolved "$step" SR.attach
    kill -0 $fio_pid 2>/dev/null || tb_fail "fio stopped (killed at $step)"
done
# Killed past the pivot, then the VM stops before anything else: its disk's
# close finishes the merge while the engine can still say where the writes went.
s=$(snapshot "$a")
killed_destroy "$s" merge-engine-done
kill -0 $fio_pid 2>/dev/null || tb_fail "fio stopped before the merges were done"
touch stop
wait $fio_pid
[ ! -e fio.failed ] || { cat "fio-$(cat fio.failed).log"; tb_fail "fio --verify failed in round $(cat fio.failed)"; }
grep -L "err= 0" fio-*.log | grep -q . && { cat fio-*.log; tb_fail "fio reported errors"; }
tb_log "fio --verify passed in $(ls fio-*.log | wc -l) rounds across the merges and the kills"
[ "$(dmesg | grep -c 'I/O error' || true)" = "$errors0" ] || tb_fail "the kernel logged I/O errors"
served=$(sum "$dev")
unplug "$a"
resolved merge-engine-done Datapath.deactivate
[ "$(read_sum "$a")" = "$served" ] || tb_fail "the chain does not hold what the engine served"
destroy "$s0"
[ "$(shape)" = "journal=0 depth=1 orphans=" ] && [ "$(lv_count)" = 1 ] ||
    { lvs -o lv_name,lv_tags "$vg"; tb_fail "not collected to one node: $(shape)"; }
[ "$(ls_keys)" = "$a" ] || tb_fail "SR.ls at the end: $(ls_keys)"
[ "$(read_sum "$a")" = "$served" ] || tb_fail "the raw LV does not hold what the engine served"
"#;

/// `xe vdi-snapshot` (the snapshot and xapi's five `Volume.set`), revert,
/// reset-on-boot, then successive snapshots destroyed and collected back to
/// one node, all through the method links. Small on purpose (16 MiB disk,
/// 1 MiB writes, the VG activated once per comparison): every plugin call
/// costs several LVM calls under TCG. Each step is timed.
const LINKS_SNAPSHOT_CLONE_COLLECT: &str = r#"
step() { tb_log "step: $*"; }
# Writes to several volumes with the VG active once: VOLUME PATTERN OFFSET_MIB ...
write_vols() {
    vgchange -q -ay "$vg" >&2
    while [ $# -ge 3 ]; do write_volume "$1" "$2" "$3"; shift 3; done
    vgchange -q -an "$vg" >/dev/null 2>&1 || true
}
step "SR up"
sr_up links
a=$(new_volume "vm disk")
set_key "$a" vdi-type user
# The disk's data written on its LV directly (a VM's writes, without the VM).
lvchange -q -ay "$vg/$a" && dd if=/dev/urandom of="/dev/$vg/$a" bs=1M count=16 oflag=direct status=none
a0=$(sum "/dev/$vg/$a")
lvchange -q -an "$vg/$a"

step "xe vdi-snapshot: Volume.snapshot, then xapi's five Volume.set"
s1=$(snapshot "$a")
for kv in "snapshot_time 20261201T23:40:00Z" "is_a_snapshot true" "snapshot_of $a" "content_id c-1" "vdi-type user"; do
    set_key "$s1" $kv
done
step "the snapshot's and the disk's keys"
st=$(stat_of "$s1")
[ "$(json "$st" 'v["keys"].get("is_a_snapshot")')" = true ] && [ "$(json "$st" 'v["keys"].get("snapshot_of")')" = "$a" ] ||
    tb_fail "the snapshot's keys did not stick: $st"
[ "$(json "$st" 'v["virtual_size"]')" = 16777216 ] || tb_fail "the snapshot's virtual size: $st"
st=$(stat_of "$a")
[ "$(json "$st" 'v["keys"].get("vdi-type")')" = user ] || tb_fail "the disk lost its keys: $st"
[ "$(json "$st" 'v["keys"].get("_sm_config_image-format")')" = qcow2 ] || tb_fail "the disk does not say it is qcow2: $st"
[ "$(ls_keys)" = "$(printf '%s\n' "$a" "$s1" | sort | tr '\n' ' ' | sed 's/ $//')" ] || tb_fail "SR.ls: $(ls_keys)"
step "the disk written after the snapshot"
write_vols "$a" 0x11 1
read -r a1 s1sum < <(read_sums "$a" "$s1")
[ "$a1" != "$a0" ] || tb_fail "the write did not reach the disk"
[ "$s1sum" = "$a0" ] || tb_fail "the snapshot does not hold the snapshot point (or a later write reached it)"

step "revert (xapi clones the snapshot) and reset-on-boot (a clone at VM start)"
r=$(clone "$s1")
t=$(clone "$a")
set_key "$a" clone-on-boot "$t"
read -r rsum tsum < <(read_sums "$r" "$t")
[ "$rsum" = "$a0" ] || tb_fail "the reverted disk does not hold the snapshot point"
[ "$tsum" = "$a1" ] || tb_fail "the reset-on-boot clone does not hold the disk's data"
write_vols "$r" 0x22 2 "$t" 0x33 3
read -r s1sum tsum asum < <(read_sums "$s1" "$t" "$a")
[ "$s1sum" = "$a0" ] || tb_fail "a write to the reverted disk reached the snapshot"
[ "$tsum" != "$a1" ] || tb_fail "the write did not reach the reset-on-boot clone"
[ "$asum" = "$a1" ] || tb_fail "the reset-on-boot clone's writes reached the disk"
step "the reset-on-boot clone and the reverted disk destroyed (at shutdown)"
destroy "$t"
expect_ok Volume.unset "{\"dbg\":\"u\",$sr,\"key\":\"$a\",\"k\":\"clone-on-boot\"}" >/dev/null
destroy "$r"

step "nine more snapshots (ten in all), the disk written after each"
snaps="$s1"
for i in $(seq 2 10); do
    [ "$i" != 5 ] || s5sum=$(read_sums "$a")
    snaps="$snaps $(snapshot "$a")"
    write_vols "$a" "0x$((40 + i))" "$((i % 16))"
done
set -- $snaps
s5=$5
read -r now expected < <(read_sums "$s5" "$a")
[ "$now" = "$s5sum" ] || tb_fail "the fifth snapshot does not hold its snapshot point (or a later write reached it)"
tb_log "the disk is $(depth_of "$a") nodes deep, $(lv_count) LVs"
[ "$(depth_of "$a")" = 11 ] || tb_fail "ten snapshots did not make the chain eleven deep"
step "the ten snapshots destroyed, the fifth referenced to the end"
for s in $snaps; do [ "$s" = "$s5" ] || destroy "$s"; done
[ "$(read_sums "$s5")" = "$s5sum" ] || tb_fail "the collector changed a snapshot still referenced"
[ "$(read_sums "$a")" = "$expected" ] || tb_fail "the collector changed the disk's data"
destroy "$s5"
step "collected to one node"
no_journal || tb_fail "a journal entry was left"
[ "$(depth_of "$a")" = 1 ] || { lvs -o lv_name,lv_tags "$vg"; tb_fail "the chain was not collected to one node"; }
[ "$(lv_count)" = 1 ] || { lvs -o lv_name,lv_tags "$vg"; tb_fail "LVs were left after the collection"; }
[ "$(ls_keys)" = "$a" ] || tb_fail "SR.ls after the collection: $(ls_keys)"
[ "$(json "$(stat_of "$a")" 'v["keys"].get("vdi-type")')" = user ] || tb_fail "the disk lost its keys in the collection"
# One node again, its own raw LV: blkback serves it with the data intact.
path=$(plug "$a")
[ "$(sum "$path")" = "$expected" ] || tb_fail "the collected disk does not hold its data"
unplug "$a"
step "done"
"#;
