//! `nvmetcp-agent`: the host agent, one per host (a systemd unit), the same
//! static binary reached through the link name `nvmetcp-agent`.
//!
//! It watches the paths of every nvmetcp SR attached on its host and makes
//! them visible where administrators already look:
//!
//! * **path counts** in XAPI — PBD `other_config:mpath-<device_config:namespace>` =
//!   `[live, total]`, `multipathed`, SR `sm_config:multipathable` — which Xen
//!   Orchestra shows as it does for lvmoiscsi ([`publish`]);
//! * **alerts** — `message.create` on the SR when this host loses a path, its
//!   last path, or gets them back, deduplicated and rate-limited ([`alerts`]);
//! * **I/O statistics** as xcp-rrdd plugins (protocol v2, one per SR, which
//!   `SR.stat`'s `datasources` names, [`rrd`]): per SR the data sources XO
//!   graphs, from the block device's counters — the native multipath head, or
//!   the userspace initiator's NBD device ([`iostat`], [`sources`]).
//!
//! The door into the rest of `sm-driver` is narrow: it reads what `SR.attach`
//! records, `nvme::health` and the userspace initiator's daemon state, never
//! takes a plugin lock, and runs nothing ([`srs`]).
//!
//! Paths are read every [`POLL`], and at once when the kernel sends a uevent
//! about an NVMe or NBD device ([`uevents`]: a controller or namespace that
//! appears or goes, a controller that reconnects). The kernel sends none
//! when a controller goes from `live` to `connecting`, and sysfs's `state`
//! attribute is not pollable, so the 250 ms poll of a few sysfs files is what
//! reacts within a second to a lost path on every kernel, 4.19 included.
//! What it last announced and
//! published is kept in [`status::STATUS_FILE`], so a restarted agent neither
//! repeats nor forgets an alert; a restarted xapi gets the pending updates
//! once it answers again.

pub mod alerts;
pub mod iostat;
pub mod publish;
pub mod rrd;
pub mod sources;
pub mod srs;
pub mod status;
pub mod uevents;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use crate::host::HostRoot;

use alerts::SrAlerts;
use iostat::{Rates, Sampler};
use publish::{LocalXapi, PathCounts, Pool, Publisher};
use rrd::{RrdPlugin, READING_INTERVAL};
use srs::AttachedSr;
use status::{AgentStatus, SrStatus};

/// The link name that runs the agent.
pub const LINK_NAME: &str = "nvmetcp-agent";
/// How often paths are read.
pub const POLL: Duration = Duration::from_millis(250);
/// After a uevent, how long to let its siblings arrive before reading.
const SETTLE: Duration = Duration::from_millis(20);
/// This host's identity in XAPI.
pub const INVENTORY: &str = "/etc/xensource-inventory";

/// Why the agent cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Not a XAPI host (or the inventory is unreadable).
    #[error("{INVENTORY} has no INSTALLATION_UUID: the agent runs on XCP-ng hosts only")]
    NoHostUuid,
}

/// This host's UUID from the XAPI inventory (`INSTALLATION_UUID='…'`).
///
/// # Errors
/// [`AgentError::NoHostUuid`].
pub fn host_uuid(host: &HostRoot) -> Result<String, AgentError> {
    let text = std::fs::read_to_string(host.path(INVENTORY)).map_err(|_| AgentError::NoHostUuid)?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("INSTALLATION_UUID="))
        .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_owned())
        .find(|v| !v.is_empty())
        .ok_or(AgentError::NoHostUuid)
}

/// The agent's state between two observations.
#[derive(Debug)]
pub struct Agent {
    host: HostRoot,
    host_name: String,
    alerts: BTreeMap<String, SrAlerts>,
    counts: BTreeMap<String, (usize, usize)>,
    samplers: BTreeMap<String, Sampler>,
    rrd: BTreeMap<String, RrdPlugin>,
    publisher: Publisher,
    status: AgentStatus,
}

impl Agent {
    /// An agent on `host` (named `host_name` in alerts) publishing to `pool`,
    /// resuming from the status file if a previous run left one.
    #[must_use]
    pub fn new(host: &HostRoot, host_name: &str, pool: Box<dyn Pool>) -> Self {
        let previous = status::load(host);
        let now = Instant::now();
        let alerts = previous
            .as_ref()
            .map(|p| {
                p.srs
                    .iter()
                    .map(|(uuid, s)| (uuid.clone(), SrAlerts::new(uuid, s.announced.iter().cloned().collect(), now)))
                    .collect()
            })
            .unwrap_or_default();
        let status = AgentStatus {
            pid: std::process::id(),
            started: status::unix_seconds(SystemTime::now()),
            ..AgentStatus::default()
        };
        Self {
            host: host.clone(),
            host_name: host_name.to_owned(),
            alerts,
            counts: BTreeMap::new(),
            samplers: BTreeMap::new(),
            rrd: BTreeMap::new(),
            publisher: Publisher::spawn(pool),
            status,
        }
    }

