//! What `SR.attach` leaves on this host for later calls, and the per-SR lock.
//!
//! xapi passes later calls only the opaque `sr` string `SR.attach` returned, so
//! attach records everything they need in `/run/nvmetcp/srs/<sr-uuid>.json`:
//! the subsystem, the namespace identity, the expected paths, the VG, and the
//! last sizes seen (so `SR.stat` can still report them while no path is live).
//! `/run` is emptied at boot, exactly when xapi forgets attachments too.
//! Concurrent calls on one SR serialize on `/run/nvmetcp/sr-<uuid>.lock`,
//! with a deadline.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::HostRoot;
use crate::lock::{FileLock, LockError};
use crate::nvme::options::PathKey;
use crate::nvme::users::RUN_DIR;

/// The prefix of the `sr` handle `SR.attach` returns.
pub const HANDLE_PREFIX: &str = "nvmetcp://sr/";

/// How long a call waits for another call on the same SR.
pub const SR_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// Per-host state of an attached SR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrState {
    /// xapi's SR uuid.
    pub sr_uuid: crate::ids::SrUuid,
    /// The VG name.
    pub vg: crate::ids::VgName,
    /// The subsystem NQN.
    pub nqn: crate::nvme::names::Nqn,
    /// The namespace identity (written in its canonical form).
    pub namespace: crate::nvme::sysfs::NamespaceIdentity,
    /// The paths this SR expects.
    pub paths: Vec<PathKey>,
    /// The device-config, to reconnect and to re-validate.
    pub configuration: std::collections::BTreeMap<String, String>,
    /// Last known total bytes.
    pub total_space: u64,
    /// Last known free bytes.
    pub free_space: u64,
    /// The VG's extent size, so `Volume.create` knows the rounded size
    /// without reading it back (0 in state written by older versions).
    #[serde(default)]
    pub extent_size: u64,
    /// Which initiator serves the SR on this host (older state: the kernel's).
    #[serde(default)]
    pub initiator: crate::initiator::InitiatorKind,
}

/// Why the state or lock could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The handle is not one of ours.
    #[error("parameter sr: {0:?} is not an nvmetcp SR handle (nvmetcp://sr/<uuid>, as SR.attach returns it)")]
    BadHandle(String),
    /// The SR is not attached on this host.
    #[error("SR {0} is not attached on this host (plug its PBD first)")]
    NotAttached(String),
    /// Another call held the SR for too long.
    #[error("another call on SR {0} held its lock for more than {1:?}; retry, and check SMlog for a stuck call")]
    LockTimeout(String, Duration),
    /// A state file could not be used.
    #[error("cannot use {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A state file is corrupt.
    #[error("{path} is corrupt ({detail}); detach and re-attach the SR (xe pbd-unplug, xe pbd-plug)")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

/// The SR uuid inside a handle.
///
/// # Errors
/// [`StateError::BadHandle`] for anything else.
pub fn uuid_of_handle(handle: &str) -> Result<String, StateError> {
    handle
        .strip_prefix(HANDLE_PREFIX)
        .filter(|u| crate::ids::is_uuid(u))
        .map(str::to_owned)
        .ok_or_else(|| StateError::BadHandle(handle.to_owned()))
}

/// The handle of SR `uuid`.
#[must_use]
pub fn handle_of(uuid: &str) -> String {
    format!("{HANDLE_PREFIX}{uuid}")
}

/// Where the state files live: `/run/nvmetcp/srs`.
const STATE_DIR: &str = "srs";

fn state_file(uuid: &str) -> String {
    format!("{RUN_DIR}/{STATE_DIR}/{uuid}.json")
}

/// The uuid of every SR with a state file on this host, sorted: the one
/// reader of the `/run/nvmetcp/srs` layout besides [`load`] and [`save`].
#[must_use]
pub fn attached_uuids(host: &HostRoot) -> Vec<String> {
    let mut names = host.list_dir(&format!("{RUN_DIR}/{STATE_DIR}")).unwrap_or_default();
    names.sort();
    names.iter().filter_map(|n| n.strip_suffix(".json")).map(str::to_owned).collect()
}

