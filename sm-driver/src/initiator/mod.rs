//! Which NVMe/TCP initiator this host uses, and why: the kernel's
//! (`nvme_tcp`, Linux 5.0 and later) or nvmetcp's own in userspace, served
//! to the host as an NBD device (`nvmetcp-initiator`, for XCP-ng 8.2 and
//! 8.3, whose Linux 4.19 has no `nvme_tcp`). Each host decides for itself,
//! so a pool mixing 8.3 and 9 hosts works with one device-config:
//!
//! 1. `initiator = kernel|userspace` in `/etc/nvmetcp/host.conf` decides;
//! 2. otherwise the kernel's, when `nvme_tcp` is loaded or can be loaded;
//! 3. otherwise the userspace one.
//!
//! NVMe/RDMA always uses the kernel's (4.19 has `nvme_rdma`; the userspace
//! initiator speaks TCP only). `doctor`, `status`, `Plugin.diagnostics` and
//! SMlog show the choice with its reason.

pub mod probe_devices;
pub mod service;
pub mod userspace;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cmd::Runner;
use crate::host::HostRoot;
use crate::nvme::checks::{kernel, load_module, module_state};
use crate::nvme::names::Transport;

/// The two initiators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitiatorKind {
    /// The kernel's `nvme_tcp` with native multipath (also what an SR
    /// attached by a version before the userspace initiator used).
    #[default]
    Kernel,
    /// nvmetcp's own, one daemon per SR, as `/dev/nbdN`.
    Userspace,
}

impl InitiatorKind {
    /// The `host.conf` spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Userspace => "userspace",
        }
    }
}

impl fmt::Display for InitiatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InitiatorKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "kernel" => Ok(Self::Kernel),
            "userspace" => Ok(Self::Userspace),
            other => Err(format!("initiator {other:?}: expected kernel or userspace")),
        }
    }
}

/// The initiator chosen, and the reason, in words for SMlog and doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiatorChoice {
    /// Which one.
    pub kind: InitiatorKind,
    /// Why.
    pub why: String,
}

impl fmt::Display for InitiatorChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} initiator ({})", self.kind, self.why)
    }
}

/// Chooses this host's initiator for a transport. May load `nvme_tcp`
/// (that is what "can be loaded" means; the kernel path loads it anyway).
#[must_use]
pub fn choose(
    host: &HostRoot,
    runner: &dyn Runner,
    configured: Option<InitiatorKind>,
    transport: Transport,
) -> InitiatorChoice {
    let kernel = kernel(host);
    if transport == Transport::Rdma {
        return InitiatorChoice {
            kind: InitiatorKind::Kernel,
            why: "NVMe/RDMA is served by the kernel's nvme_rdma; the userspace initiator speaks TCP only".into(),
        };
    }
    if let Some(kind) = configured {
        return InitiatorChoice { kind, why: format!("initiator = {kind} in /etc/nvmetcp/host.conf") };
    }
    let loaded = host.exists("/sys/module/nvme_tcp");
    match load_module(host, runner, "nvme_tcp") {
        Ok(()) if loaded => {
            InitiatorChoice { kind: InitiatorKind::Kernel, why: format!("Linux {kernel} has nvme_tcp loaded") }
        }
        Ok(()) => InitiatorChoice { kind: InitiatorKind::Kernel, why: format!("Linux {kernel} loads nvme_tcp") },
        Err(error) => InitiatorChoice {
            kind: InitiatorKind::Userspace,
            why: format!(
                "Linux {kernel} cannot load nvme_tcp ({}); XCP-ng 8.x kernels have none",
                error.to_string().lines().next().unwrap_or_default()
            ),
        },
    }
}

