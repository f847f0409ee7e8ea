//! This host's role in the pool, from `/etc/xensource/pool.conf`.
//!
//! Every XCP-ng host has that file: `master` on the pool master,
//! `slave:<master address>` on members. Only the master writes LVM metadata.
//! A host without the file is not in a pool (a lone test machine) and is its
//! own master.

use crate::host::HostRoot;

/// The file xapi keeps the role in.
pub const POOL_CONF: &str = "/etc/xensource/pool.conf";

/// Whether this host is the pool master.
#[must_use]
pub fn is_master(host: &HostRoot) -> bool {
    match host.read_trimmed(POOL_CONF) {
        Ok(role) => !role.starts_with("slave"),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::is_master;
    use crate::host::HostRoot;

    #[test]
    fn the_role_comes_from_pool_conf() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        assert!(is_master(&host), "no pool: its own master");
        std::fs::create_dir_all(host.path("/etc/xensource")).unwrap();
        std::fs::write(host.path("/etc/xensource/pool.conf"), "master").unwrap();
        assert!(is_master(&host));
        std::fs::write(host.path("/etc/xensource/pool.conf"), "slave:10.0.0.1\n").unwrap();
        assert!(!is_master(&host));
    }
}