/// The uuid of every SR attached here on initiator `kind`, sorted (an
/// unreadable state counts as none).
#[must_use]
pub fn attached_on(host: &HostRoot, kind: crate::initiator::InitiatorKind) -> Vec<String> {
    attached_uuids(host).into_iter().filter(|uuid| load(host, uuid).is_ok_and(|s| s.initiator == kind)).collect()
}

fn io(path: &str) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_owned(), source }
}

/// Loads the state of SR `uuid`.
///
/// # Errors
/// [`StateError::NotAttached`] when there is none.
pub fn load(host: &HostRoot, uuid: &str) -> Result<SrState, StateError> {
    let path = state_file(uuid);
    match std::fs::read_to_string(host.path(&path)) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| StateError::Corrupt { path, detail: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StateError::NotAttached(uuid.to_owned())),
        Err(source) => Err(StateError::Io { path, source }),
    }
}

/// Saves the state atomically.
///
/// # Errors
/// [`StateError::Io`] if it cannot be written.
pub fn save(host: &HostRoot, state: &SrState) -> Result<(), StateError> {
    let path = state_file(&state.sr_uuid);
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| StateError::Corrupt { path: path.clone(), detail: e.to_string() })?;
    host.write_atomically(&path, text.as_bytes(), 0o600).map_err(io(&path))
}

/// Forgets the state (idempotent).
///
/// # Errors
/// [`StateError::Io`] if it exists but cannot be removed.
pub fn remove(host: &HostRoot, uuid: &str) -> Result<(), StateError> {
    let path = state_file(uuid);
    match std::fs::remove_file(host.path(&path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io { path, source: e }),
        _ => Ok(()),
    }
}

/// Holds SR `uuid`'s lock while alive.
pub struct SrLock {
    _lock: FileLock,
}

impl SrLock {
    /// Takes the lock of SR `uuid`, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`StateError`] if the lock file cannot be opened or the wait times out.
    pub fn acquire(host: &HostRoot, uuid: &str, timeout: Duration) -> Result<Self, StateError> {
        match FileLock::acquire(host, &format!("{RUN_DIR}/sr-{uuid}.lock"), timeout) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err(LockError::Timeout { timeout, .. }) => Err(StateError::LockTimeout(uuid.to_owned(), timeout)),
            Err(LockError::Io { path, source }) => Err(StateError::Io { path, source }),
        }
    }
}

