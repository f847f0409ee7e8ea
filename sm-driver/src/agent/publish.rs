//! Path counts and alerts to XAPI, on the dom0 socket, from a thread of its
//! own so a slow or restarting xapi never delays path watching.
//!
//! What is published, per SR attached on this host, is what lvmoiscsi
//! publishes and Xen Orchestra reads (`packages/xo-web/src/common/utils.js`
//! `getIscsiPaths`, `xo-app/home/sr-item.js`, `xo-app/host/tab-advanced.js`):
//! PBD `other_config:mpath-<key>` = `[live, total]`, PBD
//! `other_config:multipathed` = `true`, SR `sm_config:multipathable` = `true`.
//! lvmoiscsi's key is `mpath-<device_config:SCSIid>`, the device-config key
//! that names the LUN. nvmetcp's is `mpath-<device_config:namespace>`, the
//! device-config key that names the NVMe namespace (its identity,
//! `uuid.<32 hex>` or `eui.<hex>`, as `SR.create` stores it), taken from the
//! PBD itself so a reader computes the same key from the same record. No
//! device-config key is invented (an NVMe namespace has no SCSI id); XO 5
//! reads this key with `xo/xo-web-nvmetcp`'s patch of `getIscsiPaths`
//! (ARCHITECTURE.md, "The PBD key").
//!
//! The thread keeps the latest counts per SR and a bounded queue of alerts;
//! when xapi is down (a toolstack restart) it logs in again with a backoff
//! and applies what is still pending, so nothing is lost and nothing is sent
//! twice.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use xapi_client::api::{host, message, pbd, sr, HostRef};
use xapi_client::{Client, Credentials, Endpoint, Session, Timeouts};

use super::alerts::Alert;
use crate::host::HostRoot;

/// The login's originator.
const ORIGINATOR: &str = "nvmetcp-agent";
/// Alerts kept while xapi is unreachable (rate limiting keeps them few).
const MAX_QUEUED_ALERTS: usize = 64;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `[live, total]` of one SR on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCounts {
    /// The SR.
    pub sr_uuid: String,
    /// The namespace identity `SR.attach` recorded: the key's name when the
    /// PBD's device-config has no `namespace` (it always has one).
    pub namespace: String,
    /// Usable paths.
    pub live: usize,
    /// Expected paths.
    pub total: usize,
}

impl PathCounts {
    /// The value, formatted as lvmoiscsi's `mpathcount` writes it.
    #[must_use]
    pub fn value(&self) -> String {
        format!("[{}, {}]", self.live, self.total)
    }
}

/// The `other_config` key for a namespace identity (`uuid.…`, `eui.…`).
#[must_use]
pub fn mpath_key(namespace: &str) -> String {
    format!("mpath-{namespace}")
}

/// The `other_config` key of a PBD: `mpath-<device_config:namespace>`.
#[must_use]
pub fn pbd_mpath_key(device_config: &BTreeMap<String, String>, recorded: &str) -> String {
    mpath_key(device_config.get("namespace").map_or(recorded, String::as_str))
}

/// Why XAPI did not take an update.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// xapi refused or could not be reached.
    #[error(transparent)]
    Xapi(#[from] xapi_client::Error),
    /// This host has no PBD for the SR (it was just forgotten).
    #[error("no PBD of SR {0} on this host")]
    NoPbd(String),
}

/// Where updates go: XAPI, or a fake in tests.
pub trait Pool: Send {
    /// Publishes one SR's counts.
    ///
    /// # Errors
    /// [`PublishError`].
    fn publish_paths(&mut self, counts: &PathCounts) -> Result<(), PublishError>;
    /// Sends one alert.
    ///
    /// # Errors
    /// [`PublishError`].
    fn send_alert(&mut self, alert: &Alert) -> Result<(), PublishError>;
    /// Forgets sessions and cached refs (after a failure).
    fn reset(&mut self);
}