    /// One look at the paths: alerts and counts for what changed. Returns the
    /// SRs seen.
    pub fn watch(&mut self, now: Instant) -> Vec<AttachedSr> {
        let attached = srs::attached(&self.host);
        let mut changed = false;
        for sr in &attached {
            let uuid = &sr.state.sr_uuid.to_string();
            let views = sr.paths.clone().unwrap_or_default();
            let expected: BTreeSet<String> = views.iter().map(|v| v.portal.clone()).collect();
            let alerts = self.alerts.entry(uuid.clone()).or_insert_with(|| SrAlerts::new(uuid, expected, now));
            if let Some(alert) = alerts.observe(now, &self.host_name, &views) {
                tracing::warn!(name = alert.name, sr = %uuid, "{}", alert.text(None));
                self.publisher.alert(alert);
                changed = true;
            }
            let counts = sr.counts();
            if self.counts.get(uuid) != Some(&counts) {
                self.counts.insert(uuid.clone(), counts);
                self.publisher.paths(PathCounts {
                    sr_uuid: uuid.clone(),
                    namespace: sr.state.namespace.canonical(),
                    live: counts.0,
                    total: counts.1,
                });
                changed = true;
            }
        }
        let present: BTreeSet<&str> = attached.iter().map(|s| s.state.sr_uuid.as_str()).collect();
        let before = self.alerts.len();
        self.alerts.retain(|uuid, _| present.contains(uuid.as_str()));
        self.counts.retain(|uuid, _| present.contains(uuid.as_str()));
        if changed || before != self.alerts.len() {
            self.save();
        }
        attached
    }

    /// One xcp-rrdd reading of every SR's data sources, each written to its
    /// SR's plugin file; the plugins of SRs no longer attached are removed.
    pub fn read(&mut self, now: Instant, attached: &[AttachedSr]) {
        let wall = SystemTime::now();
        let mut written = true;
        for sr in attached {
            let uuid = &sr.state.sr_uuid.to_string();
            let rates = match &sr.device {
                Some(device) => {
                    let sampler = self.samplers.entry(uuid.clone()).or_insert_with(|| Sampler::new(device));
                    if sampler.device() != device {
                        *sampler = Sampler::new(device);
                    }
                    sampler.sample(&self.host, now)
                }
                None => Rates::default(),
            };
            let sources = sources::sr_sources(uuid, &rates, sr.counts().0);
            let plugin = self.rrd.entry(uuid.clone()).or_insert_with(|| RrdPlugin::new(&self.host, uuid));
            if let Err(e) = plugin.write(&rrd::v2::encode(status::unix_seconds(wall), &sources)) {
                tracing::warn!(error = %e, "RRD reading not written");
                written = false;
            }
        }
        let present: BTreeSet<&str> = attached.iter().map(|s| s.state.sr_uuid.as_str()).collect();
        self.samplers.retain(|uuid, _| present.contains(uuid.as_str()));
        let gone: Vec<String> = self.rrd.keys().filter(|uuid| !present.contains(uuid.as_str())).cloned().collect();
        for uuid in gone {
            if let Some(plugin) = self.rrd.remove(&uuid) {
                plugin.remove();
            }
        }
        if written {
            self.status.last_rrd_write = Some(status::unix_seconds(wall));
        }
        self.save();
    }

    /// Registers every SR's plugin with xcp-rrdd; the time until its next
    /// reading (a full interval when xcp-rrdd is not there or no SR is
    /// attached: the files are written anyway).
    pub fn register(&mut self) -> Duration {
        let mut next = None::<Duration>;
        let mut registered = true;
        for plugin in self.rrd.values() {
            match plugin.register() {
                Ok(until) => next = Some(next.map_or(until, |n| n.min(until))),
                Err(e) => {
                    if self.status.rrdd_registered {
                        tracing::warn!(error = %crate::error_chain::chain(&e), "xcp-rrdd registration lost");
                    }
                    registered = false;
                }
            }
        }
        self.status.rrdd_registered = registered;
        next.unwrap_or(READING_INTERVAL)
    }

    fn save(&mut self) {
        let shown = self.publisher.status();
        self.status.last_xapi_publish = shown.last_published.map(status::unix_seconds);
        self.status.xapi_error = shown.last_error;
        self.status.updated = status::unix_seconds(SystemTime::now());
        self.status.srs = self
            .alerts
            .iter()
            .map(|(uuid, a)| {
                let (live, total) = self.counts.get(uuid).copied().unwrap_or_default();
                (uuid.clone(), SrStatus { live, total, announced: a.announced().iter().cloned().collect() })
            })
            .collect();
        if let Err(e) = status::save(&self.host, &self.status) {
            tracing::warn!(error = %e, "agent status not saved");
        }
    }
}

/// Runs the agent on `host` until killed.
///
/// # Errors
/// [`AgentError`] when this is not a XAPI host.
pub fn run(host: &HostRoot) -> Result<std::convert::Infallible, AgentError> {
    let uuid = host_uuid(host)?;
    let host_name = host.read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|_| uuid.clone());
    let mut agent = Agent::new(host, &host_name, Box::new(LocalXapi::new(host, &uuid)));
    let uevents = uevents::Uevents::open();
    tracing::info!(host = %host_name, uevents = uevents.listening(), "nvmetcp agent started");
    let mut next_reading = Instant::now() + agent.register().saturating_sub(Duration::from_millis(500));
    loop {
        let now = Instant::now();
        let attached = agent.watch(now);
        if now >= next_reading {
            agent.read(now, &attached);
            // Write just before xcp-rrdd reads, as rrdd.py's plugins do.
            let until = agent.register();
            next_reading = now + until.saturating_sub(Duration::from_millis(500)).max(Duration::from_secs(1));
        }
        if uevents.wait(POLL) {
            std::thread::sleep(SETTLE);
        }
    }
}

#[cfg(test)]
mod tests;
