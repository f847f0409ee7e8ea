//! The tapdisk engine: blktap's `tap-ctl`, as XCP-ng's dom0 has it.
//!
//! The argv of every subcommand is exactly what `tap-ctl`'s getopt strings
//! accept (`xapi-project/blktap` `control/tap-ctl.c`, `tap_cli_*`; the
//! qcow2 commands from `xcp-ng/blktap` `control/tap-ctl.c` and
//! `control/tap-ctl-commit.c`):
//!
//! | step | argv | prints (stdout not a tty) |
//! |---|---|---|
//! | probe | `tap-ctl` (no command: `help()`) | `usage: …` and `COMMAND := { list \| … }` |
//! | spawn | `spawn` | the pid |
//! | allocate | `allocate` | the device, `/dev/xen/blktap-2/tapdev<minor>` |
//! | attach | `attach -p PID -m MINOR` | — |
//! | open | `open -p PID -m MINOR -a TYPE:PATH [-R]` | — |
//! | destroy | `destroy -p PID -m MINOR` (close, detach, free) | — |
//! | pause | `pause -p PID -m MINOR` | — |
//! | unpause | `unpause -p PID -m MINOR [-a TYPE:PATH]` | — |
//! | list | `list [-m MINOR]` | `pid=P minor=M state=0xS args=TYPE:PATH` per disk (`tap_cli_list_dict`) |
//! | commit | `commit -p PID -m MINOR -a PATH` | — |
//! | query | `query -p PID -m MINOR` | `Commit status 'S' (DONE/TOTAL)` (`tap_ctl_query_commit_job`) |
//!
//! The spawn → allocate → attach → open sequence is the one XCP-ng's own
//! SMAPIv3 tapdisk datapath uses (`xcp-ng/xcp-ng-xapi-storage`
//! `xapi/storage/libs/tapdisk.py`). The qcow2 driver and the commit/query
//! commands arrived together in XCP-ng's blktap (`xcp-ng-rpms/blktap`
//! `SPECS/blktap.spec`, "Add QCOW2 support": `qcow2-driver-support-qcow2-
//! images-in-tapdisk`, `qcow2-support-commit/query/cancel-command`), so the
//! feature probe reads the command list `tap-ctl` prints without a command:
//! `commit` and `query` there mean this blktap opens qcow2.

use std::path::PathBuf;

use crate::cmd::{CmdError, Command, Output, Program, Runner};

use super::OpenDisk;
use super::{Access, CommitState, DiskName, Engine, EngineError, EngineKind, Features, Handle, Image, ImageFormat};

/// Where blktap creates its block devices.
pub const TAPDEV_PREFIX: &str = "/dev/xen/blktap-2/tapdev";

/// One row of `tap-ctl list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedDisk {
    /// The tapdisk's pid.
    pub pid: u32,
    /// The blktap minor, if one is attached.
    pub minor: Option<u32>,
    /// The opened image as `type:path`, if any.
    pub args: Option<String>,
}

/// The tapdisk engine, running `tap-ctl` through a [`Runner`].
pub struct Tapdisk<'a> {
    runner: &'a dyn Runner,
}

impl<'a> Tapdisk<'a> {
    /// An engine running `tap-ctl` with `runner`.
    #[must_use]
    pub fn new(runner: &'a dyn Runner) -> Self {
        Self { runner }
    }

    fn tap_ctl<I, S>(&self, doing: &str, args: I) -> Result<Output, EngineError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.runner.run(&Command::new(Program::TapCtl).args(args)).map_err(|source| tool(doing, source))
    }

    /// Every disk tapdisk serves on this host (`tap-ctl list`).
    ///
    /// # Errors
    /// [`EngineError`] if `tap-ctl` fails or prints a row it cannot read.
    pub fn list(&self) -> Result<Vec<ListedDisk>, EngineError> {
        let output = self.tap_ctl("listing tapdisks", ["list"])?;
        output.stdout.lines().filter(|l| !l.trim().is_empty()).map(parse_list_row).collect()
    }

    /// Undoes a half-built open, best effort, and returns `error`.
    fn abandon(&self, pid: u32, minor: Option<u32>, error: EngineError) -> EngineError {
        let Some(minor) = minor else {
            // A spawned tapdisk with no minor serves nothing; tap-ctl has no
            // verb to end it, so it is only reported.
            tracing::warn!(pid, "a spawned tapdisk was left without a disk");
            return error;
        };
        let undo = ["destroy", "-p", &pid.to_string(), "-m", &minor.to_string()].map(str::to_owned);
        if let Err(undo_error) = self.tap_ctl("destroying a half-opened tapdisk", undo) {
            tracing::warn!(pid, minor, error = %undo_error, "could not tear down a half-opened tapdisk");
        }
        error
    }
}

