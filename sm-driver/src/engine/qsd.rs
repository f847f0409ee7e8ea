//! The qemu-storage-daemon engine: one daemon per open disk, driven over
//! QMP, its NBD export connected to a kernel block device with nbd-client.
//!
//! This is the engine of hosts without tapdisk (the Debian test bed), so the
//! driver's chains are exercised with QEMU's real qcow2 code on real LVs:
//!
//! | operation | QMP (QEMU `qapi/block-core.json`, `qapi/block-export.json`) |
//! |---|---|
//! | open | daemon started with a QMP monitor and an NBD server on unix sockets; `blockdev-add` of the leaf (its backing chain follows the qcow2 header); `block-export-add` type `nbd`; then `nbd-client -unix SOCK /dev/nbdN -name disk` |
//! | swap | `blockdev-add` of the new leaf with `backing: null`, then `blockdev-snapshot {node, overlay}`: QEMU drains the node's I/O, then appends the overlay, and every user of the old leaf (the export) now writes to the new one |
//! | merge | `block-commit {job-id: merge-<n or b><hash of the top image's path>, device, top-node, base-node, auto-dismiss: false}`; `query-block-jobs`; a `ready` job (the leaf merged) is completed with `block-job-complete`; a `concluded` job is collected with `job-dismiss` and its `error`, if any, reported; the merged node, if this engine added it, is closed with `blockdev-del` (else it would hold its LV open) |
//! | close | `nbd-client -d /dev/nbdN`, then `quit`, then the daemon is waited for |
//!
//! Node names are derived from the image path (`n` + 16 hex digits of its
//! FNV-1a hash), so any later call can address a node it opened; nodes QEMU
//! opened itself (backing files) are found by file name in
//! `query-named-block-nodes`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::qmp::{Qmp, QmpError};
use super::OpenDisk;
use super::{Access, CommitState, DiskName, Engine, EngineError, EngineKind, Features, Handle, Image, ImageFormat};
use crate::cmd::{CmdError, Command, Program, Runner};
use crate::host::HostRoot;

/// The NBD export's name.
const EXPORT: &str = "disk";
/// The merge job's id prefix; a name derived from the top image follows it
/// ([`merge_job`]), so the call that collects the job knows which node to
/// delete.
const MERGE_JOB: &str = "merge-";
/// How long the daemon may take to exit after `quit`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The qemu-storage-daemon engine.
pub struct Qsd<'a> {
    runner: &'a dyn Runner,
    host: &'a HostRoot,
    run_base: PathBuf,
}

fn tool(doing: &str, source: CmdError) -> EngineError {
    EngineError::Tool { engine: EngineKind::QemuStorageDaemon, doing: doing.to_owned(), source: Box::new(source) }
}

fn qmp_error(doing: &str, source: QmpError) -> EngineError {
    EngineError::Qmp { doing: doing.to_owned(), source: Box::new(source) }
}

fn io(doing: &str, source: std::io::Error) -> EngineError {
    EngineError::Io { engine: EngineKind::QemuStorageDaemon, doing: doing.to_owned(), source }
}

fn unexpected(doing: &str, answer: &Value) -> EngineError {
    EngineError::Unexpected {
        engine: EngineKind::QemuStorageDaemon,
        doing: doing.to_owned(),
        answer: answer.to_string(),
    }
}

/// The node name this engine gives the image at `path`.
#[must_use]
pub fn node_name(image: &Image) -> String {
    // FNV-1a, 64 bits: short, stable, and within QEMU's 31-character limit.
    let hash = image
        .path_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("n{hash:016x}")
}

/// The merge job's id for `top`, whose node in the daemon is `top_node`.
///
/// A QMP job id must be an identifier (a letter first, then letters,
/// digits, `-`, `.`, `_`): a node QEMU opened from a backing link is named
/// like `#block485`, which is not one. So the id is derived from the image
/// path, as [`node_name`] is: `merge-n<hash>` when the node is this
/// engine's own (named so; it stays open after the merge and is deleted
/// then), `merge-b<hash>` when QEMU opened it (it closes by itself).
fn merge_job(top: &Image, top_node: &str) -> String {
    let own = node_name(top);
    if top_node == own {
        format!("{MERGE_JOB}{own}")
    } else {
        format!("{MERGE_JOB}b{}", own.trim_start_matches('n'))
    }
}

/// `blockdev-add` arguments for `image` (`backing: null` for a new overlay).
fn blockdev(image: &Image, read_only: bool, no_backing: bool) -> Value {
    let mut node = json!({
        "driver": image.format().qemu_name(),
        "node-name": node_name(image),
        "read-only": read_only,
        "discard": "unmap",
        "cache": {"direct": true},
        "file": {"driver": "host_device", "filename": image.path_str(), "aio": "native", "cache": {"direct": true}},
    });
    if no_backing {
        node["backing"] = Value::Null;
    }
    node
}

