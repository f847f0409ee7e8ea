//! Preconditions, checked before connecting, each failing with what is wrong
//! on this host and what to do about it.
//!
//! The most common one in the field: XCP-ng 8.2 and 8.3 run Linux 4.19, which
//! has no NVMe/TCP initiator at all (it arrived in 5.0) but does have
//! NVMe/RDMA; the error says exactly that.

use crate::cmd::{CmdError, Command, Program, Runner};
use crate::host::HostRoot;

use super::fabrics::{Fabrics, FABRICS_DEVICE};
use super::names::Transport;

/// A precondition that does not hold.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The transport's module cannot be loaded.
    #[error("this host cannot use NVMe/{transport}: {detail}")]
    TransportUnavailable {
        /// The transport.
        transport: Transport,
        /// Why, and what to do.
        detail: String,
    },
    /// No fabrics device even after loading `nvme_fabrics`.
    #[error("{FABRICS_DEVICE} is missing after loading nvme_fabrics (kernel {kernel}); check dmesg")]
    NoFabricsDevice {
        /// The kernel release.
        kernel: String,
    },
    /// Native multipath is off.
    #[error(
        "native NVMe multipath is off (nvme_core.multipath={0}): with it off, every path becomes its own disk and \
             LVM sees duplicates. Set 'options nvme_core multipath=Y' in /etc/modprobe.d (the nvmetcp RPM does) and \
             reboot"
    )]
    MultipathOff(String),
    /// DH-HMAC-CHAP keys were given but the kernel cannot use them.
    #[error(
        "DH-HMAC-CHAP keys are configured, but kernel {kernel} has no NVMe in-band authentication (it needs Linux \
             6.0 or later built with CONFIG_NVME_HOST_AUTH); remove the keys or use a newer kernel"
    )]
    AuthUnsupported {
        /// The kernel release.
        kernel: String,
    },
}

/// The running kernel's release, or `(unknown)`, for messages.
#[must_use]
pub fn kernel(host: &HostRoot) -> String {
    host.read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|_| "(unknown)".to_owned())
}

/// Makes sure a kernel module is loaded: already there, or `modprobe` it.
///
/// # Errors
/// What `modprobe` failed with.
pub fn load_module(host: &HostRoot, runner: &dyn Runner, module: &str) -> Result<(), CmdError> {
    if host.exists(&format!("/sys/module/{module}")) {
        return Ok(());
    }
    runner.run(&Command::new(Program::Modprobe).arg(module)).map(drop)
}

/// Whether `module` is loaded, built in, available or absent, in words.
pub fn module_state(host: &HostRoot, release: Option<&str>, module: &str, file: &str) -> String {
    if host.exists(&format!("/sys/module/{module}")) {
        return "loaded".to_owned();
    }
    let Some(release) = release else {
        return "not loaded".to_owned();
    };
    let listed = |list: &str| {
        host.read_trimmed(&format!("/lib/modules/{release}/{list}")).is_ok_and(|text| {
            text.lines()
                .any(|l| l.split(':').next().is_some_and(|p| p.ends_with(file) || p.ends_with(&format!("{file}.xz"))))
        })
    };
    if listed("modules.builtin") {
        "built into the kernel".to_owned()
    } else if listed("modules.dep") {
        "not loaded (available)".to_owned()
    } else {
        format!("not in kernel {release}")
    }
}

/// `modprobe nvme_tcp` as it fails on a kernel without the module (tests).
#[cfg(test)]
pub(crate) fn nvme_tcp_not_found() -> CmdError {
    CmdError::Failed {
        command: "modprobe nvme_tcp".into(),
        status: "exit status 1".into(),
        code: Some(1),
        stdout: String::new(),
        stderr: "modprobe: FATAL: Module nvme_tcp not found".into(),
    }
}

/// Makes sure the transport's module and the fabrics device are there,
/// loading modules if needed.
///
/// # Errors
/// [`CheckError`] naming the kernel and the way out.
pub fn ensure_transport(host: &HostRoot, runner: &dyn Runner, transport: Transport) -> Result<(), CheckError> {
    let module = transport.module();
    if let Err(error) = load_module(host, runner, module) {
        let kernel = kernel(host);
        let detail = if transport == Transport::Tcp && kernel.starts_with("4.") {
            format!(
                "Linux {kernel} has no {module} module (the NVMe/TCP initiator arrived in Linux 5.0); XCP-ng 8.2 \
                 and 8.3 run 4.19, so use transport=rdma with RDMA-capable NICs, or XCP-ng 9"
            )
        } else {
            format!("kernel {kernel} cannot load {module} ({error}); install a kernel that has it")
        };
        return Err(CheckError::TransportUnavailable { transport, detail });
    }
    if !host.exists(FABRICS_DEVICE) {
        // Loading the transport normally pulls nvme_fabrics in; be explicit.
        let _ = runner.run(&Command::new(Program::Modprobe).arg("nvme_fabrics"));
        if !host.exists(FABRICS_DEVICE) {
            return Err(CheckError::NoFabricsDevice { kernel: kernel(host) });
        }
    }
    Ok(())
}

