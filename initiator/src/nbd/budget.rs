//! The memory bound of the server: every request's data buffer is leased
//! from one byte budget per export before it is read from the kernel or
//! asked of the device, and given back when its reply has been written. A
//! connection whose leases are exhausted stops reading, so the kernel's
//! socket fills and its queue waits: memory stays bounded however much I/O
//! the host throws at the device.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// A byte budget shared by the connections of one export.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: Mutex<Usage>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct Usage {
    bytes: usize,
    /// Leases waiting for room: only then does a release wake anyone (a
    /// wake is a system call, on every request otherwise).
    waiting: usize,
}

impl Budget {
    /// A budget of `limit` bytes (at least one byte).
    #[must_use]
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit: limit.max(1), used: Mutex::new(Usage::default()), freed: Condvar::new() })
    }

    /// The limit in bytes.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes leased right now.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.used.lock().unwrap_or_else(PoisonError::into_inner).bytes
    }

    /// Waits until `bytes` (capped at the whole budget, so an oversized
    /// request still makes progress alone) can be leased, and leases them.
    #[must_use]
    pub fn lease(self: &Arc<Self>, bytes: usize) -> Lease {
        let bytes = bytes.min(self.limit);
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while used.bytes + bytes > self.limit {
            used.waiting += 1;
            used = self.freed.wait(used).unwrap_or_else(PoisonError::into_inner);
            used.waiting -= 1;
        }
        used.bytes += bytes;
        Lease { budget: Arc::clone(self), bytes }
    }
}

/// Bytes held until dropped.
#[derive(Debug)]
pub struct Lease {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(PoisonError::into_inner);
        used.bytes -= self.bytes;
        let waiting = used.waiting > 0;
        drop(used);
        if waiting {
            self.budget.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn leases_wait_for_room_and_give_it_back() {
        let budget = Budget::new(100);
        let first = budget.lease(60);
        assert_eq!(budget.in_use(), 60);
        let waiter = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || {
                let _second = budget.lease(60);
                budget.in_use()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "the second lease must wait");
        drop(first);
        assert_eq!(waiter.join().unwrap(), 60);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn an_oversized_lease_takes_the_whole_budget() {
        let budget = Budget::new(10);
        let lease = budget.lease(1000);
        assert_eq!(budget.in_use(), 10);
        drop(lease);
        assert_eq!(budget.in_use(), 0);
    }
}