fn tool(doing: &str, source: CmdError) -> EngineError {
    EngineError::Tool { engine: EngineKind::Tapdisk, doing: doing.to_owned(), source: Box::new(source) }
}

fn unexpected(doing: &str, answer: &str) -> EngineError {
    EngineError::Unexpected { engine: EngineKind::Tapdisk, doing: doing.to_owned(), answer: answer.trim().to_owned() }
}

/// `type:path` as tapdisk's `-a` takes it.
fn params(image: &Image) -> String {
    format!("{}:{}", image.format().tapdisk_type(), image.path_str())
}

/// The subcommands listed in `tap-ctl`'s help (`COMMAND := { a | b | … }`).
fn commands_in_help(help: &str) -> Vec<String> {
    help.lines()
        .find_map(|l| l.trim().strip_prefix("COMMAND := {"))
        .map(|rest| {
            rest.trim_end_matches('}').split('|').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect()
        })
        .unwrap_or_default()
}

/// Parses one `tap_cli_list_dict` row: `pid=P minor=M state=0xS args=T:PATH`
/// (fields absent when unset).
fn parse_list_row(row: &str) -> Result<ListedDisk, EngineError> {
    let bad = || unexpected("listing tapdisks", row);
    let (mut pid, mut minor, mut args) = (None, None, None);
    for field in row.split_whitespace() {
        let (key, value) = field.split_once('=').ok_or_else(bad)?;
        match key {
            "pid" => pid = Some(value.parse::<u32>().map_err(|_| bad())?),
            "minor" => minor = Some(value.parse::<u32>().map_err(|_| bad())?),
            "args" => args = Some(value.to_owned()),
            _ => {} // state and anything newer
        }
    }
    Ok(ListedDisk { pid: pid.ok_or_else(bad)?, minor, args })
}

/// Parses `Commit status 'S' (DONE/TOTAL)`.
fn parse_query(text: &str) -> Option<(String, u64, u64)> {
    let line = text.lines().find_map(|l| l.trim().strip_prefix("Commit status '"))?;
    let (status, rest) = line.split_once('\'')?;
    let (done, total) = rest.trim().strip_prefix('(')?.strip_suffix(')')?.split_once('/')?;
    Some((status.to_ascii_lowercase(), done.parse().ok()?, total.parse().ok()?))
}

