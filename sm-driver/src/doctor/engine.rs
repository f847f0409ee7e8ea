//! `nvmetcp doctor`'s datapath engine report: which engine would serve a
//! snapshotted volume on this host (tapdisk if its blktap opens qcow2, else
//! qemu-storage-daemon, see [`crate::snapshot::served`]), and how plain
//! volumes are handed to VMs, and why (`datapath` in host.conf, `auto` by
//! default: tapdisk where it opens qcow2, else blkback).

use crate::cmd::{Program, Runner};
use crate::host::HostRoot;
use crate::host_config::HostConfig;
use crate::snapshot::served::{choose_plain, TapdiskProbe};

use super::Check;

const NAME: &str = "datapath engine";

/// Whether `program` is in one of the directories the runner resolves from.
fn installed(host: &HostRoot, program: Program) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().any(|dir| host.exists(&format!("{dir}/{}", program.name())))
}

/// How plain volumes are handed to VMs on this host, and why.
fn plain(host: &HostRoot, tapdisk: &TapdiskProbe) -> String {
    let choice = HostConfig::load(host).ok().and_then(|c| c.datapath);
    let chosen = choose_plain(choice, tapdisk);
    if chosen.engine {
        format!("plain volumes through it too ({}): running VMs' disks are snapshotted while they run", chosen.why)
    } else {
        format!(
            "plain volumes through blkback ({}): a running VM's never-snapshotted disk is refused a snapshot",
            chosen.why
        )
    }
}

/// The engine report.
pub(super) fn datapath_engine(host: &HostRoot, runner: &dyn Runner) -> Check {
    if installed(host, Program::TapCtl) {
        let probe = TapdiskProbe::of(runner);
        return match &probe {
            TapdiskProbe::Qcow2 => Check::pass(
                NAME,
                format!("tapdisk with qcow2: snapshotted volumes are served as vbd3; {}", plain(host, &probe)),
            ),
            TapdiskProbe::NoQcow2 => Check::warn(
                NAME,
                format!(
                    "tapdisk without the qcow2 driver: snapshotted volumes cannot be attached to VMs on this host, \
                     and snapshots of its running VMs are refused; {}",
                    plain(host, &probe)
                ),
                "update the host (XCP-ng 8.3 updates of 2026-05-05 add qcow2 to blktap)",
            ),
            TapdiskProbe::Unasked(error) => Check::warn(
                NAME,
                format!("tap-ctl could not be asked: {error}; {}", plain(host, &probe)),
                "check blktap on this host",
            ),
            TapdiskProbe::Absent => Check::warn(
                NAME,
                format!("tap-ctl is installed but cannot be run; {}", plain(host, &probe)),
                "check blktap on this host",
            ),
        };
    }
    if installed(host, Program::QemuStorageDaemon) && installed(host, Program::NbdClient) {
        return Check::pass(
            NAME,
            format!(
                "qemu-storage-daemon over NBD: snapshotted volumes are served as vbd3; {}",
                plain(host, &TapdiskProbe::Absent)
            ),
        );
    }
    Check::warn(
        NAME,
        "neither tapdisk (tap-ctl) nor qemu-storage-daemon with nbd-client: snapshotted volumes cannot be attached \
         to VMs on this host",
        "on XCP-ng, install blktap with qcow2 (XCP-ng 8.3 updates of 2026-05-05); elsewhere qemu-storage-daemon \
         and nbd-client",
    )
}
