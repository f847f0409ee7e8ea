//! Which connect options the running kernel accepts.
//!
//! The kernel parses the option string in `nvmf_parse_options`
//! (`drivers/nvme/host/fabrics.c`) against its `opt_tokens` table and fails
//! the whole connect with `EINVAL` on any token it does not know. Options
//! were added to that table over the years, so a string right for 6.12 is
//! refused by 4.19 (XCP-ng 8.x, our documented NVMe/RDMA path). What a
//! kernel accepts is learned, most reliable first:
//!
//! 1. Newer kernels list their tokens when `/dev/nvme-fabrics` is read
//!    without a prior write (`nvmf_dev_show`); older ones answer `EINVAL`.
//! 2. Otherwise the kernel's release is compared with each option's first
//!    mainline kernel ([`OPTIONAL`]). Distribution kernels carry backports
//!    (XCP-ng's 4.19 has `nvme-fabrics-reject-I-O-to-offline-device`, the
//!    patch that brought `fast_io_fail_tmo`), so the release only says what
//!    *may* be missing: the connect is tried with every option first, and
//!    only if the kernel answers `EINVAL` is it retried without the options
//!    its release predates. When that retry succeeds, the options left out
//!    are remembered for this boot in [`LEARNED`], so later connects send the
//!    accepted string at once.
//!
//! Options that cannot be left out (the address, the NQNs, DH-HMAC-CHAP keys
//! when configured) are never dropped: a kernel without them fails with its
//! own clear error ([`super::checks`]). Whatever is left out is logged with
//! what it changes, and `nvmetcp doctor` reports it.

use crate::host::HostRoot;

use super::fabrics::Fabrics;

/// Where the options a kernel rejected are remembered (tmpfs: per boot).
pub const LEARNED: &str = "/run/nvmetcp/rejected-connect-options";

/// An option nvmetcp may send that a kernel may not know, with the first
/// mainline kernel whose `opt_tokens` (`drivers/nvme/host/fabrics.c`) has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Optional {
    /// The token's name.
    pub name: &'static str,
    /// First mainline kernel (major, minor).
    pub since: (u32, u32),
    /// The commit that added the token.
    pub commit: &'static str,
    /// What leaving it out changes.
    pub without: &'static str,
}

/// Every option that is left out when the kernel does not accept it. All
/// other options nvmetcp renders (`transport`, `traddr`, `trsvcid`, `nqn`,
/// `hostnqn`, `hostid`, `host_traddr`, `keep_alive_tmo`, `reconnect_delay`,
/// `ctrl_loss_tmo`, `nr_io_queues`) are in v4.19's `opt_tokens` already.
pub const OPTIONAL: [Optional; 2] = [
    Optional {
        name: "fast_io_fail_tmo",
        since: (5, 10),
        commit: "8c4dfea97f15 \"nvme-fabrics: reject I/O to offline device\"",
        without: "I/O is not failed after fast_io_fail_tmo seconds without a path: during an outage it waits \
                  until a path returns (or until ctrl_loss_tmo removes the controller; with -1, for as long as the \
                  outage lasts), like dm-multipath's queue_if_no_path",
    },
    Optional {
        name: "host_iface",
        since: (5, 14),
        commit: "3ede8f72a9a2 \"nvme-tcp: allow selecting the network interface for connections\"",
        without: "connections are not bound to the configured interface: the routing table picks it; bind by \
                  source address with host_traddr in /etc/nvmetcp/host.conf instead",
    },
];

/// The option named `name` in [`OPTIONAL`], if it is one.
#[must_use]
pub fn optional(name: &str) -> Option<&'static Optional> {
    OPTIONAL.iter().find(|o| o.name == name)
}

/// What is known about the running kernel's option table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelOptions {
    /// `/proc/sys/kernel/osrelease`.
    pub release: String,
    /// The tokens the kernel listed, if it lists them.
    pub listed: Option<Vec<String>>,
    /// Options this kernel rejected earlier in this boot.
    pub rejected: Vec<String>,
}

impl KernelOptions {
    /// Reads what this host's kernel says, and what earlier connects learned.
    #[must_use]
    pub fn detect(host: &HostRoot, fabrics: &dyn Fabrics) -> Self {
        let release = host.read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
        let rejected = host
            .read_trimmed(LEARNED)
            .ok()
            .and_then(|text| {
                let (for_release, names) = text.split_once('\n').unwrap_or((text.as_str(), ""));
                (for_release == release)
                    .then(|| names.split(',').filter(|n| optional(n).is_some()).map(str::to_owned).collect())
            })
            .unwrap_or_default();
        Self { release, listed: fabrics.supported_options(), rejected }
    }