/// XAPI on this host's dom0 socket.
#[derive(Debug)]
pub struct LocalXapi {
    endpoint: Endpoint,
    host_uuid: String,
    session: Option<Me>,
    multipathable: BTreeMap<String, bool>,
}

/// A session and who this host is in XAPI.
#[derive(Debug)]
struct Me {
    session: Session,
    host: HostRef,
    /// The host's `name_label`, read at each login.
    name_label: Option<String>,
}

impl LocalXapi {
    /// XAPI under `root` for the host `host_uuid`.
    #[must_use]
    pub fn new(root: &HostRoot, host_uuid: &str) -> Self {
        Self {
            endpoint: Endpoint::Unix(root.path(crate::secrets::XAPI_SOCKET)),
            host_uuid: host_uuid.to_owned(),
            session: None,
            multipathable: BTreeMap::new(),
        }
    }

    fn session(&mut self) -> Result<&Me, PublishError> {
        if self.session.is_none() {
            let timeouts = Timeouts { connect: Duration::from_secs(5), call: Duration::from_secs(30) };
            let session = Client::new(self.endpoint.clone(), timeouts).login(&Credentials::local_root(), ORIGINATOR)?;
            let host = host::get_by_uuid(&session, &self.host_uuid)?;
            let name_label = host::get_name_label(&session, &host)?;
            self.session = Some(Me { session, host, name_label: Some(name_label) });
        }
        self.session.as_ref().ok_or_else(|| PublishError::NoPbd(String::new()))
    }
}

impl Pool for LocalXapi {
    fn publish_paths(&mut self, counts: &PathCounts) -> Result<(), PublishError> {
        let Me { session, host: me, .. } = self.session()?;
        let sr_ref = sr::get_by_uuid(session, &counts.sr_uuid)?;
        let (pbd_ref, record) = pbd::get_all_records(session)?
            .into_iter()
            .find(|(_, p)| p.sr == sr_ref && p.host == *me)
            .ok_or_else(|| PublishError::NoPbd(counts.sr_uuid.clone()))?;
        let value = counts.value();
        let key = pbd_mpath_key(&record.device_config, &counts.namespace);
        if record.other_config.get(&key) != Some(&value) {
            pbd::set_other_config_key(session, &pbd_ref, &key, &value)?;
        }
        if record.other_config.get("multipathed").map(String::as_str) != Some("true") {
            pbd::set_other_config_key(session, &pbd_ref, "multipathed", "true")?;
        }
        if !self.multipathable.contains_key(&counts.sr_uuid) {
            let Me { session, .. } = self.session()?;
            if sr::get_sm_config(session, &sr_ref)?.get("multipathable").map(String::as_str) != Some("true") {
                sr::set_sm_config_key(session, &sr_ref, "multipathable", "true")?;
            }
            self.multipathable.insert(counts.sr_uuid.clone(), true);
        }
        Ok(())
    }

    fn send_alert(&mut self, alert: &Alert) -> Result<(), PublishError> {
        let Me { session, name_label, .. } = self.session()?;
        let body = alert.text(name_label.as_deref());
        message::create(session, alert.name, alert.priority, message::About::Sr, &alert.sr_uuid, &body)?;
        Ok(())
    }

    fn reset(&mut self) {
        self.session = None;
        self.multipathable.clear();
    }
}

/// What the publisher thread has achieved, for the agent's status file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishStatus {
    /// When XAPI last took an update.
    pub last_published: Option<SystemTime>,
    /// The last failure, cleared by a success.
    pub last_error: Option<String>,
    /// Updates waiting for XAPI.
    pub pending: usize,
}

enum Update {
    Paths(PathCounts),
    Alert(Alert),
}

/// The sending side, owned by the watcher; never blocks.
#[derive(Debug)]
pub struct Publisher {
    updates: Sender<Update>,
    status: Arc<Mutex<PublishStatus>>,
}

