//! `nvmetcp doctor`'s datapath engine report: which engine would serve a
//! snapshotted volume on this host (tapdisk if its blktap opens qcow2, else
//! qemu-storage-daemon, see [`crate::snapshot::served`]), and how plain
//! volumes are handed to VMs (`datapath` in host.conf).

use crate::cmd::{Program, Runner};
use crate::engine::tapdisk::Tapdisk;
use crate::engine::Engine;
use crate::host::HostRoot;
use crate::host_config::{HostConfig, PlainDatapath};

use super::Check;

const NAME: &str = "datapath engine";

/// Whether `program` is in one of the directories the runner resolves from.
fn installed(host: &HostRoot, program: Program) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().any(|dir| host.exists(&format!("{dir}/{}", program.name())))
}

fn plain(host: &HostRoot) -> &'static str {
    match HostConfig::load(host).ok().and_then(|c| c.datapath) {
        Some(PlainDatapath::Engine) => {
            "plain volumes through it too (datapath = engine): running VMs' disks are snapshotted on the master"
        }
        _ => "plain volumes through blkback (the default): a running VM's never-snapshotted disk is refused a snapshot",
    }
}

/// The engine report.
pub(super) fn datapath_engine(host: &HostRoot, runner: &dyn Runner) -> Check {
    if installed(host, Program::TapCtl) {
        return match Tapdisk::new(runner).features() {
            Ok(f) if f.qcow2 => Check::pass(
                NAME,
                format!("tapdisk with qcow2: snapshotted volumes are served as vbd3; {}", plain(host)),
            ),
            Ok(_) => Check::warn(
                NAME,
                "tapdisk without the qcow2 driver: snapshotted volumes cannot be attached to VMs on this host, and \
                 snapshots of its running VMs are refused",
                "update the host (XCP-ng 8.3 updates of 2026-05-05 add qcow2 to blktap)",
            ),
            Err(error) => {
                Check::warn(NAME, format!("tap-ctl could not be asked: {error}"), "check blktap on this host")
            }
        };
    }
    if installed(host, Program::QemuStorageDaemon) && installed(host, Program::NbdClient) {
        return Check::pass(
            NAME,
            format!("qemu-storage-daemon over NBD: snapshotted volumes are served as vbd3; {}", plain(host)),
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
