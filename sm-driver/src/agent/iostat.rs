//! I/O rates of a block device from its own counters, `/sys/block/<dev>/stat`
//! (`Documentation/block/stat.rst`: read I/Os, read merges, read sectors,
//! read ticks in ms, write I/Os, write merges, write sectors, write ticks, …;
//! sectors are 512 bytes whatever the device's block size).
//!
//! For an SR that is the native multipath head (`nvmeXnY`), so I/O is counted
//! once whatever path carried it, or the NBD device of the userspace
//! initiator.

use std::time::Instant;

use crate::host::HostRoot;

/// The counters of one device at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Reads completed.
    pub read_ios: u64,
    /// 512-byte sectors read.
    pub read_sectors: u64,
    /// Milliseconds spent on reads.
    pub read_ticks_ms: u64,
    /// Writes completed.
    pub write_ios: u64,
    /// 512-byte sectors written.
    pub write_sectors: u64,
    /// Milliseconds spent on writes.
    pub write_ticks_ms: u64,
}

impl Counters {
    /// Parses the `stat` file; `None` if it has fewer than eight numbers.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let fields: Vec<u64> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
        let field = |i: usize| fields.get(i).copied();
        Some(Self {
            read_ios: field(0)?,
            read_sectors: field(2)?,
            read_ticks_ms: field(3)?,
            write_ios: field(4)?,
            write_sectors: field(6)?,
            write_ticks_ms: field(7)?,
        })
    }

    /// Reads `/sys/block/<device>/stat`.
    #[must_use]
    pub fn read(host: &HostRoot, device: &str) -> Option<Self> {
        host.read_trimmed(&format!("/sys/block/{device}/stat")).ok().and_then(|t| Self::parse(&t))
    }
}

/// Rates over one interval, in the units Xen Orchestra expects of the
/// tapdisk data sources it graphs (`xapi-stats.mjs`): I/Os per second,
/// MiB per second (it multiplies by 2^20), microseconds (it divides by 1000
/// to show milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    /// Reads per second.
    pub iops_read: f64,
    /// Writes per second.
    pub iops_write: f64,
    /// MiB/s read.
    pub throughput_read_mib: f64,
    /// MiB/s written.
    pub throughput_write_mib: f64,
    /// Mean read latency, µs.
    pub read_latency_us: f64,
    /// Mean write latency, µs.
    pub write_latency_us: f64,
}

#[allow(clippy::cast_precision_loss)] // counters far below 2^52 per interval
fn per_second(delta: u64, seconds: f64) -> f64 {
    delta as f64 / seconds
}

#[allow(clippy::cast_precision_loss)]
fn mean_us(ticks_ms: u64, ios: u64) -> f64 {
    if ios == 0 {
        0.0
    } else {
        ticks_ms as f64 * 1000.0 / ios as f64
    }
}

impl Rates {
    /// The rates between `before` and `after`, `seconds` apart. A counter that
    /// went backwards (the device was recreated) counts from zero.
    #[must_use]
    pub fn between(before: &Counters, after: &Counters, seconds: f64) -> Self {
        if seconds <= 0.0 {
            return Self::default();
        }
        let d = |a: u64, b: u64| if a >= b { a - b } else { a };
        let (reads, writes) = (d(after.read_ios, before.read_ios), d(after.write_ios, before.write_ios));
        let mib = |sectors: u64| per_second(sectors, seconds) * 512.0 / f64::from(1u32 << 20);
        Self {
            iops_read: per_second(reads, seconds),
            iops_write: per_second(writes, seconds),
            throughput_read_mib: mib(d(after.read_sectors, before.read_sectors)),
            throughput_write_mib: mib(d(after.write_sectors, before.write_sectors)),
            read_latency_us: mean_us(d(after.read_ticks_ms, before.read_ticks_ms), reads),
            write_latency_us: mean_us(d(after.write_ticks_ms, before.write_ticks_ms), writes),
        }
    }
}

/// The last sample of one device, to turn the next one into rates.
#[derive(Debug, Clone)]
pub struct Sampler {
    device: String,
    last: Option<(Instant, Counters)>,
}

impl Sampler {
    /// A sampler of `device` (`nvme0n1`).
    #[must_use]
    pub fn new(device: &str) -> Self {
        Self { device: device.to_owned(), last: None }
    }

    /// The device sampled.
    #[must_use]
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Takes a sample at `now`; the rates since the previous one (zero for
    /// the first, or when the device cannot be read).
    pub fn sample(&mut self, host: &HostRoot, now: Instant) -> Rates {
        let Some(counters) = Counters::read(host, &self.device) else {
            self.last = None;
            return Rates::default();
        };
        let rates = self
            .last
            .map(|(then, before)| Rates::between(&before, &counters, now.duration_since(then).as_secs_f64()))
            .unwrap_or_default();
        self.last = Some((now, counters));
        rates
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Counters, Rates, Sampler};
    use crate::host::HostRoot;

    #[test]
    fn the_stat_file_is_read_by_position() {
        let c = Counters::parse("    1000  5  16000  500  200  0  3200  100  0  600  600  0 0 0 0 0 0\n").unwrap();
        assert_eq!(
            c,
            Counters {
                read_ios: 1000,
                read_sectors: 16000,
                read_ticks_ms: 500,
                write_ios: 200,
                write_sectors: 3200,
                write_ticks_ms: 100
            }
        );
        assert!(Counters::parse("1 2 3").is_none());
        assert!(Counters::parse("a b c d e f g h").is_none());
    }

    #[test]
    fn rates_are_per_second_in_the_units_xo_expects() {
        let before = Counters::default();
        let after = Counters {
            read_ios: 5000,
            read_sectors: 5000 * 8,
            read_ticks_ms: 2500,
            write_ios: 1000,
            write_sectors: 20480,
            write_ticks_ms: 0,
        };
        let r = Rates::between(&before, &after, 5.0);
        assert!((r.iops_read - 1000.0).abs() < 1e-9);
        assert!((r.iops_write - 200.0).abs() < 1e-9);
        // 40000 sectors * 512 B / 5 s = 3.90625 MiB/s
        assert!((r.throughput_read_mib - 3.906_25).abs() < 1e-9);
        assert!((r.throughput_write_mib - 2.0).abs() < 1e-9);
        assert!((r.read_latency_us - 500.0).abs() < 1e-9);
        assert!(r.write_latency_us.abs() < 1e-9);
        assert_eq!(Rates::between(&after, &before, 5.0).iops_read, 0.0, "a reset counter restarts from zero");
        assert_eq!(Rates::between(&before, &after, 0.0), Rates::default());
    }

    #[test]
    fn the_sampler_needs_two_samples_and_forgets_a_vanished_device() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        std::fs::create_dir_all(host.path("/sys/block/nvme0n1")).unwrap();
        let stat = |reads: u64| {
            std::fs::write(host.path("/sys/block/nvme0n1/stat"), format!("{reads} 0 0 0 0 0 0 0 0 0 0\n")).unwrap();
        };
        let mut sampler = Sampler::new("nvme0n1");
        let t0 = Instant::now();
        stat(100);
        assert_eq!(sampler.sample(&host, t0), Rates::default());
        stat(600);
        assert!((sampler.sample(&host, t0 + Duration::from_secs(5)).iops_read - 100.0).abs() < 1e-9);
        std::fs::remove_file(host.path("/sys/block/nvme0n1/stat")).unwrap();
        assert_eq!(sampler.sample(&host, t0 + Duration::from_secs(10)), Rates::default());
    }
}