/// Native multipath must be on.
///
/// # Errors
/// [`CheckError::MultipathOff`] with the fix.
pub fn ensure_multipath(host: &HostRoot) -> Result<(), CheckError> {
    match host.read_trimmed("/sys/module/nvme_core/parameters/multipath") {
        Ok(value) if value == "Y" => Ok(()),
        Ok(value) => Err(CheckError::MultipathOff(value)),
        Err(_) => Err(CheckError::MultipathOff("unknown: nvme_core is not loaded".to_owned())),
    }
}

/// The kernel must take DH-HMAC-CHAP options when keys are configured.
///
/// # Errors
/// [`CheckError::AuthUnsupported`] naming the kernel.
pub fn ensure_auth_support(host: &HostRoot, fabrics: &dyn Fabrics) -> Result<(), CheckError> {
    match fabrics.supported_options() {
        Some(tokens) if tokens.iter().any(|t| t == "dhchap_secret") => Ok(()),
        // Kernels that do not list their options predate in-band authentication.
        _ => Err(CheckError::AuthUnsupported { kernel: kernel(host) }),
    }
}

#[cfg(test)]
mod tests {
    use super::{ensure_multipath, ensure_transport, CheckError};
    use crate::cmd::FakeRunner;
    use crate::nvme::names::Transport;
    use crate::nvme::sysfs::fixture::SysfsTree;

    #[test]
    fn xcp_ng_8_without_nvme_tcp_is_explained() {
        let tree = SysfsTree::new();
        tree.write("/proc/sys/kernel/osrelease", "4.19.0+1\n");
        let runner = FakeRunner::new().then(Err(super::nvme_tcp_not_found()));
        let err = ensure_transport(&tree.host(), &runner, Transport::Tcp).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("Linux 4.19.0+1 has no nvme_tcp module"), "{text}");
        assert!(text.contains("use transport=rdma") && text.contains("XCP-ng 9"), "{text}");
        assert_eq!(runner.calls()[0].shown, "modprobe nvme_tcp");
    }

    #[test]
    fn modules_are_loaded_when_missing_and_left_alone_when_present() {
        let tree = SysfsTree::new();
        tree.write("/dev/nvme-fabrics", "");
        let runner = FakeRunner::new().then_stdout("");
        ensure_transport(&tree.host(), &runner, Transport::Rdma).unwrap();
        assert_eq!(runner.calls()[0].shown, "modprobe nvme_rdma");
        tree.write("/sys/module/nvme_tcp/refcnt", "0\n");
        let runner = FakeRunner::new();
        ensure_transport(&tree.host(), &runner, Transport::Tcp).unwrap();
        assert!(runner.calls().is_empty());
    }

    struct Lister(Option<Vec<String>>);
    impl crate::nvme::fabrics::Fabrics for Lister {
        fn create_controller(
            &self,
            _: &crate::nvme::options::OptionString,
        ) -> Result<crate::nvme::fabrics::Created, crate::nvme::fabrics::FabricsError> {
            unreachable!("checks never connect")
        }
        fn supported_options(&self) -> Option<Vec<String>> {
            self.0.clone()
        }
    }

    #[test]
    fn keys_on_a_kernel_without_in_band_authentication_are_refused() {
        let tree = SysfsTree::new();
        tree.write("/proc/sys/kernel/osrelease", "6.1.0-50-amd64\n");
        let without = Lister(Some(vec!["transport".into(), "nqn".into(), "host_iface".into()]));
        let err = super::ensure_auth_support(&tree.host(), &without).unwrap_err();
        assert!(err.to_string().contains("kernel 6.1.0-50-amd64 has no NVMe in-band authentication"), "{err}");
        assert!(super::ensure_auth_support(&tree.host(), &Lister(None)).is_err(), "old kernels list nothing");
        let with = Lister(Some(vec!["dhchap_secret".into(), "dhchap_ctrl_secret".into()]));
        super::ensure_auth_support(&tree.host(), &with).unwrap();
    }

    #[test]
    fn multipath_must_be_on() {
        let tree = SysfsTree::new();
        tree.write("/sys/module/nvme_core/parameters/multipath", "N\n");
        let err = ensure_multipath(&tree.host()).unwrap_err();
        assert!(matches!(err, CheckError::MultipathOff(ref v) if v == "N"));
        assert!(err.to_string().contains("options nvme_core multipath=Y"));
        tree.write("/sys/module/nvme_core/parameters/multipath", "Y\n");
        ensure_multipath(&tree.host()).unwrap();
    }
}
