//! The data buffers of the data path, reused. A large allocation in the
//! static musl daemon is a fresh `mmap` whose pages fault in one by one as
//! the data lands, and its `munmap` flushes the TLBs of every CPU the
//! process runs on; at one 1 MiB request after another that cost more than
//! the I/O itself (a sequential read ran at 0.05 of the kernel initiator's
//! speed). Buffers of a request's size are taken from here and given back
//! when the request is answered, so the same few pages are used over and
//! over and never zeroed again.
//!
//! Memory stays bounded: the buffers in use are bounded by the NBD budget
//! and the queues' slots; the pool keeps at most [`KEPT_BYTES`] of free
//! buffers and frees the rest. A taken buffer holds stale data from an
//! earlier request: every user overwrites all of it before reading it (a
//! read's buffer is only handed on once the controller sent every byte).

use std::sync::{Mutex, PoisonError};

/// Buffers smaller than this come from the allocator's heap, cheap already.
pub const POOLED_FROM: usize = 64 * 1024;
/// Free buffers kept at most, in bytes of capacity.
pub const KEPT_BYTES: usize = 16 << 20;

struct Pool {
    free: Vec<Vec<u8>>,
    kept: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { free: Vec::new(), kept: 0 });

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A buffer of exactly `len` bytes, of unspecified content.
#[must_use]
pub fn take(len: usize) -> Vec<u8> {
    if len < POOLED_FROM {
        return vec![0u8; len];
    }
    let reused = {
        let mut pool = pool();
        // The smallest free buffer that holds `len`.
        let best = pool
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        best.map(|i| {
            let buffer = pool.free.swap_remove(i);
            pool.kept -= buffer.capacity();
            buffer
        })
    };
    match reused {
        Some(mut buffer) => {
            // Only the part never used before is written (zeroed) here.
            buffer.resize(len, 0);
            buffer
        }
        None => vec![0u8; len],
    }
}

/// Gives a buffer back for reuse (or frees it, when the pool is full).
pub fn give(buffer: Vec<u8>) {
    let capacity = buffer.capacity();
    if capacity < POOLED_FROM {
        return;
    }
    let mut pool = pool();
    if pool.kept + capacity <= KEPT_BYTES {
        pool.kept += capacity;
        pool.free.push(buffer);
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
        let smaller = take(300 * 1024);
        assert_eq!(smaller.len(), 300 * 1024);
        for buffer in taken {
            give(buffer);
        }
        give(smaller);
        for _ in 0..64 {
            give(vec![0u8; 1 << 20]);
        }
        assert!(kept() <= KEPT_BYTES, "at most {KEPT_BYTES} bytes are kept, {} are", kept());
        // Small buffers never enter the pool.
        give(vec![0u8; 512]);
        assert!(kept() <= KEPT_BYTES);
    }
}
