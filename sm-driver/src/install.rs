//! What the RPM's `%post` asks the binary to do on each host, safe to run any
//! number of times: make sure the host has a stable NVMe identity, and tell
//! the administrator whether xapi already knows the `nvmetcp` SR type.
//!
//! xapi creates SM records for SMAPIv3 plugins only when it starts, for the
//! message-switch queues that are alive then. So after the first install,
//! `xe sm-list` shows `nvmetcp` only once the toolstack restarted; this
//! check asks XAPI (over the dom0 socket) and says so plainly.

use std::fmt::Write as _;
use std::time::Duration;

use xapi_client::api::sm;
use xapi_client::{Client, Credentials, Endpoint, Timeouts};

use crate::host::HostRoot;
use crate::nvme::identity::load_or_create;
use crate::plugin::SR_TYPE;
use crate::secrets::XAPI_SOCKET;

/// Whether the SR type is registered with xapi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// `xe sm-list` shows it.
    Registered,
    /// xapi runs but has no SM record yet: a toolstack restart is needed.
    NeedsToolstackRestart,
    /// xapi could not be asked (not running, or not a dom0).
    Unknown(String),
}

/// Asks XAPI for the `nvmetcp` SM record.
#[must_use]
pub fn registration(host: &HostRoot) -> Registration {
    let timeouts = Timeouts { connect: Duration::from_secs(5), call: Duration::from_secs(20) };
    let client = Client::new(Endpoint::Unix(host.path(XAPI_SOCKET)), timeouts);
    let records = client.login(&Credentials::local_root(), "nvmetcp-install").and_then(|s| sm::get_all_records(&s));
    match records {
        Ok(records) if records.iter().any(|(_, r)| r.sr_type == SR_TYPE) => Registration::Registered,
        Ok(_) => Registration::NeedsToolstackRestart,
        Err(e) => Registration::Unknown(e.to_string()),
    }
}

/// Runs the post-install steps and returns what to tell the administrator,
/// and whether everything is in place.
#[must_use]
pub fn post_install(host: &HostRoot) -> (String, bool) {
    let mut out = String::new();
    let mut ready = true;
    match load_or_create(host) {
        Ok(identity) => {
            let _ =
                writeln!(out, "nvmetcp: this host's NVMe host NQN is {} (targets' allow-lists name it)", identity.nqn);
        }
        Err(e) => {
            ready = false;
            let _ = writeln!(out, "nvmetcp: WARNING: no usable NVMe host identity: {e}");
        }
    }
    match registration(host) {
        Registration::Registered => {
            let _ = writeln!(out, "nvmetcp: the {SR_TYPE} SR type is registered with xapi (xe sm-list type={SR_TYPE})");
        }
        Registration::NeedsToolstackRestart => {
            ready = false;
            let _ = writeln!(
                out,
                "nvmetcp: install this package on every host of the pool, then run xe-toolstack-restart on each \
                 host: xapi registers new SR types when it starts, and xe sm-list does not show {SR_TYPE} yet"
            );
        }
        Registration::Unknown(why) => {
            ready = false;
            let _ = writeln!(
                out,
                "nvmetcp: could not ask xapi whether {SR_TYPE} is registered ({why}); once xapi runs, check \
                 xe sm-list type={SR_TYPE} and run xe-toolstack-restart if it is empty"
            );
        }
    }
    (out, ready)
}

#[cfg(test)]
mod tests {
    use xapi_emulator::{AcceptAll, Config, Emulator, SmType};

    use super::{post_install, registration, Registration};
    use crate::host::HostRoot;
    use crate::secrets::XAPI_SOCKET;

    fn host_with(sm_types: Option<Vec<SmType>>) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        std::fs::create_dir_all(host.path("/proc/sys/kernel/random")).unwrap();
        std::fs::write(host.path("/proc/sys/kernel/random/uuid"), "5c1e5c1e-0000-4000-8000-00000000a11e\n").unwrap();
        if let Some(sm_types) = sm_types {
            std::fs::create_dir_all(host.path("/var/lib/xcp")).unwrap();
            let emulator = Emulator::new(Config { sm_types, ..Config::default() }, AcceptAll);
            emulator.listen_unix(&host.path(XAPI_SOCKET)).unwrap();
        }
        (dir, host)
    }

    #[test]
    fn registration_is_read_from_xapi() {
        let (_d, registered) = host_with(Some(vec![SmType::named("nvmetcp")]));
        assert_eq!(registration(&registered), Registration::Registered);
        let (_d, before_restart) = host_with(Some(vec![SmType::named("lvm")]));
        assert_eq!(registration(&before_restart), Registration::NeedsToolstackRestart);
        let (_d, no_xapi) = host_with(None);
        assert!(matches!(registration(&no_xapi), Registration::Unknown(_)));
    }

    #[test]
    fn post_install_is_idempotent_and_says_what_to_do() {
        let (_d, host) = host_with(Some(vec![SmType::named("lvm")]));
        let (first, ready) = post_install(&host);
        assert!(!ready && first.contains("run xe-toolstack-restart on each host"), "{first}");
        let nqn = std::fs::read_to_string(host.path("/etc/nvme/hostnqn")).unwrap();
        let (second, _) = post_install(&host);
        assert_eq!(std::fs::read_to_string(host.path("/etc/nvme/hostnqn")).unwrap(), nqn, "the identity is kept");
        assert_eq!(first, second);
        let (_d, done) = host_with(Some(vec![SmType::named("nvmetcp")]));
        let (text, ready) = post_install(&done);
        assert!(ready && text.contains("is registered"), "{text}");
    }
}
