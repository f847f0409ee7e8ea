//! The data buffers of the data path, reused. An allocation in the static
//! musl daemon that is a page or more is a fresh `mmap` (or a fresh group of
//! slots) whose pages fault in as the data lands, and its `munmap` flushes
//! the TLBs of every CPU the process runs on; at one request after another
//! that cost more than the I/O itself (a 1 MiB sequential read ran at 0.05
//! of the kernel initiator's speed, and 4 KiB requests spent their time in
//! TLB shootdowns). Buffers are taken from here and given back when the
//! request is answered, so the same pages serve over and over and are
//! never zeroed again.
//!
//! Free buffers are kept by size class (powers of two from 512 bytes to
//! 1 MiB), so taking and giving are O(1). Memory stays bounded: the
//! buffers in use are bounded by the NBD budget and the queues' slots; the
//! pool keeps at most [`KEPT_BYTES`] of free buffers and frees the rest. A
//! taken buffer holds stale data from an earlier request: every user
//! overwrites all of it before reading it (a read's buffer is only handed on
//! once the controller sent every byte).

use std::sync::{Mutex, PoisonError};

/// The smallest size class (log2): 512 bytes, one sector.
const SMALLEST: u32 = 9;
/// The largest size class (log2): 1 MiB, the largest command's data.
const LARGEST: u32 = 20;
/// Free buffers kept at most, in bytes of capacity.
pub const KEPT_BYTES: usize = 16 << 20;

const CLASSES: usize = (LARGEST - SMALLEST + 1) as usize;

struct Pool {
    free: [Vec<Vec<u8>>; CLASSES],
    kept: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { free: [const { Vec::new() }; CLASSES], kept: 0 });

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The capacity of the buffers of `class`.
fn class_size(class: usize) -> usize {
    1 << (SMALLEST as usize + class)
}

/// The class a buffer of `len` bytes is taken from, if it is pooled.
fn class_for(len: usize) -> Option<usize> {
    let bits = len.max(1).next_power_of_two().trailing_zeros().max(SMALLEST);
    (bits <= LARGEST).then(|| (bits - SMALLEST) as usize)
}

/// A buffer of exactly `len` bytes, of unspecified content.
#[must_use]
pub fn take(len: usize) -> Vec<u8> {
    let Some(class) = class_for(len) else { return vec![0u8; len] };
    let reused = {
        let mut pool = pool();
        let buffer = pool.free[class].pop();
        if let Some(b) = &buffer {
            pool.kept -= b.capacity();
        }
        buffer
    };
    let mut buffer = reused.unwrap_or_else(|| Vec::with_capacity(class_size(class)));
    // Only the part never used before is written (zeroed) here.
    buffer.resize(len, 0);
    buffer
}

/// Gives a buffer back for reuse (or frees it, when the pool is full or it
/// was not taken from here).
pub fn give(buffer: Vec<u8>) {
    let capacity = buffer.capacity();
    let Some(class) = class_for(capacity).filter(|c| class_size(*c) == capacity) else {
        return;
    };
    let mut pool = pool();
    if pool.kept + capacity <= KEPT_BYTES {
        pool.kept += capacity;
        pool.free[class].push(buffer);
    }
}

/// Bytes of free buffers kept now.
#[must_use]
pub fn kept() -> usize {
    pool().kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_with_their_pages_and_the_pool_stays_bounded() {
        let first = take(1 << 20);
        assert_eq!(first.len(), 1 << 20);
        let address = first.as_ptr() as usize;
        give(first);
        // Other tests share the pool: look for this buffer among a few takes.
        let taken: Vec<Vec<u8>> = (0..4).map(|_| take(1 << 20)).collect();
        assert!(taken.iter().any(|b| b.as_ptr() as usize == address), "a given buffer is taken again");
        assert!(taken.iter().all(|b| b.len() == 1 << 20));
        let small = take(4096);
        assert_eq!((small.len(), small.capacity()), (4096, 4096));
        let odd = take(300 * 1024);
        assert_eq!((odd.len(), odd.capacity()), (300 * 1024, 512 * 1024));
        for buffer in taken {
            give(buffer);
        }
        give(small);
        give(odd);
        for _ in 0..64 {
            give(take(1 << 20));
            give(vec![0u8; 1 << 20]);
        }
        assert!(kept() <= KEPT_BYTES, "at most {KEPT_BYTES} bytes are kept, {} are", kept());
        // Buffers not made here (odd capacities, larger than 1 MiB) are freed.
        let before = kept();
        give(vec![0u8; 3000]);
        give(vec![0u8; 4 << 20]);
        assert!(kept() <= before);
    }
}
