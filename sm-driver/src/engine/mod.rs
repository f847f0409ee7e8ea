//! The datapath engine: the program that serves a volume's image chain to a
//! VM as one block device, and changes that chain while it is open.
//!
//! Snapshots of a running disk need a datapath that understands copy-on-write
//! layers: blkback on a raw LV cannot switch to a new qcow2 leaf under a
//! running VM. The engine is that datapath, behind one narrow door, the
//! [`Engine`] trait, with two implementations:
//!
//! * [`tapdisk`] drives blktap's `tap-ctl` (XCP-ng dom0): `aio:` for a raw
//!   node, `qcow2:` for a layer, pause/unpause with a new image for the swap,
//!   `commit`/`query` for merges inside the tapdisk that owns the chain;
//! * [`qsd`] drives `qemu-storage-daemon` over QMP and connects its NBD export
//!   to a kernel block device: the test bed's engine, where tapdisk does not
//!   exist (Debian), so that real qcow2 chains on real LVs are exercised.
//!
//! Everything else in the driver (the snapshot model, the datapath handlers,
//! the collector) speaks only the trait and the types of this module. Nothing
//! here knows LVM, XAPI or the SMAPI: an image is a format and a device path.

pub mod qmp;
pub mod qsd;
pub mod tapdisk;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cmd::CmdError;

/// Longest image path either engine accepts (tapdisk's message carries the
/// path in a fixed 256-byte field, `TAPDISK_MESSAGE_MAX_PATH_LENGTH`).
pub const MAX_IMAGE_PATH: usize = 255;

/// The format of one node of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// A raw LV: a volume never snapshotted, or the base of a chain.
    Raw,
    /// A qcow2 layer whose backing file is its parent node.
    Qcow2,
}

impl ImageFormat {
    /// The name QEMU's tools and QMP use (`-f`, `-F`, `driver`).
    #[must_use]
    pub const fn qemu_name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }

    /// The tapdisk driver type (`tap-ctl … -a <type>:<path>`).
    #[must_use]
    pub const fn tapdisk_type(self) -> &'static str {
        match self {
            Self::Raw => "aio",
            Self::Qcow2 => "qcow2",
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qemu_name())
    }
}

/// One node of a chain: its format and its absolute device path.
///
/// The path is validated once here: absolute, at most [`MAX_IMAGE_PATH`]
/// bytes, made only of letters, digits and `/._+-` — so it can never smuggle
/// an option into `tap-ctl`'s `type:path` argument or a QMP string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    format: ImageFormat,
    path: PathBuf,
}

impl Image {
    /// An image at `path` in `format`.
    ///
    /// # Errors
    /// [`EngineError::BadImagePath`] if the path is not as described above.
    pub fn new(format: ImageFormat, path: impl Into<PathBuf>) -> Result<Self, EngineError> {
        let path = path.into();
        let text = path.to_str().unwrap_or_default();
        let allowed = |c: char| c.is_ascii_alphanumeric() || "/._+-".contains(c);
        let valid = text.starts_with('/')
            && text.len() <= MAX_IMAGE_PATH
            && text.chars().all(allowed)
            && !text.split('/').any(|part| part == "..");
        if valid {
            Ok(Self { format, path })
        } else {
            Err(EngineError::BadImagePath(path.display().to_string()))
        }
    }

    /// The node's format.
    #[must_use]
    pub fn format(&self) -> ImageFormat {
        self.format
    }

    /// The node's device path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as text (validated ASCII).
    #[must_use]
    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap_or_default()
    }
}

/// Whether the VM may write through the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// The leaf is opened read-write (on one host only).
    ReadWrite,
    /// Everything is opened read-only (a snapshot exported, a CD-like disk).
    ReadOnly,
}

/// Which engine runs a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// blktap's tapdisk (XCP-ng dom0).
    Tapdisk,
    /// qemu-storage-daemon behind a kernel NBD device (the test bed).
    QemuStorageDaemon,
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tapdisk => "tapdisk",
            Self::QemuStorageDaemon => "qemu-storage-daemon",
        })
    }
}

/// What an engine on this host can do, from its feature probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// It can open qcow2 layers (snapshots of running disks need this).
    pub qcow2: bool,
    /// It can merge a node of an open chain into its parent (online commit).
    pub online_commit: bool,
}

