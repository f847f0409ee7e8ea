//! The datapath engine (`sm_driver::engine`) with qemu-storage-daemon on
//! real qcow2 chains on real LVs on the kernel NVMe/TCP target, in the test
//! bed: a swap to a new leaf under `fio --verify`, the snapshot point held
//! exactly by the frozen node, ten successive layers merged back into the raw
//! base with the data intact.
//!
//! Same two-role design as `nvmet_fabric.rs`: on the host this binary boots
//! one guest with the scenarios; in the guest they call it back with
//! `NVMETCP_GUEST_STEP=1` and a step (`open`, `swap`, `merge`, `close`), which
//! drives the engine for real. Each step keeps the open disk's handle in a
//! JSON state file, as the datapath keeps it between plugin calls.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a test program

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nvmetcp_testbed::{run_suite, Scenario};
use sm_driver::cmd::SystemRunner;
use sm_driver::engine::qsd::Qsd;
use sm_driver::engine::{Access, CommitState, DiskName, Engine, Image, ImageFormat, OpenDisk};
use sm_driver::host::HostRoot;

const RUN_BASE: &str = "/run/nvmetcp/engine";

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
        println!("snapshot_engine: test");
        return ExitCode::SUCCESS;
    }
    let exe = std::env::current_exe().unwrap().display().to_string();
    run_suite("engine", &scenarios(&exe))
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
        _ => return Err(format!("unknown step {args:?}")),
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
chain_sum() { # IMAGE: the checksum of the chain ending at IMAGE, read offline
    qemu-img convert -U -f qcow2 -O raw "$1" /tmp/chain.raw && sum /tmp/chain.raw && rm -f /tmp/chain.raw
}
"#;

fn scenarios(exe: &str) -> Vec<Scenario> {
    let script = |body: &str| format!("T={exe}\n{PRELUDE}\n{body}");
    vec![
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
    ]
}