impl<'a> Qsd<'a> {
    /// An engine keeping each disk's sockets under `run_base/<disk name>`,
    /// finding NBD devices under `host`'s `/sys/block`.
    #[must_use]
    pub fn new(runner: &'a dyn Runner, host: &'a HostRoot, run_base: impl Into<PathBuf>) -> Self {
        Self { runner, host, run_base: run_base.into() }
    }

    fn run_dir(&self, name: &DiskName) -> PathBuf {
        self.run_base.join(name.as_str())
    }

    fn qmp(disk: &OpenDisk, doing: &str) -> Result<Qmp, EngineError> {
        let Handle::QemuStorageDaemon { run_dir, .. } = &disk.handle else {
            return Err(EngineError::Unsupported {
                engine: EngineKind::QemuStorageDaemon,
                what: "manage this disk",
                why: "it is served by tapdisk".to_owned(),
            });
        };
        Qmp::connect(&run_dir.join("qmp.sock")).map_err(|e| qmp_error(doing, e))
    }

    /// The NBD devices no client uses (`/sys/block/nbdN` without `pid`).
    fn free_nbd_devices(&self) -> Result<Vec<String>, EngineError> {
        let names =
            self.host.list_dir("/sys/block").map_err(|e| io("listing NBD devices", std::io::Error::other(e)))?;
        let mut free: Vec<(u32, String)> = names
            .into_iter()
            .filter_map(|n| n.strip_prefix("nbd").and_then(|i| i.parse::<u32>().ok()).map(|i| (i, n)))
            .filter(|(_, n)| !self.host.exists(&format!("/sys/block/{n}/pid")))
            .collect();
        free.sort();
        Ok(free.into_iter().map(|(_, n)| n).collect())
    }

    /// Connects the export to the first free NBD device that takes it.
    fn connect_nbd(&self, socket: &Path) -> Result<PathBuf, EngineError> {
        // The module is built in on some kernels; a failed load shows up as
        // no device below.
        let _ = self.runner.run(&Command::new(Program::Modprobe).arg("nbd"));
        let socket = socket.to_str().unwrap_or_default();
        let mut last = None;
        for name in self.free_nbd_devices()? {
            let device = format!("/dev/{name}");
            let connect = Command::new(Program::NbdClient).args(["-unix", socket, &device, "-name", EXPORT]);
            match self.runner.run(&connect) {
                Ok(_) => return Ok(PathBuf::from(device)),
                // Another call may have taken it between the scan and now.
                Err(error) => last = Some(error),
            }
        }
        Err(match last {
            Some(error) => tool("connecting the NBD export to a kernel device", error),
            None => EngineError::Unsupported {
                engine: EngineKind::QemuStorageDaemon,
                what: "connect its export",
                why: "no free NBD device (load the nbd module: modprobe nbd nbds_max=64)".to_owned(),
            },
        })
    }

    /// Ends the daemon with `pid` and removes `run_dir`, best effort.
    fn stop_daemon(&self, run_dir: &Path, pid: u32) {
        if let Ok(mut qmp) = Qmp::connect(&run_dir.join("qmp.sock")) {
            // The connection drops as the daemon exits.
            let _ = qmp.execute("quit", json!({}));
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while self.host.exists(&format!("/proc/{pid}")) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Err(error) = std::fs::remove_dir_all(run_dir) {
            tracing::warn!(dir = %run_dir.display(), %error, "could not remove the daemon's directory");
        }
    }

    fn start(&self, run_dir: &Path, leaf: &Image, access: Access) -> Result<(u32, PathBuf), EngineError> {
        let path = |f: &str| run_dir.join(f).display().to_string();
        let daemon = Command::new(Program::QemuStorageDaemon).args([
            "--chardev".to_owned(),
            format!("socket,id=qmp,path={},server=on,wait=off", path("qmp.sock")),
            "--monitor".to_owned(),
            "chardev=qmp".to_owned(),
            "--nbd-server".to_owned(),
            format!("addr.type=unix,addr.path={}", path("nbd.sock")),
            "--pidfile".to_owned(),
            path("pid"),
            "--daemonize".to_owned(),
        ]);
        self.runner.run(&daemon).map_err(|e| tool("starting qemu-storage-daemon", e))?;
        let pid_text = std::fs::read_to_string(run_dir.join("pid")).map_err(|e| io("reading the daemon's pid", e))?;
        let pid: u32 = pid_text
            .trim()
            .parse()
            .map_err(|_| io("reading the daemon's pid", std::io::Error::other(pid_text.trim().to_owned())))?;
        let served = (|| {
            let mut qmp = Qmp::connect(&run_dir.join("qmp.sock")).map_err(|e| qmp_error("connecting to QMP", e))?;
            let read_only = access == Access::ReadOnly;
            qmp.execute("blockdev-add", blockdev(leaf, read_only, false))
                .map_err(|e| qmp_error("opening the image", e))?;
            let export = json!({"type": "nbd", "id": EXPORT, "node-name": node_name(leaf), "name": EXPORT, "writable": !read_only});
            qmp.execute("block-export-add", export).map_err(|e| qmp_error("exporting the image", e))?;
            self.connect_nbd(&run_dir.join("nbd.sock"))
        })();
        match served {
            Ok(device) => Ok((pid, device)),
            Err(error) => {
                self.stop_daemon(run_dir, pid);
                Err(error)
            }
        }
    }

    /// The name of the format node opened on `image` (ours, or one QEMU
    /// opened from a backing link).
    fn find_node(qmp: &mut Qmp, image: &Image) -> Result<String, EngineError> {
        let doing = "listing the open nodes";
        let nodes = qmp.execute("query-named-block-nodes", json!({"flat": true})).map_err(|e| qmp_error(doing, e))?;
        let list = nodes.as_array().ok_or_else(|| unexpected(doing, &nodes))?;
        list.iter()
            .filter(|n| n.get("drv").and_then(Value::as_str) == Some(image.format().qemu_name()))
            .filter(|n| n.get("file").and_then(Value::as_str) == Some(image.path_str()))
            .find_map(|n| n.get("node-name").and_then(Value::as_str).map(str::to_owned))
            .ok_or_else(|| EngineError::Unsupported {
                engine: EngineKind::QemuStorageDaemon,
                what: "find the node",
                why: format!("{} is not part of this disk's chain", image.path_str()),
            })
    }
}

impl Engine for Qsd<'_> {
    fn kind(&self) -> EngineKind {
        EngineKind::QemuStorageDaemon
    }