    /// Whether the options should include `name`.
    #[must_use]
    pub fn accepts(&self, name: &str) -> bool {
        if optional(name).is_none() {
            return true;
        }
        match &self.listed {
            Some(tokens) => tokens.iter().any(|t| t == name),
            None => !self.rejected.iter().any(|r| r == name),
        }
    }

    /// Whether this kernel's release predates the option (only meaningful
    /// when the kernel does not list its tokens).
    #[must_use]
    pub fn predates(&self, name: &str) -> bool {
        match (optional(name), version(&self.release)) {
            (Some(option), Some(release)) => release < option.since,
            // An unreadable release: assume the oldest kernel we support.
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Remembers, for this boot, that the kernel rejected `names`.
    pub fn learn(&mut self, host: &HostRoot, names: &[String]) {
        for name in names {
            if !self.rejected.contains(name) {
                self.rejected.push(name.clone());
            }
        }
        let text = format!("{}\n{}\n", self.release, self.rejected.join(","));
        if let Err(error) = host.write_atomically(LEARNED, text.as_bytes(), 0o644) {
            tracing::warn!(%error, "cannot remember the connect options this kernel rejects");
        }
    }

    /// The options of [`OPTIONAL`] this kernel is known or expected not to
    /// accept, for `doctor`: (option, known for sure).
    #[must_use]
    pub fn missing(&self) -> Vec<(&'static Optional, bool)> {
        OPTIONAL
            .iter()
            .filter_map(|o| match &self.listed {
                Some(tokens) => (!tokens.iter().any(|t| t == o.name)).then_some((o, true)),
                None if self.rejected.iter().any(|r| r == o.name) => Some((o, true)),
                None => self.predates(o.name).then_some((o, false)),
            })
            .collect()
    }
}

/// (major, minor) from a release such as `4.19.0+1` or `6.12.0-55.el10`.
fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::{version, KernelOptions, OPTIONAL};

    fn kernel(release: &str, listed: Option<&[&str]>) -> KernelOptions {
        KernelOptions {
            release: release.to_owned(),
            listed: listed.map(|l| l.iter().map(|s| (*s).to_owned()).collect()),
            rejected: vec![],
        }
    }

    #[test]
    fn releases_are_read_as_distributions_write_them() {
        assert_eq!(version("4.19.0+1"), Some((4, 19)));
        assert_eq!(version("6.12.0-55.el10.x86_64"), Some((6, 12)));
        assert_eq!(version("5.10"), Some((5, 10)));
        assert_eq!(version("garbage"), None);
    }

    #[test]
    fn a_listing_kernel_is_believed_and_an_old_one_judged_by_release() {
        let listed = kernel("6.1.0", Some(&["transport", "fast_io_fail_tmo"]));
        assert!(listed.accepts("fast_io_fail_tmo") && !listed.accepts("host_iface") && listed.accepts("traddr"));
        assert_eq!(
            listed.missing().iter().map(|(o, sure)| (o.name, *sure)).collect::<Vec<_>>(),
            [("host_iface", true)]
        );
        let old = kernel("4.19.0+1", None);
        // Tried first (a backport may have it), expected to be missing.
        assert!(old.accepts("fast_io_fail_tmo") && old.predates("fast_io_fail_tmo") && old.predates("host_iface"));
        assert_eq!(old.missing().len(), OPTIONAL.len());
        assert!(old.missing().iter().all(|(_, sure)| !sure));
        let new = kernel("5.15.0", None);
        assert!(!new.predates("fast_io_fail_tmo") && !new.predates("host_iface") && new.missing().is_empty());
    }

    #[test]
    fn what_a_kernel_rejected_is_remembered_for_its_release_only() {
        let tree = crate::nvme::sysfs::fixture::SysfsTree::new();
        let host = tree.host();
        tree.write("/proc/sys/kernel/osrelease", "4.19.0+1\n");
        let fabrics = crate::nvme::connect::fake::Kernel419::plain(&tree);
        let mut options = KernelOptions::detect(&host, &fabrics);
        assert!(options.accepts("fast_io_fail_tmo"));
        options.learn(&host, &["fast_io_fail_tmo".to_owned()]);
        let again = KernelOptions::detect(&host, &fabrics);
        assert!(!again.accepts("fast_io_fail_tmo") && again.accepts("host_iface"));
        assert_eq!(again.missing().iter().filter(|(_, sure)| *sure).count(), 1);
        tree.write("/proc/sys/kernel/osrelease", "4.19.0+2\n");
        assert!(KernelOptions::detect(&host, &fabrics).accepts("fast_io_fail_tmo"), "a new kernel is tried afresh");
    }
}
