//! Requests the kernel sends again. When a request times out
//! (`nbd_io_timeout`), the kernel's NBD driver marks its connection dead and
//! requeues the request on another connection, with the same tag in the low
//! 32 bits of its handle and a new cookie in the high ones
//! (`drivers/block/nbd.c`: `nbd_xmit_timeout`, `nbd_cmd_handle`). The old
//! copy may still be held in the device (every path down). This table,
//! shared by the connections of one export, finds the old copy by its tag
//! and lets the new copy supersede it through their [`Ticket`]s, so the old
//! copy is never written after the new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::block::Ticket;

/// The requests of one export that are not answered yet, by tag.
#[derive(Debug, Default)]
pub struct Resends {
    live: Mutex<HashMap<u32, (u64, Arc<Ticket>)>>,
}

/// The tag of a handle: the kernel never has two requests with one tag in
/// flight, except an old copy and its re-sent copy.
fn tag(handle: u64) -> u32 {
    // The low 32 bits, by definition of the handle's layout.
    #[allow(clippy::cast_possible_truncation)]
    let tag = handle as u32;
    tag
}

impl Resends {
    /// An empty table.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (u64, Arc<Ticket>)>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request arrived with `handle`: its ticket, and the ticket of the
    /// older copy of it still unanswered, if there is one.
    #[must_use]
    pub fn arrive(&self, handle: u64) -> (Arc<Ticket>, Option<Arc<Ticket>>) {
        let mut live = self.live();
        // A re-sent copy keeps the time its first copy arrived.
        let ticket = Arc::new(live.get(&tag(handle)).map_or_else(Ticket::default, |(_, older)| older.next_copy()));
        let older = live.insert(tag(handle), (handle, Arc::clone(&ticket)));
        (ticket, older.map(|(_, older)| older))
    }

    /// The request with `ticket` completed: forget it (unless a newer copy
    /// took its tag meanwhile).
    pub fn complete(&self, handle: u64, ticket: &Arc<Ticket>) {
        let mut live = self.live();
        if live.get(&tag(handle)).is_some_and(|(_, t)| Arc::ptr_eq(t, ticket)) {
            live.remove(&tag(handle));
        }
    }

    /// Requests not answered yet.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live().len()
    }

    /// Whether every request was answered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use crate::block::BlockDevice;
    use crate::fake_target::{config, FakeTarget, Script};
    use crate::multipath::{Multipath, PathStatus};
    use crate::nbd::budget::Budget;
    use crate::nbd::proto::{self, Command, RequestHeader};
    use crate::nbd::server::{serve, Counters};

    fn until(what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            assert!(start.elapsed() < Duration::from_secs(15), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn write(stream: &mut UnixStream, handle: u64, offset: u64, byte: u8) {
        let header = RequestHeader { command: Command::Write, fua: false, handle, offset, len: 4096 };
        stream.write_all(&header.encode()).unwrap();
        stream.write_all(&[byte; 4096]).unwrap();
    }

    /// The kernel's timeout with every path down: the old copy of a write is
    /// held in the multipath device, its connection is declared dead, the
    /// same request (same tag, new cookie, newer data) comes on the other
    /// connection, then a path comes back. Only the new copy may reach the
    /// disk: had the old one been sent too, it could land after the new one.
    #[test]
    fn a_request_resent_while_its_old_copy_is_held_is_written_once_and_never_overwritten_by_the_old() {
        let target = FakeTarget::start(Script::default());
        let multipath = Arc::new(Multipath::open(config(&[&target])).unwrap());
        let device: Arc<dyn BlockDevice> = Arc::clone(&multipath) as Arc<dyn BlockDevice>;
        let (budget, counters, table) = (Budget::new(1 << 20), Arc::new(Counters::default()), Resends::new());
        let mut kernel_ends = Vec::new();
        for _ in 0..2 {
            let (kernel, ours) = UnixStream::pair().unwrap();
            kernel_ends.push(kernel);
            let (device, budget, counters, table) =
                (Arc::clone(&device), Arc::clone(&budget), Arc::clone(&counters), Arc::clone(&table));
            std::thread::spawn(move || serve(&device, ours, &budget, &counters, &table));
        }
        let state = || multipath.state();
        target.cut();
        until("the path to be lost", || state().paths[0].status != PathStatus::Live);
        let tag = 5u64;
        write(&mut kernel_ends[0], 1 << 32 | tag, 4096, 0xaa);
        until("the old copy to be held", || state().queued == 1);
        // nbd_xmit_timeout: the connection is marked dead, the request requeued.
        kernel_ends[0].shutdown(std::net::Shutdown::Both).unwrap();
        write(&mut kernel_ends[1], 2 << 32 | tag, 4096, 0xbb);
        std::thread::sleep(Duration::from_millis(300));
        target.restore();
        let mut raw = [0u8; proto::REPLY_LEN];
        kernel_ends[1].read_exact(&mut raw).unwrap();
        assert_eq!(proto::decode_reply(&raw).unwrap(), (2 << 32 | tag, 0), "the new copy is answered");
        until("nothing held any more", || state().queued == 0);
        std::thread::sleep(Duration::from_millis(300));
        let writes: Vec<(usize, u8)> = target.writes.lock().unwrap().iter().copied().filter(|w| w.0 == 4096).collect();
        assert_eq!(writes, vec![(4096, 0xbb)], "the old copy must never be written");
        assert_eq!(target.disk.lock().unwrap()[4096..8192], [0xbb; 4096]);
        assert_eq!(counters.superseded.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(table.is_empty(), "every request was answered and forgotten");
    }

    #[test]
    fn a_resent_request_finds_its_old_copy_by_tag_and_a_reply_forgets_only_its_own() {
        let table = Resends::new();
        let (first, none) = table.arrive(1 << 32 | 7);
        assert!(none.is_none());
        let (_, other) = table.arrive(1 << 32 | 8);
        assert!(other.is_none(), "another tag is another request");
        let (second, older) = table.arrive(2 << 32 | 7);
        assert!(older.is_some_and(|o| Arc::ptr_eq(&o, &first)));
        // The old copy's completion must not drop the new copy's entry.
        table.complete(1 << 32 | 7, &first);
        assert_eq!(table.len(), 2);
        table.complete(2 << 32 | 7, &second);
        assert_eq!(table.len(), 1);
    }
}
