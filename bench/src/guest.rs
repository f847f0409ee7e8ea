//! Steps the bench scenarios run inside the test-bed guest
//! (`NVMETCP_GUEST_STEP=1 nvmetcp-bench <step> …`), each printing JSON.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use smapi_harness::{Caller, Outcome, PluginTree};

use crate::stats::Samples;

fn tree(plugin: &Path) -> PluginTree {
    let all = |kind| sm_driver::dispatch::implemented(kind).iter().map(|m| m.file_name()).collect::<Vec<_>>();
    let volume = all(sm_driver::smapi::method::PluginKind::Volume);
    let datapath = all(sm_driver::smapi::method::PluginKind::Datapath);
    let volume: Vec<&str> = volume.iter().map(String::as_str).collect();
    let datapath: Vec<&str> = datapath.iter().map(String::as_str).collect();
    PluginTree::new(plugin, &volume, &datapath).unwrap_or_else(|e| panic!("plugin tree: {e}"))
}

fn dir(tree: &PluginTree, method: &str) -> PathBuf {
    if method.starts_with("Datapath.") {
        tree.datapath_dir()
    } else {
        tree.volume_dir()
    }
}

/// Calls `method` `n` times as whole processes and returns each duration;
/// fails on the first failed call.
pub fn time_calls(plugin: &Path, method: &str, params: &str, n: usize) -> Result<Samples, String> {
    let tree = tree(plugin);
    let params: serde_json::Value = serde_json::from_str(params).map_err(|e| e.to_string())?;
    let mut samples = Samples::default();
    for _ in 0..n {
        let started = Instant::now();
        let reply = Caller::new().call(&dir(&tree, method), method, &params).map_err(|e| e.to_string())?;
        samples.push(started.elapsed());
        if let Outcome::Failure { code, params, .. } = reply.outcome {
            return Err(format!("{method} failed: {code} {params:?}"));
        }
    }
    Ok(samples)
}

/// One call; its result value.
pub fn call(plugin: &Path, method: &str, params: &str) -> Result<serde_json::Value, String> {
    let tree = tree(plugin);
    let params: serde_json::Value = serde_json::from_str(params).map_err(|e| e.to_string())?;
    let reply = Caller::new().call(&dir(&tree, method), method, &params).map_err(|e| e.to_string())?;
    match reply.outcome {
        Outcome::Success(value) => Ok(value),
        Outcome::Failure { code, params, .. } => Err(format!("{method} failed: {code} {params:?}")),
    }
}

/// How many LVM commands one call runs (from its debug log).
#[allow(clippy::print_stderr)] // the scenario log of a guest-side step
pub fn count_lvm(plugin: &Path, method: &str, params: &str) -> Result<usize, String> {
    let tree = tree(plugin);
    let params: serde_json::Value = serde_json::from_str(params).map_err(|e| e.to_string())?;
    let reply = Caller::new()
        .env("NVMETCP_LOG", "debug")
        .env("NVMETCP_LOG_STDERR", "1")
        .call(&dir(&tree, method), method, &params)
        .map_err(|e| e.to_string())?;
    // The call's timestamped debug log goes to the scenario log: where the
    // time of one call goes (BENCHMARKS.md reads the attach's from it).
    eprint!("{method} debug log:\n{}", reply.stderr);
    Ok(reply.stderr.lines().filter(|l| l.contains("running") && l.contains("command=lvm")).count())
}

/// The one LVM read an `SR.attach` makes, as the plugin makes it
/// (`sm_driver::lvm::Lvm::vgs_and_lvs` on `device`, read-only): the number
/// of VGs it found. Timed by the scenario around this step, so the floor
/// follows the plugin's report if that ever changes.
pub fn lvm_report(device: &Path) -> Result<usize, String> {
    let runner = sm_driver::cmd::SystemRunner::new();
    let lvm = sm_driver::lvm::Lvm::new(&runner, device, false).map_err(|e| e.to_string())?;
    let (vgs, _) = lvm.vgs_and_lvs().map_err(|e| e.to_string())?;
    Ok(vgs.len())
}

/// The peak resident memory of one call, in KiB: this process runs nothing
/// else, so its children's peak is the call's.
pub fn rss(plugin: &Path, method: &str, params: &str) -> Result<i64, String> {
    time_calls(plugin, method, params, 1)?;
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).map_err(|e| e.to_string())?;
    Ok(usage.max_rss())
}

#[repr(align(4096))]
struct Block([u8; 4096]);

/// Writes 4 KiB blocks with O_DIRECT to `device` for `seconds`, and reports
/// the longest time one write took (the stall a VM would see), the number of
/// writes and of failed writes.
pub fn io_stall(device: &Path, seconds: f64) -> Result<serde_json::Value, String> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
        .open(device)
        .map_err(|e| format!("{}: {e}", device.display()))?;
    let block = Box::new(Block([0x5a; 4096]));
    let span = 16u64 << 20;
    let (mut ops, mut errors, mut longest, mut offset) = (0u64, 0u64, Duration::ZERO, 0u64);
    let mut latencies = Samples::default();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        let started = Instant::now();
        if file.write_at(&block.0, offset).is_err() {
            errors += 1;
        }
        let took = started.elapsed();
        latencies.push(took);
        longest = longest.max(took);
        ops += 1;
        offset = (offset + 4096) % span;
    }
    Ok(serde_json::json!({
        "ops": ops,
        "errors": errors,
        "longest_ms": longest.as_secs_f64() * 1000.0,
        "median_ms": latencies.median(),
    }))
}
