//! Path health: for each expected path, its controller's state and ANA state,
//! and the subsystem's multipath I/O policy.
//!
//! This is what `SR.stat` turns into "2/2 paths live" or "degraded: 1/2 paths
//! live (10.0.0.2:4420 connecting)", and what `nvmetcp status` shows. An
//! expected path without any controller is reported as `absent`, so a portal
//! that was never connected is as visible as one that dropped.

use std::fmt;
use std::str::FromStr;

use crate::host::HostRoot;

use super::connect::find_controller;
use super::names::{InvalidValue, Portal};
use super::options::PathKey;
use super::sysfs::subsystem_dir;
use super::NvmeError;

/// One expected path, as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStatus {
    /// The path.
    pub key: PathKey,
    /// Its controller now, if any.
    pub controller: Option<String>,
    /// Controller state, or `absent`.
    pub state: String,
    /// ANA state of the path to the namespace (`optimized`, …), when known.
    pub ana_state: Option<String>,
}

impl PathStatus {
    /// Whether I/O can use this path: live, and ANA optimized or non-optimized.
    #[must_use]
    pub fn is_live(&self) -> bool {
        self.state == "live" && self.ana_state.as_deref().is_none_or(|a| a == "optimized" || a == "non-optimized")
    }
}

/// All expected paths of one subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The multipath I/O policy, when the subsystem exists.
    pub iopolicy: Option<String>,
    /// Each expected path.
    pub paths: Vec<PathStatus>,
}

impl Health {
    /// How many paths are usable.
    #[must_use]
    pub fn live(&self) -> usize {
        self.paths.iter().filter(|p| p.is_live()).count()
    }

    /// One line for administrators.
    #[must_use]
    pub fn summary(&self) -> String {
        let (live, total) = (self.live(), self.paths.len());
        let down: Vec<String> = self
            .paths
            .iter()
            .filter(|p| !p.is_live())
            .map(|p| {
                let portal = Portal { addr: p.key.traddr, port: p.key.trsvcid };
                match &p.ana_state {
                    Some(ana) if p.state == "live" => format!("{portal} {ana}"),
                    _ => format!("{portal} {}", p.state),
                }
            })
            .collect();
        match (live, down.is_empty()) {
            (_, true) => format!("{live}/{total} paths live"),
            (0, false) => format!("no path live: 0/{total} ({})", down.join(", ")),
            (_, false) => format!("degraded: {live}/{total} paths live ({})", down.join(", ")),
        }
    }
}

/// Reads the health of the `expected` paths (all of one subsystem).
///
/// # Errors
/// [`NvmeError::Host`] if sysfs cannot be read.
pub fn health(host: &HostRoot, expected: &[PathKey]) -> Result<Health, NvmeError> {
    let mut paths = Vec::new();
    for key in expected {
        let controller = find_controller(host, key)?;
        let ana_state = controller.as_ref().and_then(|c| ana_state(host, &c.name));
        paths.push(PathStatus {
            key: key.clone(),
            state: controller.as_ref().map_or_else(|| "absent".to_owned(), |c| c.state.to_string()),
            controller: controller.map(|c| c.name),
            ana_state,
        });
    }
    let iopolicy = expected
        .first()
        .and_then(|k| subsystem_dir(host, k.subsysnqn.as_str()))
        .and_then(|dir| host.read_trimmed(&format!("{dir}/iopolicy")).ok());
    Ok(Health { iopolicy, paths })
}

/// The ANA state of a controller's first namespace path (`nvmeXcYnZ`).
fn ana_state(host: &HostRoot, controller: &str) -> Option<String> {
    let names = host.list_dir(&format!("/sys/class/nvme/{controller}")).ok()?;
    names
        .iter()
        .filter(|n| n.starts_with("nvme") && n.contains('c') && n.contains('n'))
        .find_map(|n| host.read_trimmed(&format!("/sys/class/nvme/{controller}/{n}/ana_state")).ok())
}

/// Native multipath I/O policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoPolicy {
    /// The path closest to the submitting CPU.
    Numa,
    /// Rotate over optimized paths.
    RoundRobin,
    /// The path with the fewest outstanding I/Os (Linux 6.11+).
    QueueDepth,
}

impl IoPolicy {
    /// The sysfs spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Numa => "numa",
            Self::RoundRobin => "round-robin",
            Self::QueueDepth => "queue-depth",
        }
    }
}

impl FromStr for IoPolicy {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "numa" => Ok(Self::Numa),
            "round-robin" => Ok(Self::RoundRobin),
            "queue-depth" => Ok(Self::QueueDepth),
            other => Err(InvalidValue {
                what: "iopolicy",
                value: other.to_owned(),
                why: "use round-robin, queue-depth (Linux 6.11+) or numa".to_owned(),
            }),
        }
    }
}