impl std::fmt::Debug for Update {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Paths(c) => write!(f, "paths {} {}", c.sr_uuid, c.value()),
            Self::Alert(a) => write!(f, "alert {} {}", a.name, a.sr_uuid),
        }
    }
}

impl Publisher {
    /// Starts the thread that feeds `pool`.
    #[must_use]
    pub fn spawn(pool: Box<dyn Pool>) -> Self {
        let (updates, received) = channel();
        let status = Arc::new(Mutex::new(PublishStatus::default()));
        let shared = Arc::clone(&status);
        std::thread::Builder::new()
            .name("xapi-publisher".into())
            .spawn(move || run(pool, &received, &shared))
            .map_or_else(|e| tracing::error!(error = %e, "cannot start the XAPI publisher thread"), drop);
        Self { updates, status }
    }

    /// Queues `[live, total]` of an SR (a newer one replaces an older one).
    pub fn paths(&self, counts: PathCounts) {
        let _ = self.updates.send(Update::Paths(counts));
    }

    /// Queues an alert.
    pub fn alert(&self, alert: Alert) {
        let _ = self.updates.send(Update::Alert(alert));
    }

    /// What has been achieved so far.
    #[must_use]
    pub fn status(&self) -> PublishStatus {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn run(mut pool: Box<dyn Pool>, received: &Receiver<Update>, status: &Mutex<PublishStatus>) {
    let mut paths: BTreeMap<String, PathCounts> = BTreeMap::new();
    let mut alerts: VecDeque<Alert> = VecDeque::new();
    let mut backoff = Duration::ZERO;
    loop {
        let wait = if paths.is_empty() && alerts.is_empty() { Duration::from_secs(3600) } else { backoff };
        let first = match received.recv_timeout(wait) {
            Ok(update) => Some(update),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for update in first.into_iter().chain(received.try_iter()) {
            match update {
                Update::Paths(counts) => {
                    paths.insert(counts.sr_uuid.clone(), counts);
                }
                Update::Alert(alert) => {
                    if alerts.len() == MAX_QUEUED_ALERTS {
                        if let Some(dropped) = alerts.pop_front() {
                            tracing::warn!(name = dropped.name, sr = %dropped.sr_uuid, "XAPI unreachable: oldest alert dropped");
                        }
                    }
                    alerts.push_back(alert);
                }
            }
        }
        let outcome = flush(pool.as_mut(), &mut paths, &mut alerts);
        let mut shown = status.lock().unwrap_or_else(PoisonError::into_inner);
        shown.pending = paths.len() + alerts.len();
        match outcome {
            Ok(true) => {
                backoff = Duration::ZERO;
                shown.last_published = Some(SystemTime::now());
                shown.last_error = None;
            }
            Ok(false) => backoff = Duration::ZERO,
            Err(e) => {
                if shown.last_error.is_none() {
                    tracing::warn!(error = %crate::error_chain::chain(&e), "XAPI did not take the path update; retrying");
                }
                shown.last_error = Some(crate::error_chain::chain(&e));
                pool.reset();
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
            }
        }
    }
}

/// Applies what is pending, oldest alert first; `Ok(true)` if anything was
/// sent. What fails stays pending.
fn flush(
    pool: &mut dyn Pool,
    paths: &mut BTreeMap<String, PathCounts>,
    alerts: &mut VecDeque<Alert>,
) -> Result<bool, PublishError> {
    let mut sent = false;
    while let Some(counts) = paths.values().next().cloned() {
        match pool.publish_paths(&counts) {
            Ok(()) => {}
            Err(PublishError::NoPbd(sr)) => tracing::info!(%sr, "no PBD on this host; path counts not published"),
            Err(e) => return Err(e),
        }
        paths.remove(&counts.sr_uuid);
        sent = true;
    }
    while let Some(alert) = alerts.front() {
        pool.send_alert(alert)?;
        tracing::info!(name = alert.name, sr = %alert.sr_uuid, body = %alert.text(None), "alert sent");
        alerts.pop_front();
        sent = true;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests;
