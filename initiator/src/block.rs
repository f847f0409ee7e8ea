//! The seam between the NVMe/TCP side and the serving side: a block device
//! that takes requests and completes them asynchronously, so one NBD
//! connection can keep many commands in flight on one NVMe I/O queue.

use std::fmt;

/// What a device is and what it can do, read once after it is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size in bytes (512 or 4096 for real namespaces).
    pub block_size: u32,
    /// Size of the device in logical blocks.
    pub blocks: u64,
    /// Largest single transfer in bytes the device accepts (from MDTS).
    pub max_transfer: u32,
    /// Flush is meaningful (a volatile write cache is present).
    pub flush: bool,
    /// Forced unit access on writes.
    pub fua: bool,
    /// Discard (Dataset Management, deallocate).
    pub discard: bool,
    /// Write Zeroes.
    pub write_zeroes: bool,
}

impl Geometry {
    /// Size of the device in bytes.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}

/// One request; offsets and lengths are in bytes and multiples of the block size.
#[derive(Debug)]
pub enum Request {
    /// Read `len` bytes at `offset`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u32,
    },
    /// Write `data` at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// The bytes to write.
        data: Vec<u8>,
        /// Forced unit access.
        fua: bool,
    },
    /// Make completed writes durable.
    Flush,
    /// Deallocate a range.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u64,
    },
    /// Write zeroes over a range.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u64,
    },
}

/// Why a request failed, as the kernel's block layer will see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The range is outside the device or not block-aligned.
    #[error("request out of range or misaligned: {0}")]
    Invalid(String),
    /// The device does not do this kind of request.
    #[error("not supported by this device: {0}")]
    NotSupported(&'static str),
    /// A media or controller error the NVMe status reported (status code field).
    #[error("the controller failed the command: {0}")]
    Media(String),
    /// No live path answered within the fail-fast time.
    #[error("no live path to the namespace: {0}")]
    NoPath(String),
    /// The device is shutting down.
    #[error("the device is closing")]
    Closing,
}

/// The completion of a request: the data read for `Read`, empty otherwise.
pub type Outcome = Result<Vec<u8>, IoError>;

/// Called exactly once per request, possibly from another thread.
pub type Completion = Box<dyn FnOnce(Outcome) + Send + 'static>;

/// A block device with asynchronous completion.
pub trait BlockDevice: Send + Sync {
    /// What the device is.
    fn geometry(&self) -> Geometry;
    /// Starts a request; `done` is called exactly once when it completes.
    fn submit(&self, request: Request, done: Completion);
}

impl fmt::Display for Geometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} blocks of {} bytes", self.blocks, self.block_size)
    }
}
