//! Who uses which path on this host, so that a path is disconnected only when
//! its last user is gone, and only if we connected it.
//!
//! Several SRs (or several plug attempts of one SR) may share a subsystem and
//! its controllers, and an administrator may have connected a path by hand
//! before. So every attach records, per user (an SR), the paths it uses and
//! whether nvmetcp created each controller; a release deletes a controller
//! only when no other user still lists its path and nvmetcp created it. The
//! record lives in `/run/nvmetcp/` (it must not survive a reboot, like the
//! controllers themselves) and every change happens under one host-wide
//! `flock`, with a deadline, because xapi runs plugin calls concurrently.
//!
//! Users that belong to one call rather than to an attached SR (`create-…`
//! while `SR.create` works, `probe-<pid>` while `SR.probe` does) also record
//! their owner process (pid and start time, so a recycled pid is not taken
//! for it). A call killed before it released its paths leaves such a user
//! behind, which would keep its controllers connected forever; every attach
//! and release collects the users whose owner is gone.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::HostRoot;
use crate::lock::{FileLock, LockError};

use super::connect::{connect_probed, disconnect_path, probe_path, ConnectedPath, PathOrigin, PROBE_TIMEOUT};
use super::discovery::Network;
use super::fabrics::Fabrics;
use super::options::{ConnectOptions, PathKey};
use super::NvmeError;

/// nvmetcp's runtime state directory.
pub const RUN_DIR: &str = "/run/nvmetcp";
const LOCK_FILE: &str = "/run/nvmetcp/fabric.lock";
const USERS_FILE: &str = "/run/nvmetcp/fabric-users.json";
const OWNERS_FILE: &str = "/run/nvmetcp/fabric-owners.json";

/// Prefixes of users that live only as long as the call that made them.
pub const CALL_USER_PREFIXES: [&str; 2] = ["create-", "probe-"];

fn is_call_user(user: &str) -> bool {
    CALL_USER_PREFIXES.iter().any(|p| user.starts_with(p))
}

/// The process that owns a call's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Owner {
    pid: u32,
    /// Clock ticks after boot when it started (`/proc/<pid>/stat` field 22).
    start: Option<u64>,
}

impl Owner {
    fn current(host: &HostRoot) -> Self {
        let pid = std::process::id();
        Self { pid, start: start_time(host, pid) }
    }

    fn alive(self, host: &HostRoot) -> bool {
        host.exists(&format!("/proc/{}", self.pid))
            && (self.start.is_none() || start_time(host, self.pid) == self.start)
    }
}

/// A process's start time, from `/proc/<pid>/stat` (after the command name,
/// which may hold spaces and parentheses, field 22 is the 20th).
fn start_time(host: &HostRoot, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(host.path(&format!("/proc/{pid}/stat"))).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

type Owners = BTreeMap<String, Owner>;

/// How long a call waits for another one holding the host lock.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors of the registry itself.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The lock could not be taken in time.
    #[error("another nvmetcp call held the host lock {LOCK_FILE} for more than {0:?}; retry, and check SMlog for a stuck call")]
    LockTimeout(Duration),
    /// The state files could not be read or written.
    #[error("cannot use {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The users file is not what we wrote.
    #[error("{USERS_FILE} is corrupt ({0}); remove it only if no nvmetcp SR is attached on this host")]
    Corrupt(String),
}

/// One path a user relies on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PathUse {
    key: PathKey,
    /// Whether nvmetcp created the controller (then it may delete it).
    created: bool,
}

type Users = BTreeMap<String, Vec<PathUse>>;

/// Holds the host-wide fabric lock while alive.
pub struct HostLock {
    _lock: FileLock,
}

impl HostLock {
    /// Takes the lock, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RegistryError`] if the lock file cannot be opened or the wait times out.
    pub fn acquire(host: &HostRoot, timeout: Duration) -> Result<Self, RegistryError> {
        match FileLock::acquire(host, LOCK_FILE, timeout) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err(LockError::Timeout { timeout, .. }) => Err(RegistryError::LockTimeout(timeout)),
            Err(LockError::Io { path, source }) => Err(RegistryError::Io { path, source }),
        }
    }
}

fn load(host: &HostRoot) -> Result<Users, RegistryError> {
    match std::fs::read_to_string(host.path(USERS_FILE)) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| RegistryError::Corrupt(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Users::new()),
        Err(source) => Err(RegistryError::Io { path: USERS_FILE.to_owned(), source }),
    }
}

