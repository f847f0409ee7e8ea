//! Block devices for tests (the `testing` feature, and this crate's own
//! unit tests): one in memory, one over a file. Neither is in the dom0
//! binary's API.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use crate::block::{BlockDevice, Completion, Geometry, IoError, Outcome, Request};

fn geometry(block_size: u32, blocks: u64, max_transfer: u32) -> Geometry {
    Geometry { block_size, blocks, max_transfer, flush: true, fua: true, discard: true, write_zeroes: true }
}

/// A device in memory. With [`MemoryDevice::holding`] it keeps completions
/// back until several are pending and then completes them newest first, so
/// tests see out-of-order completion.
pub struct MemoryDevice {
    geometry: Geometry,
    bytes: Mutex<Vec<u8>>,
    hold: usize,
    held: Mutex<Vec<(Outcome, Completion)>>,
}

impl std::fmt::Debug for MemoryDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDevice")
            .field("geometry", &self.geometry)
            .field("hold", &self.hold)
            .finish_non_exhaustive()
    }
}

impl MemoryDevice {
    /// `blocks` zeroed blocks of `block_size` bytes; `max_transfer` 0 = no limit.
    #[must_use]
    pub fn new(block_size: u32, blocks: u64, max_transfer: u32) -> Self {
        let size = usize::try_from(u64::from(block_size) * blocks).unwrap_or(0);
        Self {
            geometry: geometry(block_size, blocks, max_transfer),
            bytes: Mutex::new(vec![0; size]),
            hold: 0,
            held: Mutex::new(Vec::new()),
        }
    }

    /// Completes requests only in batches of `count`, newest first.
    #[must_use]
    pub fn holding(mut self, count: usize) -> Self {
        self.hold = count;
        self
    }

    fn run(&self, request: Request) -> Outcome {
        let mut bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        let range = |offset: u64, len: u64| -> Result<std::ops::Range<usize>, IoError> {
            let start = usize::try_from(offset).map_err(|_| IoError::Invalid("offset".into()))?;
            let end = start.saturating_add(usize::try_from(len).map_err(|_| IoError::Invalid("len".into()))?);
            if end > bytes.len() {
                return Err(IoError::Invalid(format!("{len} bytes at {offset}")));
            }
            Ok(start..end)
        };
        match request {
            Request::Read { offset, len } => Ok(bytes[range(offset, u64::from(len))?].to_vec()),
            Request::Write { offset, data, .. } => {
                let range = range(offset, data.len() as u64)?;
                bytes[range].copy_from_slice(&data);
                Ok(Vec::new())
            }
            Request::Discard { offset, len } | Request::WriteZeroes { offset, len } => {
                let range = range(offset, len)?;
                bytes[range].fill(0);
                Ok(Vec::new())
            }
            Request::Flush => Ok(Vec::new()),
        }
    }
}

impl BlockDevice for MemoryDevice {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&self, request: Request, done: Completion) {
        let outcome = self.run(request);
        if self.hold == 0 {
            return done(outcome);
        }
        let batch = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.push((outcome, done));
            if held.len() < self.hold {
                return;
            }
            std::mem::take(&mut *held)
        };
        for (outcome, done) in batch.into_iter().rev() {
            done(outcome);
        }
    }
}

/// A device over a file (on tmpfs in the test bed, so it survives the
/// serving process being killed): positioned reads and writes, flush is
/// `fdatasync`, discard and write-zeroes write zeroes.
#[derive(Debug)]
pub struct FileDevice {
    geometry: Geometry,
    file: File,
}

impl FileDevice {
    /// Opens (or creates) `path` at `blocks` blocks of `block_size` bytes.
    ///
    /// # Errors
    /// The file cannot be opened or sized.
    pub fn open(path: &Path, block_size: u32, blocks: u64, max_transfer: u32) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        file.set_len(u64::from(block_size) * blocks)?;
        Ok(Self { geometry: geometry(block_size, blocks, max_transfer), file })
    }

    fn run(&self, request: Request) -> Outcome {
        let media = |e: std::io::Error| IoError::Media(e.to_string());
        match request {
            Request::Read { offset, len } => {
                let mut data = vec![0u8; len as usize];
                self.file.read_exact_at(&mut data, offset).map_err(media)?;
                Ok(data)
            }
            Request::Write { offset, data, fua } => {
                self.file.write_all_at(&data, offset).map_err(media)?;
                if fua {
                    self.file.sync_data().map_err(media)?;
                }
                Ok(Vec::new())
            }
            Request::Flush => self.file.sync_data().map(|()| Vec::new()).map_err(media),
            Request::Discard { offset, len } | Request::WriteZeroes { offset, len } => {
                let zeroes = vec![0u8; 1 << 20];
                let mut done = 0u64;
                while done < len {
                    let this = usize::try_from(len - done).unwrap_or(usize::MAX).min(zeroes.len());
                    self.file.write_all_at(&zeroes[..this], offset + done).map_err(media)?;
                    done += this as u64;
                }
                Ok(Vec::new())
            }
        }
    }
}

impl BlockDevice for FileDevice {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&self, request: Request, done: Completion) {
        done(self.run(request));
    }
}

impl crate::daemon::Served for FileDevice {
    fn report(&self) -> crate::daemon::state::DeviceReport {
        crate::daemon::state::DeviceReport { nqn: "file".into(), ..Default::default() }
    }
}
