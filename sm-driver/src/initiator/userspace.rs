//! One SR on this host through the userspace initiator: the sm-driver side
//! of the initiator crate's door (`nvmetcp_initiator::daemon::door`).
//!
//! `bring_up` finds the namespace by its stable identity on the array
//! (Identify over one admin queue: an NSID is never trusted, since an array
//! may renumber), writes the daemon's root-only configuration, starts the
//! daemon ([`super::service`]), and waits until it serves the SR's
//! `/dev/nbdN`, which is found by the SR's identity (the NBD backend
//! `nvmetcp:<sr>` and the pid the kernel recorded), never by its number.
//! `device`, `health` and `take_down` serve the later calls.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nvmetcp_initiator::config::ConfigError as InitiatorConfigError;
use nvmetcp_initiator::daemon::config::{DaemonConfig, SrId};
use nvmetcp_initiator::daemon::door::{self, DoorError};
use nvmetcp_initiator::daemon::state::Phase;
use nvmetcp_initiator::daemon::Layout;
use nvmetcp_initiator::identify::{self, IdentifyError, NamespaceIds, StableId};
use nvmetcp_initiator::nbd::export::{Export, ExportConfig, ExportError};
use nvmetcp_initiator::{AuthKeys, DhchapSecret, HostIdentity, IoPolicy, MultipathConfig, TransportOptions};

use super::probe_devices;
use super::service::{self, ServiceError};
use crate::cmd::Runner;
use crate::host::HostRoot;
use crate::nvme::health::{Health, PathStatus};
use crate::nvme::names::{Nqn, Transport};
use crate::nvme::options::{Authentication, ConnectOptions, PathKey};
use crate::nvme::sysfs::NamespaceIdentity;
use crate::sr_config::{NamespaceRef, SrConfig};

/// How much longer than `fast_io_fail_tmo` the kernel waits for a
/// restarted daemon to take its NBD connections back.
const NBD_TIMEOUT_MARGIN: u64 = 30;