fn load_owners(host: &HostRoot) -> Result<Owners, RegistryError> {
    match std::fs::read_to_string(host.path(OWNERS_FILE)) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| RegistryError::Corrupt(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Owners::new()),
        Err(source) => Err(RegistryError::Io { path: OWNERS_FILE.to_owned(), source }),
    }
}

fn save_owners(host: &HostRoot, owners: &Owners) -> Result<(), RegistryError> {
    let io = |source| RegistryError::Io { path: OWNERS_FILE.to_owned(), source };
    let text = serde_json::to_string_pretty(owners).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
    host.write_atomically(OWNERS_FILE, text.as_bytes(), 0o600).map_err(io)
}

/// Releases every call user whose owner process is gone (a killed
/// `SR.create` or `SR.probe`), except `current`. A call user with no owner
/// record is judged by the pid in its name (`probe-<pid>`), else collected.
fn collect_orphans(host: &HostRoot, users: &mut Users, owners: &mut Owners, current: &str) {
    let orphans: Vec<String> = users
        .keys()
        .filter(|u| is_call_user(u) && u.as_str() != current)
        .filter(|u| match owners.get(u.as_str()) {
            Some(owner) => !owner.alive(host),
            None => u
                .strip_prefix("probe-")
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_none_or(|pid| !host.exists(&format!("/proc/{pid}"))),
        })
        .cloned()
        .collect();
    for orphan in orphans {
        match release_user(host, users, &orphan) {
            Ok(released) => {
                owners.remove(&orphan);
                tracing::info!(user = %orphan, disconnected = ?released.disconnected, "collected the paths of a call that died before releasing them");
            }
            Err(error) => tracing::warn!(user = %orphan, %error, "cannot release the paths of a call that died"),
        }
    }
    owners.retain(|user, _| users.contains_key(user));
}

/// Writes the users file atomically (temporary file, fsync, rename).
fn save(host: &HostRoot, users: &Users) -> Result<(), RegistryError> {
    let io = |source| RegistryError::Io { path: USERS_FILE.to_owned(), source };
    let text = serde_json::to_string_pretty(users).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
    host.write_atomically(USERS_FILE, text.as_bytes(), 0o600).map_err(io)
}

/// The outcome of reconciling one path.
pub type PathResult = Result<ConnectedPath, NvmeError>;