impl fmt::Display for IoPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the I/O policy could not be set.
#[derive(Debug, thiserror::Error)]
pub enum IoPolicyError {
    /// The subsystem is not on this host.
    #[error("subsystem {0} is not connected on this host")]
    NoSubsystem(String),
    /// The kernel refused the policy.
    #[error(
        "cannot set iopolicy {policy} on subsystem {nqn}: this kernel does not offer it (queue-depth needs Linux 6.11)"
    )]
    Refused {
        /// The subsystem.
        nqn: String,
        /// The policy.
        policy: IoPolicy,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Sets the subsystem's I/O policy, if it differs.
///
/// # Errors
/// [`IoPolicyError`] if the subsystem is absent or the kernel refuses.
pub fn set_iopolicy(host: &HostRoot, nqn: &str, policy: IoPolicy) -> Result<(), IoPolicyError> {
    let dir = subsystem_dir(host, nqn).ok_or_else(|| IoPolicyError::NoSubsystem(nqn.to_owned()))?;
    let attr = format!("{dir}/iopolicy");
    if host.read_trimmed(&attr).is_ok_and(|p| p == policy.as_str()) {
        return Ok(());
    }
    std::fs::write(host.path(&attr), policy.as_str()).map_err(|source| IoPolicyError::Refused {
        nqn: nqn.to_owned(),
        policy,
        source,
    })?;
    tracing::info!(%nqn, %policy, "multipath I/O policy set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{health, set_iopolicy, IoPolicy};
    use crate::nvme::options::tests::options;
    use crate::nvme::sysfs::fixture::SysfsTree;

    #[test]
    fn health_counts_live_paths_and_names_the_others() {
        let tree = SysfsTree::new();
        let a = options();
        let mut b = options();
        b.portal = crate::nvme::names::Portal::parse("10.0.0.2", 4420).unwrap();
        let mut c = options();
        c.portal = crate::nvme::names::Portal::parse("10.0.0.3", 4420).unwrap();
        let nqn = a.subsystem.as_str();
        tree.head("nvme-subsys0", "nvme0n1", nqn, 1, "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc", 8);
        tree.write("/sys/devices/virtual/nvme-subsystem/nvme-subsys0/iopolicy", "round-robin\n");
        tree.controller(
            "nvme0",
            "tcp",
            nqn,
            "traddr=10.0.0.1,trsvcid=4420,src_addr=10.0.0.9",
            a.host.nqn.as_str(),
            "live",
        );
        tree.path_device("nvme0", "nvme0c0n1");
        tree.controller("nvme1", "tcp", nqn, "traddr=10.0.0.2,trsvcid=4420", a.host.nqn.as_str(), "connecting");
        let keys = [a.key(), b.key()];
        let h = health(&tree.host(), &keys).unwrap();
        assert_eq!(h.live(), 1);
        assert_eq!(h.iopolicy.as_deref(), Some("round-robin"));
        assert_eq!(h.paths[0].ana_state.as_deref(), Some("optimized"));
        assert_eq!(h.summary(), "degraded: 1/2 paths live (10.0.0.2:4420 connecting)");
        let h = health(&tree.host(), &[a.key(), c.key()]).unwrap();
        assert_eq!(h.summary(), "degraded: 1/2 paths live (10.0.0.3:4420 absent)");
        tree.write("/sys/devices/virtual/nvme-fabrics/ctl/nvme1/state", "live\n");
        assert_eq!(health(&tree.host(), &keys).unwrap().summary(), "2/2 paths live");
        tree.write("/sys/devices/virtual/nvme-fabrics/ctl/nvme0/nvme0c0n1/ana_state", "inaccessible\n");
        assert_eq!(
            health(&tree.host(), &keys).unwrap().summary(),
            "degraded: 1/2 paths live (10.0.0.1:4420 inaccessible)"
        );
    }

    #[test]
    fn iopolicy_is_set_on_the_subsystem() {
        let tree = SysfsTree::new();
        tree.head("nvme-subsys0", "nvme0n1", "nqn.a:b", 1, "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc", 8);
        set_iopolicy(&tree.host(), "nqn.a:b", IoPolicy::RoundRobin).unwrap();
        assert_eq!(tree.read("/sys/class/nvme-subsystem/nvme-subsys0/iopolicy"), "round-robin");
        assert!(set_iopolicy(&tree.host(), "nqn.a:c", IoPolicy::Numa)
            .unwrap_err()
            .to_string()
            .contains("not connected"));
        assert!("fastest".parse::<IoPolicy>().is_err());
    }
}