/// The engine's own handle to an open disk, enough to find it again from a
/// later call (every plugin call is a fresh process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "engine", rename_all = "kebab-case")]
pub enum Handle {
    /// A tapdisk process and the blktap minor it serves.
    Tapdisk {
        /// The tapdisk's pid (`tap-ctl … -p`).
        pid: u32,
        /// The blktap minor (`tap-ctl … -m`).
        minor: u32,
    },
    /// A qemu-storage-daemon and its directory of sockets.
    QemuStorageDaemon {
        /// The daemon's pid.
        pid: u32,
        /// Where its QMP and NBD sockets live.
        run_dir: PathBuf,
    },
}

/// A disk the engine serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDisk {
    /// The block device the VM (or dom0) uses.
    pub device: PathBuf,
    /// The node writes land in now.
    pub leaf: Image,
    /// How the engine finds the disk again.
    pub handle: Handle,
}

/// The state of an online merge of one node into its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitState {
    /// No merge is running on this disk (none started, or the last one ended
    /// and was collected).
    Idle,
    /// Copying: `done` of `total` units (the engine's own unit).
    Running {
        /// Progress so far.
        done: u64,
        /// Total work.
        total: u64,
    },
    /// Finished: the node is out of the chain and may be deleted.
    Done,
    /// Ended with an error; the chain is unchanged.
    Failed(String),
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An image path the engine would not pass on.
    #[error(
        "image path {0:?} is not usable: it must be absolute, at most {MAX_IMAGE_PATH} bytes, of letters, digits and /._+-"
    )]
    BadImagePath(String),
    /// A disk name the engine would not use.
    #[error("disk name {0:?} is not usable: 1 to 64 letters, digits, '-' or '_'")]
    BadDiskName(String),
    /// The engine lacks what the operation needs.
    #[error("{engine} on this host cannot {what}: {why}")]
    Unsupported {
        /// The engine.
        engine: EngineKind,
        /// What was asked.
        what: &'static str,
        /// Why not, and what to do.
        why: String,
    },
    /// An engine tool failed.
    #[error("{engine}: {doing} failed")]
    Tool {
        /// The engine.
        engine: EngineKind,
        /// What it was doing.
        doing: String,
        /// The command's failure.
        #[source]
        source: Box<CmdError>,
    },
    /// The QMP conversation with qemu-storage-daemon failed.
    #[error("qemu-storage-daemon: {doing} failed")]
    Qmp {
        /// What it was doing.
        doing: String,
        /// What went wrong.
        #[source]
        source: Box<qmp::QmpError>,
    },
    /// A tool answered something this driver does not understand.
    #[error("{engine} answered {answer:?} to {doing}, which this driver does not understand")]
    Unexpected {
        /// The engine.
        engine: EngineKind,
        /// What it was doing.
        doing: String,
        /// The answer.
        answer: String,
    },
    /// The engine's own files could not be used.
    #[error("{engine}: {doing} failed")]
    Io {
        /// The engine.
        engine: EngineKind,
        /// What it was doing.
        doing: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The host that serves the disk did not switch it to the new leaf (it
    /// refused, or could not be asked before the switch was requested): the
    /// disk writes its old leaf, nothing was written to the new one.
    #[error("host {host} did not switch the disk to the new leaf: {why}; the disk still writes its old leaf")]
    NotSwappedOnHost {
        /// The host serving the disk.
        host: String,
        /// Why.
        why: String,
    },
    /// The switch was requested from the host that serves the disk, and its
    /// answer was lost: the disk may write either leaf.
    #[error(
        "host {host} was asked to switch the disk to the new leaf, and its answer was lost ({why}); the snapshot \
         stays journalled until that host says which leaf it writes (the next SR.attach on the master, or the next \
         collector run, asks it again)"
    )]
    SwapUnknownOnHost {
        /// The host serving the disk.
        host: String,
        /// Why.
        why: String,
    },
    /// The swap to a new leaf failed and the disk was resumed on its old
    /// leaf: the VM keeps running, nothing was written to the new leaf.
    #[error("{engine}: the disk could not switch to {new_leaf}; it was resumed on {old_leaf}")]
    SwapReverted {
        /// The engine.
        engine: EngineKind,
        /// The leaf it still writes to.
        old_leaf: String,
        /// The leaf it refused.
        new_leaf: String,
        /// Why.
        #[source]
        source: Box<EngineError>,
    },
    /// The pool member whose engine serves the disk answered a merge call
    /// with a refusal (its engine's or its own).
    #[error("host {host} did not merge: {why}")]
    RefusedOnHost {
        /// The host serving the disk.
        host: String,
        /// Its answer.
        why: String,
    },
    /// The host whose engine may serve the disk could not be asked about
    /// its merge: nothing is concluded from its silence.
    #[error(
        "the host serving the disk cannot be asked about its merge ({why}); the merge's journal entry waits until \
         it answers (the next collector run or SR.attach on the master asks again), and nothing is merged offline"
    )]
    MergeUnasked {
        /// Why (naming the host).
        why: String,
    },
}

