//! This host's role in the pool, from `/etc/xensource/pool.conf`.
//!
//! xapi keeps the role in that file: exactly `master` on the pool master,
//! `slave:<master address>` on members, and `broken` while a new master is
//! being designated or after a failed transition. Only the master writes LVM
//! metadata, and a second writer loses volumes (two hosts committing the same
//! VG overwrite each other's changes), so the rule is strict: this host
//! writes only when the file says exactly `master`. Anything else — `broken`,
//! an empty file, a file that cannot be read, and a missing file on an XCP-ng
//! host (one with `/etc/xensource-inventory`) — writes nothing and says why.
//! Only a machine that is no XCP-ng host at all (no inventory, no
//! `pool.conf`: a lone test machine) is its own master.

use crate::host::HostRoot;

/// The file xapi keeps the role in.
pub const POOL_CONF: &str = "/etc/xensource/pool.conf";

/// Present on every XCP-ng host (written by the installer).
pub const INVENTORY: &str = "/etc/xensource-inventory";

/// What `pool.conf` says about this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `master`: the one host that writes metadata.
    Master,
    /// `slave:<address>`: a pool member, reads metadata only.
    Member(String),
    /// Not an XCP-ng host and no `pool.conf`: a lone machine, its own master.
    Standalone,
    /// The role cannot be trusted (`broken`, empty, unreadable, missing on an
    /// XCP-ng host); the text says what was found.
    Unknown(String),
}

impl Role {
    /// Whether this host may write LVM metadata.
    #[must_use]
    pub fn writes_metadata(&self) -> bool {
        matches!(self, Self::Master | Self::Standalone)
    }
}

/// Reads this host's role.
#[must_use]
pub fn role(host: &HostRoot) -> Role {
    match std::fs::read_to_string(host.path(POOL_CONF)) {
        Ok(text) => match text.trim() {
            "master" => Role::Master,
            member if member.starts_with("slave:") => Role::Member(member["slave:".len()..].to_owned()),
            "" => Role::Unknown(format!("{POOL_CONF} is empty")),
            "broken" => Role::Unknown(format!(
                "{POOL_CONF} says 'broken' (xapi is designating a new master, or a transition failed)"
            )),
            other => Role::Unknown(format!("{POOL_CONF} says {other:?}, neither 'master' nor 'slave:<master>'")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if host.exists(INVENTORY) {
                Role::Unknown(format!("{POOL_CONF} is missing on this XCP-ng host"))
            } else {
                Role::Standalone
            }
        }
        Err(e) => Role::Unknown(format!("{POOL_CONF} cannot be read ({e})")),
    }
}

/// Whether this host is the pool master (and so may write LVM metadata).
#[must_use]
pub fn is_master(host: &HostRoot) -> bool {
    role(host).writes_metadata()
}

/// A metadata-writing call on a host that must not write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotWriter {
    /// A pool member.
    #[error(
        "{call} writes LVM metadata and runs on the pool master only; this host is a pool member (master: {master})"
    )]
    Member {
        /// The call refused.
        call: &'static str,
        /// The master's address from `pool.conf`.
        master: String,
    },
    /// The role cannot be trusted.
    #[error(
        "{call} writes LVM metadata, which only the pool master may do, and this host's role is unknown: {why}. \
         Nothing was written. Wait until xapi has finished designating the master (xe pool-list params=master), \
         then retry on the master"
    )]
    RoleUnknown {
        /// The call refused.
        call: &'static str,
        /// What `pool.conf` held.
        why: String,
    },
}

/// Succeeds only on the host that may write metadata.
///
/// # Errors
/// [`NotWriter`] saying why this host must not write.
pub fn require_master(host: &HostRoot, call: &'static str) -> Result<(), NotWriter> {
    match role(host) {
        Role::Master | Role::Standalone => Ok(()),
        Role::Member(master) => Err(NotWriter::Member { call, master }),
        Role::Unknown(why) => {
            tracing::error!(call, %why, "refusing to write LVM metadata: this host's pool role is unknown");
            Err(NotWriter::RoleUnknown { call, why })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_master, require_master, role, NotWriter, Role, INVENTORY, POOL_CONF};
    use crate::host::HostRoot;

    fn host_with(conf: Option<&str>, xcp_ng: bool) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        std::fs::create_dir_all(host.path("/etc/xensource")).unwrap();
        if let Some(text) = conf {
            std::fs::write(host.path(POOL_CONF), text).unwrap();
        }
        if xcp_ng {
            std::fs::write(host.path(INVENTORY), "INSTALLATION_UUID='x'\n").unwrap();
        }
        (dir, host)
    }

    #[test]
    fn only_exactly_master_writes() {
        for (conf, xcp_ng, writes) in [
            (Some("master"), true, true),
            (Some("master\n"), true, true),
            (None, false, true),
            (Some("slave:10.0.0.1\n"), true, false),
            (Some("broken"), true, false),
            (Some("broken\n"), false, false),
            (Some(""), true, false),
            (Some("\n"), false, false),
            (Some("masters"), true, false),
            (Some("slave"), true, false),
            (None, true, false),
        ] {
            let (_dir, host) = host_with(conf, xcp_ng);
            assert_eq!(is_master(&host), writes, "{conf:?} on an XCP-ng host: {xcp_ng}");
        }
    }

    #[test]
    fn refusals_say_what_was_found() {
        let (_dir, host) = host_with(Some("broken\n"), true);
        let err = require_master(&host, "Volume.create").unwrap_err();
        assert!(matches!(err, NotWriter::RoleUnknown { .. }));
        let text = err.to_string();
        assert!(text.contains("says 'broken'") && text.contains("Nothing was written"), "{text}");
        let (_dir, host) = host_with(None, true);
        assert!(require_master(&host, "SR.create").unwrap_err().to_string().contains("missing on this XCP-ng host"));
        let (_dir, host) = host_with(Some("slave:10.0.0.1"), true);
        assert_eq!(role(&host), Role::Member("10.0.0.1".to_owned()));
        assert!(require_master(&host, "SR.create").unwrap_err().to_string().contains("(master: 10.0.0.1)"));
    }

    #[test]
    fn an_unreadable_pool_conf_writes_nothing() {
        // A directory where the file should be: read fails with an error other than NotFound.
        let (_dir, host) = host_with(None, false);
        std::fs::create_dir_all(host.path(POOL_CONF)).unwrap();
        assert!(matches!(role(&host), Role::Unknown(ref why) if why.contains("cannot be read")));
        assert!(!is_master(&host));
    }
}