impl Engine for Tapdisk<'_> {
    fn kind(&self) -> EngineKind {
        EngineKind::Tapdisk
    }

    fn features(&self) -> Result<Features, EngineError> {
        let help = self.tap_ctl("reading tap-ctl's command list", Vec::<String>::new())?;
        let commands = commands_in_help(&help.stdout);
        if commands.is_empty() {
            return Err(unexpected("reading tap-ctl's command list", &help.stdout));
        }
        let has = |c: &str| commands.iter().any(|x| x == c);
        let qcow2 = has("commit") && has("query");
        Ok(Features { qcow2, online_commit: qcow2 })
    }

    fn open(&self, _name: &DiskName, leaf: &Image, access: Access) -> Result<OpenDisk, EngineError> {
        let spawned = self.tap_ctl("spawning a tapdisk", ["spawn"])?;
        let pid: u32 = spawned.stdout.trim().parse().map_err(|_| unexpected("spawning a tapdisk", &spawned.stdout))?;
        let allocated = match self.tap_ctl("allocating a blktap minor", ["allocate"]) {
            Ok(output) => output,
            Err(error) => return Err(self.abandon(pid, None, error)),
        };
        let device = allocated.stdout.trim().to_owned();
        let Some(minor) = device.strip_prefix(TAPDEV_PREFIX).and_then(|m| m.parse::<u32>().ok()) else {
            return Err(self.abandon(pid, None, unexpected("allocating a blktap minor", &allocated.stdout)));
        };
        let (p, m) = (pid.to_string(), minor.to_string());
        if let Err(error) = self.tap_ctl("attaching the tapdisk to its minor", ["attach", "-p", &p, "-m", &m]) {
            // Not attached: the minor is freed by destroy's free step anyway.
            return Err(self.abandon(pid, Some(minor), error));
        }
        let mut open =
            vec!["open".to_owned(), "-p".into(), p.clone(), "-m".into(), m.clone(), "-a".into(), params(leaf)];
        if access == Access::ReadOnly {
            open.push("-R".into());
        }
        if let Err(error) = self.tap_ctl("opening the image", open) {
            return Err(self.abandon(pid, Some(minor), error));
        }
        tracing::info!(pid, minor, image = %params(leaf), "tapdisk serving");
        Ok(OpenDisk { device: PathBuf::from(device), leaf: leaf.clone(), handle: Handle::Tapdisk { pid, minor } })
    }

    fn close(&self, disk: &OpenDisk) -> Result<(), EngineError> {
        let (pid, minor) = tapdisk_handle(disk)?;
        let still_there = self.list()?.iter().any(|d| d.pid == pid && d.minor == Some(minor));
        if !still_there {
            return Ok(());
        }
        self.tap_ctl("destroying the tapdisk", ["destroy", "-p", &pid.to_string(), "-m", &minor.to_string()])?;
        Ok(())
    }

    fn swap_leaf(&self, disk: &OpenDisk, new_leaf: &Image) -> Result<OpenDisk, EngineError> {
        let (pid, minor) = tapdisk_handle(disk)?;
        let (p, m) = (pid.to_string(), minor.to_string());
        self.tap_ctl("pausing the disk", ["pause", "-p", &p, "-m", &m])?;
        let unpause = ["unpause", "-p", &p, "-m", &m, "-a", &params(new_leaf)];
        match self.tap_ctl("resuming the disk on its new leaf", unpause) {
            Ok(_) => {
                tracing::info!(pid, minor, leaf = %params(new_leaf), "tapdisk switched to a new leaf");
                Ok(OpenDisk { leaf: new_leaf.clone(), ..disk.clone() })
            }
            Err(error) => {
                // Never leave a VM paused: resume on the chain it had.
                let resume = ["unpause", "-p", &p, "-m", &m, "-a", &params(&disk.leaf)];
                self.tap_ctl("resuming the disk on its old leaf", resume)?;
                Err(EngineError::SwapReverted {
                    engine: EngineKind::Tapdisk,
                    old_leaf: disk.leaf.path_str().to_owned(),
                    new_leaf: new_leaf.path_str().to_owned(),
                    source: Box::new(error),
                })
            }
        }
    }

    fn current_leaf(&self, disk: &OpenDisk) -> Result<Image, EngineError> {
        // `tap-ctl list` shows the `type:path` the tapdisk opened last, and
        // `unpause -a` changes it: it names the leaf writes land in.
        let (pid, minor) = tapdisk_handle(disk)?;
        let doing = "asking which image the disk writes to";
        let listed = self.list()?;
        let row = listed.iter().find(|d| d.pid == pid && d.minor == Some(minor));
        let args = row.and_then(|d| d.args.as_deref()).ok_or_else(|| unexpected(doing, &format!("{listed:?}")))?;
        let (kind, path) = args.split_once(':').ok_or_else(|| unexpected(doing, args))?;
        let format = match kind {
            "qcow2" => ImageFormat::Qcow2,
            "aio" => ImageFormat::Raw,
            _ => return Err(unexpected(doing, args)),
        };
        Image::new(format, path)
    }

    fn start_commit(&self, disk: &OpenDisk, top: &Image, _base: &Image) -> Result<(), EngineError> {
        // tapdisk commits a node into its own backing file.
        let (pid, minor) = tapdisk_handle(disk)?;
        if *top == disk.leaf {
            // After merging its leaf the disk writes the parent, but `tap-ctl
            // list` keeps naming the image it opened: nothing could tell
            // which node holds the disk's data.
            return Err(EngineError::Unsupported {
                engine: EngineKind::Tapdisk,
                what: "merge the leaf of an open disk",
                why: "tap-ctl list cannot say the disk moved to the parent; the leaf is merged once the VM is shut \
                      down"
                    .to_owned(),
            });
        }
        self.tap_ctl(
            "starting the merge",
            ["commit", "-p", &pid.to_string(), "-m", &minor.to_string(), "-a", top.path_str()],
        )?;
        Ok(())
    }

    fn commit_state(&self, disk: &OpenDisk) -> Result<CommitState, EngineError> {
        let (pid, minor) = tapdisk_handle(disk)?;
        let doing = "asking how the merge goes";
        let output = self.tap_ctl(doing, ["query", "-p", &pid.to_string(), "-m", &minor.to_string()])?;
        let (status, done, total) = parse_query(&output.stdout).ok_or_else(|| unexpected(doing, &output.stdout))?;
        // The statuses are QEMU's job states (the driver runs QEMU's block
        // layer, `xcp-ng/blktap drivers/block-qcow2.c`); query itself
        // completes READY jobs and dismisses CONCLUDED ones.
        Ok(match status.as_str() {
            "created" | "running" | "paused" | "ready" | "standby" | "waiting" | "pending" | "aborting" => {
                CommitState::Running { done, total }
            }
            "concluded" => CommitState::Done,
            "null" | "none" | "" => CommitState::Idle,
            other => CommitState::Failed(format!("the merge is in state {other:?}")),
        })
    }
}

fn tapdisk_handle(disk: &OpenDisk) -> Result<(u32, u32), EngineError> {
    match disk.handle {
        Handle::Tapdisk { pid, minor } => Ok((pid, minor)),
        Handle::QemuStorageDaemon { .. } => Err(EngineError::Unsupported {
            engine: EngineKind::Tapdisk,
            what: "manage this disk",
            why: "it is served by qemu-storage-daemon".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests;
