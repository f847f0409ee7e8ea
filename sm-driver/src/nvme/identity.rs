//! This host's NVMe identity: a stable, unique host NQN and host ID, kept in
//! `/etc/nvme/hostnqn` and `/etc/nvme/hostid` like nvme-cli does.
//!
//! Existing files are respected (targets' allow-lists name this NQN), except
//! the all-zero UUID that tools derive on machines without a DMI UUID: that is
//! no identity at all, and every such host would collide. Missing files are
//! created once, from a random UUID, with the NQN in the standard
//! `nqn.2014-08.org.nvmexpress:uuid:<uuid>` form and the host ID equal to that
//! UUID, so the kernel's 1:1 NQN↔ID pairing holds.

use crate::host::HostRoot;

use super::names::{HostId, Nqn};
use super::options::HostIdentity;

/// Where the host NQN lives.
pub const HOSTNQN_FILE: &str = "/etc/nvme/hostnqn";
/// Where the host ID lives.
pub const HOSTID_FILE: &str = "/etc/nvme/hostid";
const UUID_NQN_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// Why the host identity cannot be established.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file holds something that is not an identity.
    #[error(
        "{file} holds {content:?}, which is not a valid {what}; fix or remove the file (a new identity is then \
             created, and target allow-lists must be updated)"
    )]
    Invalid {
        /// The file.
        file: &'static str,
        /// What it holds.
        content: String,
        /// "host NQN" or "host ID".
        what: &'static str,
    },
    /// Reading or writing failed.
    #[error("cannot {action} {file}")]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        file: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn read(host: &HostRoot, file: &'static str) -> Result<Option<String>, IdentityError> {
    match std::fs::read_to_string(host.path(file)) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io { action: "read", file, source }),
    }
}

fn write(host: &HostRoot, file: &'static str, value: &str) -> Result<(), IdentityError> {
    host.write_atomically(file, format!("{value}\n").as_bytes(), 0o644).map_err(|source| IdentityError::Io {
        action: "write",
        file,
        source,
    })
}

fn is_zero_uuid(text: &str) -> bool {
    text.bytes().all(|b| b == b'0' || b == b'-')
}

fn random_uuid(host: &HostRoot) -> Result<HostId, IdentityError> {
    let text = host.read_trimmed("/proc/sys/kernel/random/uuid").map_err(|e| IdentityError::Io {
        action: "read",
        file: "/proc/sys/kernel/random/uuid",
        source: std::io::Error::other(e.to_string()),
    })?;
    text.parse().map_err(|_| IdentityError::Invalid {
        file: "/proc/sys/kernel/random/uuid",
        content: text,
        what: "UUID",
    })
}

/// Loads this host's identity, creating what is missing (or all-zero).
///
/// # Errors
/// [`IdentityError`] if a file holds garbage or cannot be read or written.
pub fn load_or_create(host: &HostRoot) -> Result<HostIdentity, IdentityError> {
    let nqn_text = read(host, HOSTNQN_FILE)?.filter(|n| !n.strip_prefix(UUID_NQN_PREFIX).is_some_and(is_zero_uuid));
    let id_text = read(host, HOSTID_FILE)?.filter(|i| !is_zero_uuid(i));
    let nqn = nqn_text
        .map(|text| {
            text.parse::<Nqn>().map_err(|_| IdentityError::Invalid {
                file: HOSTNQN_FILE,
                content: text,
                what: "host NQN",
            })
        })
        .transpose()?;
    let id = id_text
        .map(|text| {
            text.parse::<HostId>().map_err(|_| IdentityError::Invalid {
                file: HOSTID_FILE,
                content: text,
                what: "host ID",
            })
        })
        .transpose()?;
    let id = match (id, &nqn) {
        (Some(id), _) => id,
        (None, Some(nqn)) => match nqn.as_str().strip_prefix(UUID_NQN_PREFIX).and_then(|u| u.parse().ok()) {
            Some(uuid) => uuid,
            None => random_uuid(host)?,
        },
        (None, None) => random_uuid(host)?,
    };
    let nqn = match nqn {
        Some(nqn) => nqn,
        None => {
            let nqn: Nqn = format!("{UUID_NQN_PREFIX}{id}").parse().map_err(|_| IdentityError::Invalid {
                file: HOSTNQN_FILE,
                content: id.to_string(),
                what: "host NQN",
            })?;
            write(host, HOSTNQN_FILE, nqn.as_str())?;
            tracing::warn!(hostnqn = %nqn, "created this host's NVMe host NQN in {HOSTNQN_FILE}");
            nqn
        }
    };
    if read(host, HOSTID_FILE)?.as_deref() != Some(id.as_str()) {
        write(host, HOSTID_FILE, id.as_str())?;
        tracing::warn!(hostid = %id, "created this host's NVMe host ID in {HOSTID_FILE}");
    }
    Ok(HostIdentity { nqn, id })
}

