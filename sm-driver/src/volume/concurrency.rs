//! Issue 16's concurrency campaign in process: 100 mixed volume calls started
//! at once, as xapi runs plugin calls, on real lvm2 over a loop device; the
//! sysfs tree in a temporary root stands in for the NVMe head
//! (`/dev/nvme0n1` there is `/dev/loopN` for LVM, see
//! `cmd::DeviceSubstitute`). Only the handlers' own locking keeps the
//! calls apart. Needs root for the loop device; `tests/run` runs it
//! (`--ignored`: on a loaded machine it takes a minute, too long for every
//! `cargo test`).

#[cfg(test)]
mod tests;