/// The initiator [`choose`] would pick for NVMe/TCP, judged without
/// loading anything (for doctor, status and diagnostics, which change
/// nothing): `host.conf`; else the one the SRs attached here already run
/// on (`userspace`: their uuids, from `sr_state::attached_on`; `SR.attach`
/// tried `modprobe`, and a module that exists but will not load,
/// blacklisted with `install nvme_tcp /bin/false`, looks available from
/// `modules.dep`); else whether this kernel has `nvme_tcp`.
#[must_use]
pub fn predict(host: &HostRoot, configured: Option<InitiatorKind>, userspace: &[String]) -> InitiatorChoice {
    if let Some(kind) = configured {
        return InitiatorChoice { kind, why: format!("initiator = {kind} in /etc/nvmetcp/host.conf") };
    }
    let release = kernel(host);
    if !userspace.is_empty() {
        return InitiatorChoice {
            kind: InitiatorKind::Userspace,
            why: format!(
                "SR.attach could not load nvme_tcp on Linux {release}; SR {} attached here runs on it",
                userspace.join(", ")
            ),
        };
    }
    match module_state(host, Some(&release), "nvme_tcp", "nvme-tcp.ko") {
        state if state.starts_with("not in kernel") => InitiatorChoice {
            kind: InitiatorKind::Userspace,
            why: format!("Linux {release} has no nvme_tcp; XCP-ng 8.x kernels have none"),
        },
        state => InitiatorChoice { kind: InitiatorKind::Kernel, why: format!("Linux {release}: nvme_tcp {state}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::FakeRunner;
    use crate::nvme::sysfs::fixture::SysfsTree;

    #[test]
    fn a_4_19_host_gets_the_userspace_initiator_with_the_reason() {
        let tree = SysfsTree::new();
        tree.write("/proc/sys/kernel/osrelease", "4.19.0+1\n");
        let runner = FakeRunner::new().then(Err(crate::nvme::checks::nvme_tcp_not_found()));
        let choice = choose(&tree.host(), &runner, None, Transport::Tcp);
        assert_eq!(choice.kind, InitiatorKind::Userspace);
        assert!(choice.why.contains("Linux 4.19.0+1 cannot load nvme_tcp"), "{choice}");
        assert_eq!(runner.calls()[0].shown, "modprobe nvme_tcp");
    }

    #[test]
    fn a_kernel_with_nvme_tcp_keeps_the_kernel_initiator() {
        let tree = SysfsTree::new();
        tree.write("/proc/sys/kernel/osrelease", "6.12.0\n");
        let runner = FakeRunner::new().then_stdout("");
        assert_eq!(choose(&tree.host(), &runner, None, Transport::Tcp).kind, InitiatorKind::Kernel);
        tree.write("/sys/module/nvme_tcp/refcnt", "1\n");
        let runner = FakeRunner::new();
        let choice = choose(&tree.host(), &runner, None, Transport::Tcp);
        assert_eq!(choice.kind, InitiatorKind::Kernel);
        assert!(choice.why.contains("loaded") && runner.calls().is_empty(), "{choice}");
    }

    #[test]
    fn what_an_attached_sr_runs_on_wins_over_what_modules_dep_suggests() {
        let tree = SysfsTree::new();
        tree.write("/proc/sys/kernel/osrelease", "6.12.0\n");
        tree.write("/lib/modules/6.12.0/modules.dep", "kernel/drivers/nvme/host/nvme-tcp.ko.xz: nvme-fabrics.ko\n");
        assert_eq!(
            predict(&tree.host(), None, &[]).kind,
            InitiatorKind::Kernel,
            "nothing attached: modules.dep decides"
        );
        let attached = ["3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11".to_owned()];
        let choice = predict(&tree.host(), None, &attached);
        assert_eq!(choice.kind, InitiatorKind::Userspace, "{choice}");
        assert!(choice.why.contains("3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11 attached here"), "{choice}");
        let configured = predict(&tree.host(), Some(InitiatorKind::Kernel), &attached);
        assert_eq!(configured.kind, InitiatorKind::Kernel, "host.conf first");
    }

    #[test]
    fn host_conf_overrides_and_rdma_is_always_the_kernel() {
        let tree = SysfsTree::new();
        tree.write("/sys/module/nvme_tcp/refcnt", "1\n");
        let runner = FakeRunner::new();
        let choice = choose(&tree.host(), &runner, Some(InitiatorKind::Userspace), Transport::Tcp);
        assert_eq!(choice.kind, InitiatorKind::Userspace);
        assert_eq!(choice.why, "initiator = userspace in /etc/nvmetcp/host.conf");
        let choice = choose(&tree.host(), &runner, Some(InitiatorKind::Userspace), Transport::Rdma);
        assert_eq!(choice.kind, InitiatorKind::Kernel);
        assert!("spdk".parse::<InitiatorKind>().is_err());
    }
}