    fn features(&self) -> Result<Features, EngineError> {
        self.runner
            .run(&Command::new(Program::QemuStorageDaemon).arg("--version"))
            .map_err(|e| tool("probing qemu-storage-daemon", e))?;
        self.runner.resolve(Program::NbdClient).map_err(|e| tool("probing nbd-client", e))?;
        Ok(Features { qcow2: true, online_commit: true })
    }

    fn open(&self, name: &DiskName, leaf: &Image, access: Access) -> Result<OpenDisk, EngineError> {
        let run_dir = self.run_dir(name);
        if let Ok(pid) = std::fs::read_to_string(run_dir.join("pid")) {
            if self.host.exists(&format!("/proc/{}", pid.trim())) {
                return Err(EngineError::Unsupported {
                    engine: EngineKind::QemuStorageDaemon,
                    what: "open the disk twice",
                    why: format!("{} is already served by daemon {}", name.as_str(), pid.trim()),
                });
            }
        }
        // A stale directory from a daemon that died.
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir).map_err(|e| io("creating the daemon's directory", e))?;
        let (pid, device) = self.start(&run_dir, leaf, access)?;
        tracing::info!(pid, device = %device.display(), image = leaf.path_str(), "qemu-storage-daemon serving");
        Ok(OpenDisk { device, leaf: leaf.clone(), handle: Handle::QemuStorageDaemon { pid, run_dir } })
    }

    fn close(&self, disk: &OpenDisk) -> Result<(), EngineError> {
        let Handle::QemuStorageDaemon { pid, run_dir } = &disk.handle else {
            return Self::qmp(disk, "closing").map(drop);
        };
        if !run_dir.exists() {
            return Ok(());
        }
        let device = disk.device.display().to_string();
        let nbd_name = device.trim_start_matches("/dev/");
        if self.host.exists(&format!("/sys/block/{nbd_name}/pid")) {
            self.runner
                .run(&Command::new(Program::NbdClient).args(["-d", &device]))
                .map_err(|e| tool("disconnecting the NBD device", e))?;
        }
        self.stop_daemon(run_dir, *pid);
        Ok(())
    }

    fn swap_leaf(&self, disk: &OpenDisk, new_leaf: &Image) -> Result<OpenDisk, EngineError> {
        let mut qmp = Self::qmp(disk, "connecting to QMP")?;
        let old_node = Self::find_node(&mut qmp, &disk.leaf)?;
        qmp.execute("blockdev-add", blockdev(new_leaf, false, true))
            .map_err(|e| qmp_error("opening the new leaf", e))?;
        let snapshot = json!({"node": old_node, "overlay": node_name(new_leaf)});
        match qmp.execute("blockdev-snapshot", snapshot) {
            Ok(_) => {
                tracing::info!(leaf = new_leaf.path_str(), "qemu-storage-daemon switched to a new leaf");
                Ok(OpenDisk { leaf: new_leaf.clone(), ..disk.clone() })
            }
            Err(error) => {
                // The graph is unchanged (the transaction is atomic); drop
                // the unused overlay so its LV can be removed.
                let _ = qmp.execute("blockdev-del", json!({"node-name": node_name(new_leaf)}));
                Err(EngineError::SwapReverted {
                    engine: EngineKind::QemuStorageDaemon,
                    old_leaf: disk.leaf.path_str().to_owned(),
                    new_leaf: new_leaf.path_str().to_owned(),
                    source: Box::new(qmp_error("switching to the new leaf", error)),
                })
            }
        }
    }

    fn current_leaf(&self, disk: &OpenDisk) -> Result<Image, EngineError> {
        // The export's node is the top of the chain: `blockdev-snapshot`
        // moves every parent of the old leaf, the export too, to the overlay.
        let doing = "asking which image the disk writes to";
        let mut qmp = Self::qmp(disk, "connecting to QMP")?;
        let exports = qmp.execute("query-block-exports", json!({})).map_err(|e| qmp_error(doing, e))?;
        let node = exports
            .as_array()
            .and_then(|l| l.iter().find(|e| e.get("id").and_then(Value::as_str) == Some(EXPORT)))
            .and_then(|e| e.get("node-name").and_then(Value::as_str))
            .ok_or_else(|| unexpected(doing, &exports))?
            .to_owned();
        let nodes = qmp.execute("query-named-block-nodes", json!({"flat": true})).map_err(|e| qmp_error(doing, e))?;
        let found = nodes
            .as_array()
            .and_then(|l| l.iter().find(|n| n.get("node-name").and_then(Value::as_str) == Some(node.as_str())))
            .ok_or_else(|| unexpected(doing, &nodes))?;
        let format = match found.get("drv").and_then(Value::as_str) {
            Some("qcow2") => ImageFormat::Qcow2,
            Some("raw") => ImageFormat::Raw,
            _ => return Err(unexpected(doing, found)),
        };
        Image::new(format, found.get("file").and_then(Value::as_str).unwrap_or_default())
    }

    fn start_commit(&self, disk: &OpenDisk, top: &Image, base: &Image) -> Result<(), EngineError> {
        let mut qmp = Self::qmp(disk, "connecting to QMP")?;
        let top_node = Self::find_node(&mut qmp, top)?;
        let base_node = Self::find_node(&mut qmp, base)?;
        let device = Self::find_node(&mut qmp, &disk.leaf)?;
        let commit = json!({
            "job-id": merge_job(top, &top_node),
            "device": device,
            "top-node": top_node,
            "base-node": base_node,
            "auto-dismiss": false,
        });
        qmp.execute("block-commit", commit).map_err(|e| qmp_error("starting the merge", e))?;
        Ok(())
    }

    fn commit_state(&self, disk: &OpenDisk) -> Result<CommitState, EngineError> {
        let doing = "asking how the merge goes";
        let mut qmp = Self::qmp(disk, "connecting to QMP")?;
        let jobs = qmp.execute("query-block-jobs", json!({})).map_err(|e| qmp_error(doing, e))?;
        let list = jobs.as_array().ok_or_else(|| unexpected(doing, &jobs))?;
        let merge = |j: &&Value| j.get("device").and_then(Value::as_str).is_some_and(|d| d.starts_with(MERGE_JOB));
        let Some(job) = list.iter().find(merge) else {
            return Ok(CommitState::Idle);
        };
        let id = job.get("device").and_then(Value::as_str).unwrap_or_default();
        let number = |k: &str| job.get(k).and_then(Value::as_u64).unwrap_or(0);
        let (done, total) = (number("offset"), number("len"));
        match job.get("status").and_then(Value::as_str) {
            Some("ready") => {
                // The leaf itself was merged: switch the disk to the base.
                qmp.execute("block-job-complete", json!({"device": id}))
                    .map_err(|e| qmp_error("completing the merge", e))?;
                Ok(CommitState::Running { done, total })
            }
            Some("concluded") => {
                qmp.execute("job-dismiss", json!({"id": id})).map_err(|e| qmp_error("collecting the merge", e))?;
                if let Some(error) = job.get("error").and_then(Value::as_str) {
                    return Ok(CommitState::Failed(error.to_owned()));
                }
                // A node this engine added (a swap's overlay, the opened
                // leaf) stays open, holding its LV, until it is deleted;
                // nodes QEMU opened from backing links close by themselves.
                let top = id.trim_start_matches(MERGE_JOB);
                if top.starts_with('n') {
                    qmp.execute("blockdev-del", json!({"node-name": top}))
                        .map_err(|e| qmp_error("closing the merged node", e))?;
                }
                Ok(CommitState::Done)
            }
            Some(_) => Ok(CommitState::Running { done, total }),
            None => Err(unexpected(doing, job)),
        }
    }
}

#[cfg(test)]
mod tests;