impl EngineError {
    /// Whether this failure says nothing about a merge's outcome: the host
    /// serving the disk could not be asked ([`EngineError::MergeUnasked`]).
    #[must_use]
    pub fn merge_unasked(&self) -> bool {
        matches!(self, Self::MergeUnasked { .. })
    }

    /// Whether the disk certainly still writes its old leaf after this
    /// failure of a swap (what the swap created can go at once).
    #[must_use]
    pub fn left_old_leaf(&self) -> bool {
        matches!(self, Self::SwapReverted { .. } | Self::NotSwappedOnHost { .. })
    }
}

/// A disk's name for the engine (the volume's LV name): what its files are
/// called, stable across snapshots while the leaf changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskName(String);

impl DiskName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`EngineError::BadDiskName`] unless it is 1 to 64 of `[A-Za-z0-9_-]`.
    pub fn new(name: &str) -> Result<Self, EngineError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(EngineError::BadDiskName(name.to_owned()))
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The one door into a datapath engine.
///
/// Rules every implementation keeps (LVHD's, `snapshots.md` §6.2.7):
/// a swap pauses I/O first and only then switches leaves, so no write can
/// land in the old leaf afterwards; an online merge is done by the engine
/// that has the chain open, never by editing an open image from outside.
pub trait Engine {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;

    /// Probes what this host's engine can do.
    ///
    /// # Errors
    /// [`EngineError`] if the engine is not installed or cannot be asked.
    fn features(&self) -> Result<Features, EngineError>;

    /// Opens the chain whose leaf is `leaf` (the engine follows the backing
    /// links written in the qcow2 headers) and returns the block device.
    ///
    /// # Errors
    /// [`EngineError`]; whatever was set up is torn down again.
    fn open(&self, name: &DiskName, leaf: &Image, access: Access) -> Result<OpenDisk, EngineError>;

    /// Stops serving the disk and releases its device.
    ///
    /// # Errors
    /// [`EngineError`] if the engine refused; a disk already gone is closed.
    fn close(&self, disk: &OpenDisk) -> Result<(), EngineError>;

    /// Pauses I/O, then makes `new_leaf` (a qcow2 whose backing file is the
    /// current leaf) the node writes land in, then resumes. On failure the
    /// disk is resumed on its old leaf ([`EngineError::SwapReverted`]).
    ///
    /// # Errors
    /// [`EngineError`].
    fn swap_leaf(&self, disk: &OpenDisk, new_leaf: &Image) -> Result<OpenDisk, EngineError>;

    /// The image writes land in now, as the engine itself says (not the
    /// handle): replay asks this after a call was killed mid-swap.
    ///
    /// # Errors
    /// [`EngineError`] if the engine cannot be asked or serves no image.
    fn current_leaf(&self, disk: &OpenDisk) -> Result<Image, EngineError>;

    /// Starts merging `top` (a node of the open chain) into `base`, its
    /// parent. Merging the leaf itself makes `base` the new leaf.
    ///
    /// # Errors
    /// [`EngineError`], e.g. [`EngineError::Unsupported`] without online commit.
    fn start_commit(&self, disk: &OpenDisk, top: &Image, base: &Image) -> Result<(), EngineError>;

    /// The state of the merge started on `disk`; a finished merge is
    /// reported [`CommitState::Done`] once and then collected.
    ///
    /// # Errors
    /// [`EngineError`].
    fn commit_state(&self, disk: &OpenDisk) -> Result<CommitState, EngineError>;
}
