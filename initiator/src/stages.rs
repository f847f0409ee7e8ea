//! Where a write's time goes: the daemon sums, over all its writes, the time
//! each spends in each stage from the NBD request's header to its reply, and
//! how many commands were in flight beside it. The daemon logs the averages
//! of every interval with writes (`tracing` debug, in SMlog; in the test bed
//! its stderr, copied by `bench/run --userspace`), so a slow write path can
//! be diagnosed on a running host without `strace`, which slows the daemon
//! down so much that it measures itself.
//!
//! Off unless the daemon runs with `NVMETCP_WRITE_STAGES=1`: a clock read is
//! a system call and an emulated device read where the guest's TSC is not
//! trusted (TCG), and eight per write slowed random 4 KiB I/O measurably.
//! When on, counting costs a clock read and two relaxed atomic additions per
//! stage.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// One stage of a write, in the order a write goes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The NBD connection's reader waiting for the next request's header
    /// (idle time: the kernel's NBD driver has nothing more to send).
    HeaderWait,
    /// Taking the request's data from the NBD socket (into a pipe or memory).
    Payload,
    /// Handing it to a queue: a free command slot, the socket's writer lock
    /// and the command capsule's send.
    Submit,
    /// From the command capsule sent to the controller's R2T read.
    R2tWait,
    /// Sending the H2CData PDUs.
    DataSend,
    /// From the data sent to the completion read.
    CompletionWait,
    /// Writing the NBD reply.
    Reply,
}

impl Stage {
    const ALL: [Self; 7] = [
        Self::HeaderWait,
        Self::Payload,
        Self::Submit,
        Self::R2tWait,
        Self::DataSend,
        Self::CompletionWait,
        Self::Reply,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::HeaderWait => "header_wait",
            Self::Payload => "payload",
            Self::Submit => "submit",
            Self::R2tWait => "r2t_wait",
            Self::DataSend => "data_send",
            Self::CompletionWait => "completion_wait",
            Self::Reply => "reply",
        }
    }
}

/// Sums of nanoseconds and counts of every stage, and of the commands in
/// flight on a queue when a write's capsule went out.
#[derive(Debug, Default)]
pub struct Clocks {
    nanos: [AtomicU64; 7],
    counts: [AtomicU64; 7],
    beside: AtomicU64,
}

/// The daemon's clocks (one process serves one SR).
pub static WRITES: Clocks = Clocks::new();

static ON: AtomicBool = AtomicBool::new(false);

/// Starts counting (the daemon, when `NVMETCP_WRITE_STAGES=1`).
pub fn switch_on() {
    ON.store(true, Ordering::Relaxed);
}

/// Now, when counting is on: the start of a stage.
#[must_use]
pub fn now() -> Option<Instant> {
    ON.load(Ordering::Relaxed).then(Instant::now)
}

impl Clocks {
    /// Zeroed clocks.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            nanos: [const { AtomicU64::new(0) }; 7],
            counts: [const { AtomicU64::new(0) }; 7],
            beside: AtomicU64::new(0),
        }
    }

    /// Counts the time from `since` (from [`now`]; `None` when counting is
    /// off) to now in `stage`.
    pub fn record(&self, stage: Stage, since: Option<Instant>) {
        let Some(since) = since else { return };
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos[stage as usize].fetch_add(nanos, Ordering::Relaxed);
        self.counts[stage as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `in_flight` commands on the queue beside a write just sent.
    pub fn beside(&self, in_flight: usize) {
        self.beside.fetch_add(in_flight as u64, Ordering::Relaxed);
    }

    /// The averages since the last call (`None` when no write was sent),
    /// starting the next interval from zero.
    pub fn take(&self) -> Option<Averages> {
        let counts = self.counts.each_ref().map(|c| c.swap(0, Ordering::Relaxed));
        let nanos = self.nanos.each_ref().map(|n| n.swap(0, Ordering::Relaxed));
        let beside = self.beside.swap(0, Ordering::Relaxed);
        let writes = counts[Stage::Submit as usize];
        (writes > 0).then(|| Averages {
            writes,
            micros: std::array::from_fn(|i| nanos[i].checked_div(counts[i]).unwrap_or(0) / 1000),
            beside: beside as f64 / writes as f64,
        })
    }
}

/// Average microseconds per write in each stage over one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Averages {
    /// Writes handed to a queue in the interval.
    pub writes: u64,
    /// Per [`Stage`], in its order.
    pub micros: [u64; 7],
    /// Commands in flight on the queue beside each write (itself included).
    pub beside: f64,
}

impl Averages {
    /// Average microseconds in `stage`.
    #[must_use]
    pub fn of(&self, stage: Stage) -> u64 {
        self.micros[stage as usize]
    }
}

impl fmt::Display for Averages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} writes, µs each:", self.writes)?;
        for stage in Stage::ALL {
            write!(f, " {} {}", stage.name(), self.of(stage))?;
        }
        write!(f, "; {:.1} in flight on the queue", self.beside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn nothing_is_timed_until_counting_is_switched_on() {
        assert_eq!(now(), None);
    }

    #[test]
    fn averages_are_per_write_and_each_interval_starts_from_zero() {
        let clocks = Clocks::new();
        assert_eq!(clocks.take(), None, "no write, nothing to say");
        let start = Instant::now() - Duration::from_millis(4);
        for in_flight in [1, 3] {
            clocks.record(Stage::Submit, Some(Instant::now()));
            clocks.record(Stage::R2tWait, Some(start));
            clocks.record(Stage::DataSend, None);
            clocks.beside(in_flight);
        }
        let averages = clocks.take().unwrap();
        assert_eq!(averages.writes, 2);
        assert!(averages.of(Stage::R2tWait) >= 4000, "{averages}");
        assert_eq!(averages.of(Stage::DataSend), 0);
        assert!((averages.beside - 2.0).abs() < f64::EPSILON);
        assert!(averages.to_string().starts_with("2 writes, µs each: header_wait 0 payload 0 submit"), "{averages}");
        assert_eq!(clocks.take(), None, "taken: the next interval starts empty");
    }
}
