//! The device-config keys of an nvmetcp SR: the public interface administrators
//! type after `xe sr-create device-config:`.
//!
//! device-config is copied verbatim to every host of the pool (and to hosts that
//! join later), so every key here is host-neutral. Host-specific choices (which
//! NIC or source address to use) live in a host-local file instead.
//!
//! This table is the single source of the documentation `Plugin.Query` returns
//! in its `configuration` map (shown by `xe sm-list`) and that the README
//! repeats; the validation of the values themselves lives with the code that
//! uses them.

/// One documented device-config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigKey {
    /// The key as typed after `device-config:`.
    pub name: &'static str,
    /// What it means, its format and its default.
    pub description: &'static str,
}

/// Every device-config key nvmetcp understands, in the order the README lists them.
pub const KEYS: &[ConfigKey] = &[
    ConfigKey { name: "transport", description: "NVMe-oF transport: tcp (default) or rdma" },
    ConfigKey {
        name: "discovery",
        description: "comma-separated discovery endpoints address[:port] (port 8009 by default, IPv6 in \
                      brackets); the SR uses every port the discovery logs list for the subsystem",
    },
    ConfigKey {
        name: "portals",
        description: "comma-separated I/O portals address[:port] (port 4420 by default, IPv6 in brackets), \
                      used as given; discovery or portals (or both) must be present",
    },
    ConfigKey {
        name: "nqn",
        description: "subsystem NQN; required by create and attach; probe without it lists the subsystems",
    },
    ConfigKey {
        name: "namespace",
        description: "the namespace: a stable identifier (UUID, NGUID or EUI-64, as probe reports it) or, at \
                      create time only, an NSID that create resolves and replaces",
    },
    ConfigKey {
        name: "force",
        description: "true lets create take a namespace that holds data or a signature (default false)",
    },
    ConfigKey {
        name: "ctrl_loss_tmo",
        description: "seconds a lost controller keeps reconnecting before it is removed; -1 (default) \
                      reconnects forever so the disk never disappears under running VMs",
    },
    ConfigKey { name: "reconnect_delay", description: "seconds between reconnect attempts (default 5)" },
    ConfigKey {
        name: "keep_alive_tmo",
        description: "keep-alive timeout in seconds: how fast a silent path is declared lost (default 5)",
    },
    ConfigKey {
        name: "fast_io_fail_tmo",
        description: "seconds after which I/O fails instead of waiting while no path is live (default 90): a \
                      60-second outage passes with no I/O error, a longer one fails cleanly instead of hanging",
    },
    ConfigKey {
        name: "nr_io_queues",
        description: "I/O queues per controller (default: the kernel's choice, one per CPU)",
    },
    ConfigKey {
        name: "iopolicy",
        description: "native multipath I/O policy: round-robin (default), queue-depth (kernel 6.11 and \
                      later) or numa",
    },
    ConfigKey {
        name: "dhchap_password", description: "DH-HMAC-CHAP host key (DHHC-1:…); xapi stores it as a secret"
    },
    ConfigKey {
        name: "dhchap_ctrl_password",
        description: "DH-HMAC-CHAP controller key for bidirectional authentication; xapi stores it as a secret",
    },
];

#[cfg(test)]
mod tests {
    use super::KEYS;

    #[test]
    fn keys_are_unique_and_documented() {
        let mut names: Vec<_> = KEYS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
        assert!(KEYS.iter().all(|k| !k.description.is_empty() && !k.description.contains("  ")));
    }

    #[test]
    fn readme_documents_every_key() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        for key in KEYS {
            let row = readme.lines().find(|l| l.starts_with(&format!("| `{}` |", key.name)));
            let row = row.unwrap_or_else(|| panic!("README lacks a row for {}", key.name)).replace('`', "");
            assert!(row.contains(key.description), "README row for {} differs from Plugin.Query:\n{row}", key.name);
        }
    }

    #[test]
    fn secret_keys_end_in_password_so_xapi_moves_them_to_secrets() {
        for key in KEYS.iter().filter(|k| k.name.starts_with("dhchap")) {
            assert!(key.name.ends_with("password"), "{}", key.name);
        }
    }
}