/// Test fixture: an attached SR's state with one TCP path to 10.0.0.1:4420
/// from host `nqn.h:h`, on the kernel initiator.
#[cfg(test)]
pub(crate) fn one_tcp_path(sr_uuid: &str, vg: &str, nqn: &str, namespace: &str, total: u64, free: u64) -> SrState {
    SrState {
        sr_uuid: sr_uuid.into(),
        vg: vg.into(),
        nqn: nqn.into(),
        namespace: namespace.into(),
        paths: vec![PathKey {
            transport: crate::nvme::names::Transport::Tcp,
            traddr: "10.0.0.1".parse().expect("a literal address"),
            trsvcid: 4420,
            subsysnqn: nqn.into(),
            hostnqn: "nqn.h:h".into(),
            host_iface: None,
            host_traddr: None,
        }],
        configuration: Default::default(),
        total_space: total,
        free_space: free,
        extent_size: 4 << 20,
        initiator: crate::initiator::InitiatorKind::Kernel,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{handle_of, load, remove, save, uuid_of_handle, SrLock, SrState, StateError};
    use crate::host::HostRoot;

    const UUID: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";

    #[test]
    fn handles_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(uuid_of_handle(&handle_of(UUID)).unwrap(), UUID);
        for bad in ["", "nvmetcp://sr/", "file:///tmp/x", "nvmetcp://sr/../../etc"] {
            assert!(matches!(uuid_of_handle(bad), Err(StateError::BadHandle(_))), "{bad}");
        }
    }

    #[test]
    fn state_is_saved_loaded_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        assert!(matches!(load(&host, UUID), Err(StateError::NotAttached(_))));
        let state = SrState {
            sr_uuid: UUID.into(),
            vg: "nvmetcp_x".into(),
            nqn: "nqn.a:b".into(),
            namespace: "uuid.8d30ade900c54fe69fbcbe2c924ffcdc".into(),
            paths: vec![],
            configuration: Default::default(),
            total_space: 1,
            free_space: 1,
            extent_size: 4 << 20,
            initiator: crate::initiator::InitiatorKind::Kernel,
        };
        save(&host, &state).unwrap();
        assert_eq!(load(&host, UUID).unwrap(), state);
        remove(&host, UUID).unwrap();
        remove(&host, UUID).unwrap();
        assert!(load(&host, UUID).is_err());
    }

    #[test]
    fn a_state_file_with_a_bad_field_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        let state = super::one_tcp_path(UUID, "nvmetcp_x", "nqn.a:b", "uuid.8d30ade900c54fe69fbcbe2c924ffcdc", 1, 1);
        save(&host, &state).unwrap();
        let file = dir.path().join(format!("run/nvmetcp/srs/{UUID}.json"));
        let good = std::fs::read_to_string(&file).unwrap();
        let cases = [
            (format!("\"sr_uuid\": \"{UUID}\""), "\"sr_uuid\": \"../etc\"", "not an SR uuid"),
            ("\"vg\": \"nvmetcp_x\"".to_owned(), "\"vg\": \"-x y\"", "not an LVM volume group name"),
            ("\"nqn\": \"nqn.a:b\"".to_owned(), "\"nqn\": \"nqn.a,b\"", "NQN \"nqn.a,b\" is not valid"),
            ("uuid.8d30ade900c54fe69fbcbe2c924ffcdc".to_owned(), "uuid.00", "not a namespace identity"),
            ("\"transport\": \"tcp\"".to_owned(), "\"transport\": \"fc\"", "transport \"fc\" is not valid"),
            ("\"subsysnqn\": \"nqn.a:b\"".to_owned(), "\"subsysnqn\": \"a:b\"", "NQN \"a:b\" is not valid"),
            ("\"hostnqn\": \"nqn.h:h\"".to_owned(), "\"hostnqn\": \"nqn.h:h\\nhostid=1\"", "NQN"),
            ("\"trsvcid\": 4420".to_owned(), "\"trsvcid\": 70000", "u16"),
        ];
        for (field, bad, says) in cases {
            assert!(good.contains(&field), "{field} in {good}");
            std::fs::write(&file, good.replace(&field, bad)).unwrap();
            let error = load(&host, UUID).unwrap_err();
            assert!(matches!(error, StateError::Corrupt { .. }), "{bad}: {error:?}");
            let text = error.to_string();
            assert!(text.contains(&format!("{UUID}.json")) && text.contains(says), "{bad}: {text}");
            assert!(text.contains("pbd-unplug"), "says what to do: {text}");
        }
        std::fs::write(&file, good).unwrap();
        assert_eq!(load(&host, UUID).unwrap(), state);
    }

    #[test]
    fn the_sr_lock_serializes_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        let held = SrLock::acquire(&host, UUID, Duration::from_secs(1)).unwrap();
        assert!(matches!(SrLock::acquire(&host, UUID, Duration::from_millis(50)), Err(StateError::LockTimeout(..))));
        SrLock::acquire(&host, "other", Duration::from_millis(50)).unwrap();
        drop(held);
        SrLock::acquire(&host, UUID, Duration::from_millis(50)).unwrap();
    }
}