/// Connects (or reuses) every path for `user`, each on its own, and records
/// them: one failing path never hides another, and a path that succeeded
/// is recorded even if others failed.
///
/// # Errors
/// [`RegistryError`] if the lock or the record is unusable; per-path failures
/// are in the returned list.
pub fn attach(
    host: &HostRoot,
    fabrics: &dyn Fabrics,
    network: &dyn Network,
    user: &str,
    paths: &[ConnectOptions],
) -> Result<Vec<PathResult>, RegistryError> {
    // Portals are probed first, all at once and outside the host-wide lock:
    // one that does not answer costs this call its probe timeout, never
    // every other call waiting for the lock.
    let probes: Vec<Result<(), NvmeError>> = std::thread::scope(|scope| {
        let running: Vec<_> =
            paths.iter().map(|p| scope.spawn(move || probe_path(network, p, PROBE_TIMEOUT))).collect();
        // A probe thread that panicked leaves the decision to the kernel's connect.
        running.into_iter().map(|h| h.join().unwrap_or(Ok(()))).collect()
    });
    let _lock = HostLock::acquire(host, LOCK_TIMEOUT)?;
    let mut users = load(host)?;
    let mut owners = load_owners(host)?;
    collect_orphans(host, &mut users, &mut owners, user);
    if is_call_user(user) {
        owners.insert(user.to_owned(), Owner::current(host));
    }
    save_owners(host, &owners)?;
    let previous = users.remove(user).unwrap_or_default();
    record_intent(host, &mut users, user, &previous, paths)?;
    // Every path is connected at once: each waits for its own portal, and
    // a slow one does not hold the others up. (Linux serialises the writes
    // to /dev/nvme-fabrics under one mutex, `nvmf_dev_mutex` in
    // drivers/nvme/host/fabrics.c; what overlaps is the rest of each path's
    // work.)
    let results: Vec<PathResult> = std::thread::scope(|scope| {
        let running: Vec<_> = paths
            .iter()
            .zip(probes)
            .map(|(p, probed)| scope.spawn(move || connect_probed(host, fabrics, p, || probed)))
            .collect();
        running.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let mut uses: Vec<PathUse> = Vec::new();
    for connected in results.iter().flatten() {
        let created_before = previous.iter().any(|u| u.key == connected.key && u.created);
        let created = created_before || connected.origin == PathOrigin::Created;
        if !uses.iter().any(|u| u.key == connected.key) {
            uses.push(PathUse { key: connected.key.clone(), created });
        }
    }
    // Paths this user used before but failed now stay recorded while a
    // controller is there: it may be reconnecting, and it is still ours to
    // clean up. One with no controller at all (an intent of a killed call
    // whose connect never happened, or a controller the kernel gave up) is
    // forgotten: a controller made later by hand on that path is not ours.
    for old in previous {
        let gone = matches!(super::connect::find_controller(host, &old.key), Ok(None));
        if !uses.iter().any(|u| u.key == old.key) && !gone {
            uses.push(old);
        }
    }
    users.insert(user.to_owned(), uses);
    save(host, &users)?;
    Ok(results)
}

/// Records, before anything is connected, every path of `user` that has no
/// controller yet as one nvmetcp is about to create. The kernel creates a
/// controller before [`attach`] can record it; a call killed in between
/// would otherwise leave a controller nobody recorded, which the retry takes
/// for one made by hand and never deletes. With the intent on record, the
/// retry inherits the duty to delete it (and a dead call user is collected
/// with it). The final record of [`attach`] replaces the intent.
fn record_intent(
    host: &HostRoot,
    users: &mut Users,
    user: &str,
    previous: &[PathUse],
    paths: &[ConnectOptions],
) -> Result<(), RegistryError> {
    let mut intended = previous.to_vec();
    for options in paths {
        let key = options.key();
        let unconnected = matches!(super::connect::find_controller(host, &key), Ok(None));
        if unconnected && !intended.iter().any(|u| u.key == key) {
            intended.push(PathUse { key, created: true });
        }
    }
    if intended.as_slice() == previous {
        return Ok(());
    }
    users.insert(user.to_owned(), intended);
    let saved = save(host, users);
    users.remove(user);
    saved
}

/// What [`release`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Controllers deleted.
    pub disconnected: Vec<String>,
    /// Paths left connected because another user still needs them.
    pub kept_for_others: Vec<PathKey>,
    /// Paths left connected because nvmetcp did not create them.
    pub not_ours: Vec<PathKey>,
}

/// Forgets `user` and disconnects the paths nobody else uses that nvmetcp
/// created. Idempotent: an unknown user releases nothing.
///
/// # Errors
/// [`RegistryError`] for the lock or record; [`NvmeError`] if a controller
/// could not be deleted (the record then still lists it, so a retry works).
pub fn release(host: &HostRoot, user: &str) -> Result<Released, ReleaseError> {
    let _lock = HostLock::acquire(host, LOCK_TIMEOUT)?;
    let mut users = load(host)?;
    let mut owners = load_owners(host)?;
    collect_orphans(host, &mut users, &mut owners, user);
    let result = release_user(host, &mut users, user);
    if result.is_ok() {
        owners.remove(user);
    }
    save(host, &users)?;
    save_owners(host, &owners)?;
    Ok(result?)
}

/// Forgets `user` in `users` and disconnects what only it used and nvmetcp
/// created. On a failed disconnect the path stays listed, so a retry works.
fn release_user(host: &HostRoot, users: &mut Users, user: &str) -> Result<Released, NvmeError> {
    let Some(uses) = users.remove(user) else { return Ok(Released::default()) };
    let mut released = Released::default();
    let mut uses = uses.into_iter();
    while let Some(path) = uses.next() {
        let others: Vec<&mut PathUse> = users.values_mut().flatten().filter(|u| u.key == path.key).collect();
        if !others.is_empty() {
            // Whoever still uses the path inherits the duty to clean it up.
            for other in others {
                other.created |= path.created;
            }
            released.kept_for_others.push(path.key);
        } else if path.created {
            match disconnect_path(host, &path.key) {
                Ok(names) => released.disconnected.extend(names),
                Err(error) => {
                    let kept = users.entry(user.to_owned()).or_default();
                    kept.push(path);
                    kept.extend(uses);
                    return Err(error);
                }
            }
        } else {
            released.not_ours.push(path.key);
        }
    }
    Ok(released)
}

/// Why [`release`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A controller could not be deleted.
    #[error(transparent)]
    Nvme(#[from] NvmeError),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{attach, release, HostLock, RegistryError};
    use crate::nvme::connect::fake::FakeFabrics;
    use crate::nvme::connect::{nvme_tcp_listen, nvme_tcp_port};
    use crate::nvme::discovery::TcpNetwork;
    use crate::nvme::names::Portal;
    use crate::nvme::options::tests::options;
    use crate::nvme::options::ConnectOptions;
    use crate::nvme::sysfs::fixture::SysfsTree;

    /// Two paths whose portals answer as NVMe/TCP ports.
    fn two_paths() -> ((), Vec<ConnectOptions>) {
        let paths = (0..2)
            .map(|_| {
                let mut opts = options();
                opts.portal = nvme_tcp_port();
                opts
            })
            .collect();
        ((), paths)
    }

    fn live(tree: &SysfsTree) -> Vec<String> {
        crate::nvme::sysfs::controllers(&tree.host())
            .unwrap()
            .into_iter()
            .filter(|c| tree.read(&format!("/sys/class/nvme/{}/delete_controller", c.name)) != "1")
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn the_last_user_disconnects_only_what_nvmetcp_created() {
        let tree = SysfsTree::new();
        let (_listeners, paths) = two_paths();
        // The administrator connected the second path by hand earlier.
        let manual = &paths[1];
        let address = format!("traddr={},trsvcid={}", manual.portal.addr, manual.portal.port);
        tree.controller("nvme0", "tcp", manual.subsystem.as_str(), &address, manual.host.nqn.as_str(), "live");
        let fabrics = FakeFabrics::new(&tree);
        let first = attach(&tree.host(), &fabrics, &TcpNetwork, "sr-a", &paths).unwrap();
        assert!(first.iter().all(Result::is_ok));
        let second = attach(&tree.host(), &fabrics, &TcpNetwork, "sr-b", &paths).unwrap();
        assert!(second.iter().all(Result::is_ok));
        assert_eq!(fabrics.writes().len(), 1, "one controller created, everything else reused");
        assert_eq!(live(&tree), ["nvme0", "nvme1"]);

        let released = release(&tree.host(), "sr-a").unwrap();
        assert!(released.disconnected.is_empty() && released.kept_for_others.len() == 2);
        assert_eq!(live(&tree), ["nvme0", "nvme1"], "sr-b still uses both paths");
        let released = release(&tree.host(), "sr-b").unwrap();
        assert_eq!(released.disconnected, ["nvme1"], "sr-b inherited the duty to delete what sr-a created");
        assert_eq!(released.not_ours, [paths[1].key()]);
        assert_eq!(live(&tree), ["nvme0"], "the hand-made controller stays");
        assert_eq!(release(&tree.host(), "sr-b").unwrap(), super::Released::default(), "idempotent");
    }

    #[test]
    fn each_path_is_reconciled_on_its_own() {
        let tree = SysfsTree::new();
        let (_, mut paths) = two_paths();
        // Bound and closed again: nothing listens on the second portal.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        paths[1].portal = Portal { addr: closed.local_addr().unwrap().ip(), port: closed.local_addr().unwrap().port() };
        drop(closed);
        let fabrics = FakeFabrics::new(&tree);
        let results = attach(&tree.host(), &fabrics, &TcpNetwork, "sr", &paths).unwrap();
        assert!(results[0].is_ok(), "one live path is connected");
        assert!(results[1].as_ref().unwrap_err().to_string().contains("unreachable"), "the other is reported");
        // The path comes back: a second attach connects it, the first is reused.
        nvme_tcp_listen(std::net::TcpListener::bind(paths[1].portal.socket_addr()).unwrap());
        let results = attach(&tree.host(), &fabrics, &TcpNetwork, "sr", &paths).unwrap();
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(fabrics.writes().len(), 2);
    }

    /// A fabrics device whose every connect takes `delay`.
    struct Slow {
        inner: FakeFabrics,
        delay: Duration,
    }

    impl crate::nvme::fabrics::Fabrics for Slow {
        fn create_controller(
            &self,
            options: &crate::nvme::options::OptionString,
        ) -> Result<crate::nvme::fabrics::Created, crate::nvme::fabrics::FabricsError> {
            std::thread::sleep(self.delay);
            self.inner.create_controller(options)
        }

        fn supported_options(&self) -> Option<Vec<String>> {
            self.inner.supported_options()
        }
    }

    #[test]
    fn the_paths_are_connected_at_once() {
        let tree = SysfsTree::new();
        let (_, paths) = two_paths();
        let delay = Duration::from_millis(600);
        let fabrics = Slow { inner: FakeFabrics::new(&tree), delay };
        let started = std::time::Instant::now();
        let results = attach(&tree.host(), &fabrics, &TcpNetwork, "sr", &paths).unwrap();
        let took = started.elapsed();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(took < delay * 2, "two connects of {delay:?} each took {took:?}: one after the other");
        assert_eq!(live(&tree).len(), 2, "distinct controllers");
    }

    #[test]
    fn a_reused_instance_name_is_never_mistaken_for_our_controller() {
        let tree = SysfsTree::new();
        let (_listeners, paths) = two_paths();
        let fabrics = FakeFabrics::new(&tree);
        attach(&tree.host(), &fabrics, &TcpNetwork, "sr", &paths[..1]).unwrap();
        // Our nvme0 goes away; the kernel hands nvme0 to another subsystem's path.
        let other = "nqn.2024-01.io.example:someone-else";
        tree.controller("nvme0", "tcp", other, "traddr=10.9.9.9,trsvcid=4420", paths[0].host.nqn.as_str(), "live");
        std::fs::write(tree.host().path("/sys/class/nvme/nvme0/subsysnqn"), format!("{other}\n")).unwrap();
        std::fs::write(tree.host().path("/sys/class/nvme/nvme0/address"), "traddr=10.9.9.9,trsvcid=4420\n").unwrap();
        let released = release(&tree.host(), "sr").unwrap();
        assert!(released.disconnected.is_empty(), "{released:?}");
        assert_eq!(tree.read("/sys/class/nvme/nvme0/delete_controller"), "\n", "someone else's nvme0 untouched");
    }

    #[test]
    fn a_silent_portal_is_probed_outside_the_host_lock() {
        let tree = SysfsTree::new();
        let (_, mut paths) = two_paths();
        // Accepts TCP connections (the backlog) but never answers ICReq.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        paths[1].portal = Portal { addr: silent.local_addr().unwrap().ip(), port: silent.local_addr().unwrap().port() };
        let host = tree.host();
        let meanwhile = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            HostLock::acquire(&host, Duration::from_secs(1)).is_ok()
        });
        let results = attach(&tree.host(), &FakeFabrics::new(&tree), &TcpNetwork, "sr", &paths).unwrap();
        assert!(meanwhile.join().unwrap(), "the lock was held while a portal was being probed");
        assert!(results[0].is_ok());
        assert!(results[1].as_ref().unwrap_err().to_string().contains("NVMe/TCP"), "{:?}", results[1]);
    }

    #[test]
    fn a_call_killed_before_releasing_its_paths_is_collected() {
        let tree = SysfsTree::new();
        let (_listeners, paths) = two_paths();
        let fabrics = FakeFabrics::new(&tree);
        // This test process owns these users and is alive: /proc/<pid>/stat as the kernel writes it.
        let me = std::process::id();
        tree.write(&format!("/proc/{me}/stat"), &format!("{me} (nvmetcp-plugin) S 1 {} 0\n", "0 ".repeat(17) + "4242"));
        attach(&tree.host(), &fabrics, &TcpNetwork, "create-a", &paths[..1]).unwrap();
        attach(&tree.host(), &fabrics, &TcpNetwork, "probe-999999", &paths[1..]).unwrap();
        attach(&tree.host(), &fabrics, &TcpNetwork, "sr-b", &paths[1..]).unwrap();
        assert_eq!(live(&tree), ["nvme0", "nvme1"]);
        // Nobody died: another call collects nothing.
        release(&tree.host(), "nobody").unwrap();
        assert_eq!(live(&tree), ["nvme0", "nvme1"]);
        // SIGKILL: the owner is gone (a recycled pid with another start time counts as gone too).
        tree.write(&format!("/proc/{me}/stat"), &format!("{me} (bash) S 1 {} 0\n", "0 ".repeat(17) + "7777"));
        attach(&tree.host(), &fabrics, &TcpNetwork, "sr-c", &[]).unwrap();
        assert_eq!(live(&tree), ["nvme1"], "create-a's controller is deleted, sr-b's path kept");
        let users = super::load(&tree.host()).unwrap();
        assert_eq!(users.keys().map(String::as_str).collect::<Vec<_>>(), ["sr-b", "sr-c"], "{users:?}");
        assert!(super::load_owners(&tree.host()).unwrap().is_empty());
        // sr-b inherited the duty to delete what the dead probe created.
        assert_eq!(release(&tree.host(), "sr-b").unwrap().disconnected, ["nvme1"]);
    }

    /// A fabrics device that creates the controller, then dies: what the
    /// kernel leaves when the call is SIGKILLed right after its connect.
    struct DiesAfterConnect(FakeFabrics);

    impl crate::nvme::fabrics::Fabrics for DiesAfterConnect {
        fn create_controller(
            &self,
            options: &crate::nvme::options::OptionString,
        ) -> Result<crate::nvme::fabrics::Created, crate::nvme::fabrics::FabricsError> {
            let _created = self.0.create_controller(options);
            panic!("killed between the connect and its record");
        }

        fn supported_options(&self) -> Option<Vec<String>> {
            self.0.supported_options()
        }
    }

    #[test]
    fn a_call_killed_after_its_connect_leaves_the_controller_to_its_retry() {
        let tree = SysfsTree::new();
        let (_listeners, paths) = two_paths();
        let dying = DiesAfterConnect(FakeFabrics::new(&tree));
        let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            attach(&tree.host(), &dying, &TcpNetwork, "sr", &paths[..1])
        }));
        assert!(killed.is_err());
        assert_eq!(live(&tree), ["nvme0"], "the kernel made the controller");
        // The retry finds the controller and must know it is nvmetcp's.
        let retried = attach(&tree.host(), &FakeFabrics::new(&tree), &TcpNetwork, "sr", &paths[..1]).unwrap();
        assert_eq!(retried[0].as_ref().unwrap().origin, crate::nvme::connect::PathOrigin::Reused);
        let released = release(&tree.host(), "sr").unwrap();
        assert_eq!(released.disconnected, ["nvme0"], "{released:?}");
        assert!(live(&tree).is_empty(), "no controller leaked");
    }

    /// A fabrics device killed before the kernel made anything.
    struct DiesBeforeConnect;

    impl crate::nvme::fabrics::Fabrics for DiesBeforeConnect {
        fn create_controller(
            &self,
            _options: &crate::nvme::options::OptionString,
        ) -> Result<crate::nvme::fabrics::Created, crate::nvme::fabrics::FabricsError> {
            panic!("killed after its intent was recorded, before the connect");
        }

        fn supported_options(&self) -> Option<Vec<String>> {
            None
        }
    }

    #[test]
    fn an_intent_whose_connect_never_happened_is_not_kept_as_ours() {
        let tree = SysfsTree::new();
        let (_listeners, mut paths) = two_paths();
        let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            attach(&tree.host(), &DiesBeforeConnect, &TcpNetwork, "sr", &paths[..1])
        }));
        assert!(killed.is_err());
        assert!(live(&tree).is_empty(), "nothing was connected");
        // The retry cannot reach the portal: the path fails, and no controller exists.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr, port) = (closed.local_addr().unwrap().ip(), closed.local_addr().unwrap().port());
        drop(closed);
        let wanted = paths[0].key();
        paths[0].portal = Portal { addr, port };
        let retried = attach(&tree.host(), &FakeFabrics::new(&tree), &TcpNetwork, "sr", &paths[..1]).unwrap();
        assert!(retried[0].is_err());
        let users = super::load(&tree.host()).unwrap();
        assert!(users["sr"].iter().all(|u| u.key != wanted), "the dead intent stayed on record: {users:?}");
        // Later the administrator connects the first portal by hand: nvmetcp must leave it.
        let manual = &two_paths().1[0];
        let address = format!("traddr={},trsvcid={}", wanted.traddr, wanted.trsvcid);
        tree.controller("nvme0", "tcp", manual.subsystem.as_str(), &address, manual.host.nqn.as_str(), "live");
        release(&tree.host(), "sr").unwrap();
        assert_eq!(live(&tree), ["nvme0"], "a hand-made controller was deleted");
    }

    #[test]
    fn the_host_lock_times_out_instead_of_waiting_forever() {
        let tree = SysfsTree::new();
        let held = HostLock::acquire(&tree.host(), Duration::from_secs(1)).unwrap();
        let err = HostLock::acquire(&tree.host(), Duration::from_millis(100)).err().unwrap();
        assert!(matches!(err, RegistryError::LockTimeout(_)));
        assert!(err.to_string().contains("retry, and check SMlog"));
        drop(held);
        HostLock::acquire(&tree.host(), Duration::from_millis(100)).unwrap();
    }
}
