//! The NBD devices `SR.probe` serves for the while it reads a namespace
//! over the userspace initiator (`userspace::with_namespace_device`).
//!
//! Each is recorded in `/run/nvmetcp/probe-devices/<pid>.json` while the
//! probe reads it and forgotten when it is disconnected. A probe killed in
//! between (xapi kills a call that runs too long) leaves its device
//! connected to sockets nobody serves; the next probe on the host finds
//! it by its record and disconnects it. The record is what identifies the
//! device: Linux 4.19 shows no NBD `backend` attribute, and a device is
//! only ever touched while it still shows the dead probe's pid and size.

use std::path::{Path, PathBuf};

use nvmetcp_initiator::nbd::export::verify;
use nvmetcp_initiator::nbd::kernel::NbdNetlink;
use serde::{Deserialize, Serialize};

use crate::host::HostRoot;

const DIR: &str = "/run/nvmetcp/probe-devices";

/// What a probe records of the device it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    index: u32,
    backend: String,
    size_bytes: u64,
}

/// A device a probe serves now; the record goes when this is dropped.
#[derive(Debug)]
pub struct Held {
    path: PathBuf,
}

impl Held {
    /// Keeps the record past this process (its device could not be
    /// disconnected): the next probe after it ends disconnects it.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn record_path(host: &HostRoot, pid: u32) -> PathBuf {
    host.path(&format!("{DIR}/{pid}.json"))
}

/// Records that process `pid` serves `/dev/nbd<index>` for a probe.
/// Best effort: a probe that cannot write it still reads, and only a kill
/// of that probe would then leave a device to disconnect by hand.
pub fn hold(host: &HostRoot, pid: u32, index: u32, backend: &str, size_bytes: u64) -> Held {
    let path = record_path(host, pid);
    let record = Record { index, backend: backend.to_owned(), size_bytes };
    let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
        serde_json::to_vec(&record).map_err(std::io::Error::from).and_then(|bytes| std::fs::write(&path, bytes))
    });
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot record the device SR.probe serves");
    }
    Held { path }
}

/// A device a killed probe left connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// The killed probe.
    pub pid: u32,
    /// `/dev/nbd<index>`.
    pub index: u32,
    record: PathBuf,
}

/// The devices killed probes left: records whose process is gone (no
/// `/proc/<pid>`) and whose device still shows that pid, backend and size.
/// A record whose device was reused or disconnected meanwhile is dropped.
#[must_use]
pub fn left_behind(host: &HostRoot) -> Vec<Left> {
    let Ok(entries) = std::fs::read_dir(host.path(DIR)) else { return Vec::new() };
    let sys = host.path("/sys");
    let mut left = Vec::new();
    for entry in entries.flatten() {
        let record = entry.path();
        let Some(pid) = record.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if host.exists(&format!("/proc/{pid}")) {
            continue;
        }
        let kept = std::fs::read(&record).ok().and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok());
        match kept {
            Some(kept) if still_shows(&sys, pid, &kept) => left.push(Left { pid, index: kept.index, record }),
            _ => {
                let _ = std::fs::remove_file(&record);
            }
        }
    }
    left.sort_by_key(|l| l.index);
    left
}

fn still_shows(sys: &Path, pid: u32, record: &Record) -> bool {
    verify(sys, record.index, pid, &record.backend, record.size_bytes).is_ok()
}

/// Disconnects what killed probes left ([`left_behind`]); logged, never
/// fatal: the probe that asks goes on with another device.
pub fn disconnect_left_behind(host: &HostRoot) {
    let left = left_behind(host);
    if left.is_empty() {
        return;
    }
    let netlink = match NbdNetlink::open() {
        Ok(netlink) => netlink,
        Err(error) => {
            tracing::warn!(%error, "cannot disconnect the NBD devices killed probes left");
            return;
        }
    };
    for device in left {
        match netlink.disconnect(device.index) {
            Ok(()) => {
                tracing::info!(
                    pid = device.pid,
                    index = device.index,
                    "disconnected the NBD device a killed SR.probe left"
                );
                let _ = std::fs::remove_file(&device.record);
            }
            Err(error) => tracing::warn!(
                pid = device.pid,
                index = device.index,
                %error,
                "cannot disconnect the NBD device a killed SR.probe left"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(root: &Path, index: u32, pid: &str, sectors: u64) {
        let dir = root.join(format!("sys/block/nbd{index}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pid"), format!("{pid}\n")).unwrap();
        std::fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
    }

    #[test]
    fn a_killed_probes_device_is_found_by_its_record_and_nothing_else_is() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        // 4101 was killed while it served nbd1; its record and the device agree.
        (hold(&host, 4101, 1, "nvmetcp:probe-4101", 1 << 20)).keep();
        device(dir.path(), 1, "4101", 2048);
        // 4102 runs still (it has a /proc entry): its device is in use.
        (hold(&host, 4102, 2, "nvmetcp:probe-4102", 1 << 20)).keep();
        device(dir.path(), 2, "4102", 2048);
        std::fs::create_dir_all(dir.path().join("proc/4102")).unwrap();
        // 4103 was killed, but nbd3 was reused by a daemon since: not ours any more.
        (hold(&host, 4103, 3, "nvmetcp:probe-4103", 1 << 20)).keep();
        device(dir.path(), 3, "777", 2048);
        // 4104 was killed after its device was disconnected: nothing is left.
        (hold(&host, 4104, 4, "nvmetcp:probe-4104", 1 << 20)).keep();

        let left = left_behind(&host);
        assert_eq!(left.iter().map(|l| (l.pid, l.index)).collect::<Vec<_>>(), [(4101, 1)]);
        // The records of 4103 and 4104 are dropped; 4101's stays until its
        // device is disconnected, 4102's while it runs.
        let mut kept: Vec<_> =
            std::fs::read_dir(host.path(DIR)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        kept.sort();
        assert_eq!(kept, ["4101.json", "4102.json"]);
    }

    #[test]
    fn a_probe_that_ends_forgets_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        let held = hold(&host, 4201, 0, "nvmetcp:probe-4201", 4096);
        assert!(record_path(&host, 4201).exists());
        drop(held);
        assert!(!record_path(&host, 4201).exists());
        assert!(left_behind(&host).is_empty());
    }
}