#[cfg(test)]
mod tests {
    use super::{load_or_create, IdentityError};
    use crate::nvme::sysfs::fixture::SysfsTree;

    const UUID: &str = "6f0b6b2e-3c3a-4f5e-9a53-2d1f4f0c8e11";

    fn tree() -> SysfsTree {
        let tree = SysfsTree::new();
        tree.write("/proc/sys/kernel/random/uuid", &format!("{UUID}\n"));
        tree
    }

    #[test]
    fn creates_a_paired_identity_once() {
        let tree = tree();
        let identity = load_or_create(&tree.host()).unwrap();
        assert_eq!(identity.nqn.as_str(), format!("nqn.2014-08.org.nvmexpress:uuid:{UUID}"));
        assert_eq!(identity.id.as_str(), UUID);
        assert_eq!(tree.read("/etc/nvme/hostid"), format!("{UUID}\n"));
        tree.write("/proc/sys/kernel/random/uuid", "11111111-2222-3333-4444-555555555555\n");
        assert_eq!(load_or_create(&tree.host()).unwrap(), identity, "stable across calls");
    }

    #[test]
    fn existing_files_are_respected_and_completed() {
        let tree = tree();
        tree.write("/etc/nvme/hostnqn", "nqn.2014-08.com.example:host-7\n");
        let identity = load_or_create(&tree.host()).unwrap();
        assert_eq!(identity.nqn.as_str(), "nqn.2014-08.com.example:host-7");
        assert_eq!(identity.id.as_str(), UUID, "a missing host ID is created");
        assert_eq!(tree.read("/etc/nvme/hostnqn"), "nqn.2014-08.com.example:host-7\n", "never rewritten");

        let tree = super::tests::tree();
        tree.write("/etc/nvme/hostnqn", "nqn.2014-08.org.nvmexpress:uuid:0a0b0c0d-1111-2222-3333-444455556666\n");
        assert_eq!(
            load_or_create(&tree.host()).unwrap().id.as_str(),
            "0a0b0c0d-1111-2222-3333-444455556666",
            "ID follows a UUID NQN"
        );
    }

    #[test]
    fn all_zero_identities_are_replaced() {
        let tree = tree();
        tree.write("/etc/nvme/hostnqn", "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000\n");
        tree.write("/etc/nvme/hostid", "00000000-0000-0000-0000-000000000000\n");
        let identity = load_or_create(&tree.host()).unwrap();
        assert_eq!(identity.id.as_str(), UUID);
        assert!(!tree.read("/etc/nvme/hostnqn").contains("00000000-0000"));
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let tree = tree();
        tree.write("/etc/nvme/hostid", "not-a-uuid\n");
        let err = load_or_create(&tree.host()).unwrap_err();
        assert!(matches!(err, IdentityError::Invalid { file: "/etc/nvme/hostid", .. }));
        assert!(err.to_string().contains("/etc/nvme/hostid holds \"not-a-uuid\""), "{err}");
    }
}