/// How long `SR.attach` waits for the daemon to serve.
pub const SERVE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why the userspace initiator could not serve an SR.
#[derive(Debug, thiserror::Error)]
pub enum UserspaceError {
    /// Only NVMe/TCP.
    #[error("the userspace NVMe/TCP initiator speaks TCP only; NVMe/RDMA is served by the kernel's nvme_rdma")]
    NotTcp,
    /// A value the initiator refuses.
    #[error("the userspace initiator cannot use this configuration: {0}")]
    Config(#[from] InitiatorConfigError),
    /// The namespace could not be found on the array.
    #[error(transparent)]
    Identify(#[from] IdentifyError),
    /// The namespace named by NSID (SR.create) is not active.
    #[error("subsystem {nqn} has no active namespace {nsid} for this host (it has: {listed})")]
    NoSuchNsid {
        /// The subsystem.
        nqn: String,
        /// The NSID asked for.
        nsid: u32,
        /// What it has.
        listed: String,
    },
    /// The daemon's files or device.
    #[error(transparent)]
    Door(#[from] DoorError),
    /// Starting or stopping the daemon.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The SR's NBD device cannot be opened.
    #[error("cannot open the SR's device {device}: {source}")]
    Open {
        /// `/dev/nbdN`.
        device: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Once open, the device was no longer the SR's.
    #[error("{device} was the SR's NBD device but is now {now}; nothing was written to it")]
    Moved {
        /// `/dev/nbdN`.
        device: String,
        /// What it is now.
        now: String,
    },
    /// No path to the namespace could be opened.
    #[error(transparent)]
    Connect(#[from] nvmetcp_initiator::OpenError),
    /// The kernel's NBD driver refused the device.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The SR uuid is not usable as the daemon's instance.
    #[error("SR uuid {0:?} is not a UUID")]
    BadSr(String),
    /// host.conf binds the paths to an interface or source address, which
    /// the userspace initiator does not do: refused, never silently ignored.
    #[error(
        "/etc/nvmetcp/host.conf sets {0}, which the userspace initiator does not apply (its connections leave \
         through the interface the routing table picks for each portal); remove the key from host.conf and route \
         the portals' subnet through that interface instead"
    )]
    HostBinding(String),
}

/// The SR's namespace, served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// `/dev/nbdN`, verified as the SR's.
    pub device: PathBuf,
    /// The namespace's stable identity, as the kernel would spell its `wwid`
    /// (`None`: it has none, which SR.create refuses).
    pub identity: Option<NamespaceIdentity>,
    /// Its NSID today.
    pub nsid: u32,
    /// Every path (portals and discovered ports).
    pub paths: Vec<PathKey>,
}

fn sr_id(sr: &str) -> Result<SrId, UserspaceError> {
    SrId::parse(sr).map_err(|_| UserspaceError::BadSr(sr.to_owned()))
}

fn layout(host: &HostRoot) -> Layout {
    Layout::under(host.root())
}

fn seconds(value: i32) -> Option<Duration> {
    u64::try_from(value).ok().map(Duration::from_secs)
}

/// The initiator's view of the SR's paths, host and keys.
fn multipath_config(
    config: &SrConfig,
    nqn: &Nqn,
    options: &[ConnectOptions],
    auth: &Authentication,
) -> Result<MultipathConfig, UserspaceError> {
    let first = options.first();
    let host = match first {
        Some(o) => HostIdentity::parse(o.host.nqn.as_str(), &o.host.id.to_string())?,
        None => return Err(InitiatorConfigError { field: "portals", why: "no path to connect".into() }.into()),
    };
    if let Some(o) = first.filter(|o| o.host_iface.is_some() || o.host_traddr.is_some()) {
        let mut set = Vec::new();
        if let Some(iface) = &o.host_iface {
            set.push(format!("host_iface = {}", iface.as_str()));
        }
        if let Some(traddr) = o.host_traddr {
            set.push(format!("host_traddr = {traddr}"));
        }
        return Err(UserspaceError::HostBinding(set.join(", ")));
    }
    let auth = match &auth.host_key {
        Some(key) => Some(AuthKeys {
            host: DhchapSecret::new("dhchap_secret", key.expose())?,
            ctrl: auth.ctrl_key.as_ref().map(|k| DhchapSecret::new("dhchap_ctrl_secret", k.expose())).transpose()?,
        }),
        None => None,
    };
    let timers = &config.timers;
    let transport = TransportOptions {
        keep_alive_tmo: Duration::from_secs(u64::from(timers.keep_alive_tmo)),
        reconnect_delay: Duration::from_secs(u64::from(timers.reconnect_delay)),
        ctrl_loss_tmo: seconds(timers.ctrl_loss_tmo),
        fast_io_fail_tmo: seconds(timers.fast_io_fail_tmo),
        nr_io_queues: timers.nr_io_queues.map(|n| u16::try_from(n).unwrap_or(u16::MAX)),
        ..TransportOptions::default()
    };
    let multipath = MultipathConfig {
        subsystem_nqn: nqn.to_string(),
        namespace: nvmetcp_initiator::NamespaceIdentity { nsid: 1, uuid: None },
        portals: options.iter().map(|o| SocketAddr::new(o.portal.addr, o.portal.port)).collect(),
        host,
        auth,
        iopolicy: IoPolicy::parse(config.iopolicy.as_str())?,
        transport,
    };
    multipath.validate()?;
    Ok(multipath)
}

fn listed(found: &[NamespaceIds]) -> String {
    let all: Vec<String> = found
        .iter()
        .map(|ids| format!("{}={}", ids.nsid, ids.stable_id().map_or_else(|| "no identity".into(), |i| i.to_string())))
        .collect();
    if all.is_empty() {
        "no namespace".into()
    } else {
        all.join(", ")
    }
}

/// The namespace `reference` names, as the array identifies it today, and
/// the identity to record.
fn locate(
    multipath: &MultipathConfig,
    nqn: &Nqn,
    reference: &NamespaceRef,
) -> Result<(NamespaceIds, Option<StableId>), UserspaceError> {
    match reference {
        NamespaceRef::Identity(identity) => {
            let wanted = StableId::parse(&identity.canonical()).ok_or_else(|| InitiatorConfigError {
                field: "namespace",
                why: format!("{} is not a UUID, NGUID or EUI-64", identity.canonical()),
            })?;
            Ok((identify::find(multipath, &wanted)?, Some(wanted)))
        }
        NamespaceRef::Nsid(nsid) => {
            let found = identify::list(multipath)?;
            let ids = found.iter().find(|ids| ids.nsid == *nsid).cloned().ok_or_else(|| {
                UserspaceError::NoSuchNsid { nqn: nqn.to_string(), nsid: *nsid, listed: listed(&found) }
            })?;
            let identity = ids.stable_id();
            Ok((ids, identity))
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The subsystem to reach: device-config, its NQN, every path and the keys.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// device-config.
    pub config: &'a SrConfig,
    /// The subsystem.
    pub nqn: &'a Nqn,
    /// Every path (portals and discovered ports).
    pub options: &'a [ConnectOptions],
    /// DH-HMAC-CHAP keys.
    pub auth: &'a Authentication,
}

/// Serves the SR's namespace on this host: locate, configure, start, wait.
/// Safe to repeat (a serving daemon keeps serving). A daemon that cannot
/// serve is stopped again, and its own words are the error.
///
/// # Errors
/// [`UserspaceError`]: the namespace is not there or changed identity, or
/// the daemon did not come up (with the reason its state file gives).
pub fn bring_up(
    host: &HostRoot,
    runner: &dyn Runner,
    target: Target<'_>,
    sr: &str,
    reference: &NamespaceRef,
) -> Result<Served, UserspaceError> {
    let Target { config, nqn, options, auth } = target;
    if config.transport != Transport::Tcp {
        return Err(UserspaceError::NotTcp);
    }
    let sr = sr_id(sr)?;
    let mut multipath = multipath_config(config, nqn, options, auth)?;
    let (ids, identity) = locate(&multipath, nqn, reference)?;
    multipath.namespace = nvmetcp_initiator::NamespaceIdentity { nsid: ids.nsid, uuid: ids.uuid };
    let queues = usize::from(nvmetcp_initiator::controller::wanted_queues(&multipath));
    let export = export_config(&sr, queues, config.timers.fast_io_fail_tmo);
    let daemon = DaemonConfig { sr: sr.clone(), multipath, identity, export };
    let layout = layout(host);
    door::write_config(&layout, &daemon)?;
    let since = now_unix();
    service::start(host, runner, &sr)?;
    let device = match door::wait_serving(&layout, &sr, since, SERVE_TIMEOUT) {
        Ok(device) => device,
        Err(error) => {
            let log = service::log_tail(host, &sr, 20);
            tracing::error!(sr = %sr, %error, %log, "the userspace initiator did not come up; stopping it");
            if let Err(stop) = take_down(host, runner, sr.as_str()) {
                tracing::warn!(sr = %sr, error = %stop, "stopping the userspace initiator failed too");
            }
            return Err(error.into());
        }
    };
    tracing::info!(sr = %sr, device = %device.path, nsid = ids.nsid, "the userspace initiator serves the SR");
    Ok(Served {
        device: PathBuf::from(&device.path),
        identity: identity.and_then(|i| NamespaceIdentity::parse(&i.to_string())),
        nsid: ids.nsid,
        paths: options.iter().map(ConnectOptions::key).collect(),
    })
}

/// How the SR's NBD device is set up (`drivers/block/nbd.c`, 4.19 and
/// 6.x). The I/O timeout stays short (the export's default, seconds): a
/// request the killed daemon had taken is resent by the kernel only when it
/// times out (`nbd_xmit_timeout` requeues it; nothing requeues it when its
/// connection dies or is replaced, `recv_work`, `nbd_reconnect_socket`), so
/// this bounds a VM's stall after a crash. A request the live daemon holds
/// for a path to come back is resent as well, and its new copy supersedes
/// the old one while keeping its first arrival, so every path down still
/// fails I/O only after `fast_io_fail_tmo`. Requests wait for a dead
/// connection to be replaced (`wait_for_reconnect`) up to the dead-connection
/// timeout: at least `fast_io_fail_tmo` + 30 s, so a daemon that does not
/// come back fails I/O no sooner than an outage of every path would.
fn export_config(sr: &SrId, queues: usize, fast_io_fail_tmo: i32) -> ExportConfig {
    let mut export = ExportConfig { connections: queues.clamp(2, 64), ..ExportConfig::for_backend(&sr.backend()) };
    if let Ok(hold) = u64::try_from(fast_io_fail_tmo) {
        export.dead_conn_timeout_secs = export.dead_conn_timeout_secs.max(hold + NBD_TIMEOUT_MARGIN);
    }
    export
}

/// Every active namespace of the subsystem, in NSID order, as the array
/// identifies it over one admin queue of the first portal that answers (a
/// host without `nvme_tcp` has no kernel device to list them from). Nothing
/// stays connected and no daemon is started.
///
/// # Errors
/// Not TCP, a configuration the initiator refuses, or no portal answered.
pub fn list_namespaces(target: Target<'_>) -> Result<Vec<NamespaceIds>, UserspaceError> {
    let Target { config, nqn, options, auth } = target;
    if config.transport != Transport::Tcp {
        return Err(UserspaceError::NotTcp);
    }
    let multipath = multipath_config(config, nqn, options, auth)?;
    let mut found = identify::list(&multipath)?;
    found.sort_by_key(|ids| ids.nsid);
    Ok(found)
}

/// Serves namespace `nsid` as an NBD device of this process for as long as
/// `read` runs, then disconnects it: SR.probe reads what the namespace
/// holds this way (no daemon is started, nothing stays behind; what a
/// killed probe left is disconnected first, [`probe_devices`]). `read` is
/// handed `/dev/nbdN`; it must only read.
///
/// # Errors
/// Not TCP, the namespace is not there, no path, or the kernel's NBD driver
/// refused (it is not loaded: `modprobe nbd`).
pub fn with_namespace_device<T>(
    host: &HostRoot,
    target: Target<'_>,
    nsid: u32,
    read: impl FnOnce(&Path) -> T,
) -> Result<T, UserspaceError> {
    let Target { config, nqn, options, auth } = target;
    if config.transport != Transport::Tcp {
        return Err(UserspaceError::NotTcp);
    }
    let mut multipath = multipath_config(config, nqn, options, auth)?;
    let (ids, _) = locate(&multipath, nqn, &NamespaceRef::Nsid(nsid))?;
    multipath.namespace = nvmetcp_initiator::NamespaceIdentity { nsid: ids.nsid, uuid: ids.uuid };
    let device: Arc<dyn nvmetcp_initiator::block::BlockDevice> =
        Arc::new(nvmetcp_initiator::Multipath::open(multipath)?);
    probe_devices::disconnect_left_behind(host);
    let pid = std::process::id();
    let backend = format!("nvmetcp:probe-{pid}");
    let size_bytes = device.geometry().size_bytes();
    let export = Export::create(device, ExportConfig::for_backend(&backend))?;
    let held = probe_devices::hold(host, pid, export.index(), &backend, size_bytes);
    let path = PathBuf::from(format!("/dev/nbd{}", export.index()));
    tracing::debug!(device = %path.display(), nsid, "the namespace is served for SR.probe to read");
    let out = read(&path);
    if let Err(error) = export.disconnect() {
        held.keep();
        return Err(error.into());
    }
    Ok(out)
}

/// The SR's NBD device, verified as the SR's.
///
/// # Errors
/// The daemon never ran here, or the device is no longer the SR's.
pub fn device(host: &HostRoot, sr: &str) -> Result<PathBuf, UserspaceError> {
    Ok(PathBuf::from(door::device(&layout(host), &sr_id(sr)?)?.path))
}

/// The SR's NBD device held open, and verified again once open: while it
/// is open the kernel cannot hand its number to another device, so the
/// name stays the SR's for as long as the caller holds the file.
///
/// # Errors
/// No verified device, it cannot be opened, or it changed while opening.
pub fn pinned_device(host: &HostRoot, sr: &str) -> Result<(PathBuf, std::fs::File), UserspaceError> {
    let device = device(host, sr)?;
    let shown = device.display().to_string();
    let file = std::fs::File::open(host.path(&shown))
        .map_err(|source| UserspaceError::Open { device: shown.clone(), source })?;
    match self::device(host, sr) {
        Ok(again) if again == device => Ok((device, file)),
        Ok(again) => Err(UserspaceError::Moved { device: shown, now: again.display().to_string() }),
        Err(error) => Err(UserspaceError::Moved { device: shown, now: error.to_string() }),
    }
}

/// A state older than this says nothing about the paths now (the daemon
/// rewrites it every 2 s).
const STALE_AFTER: u64 = 15;

/// Each expected path as the daemon last reported it; `absent` for a path
/// it does not know, and every path down while the daemon does not run or
/// does not serve.
#[must_use]
pub fn health(host: &HostRoot, sr: &str, expected: &[PathKey]) -> Health {
    let layout = layout(host);
    let state = sr_id(sr).ok().and_then(|sr| door::read_state(&layout, &sr).ok().flatten());
    let down = match &state {
        None => Some("no initiator".to_owned()),
        Some(s) if !door::daemon_alive(&layout, s) => Some("initiator not running".to_owned()),
        Some(s) if s.phase == Phase::DeviceLost => {
            Some("its NBD device was disconnected outside nvmetcp (detach and attach the SR)".to_owned())
        }
        Some(s) if s.phase != Phase::Serving => Some(format!("initiator {:?}", s.phase).to_lowercase()),
        Some(s) if now_unix().saturating_sub(s.updated_unix) > STALE_AFTER => Some("initiator silent".to_owned()),
        Some(_) => None,
    };
    let reports = state.as_ref().and_then(|s| s.device.as_ref());
    let paths = expected
        .iter()
        .map(|key| {
            let portal = SocketAddr::new(key.traddr, key.trsvcid).to_string();
            let report = reports.and_then(|r| r.paths.iter().find(|p| p.portal == portal));
            let (state, ana_state) = match (&down, report) {
                (Some(why), _) => (why.clone(), None),
                (None, Some(path)) => (path.status.clone(), path.ana.clone()),
                (None, None) => ("absent".to_owned(), None),
            };
            PathStatus {
                key: key.clone(),
                controller: report.and_then(|p| p.cntlid).map(|c| format!("userspace cntlid {c}")),
                state,
                ana_state,
            }
        })
        .collect();
    Health { iopolicy: reports.map(|r| r.iopolicy.clone()), paths }
}

/// Whether a daemon of the SR left its files on this host.
#[must_use]
pub fn has_run(host: &HostRoot, sr: &str) -> bool {
    let layout = layout(host);
    sr_id(sr).is_ok_and(|sr| layout.config_file(&sr).exists() || layout.state_file(&sr).exists())
}

/// Stops the SR's daemon and disconnects its device; safe to repeat.
///
/// # Errors
/// The daemon could not be stopped or the device not disconnected.
pub fn take_down(host: &HostRoot, runner: &dyn Runner, sr: &str) -> Result<(), UserspaceError> {
    let sr = sr_id(sr)?;
    service::stop(host, runner, &sr)?;
    door::tear_down(&layout(host), &sr)?;
    tracing::info!(sr = %sr, "the userspace initiator of the SR is stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::names::Portal;

    const SR: &str = "5b0e3c57-1d2f-4a66-9d0e-7c3f1b2a4d10";

    #[test]
    fn a_killed_daemons_requests_are_resent_in_seconds_and_an_absent_one_is_awaited_past_fast_io_fail_tmo() {
        let sr = sr_id(SR).unwrap();
        let export = export_config(&sr, 4, 90);
        assert!(export.io_timeout_secs <= 10, "the stall after a crash is the NBD I/O timeout: {export:?}");
        assert_eq!(export.dead_conn_timeout_secs, 120);
        assert_eq!(export.connections, 4);
        assert_eq!(export_config(&sr, 1, 300).dead_conn_timeout_secs, 330);
        assert_eq!(export_config(&sr, 1, 300).connections, 2, "4.19 resends only with two connections or more");
        assert_eq!(export_config(&sr, 2, -1).dead_conn_timeout_secs, 120);
        assert_eq!(export.backend, sr.backend());
    }

    fn key(addr: &str) -> PathKey {
        PathKey {
            transport: "tcp".into(),
            traddr: addr.parse().unwrap(),
            trsvcid: 4420,
            subsysnqn: "nqn.2014-08.org.example:a".into(),
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:5e0d0c1a-0000-4000-8000-000000000001".into(),
            host_iface: None,
            host_traddr: None,
        }
    }

    fn state(phase: &str, updated: u64) -> String {
        format!(
            r#"{{"sr":"{SR}","phase":"{phase}","daemon_pid":4242,"error":null,"nbd":null,"export":null,
            "device":{{"nqn":"nqn.2014-08.org.example:a","nsid":1,"iopolicy":"round-robin","queued":0,"failed_no_path":0,
            "paths":[{{"portal":"10.0.0.1:4420","status":"live","ana":"optimized","cntlid":1,"io_queues":2,"in_flight":0,
            "errors":0,"losses":0,"last_error":null,"since_secs":5}},
            {{"portal":"10.0.0.2:4420","status":"connecting","ana":null,"cntlid":null,"io_queues":0,"in_flight":0,
            "errors":0,"losses":1,"last_error":"refused","since_secs":5}}]}},"updated_unix":{updated}}}"#
        )
    }

    fn options(host_iface: Option<&str>, host_traddr: Option<&str>) -> ConnectOptions {
        let nqn: Nqn = "nqn.2014-08.org.example:a".parse().unwrap();
        ConnectOptions {
            transport: Transport::Tcp,
            portal: Portal { addr: "10.0.0.1".parse().unwrap(), port: 4420 },
            subsystem: nqn,
            host: crate::nvme::options::HostIdentity {
                nqn: "nqn.2014-08.org.nvmexpress:uuid:5e0d0c1a-0000-4000-8000-000000000001".parse().unwrap(),
                id: "5e0d0c1a-0000-4000-8000-000000000001".parse().unwrap(),
            },
            host_iface: host_iface.map(|i| i.parse().unwrap()),
            host_traddr: host_traddr.map(|a| a.parse().unwrap()),
            timers: sr_config().timers,
            auth: Authentication::default(),
        }
    }

    fn sr_config() -> SrConfig {
        let map = [("portals", "10.0.0.1"), ("nqn", "nqn.2014-08.org.example:a")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        crate::sr_config::ProbeConfig::parse(&map).unwrap().endpoints
    }

    #[test]
    fn host_conf_bindings_are_refused_by_name_never_ignored() {
        let config = sr_config();
        let nqn: Nqn = "nqn.2014-08.org.example:a".parse().unwrap();
        let auth = Authentication::default();
        assert!(multipath_config(&config, &nqn, &[options(None, None)], &auth).is_ok());
        let error = multipath_config(&config, &nqn, &[options(Some("eth1"), Some("10.0.0.9"))], &auth).unwrap_err();
        let shown = error.to_string();
        assert!(matches!(error, UserspaceError::HostBinding(_)), "{shown}");
        assert!(shown.contains("host_iface = eth1, host_traddr = 10.0.0.9"), "{shown}");
        assert!(shown.contains("remove the key from host.conf"), "{shown}");
        let error = multipath_config(&config, &nqn, &[options(None, Some("10.0.0.9"))], &auth).unwrap_err();
        assert!(error.to_string().contains("sets host_traddr = 10.0.0.9,"), "{error}");
    }

    #[test]
    fn health_comes_from_the_daemon_while_it_serves_and_is_all_down_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        let expected = [key("10.0.0.1"), key("10.0.0.2"), key("10.0.0.3")];
        assert_eq!(
            health(&host, SR, &expected).summary(),
            "no path live: 0/3 (10.0.0.1:4420 no initiator, 10.0.0.2:4420 no initiator, 10.0.0.3:4420 no initiator)"
        );
        host.write_atomically(
            &format!("/run/nvmetcp/initiator/{SR}.json"),
            state("serving", now_unix()).as_bytes(),
            0o644,
        )
        .unwrap();
        let health_now = health(&host, SR, &expected);
        assert!(health_now.summary().contains("initiator not running"), "{}", health_now.summary());
        std::fs::create_dir_all(host.path("/proc/4242")).unwrap();
        let health_now = health(&host, SR, &expected);
        assert_eq!(health_now.live(), 1);
        assert_eq!(health_now.summary(), "degraded: 1/3 paths live (10.0.0.2:4420 connecting, 10.0.0.3:4420 absent)");
        assert_eq!(health_now.iopolicy.as_deref(), Some("round-robin"));
        host.write_atomically(&format!("/run/nvmetcp/initiator/{SR}.json"), state("serving", 1).as_bytes(), 0o644)
            .unwrap();
        assert!(health(&host, SR, &expected).summary().contains("initiator silent"));
        host.write_atomically(
            &format!("/run/nvmetcp/initiator/{SR}.json"),
            state("failed", now_unix()).as_bytes(),
            0o644,
        )
        .unwrap();
        assert_eq!(health(&host, SR, &expected).live(), 0);
        // Its device disconnected by another program: every path down, saying so.
        host.write_atomically(
            &format!("/run/nvmetcp/initiator/{SR}.json"),
            state("device-lost", now_unix()).as_bytes(),
            0o644,
        )
        .unwrap();
        let lost = health(&host, SR, &expected).summary();
        assert!(
            lost.starts_with("no path live: 0/3") && lost.contains("NBD device was disconnected outside nvmetcp"),
            "{lost}"
        );
        assert!(has_run(&host, SR) && !has_run(&host, "0c9b6a43-6f3e-4bd4-9c3e-5e0d0c1a2b3c"));
    }
}
