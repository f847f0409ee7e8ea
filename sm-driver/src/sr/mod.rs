//! The SR.* methods: a shared LVM volume group on one NVMe-oF namespace.
//!
//! * `SR.create` (pool master) connects, resolves the namespace, refuses one
//!   that holds any signature unless `force=true`, creates the PV and a VG
//!   named `nvmetcp_<uuid>` tagged `nvmetcp_sr`, and returns the device-config
//!   to store with `sr_uuid` and the namespace's stable identity.
//! * `SR.attach` (every host) connects every path, finds the namespace by its
//!   identity, checks it holds this SR, and records the attachment
//!   ([`state`]); the handle is `nvmetcp://sr/<uuid>`.
//! * `SR.stat` reports sizes and health from the paths ("2/2 paths live",
//!   "degraded: …"; `Unreachable` with no live path). `SR.ls` fails rather
//!   than return a partial list.
//! * `SR.detach` deactivates and releases this host's paths (only the ones
//!   nvmetcp connected and nobody else uses); `SR.destroy` removes VG and PV.
//!
//! Only the pool master writes LVM metadata (`metadata_read_only` elsewhere);
//! the role comes from `/etc/xensource/pool.conf` ([`role`]). The SR's name
//! and description live in VG tags, hex-encoded so any UTF-8 fits.

pub mod paths;
pub mod role;
pub mod state;

use serde_json::Value;

use crate::cmd::{Command, Program};
use crate::dispatch::Context;
use crate::error::{DriverError, Failure};
use crate::lvm::{Lvm, LvmError, Vg};
use crate::nvme::checks::CheckError;
use crate::nvme::health::health;
use crate::nvme::identity::IdentityError;
use crate::nvme::names::Nqn;
use crate::nvme::resolve::ResolveError;
use crate::nvme::sysfs::NamespaceIdentity;
use crate::nvme::users::{release, RegistryError, ReleaseError};
use crate::smapi::params::Params;
use crate::smapi::types::{Health, SrStat, StringMap};
use crate::sr_config::{ConfigError, NamespaceRef, Purpose, SrConfig, SR_UUID_KEY};

use self::paths::NAMESPACE_TIMEOUT;
use self::state::{handle_of, uuid_of_handle, SrLock, SrState, StateError, SR_LOCK_TIMEOUT};

/// The tag every nvmetcp VG carries.
pub const SR_TAG: &str = "nvmetcp_sr";
const UUID_TAG: &str = "nvmetcp.uuid=";
const NAME_TAG: &str = "nvmetcp.name=";
const DESCRIPTION_TAG: &str = "nvmetcp.desc=";
/// Longest name or description, in bytes (tags hold at most 1024 characters).
pub const MAX_LABEL_BYTES: usize = 500;

/// Why an SR call failed.
#[derive(Debug, thiserror::Error)]
pub enum SrError {
    /// device-config is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The host cannot do NVMe-oF as configured.
    #[error(transparent)]
    Host(#[from] CheckError),
    /// The host's NVMe identity is unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A host-local setting is unusable.
    #[error(transparent)]
    HostConfig(#[from] crate::host_config::HostConfigError),
    /// A DH-HMAC-CHAP key held by XAPI could not be read.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// Discovery found nothing usable.
    #[error("subsystem {nqn} was not found by discovery: {why}")]
    Discovery {
        /// The subsystem.
        nqn: String,
        /// Why.
        why: String,
    },
    /// No path could be connected.
    #[error("no path to subsystem {nqn} could be connected: {why}")]
    NoPath {
        /// The subsystem.
        nqn: String,
        /// Each path's failure.
        why: String,
    },
    /// The path registry or its lock failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Releasing paths failed.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The namespace is missing or not the right one.
    #[error(transparent)]
    Namespace(#[from] ResolveError),
    /// The namespace with this identity is not exported to this host.
    #[error(
        "namespace {namespace} of subsystem {nqn} is not visible on this host; check the target exports it to this \
             host's NQN"
    )]
    NamespaceMissing {
        /// The subsystem.
        nqn: String,
        /// Its identity.
        namespace: String,
    },
    /// The namespace has no stable identifier.
    #[error(
        "namespace {nsid} of subsystem {nqn} reports no UUID, NGUID or EUI-64; nvmetcp needs one to find it safely \
             on every host"
    )]
    NoIdentity {
        /// The subsystem.
        nqn: String,
        /// The NSID.
        nsid: u32,
    },
    /// The namespace holds data and `force` was not given.
    #[error(
        "namespace {namespace} ({device}) is not empty: {found}. nvmetcp will not overwrite it; if its data is \
             not needed, pass device-config:force=true"
    )]
    InUse {
        /// Its identity.
        namespace: String,
        /// Its device now.
        device: String,
        /// What was found.
        found: String,
    },
    /// The namespace does not hold this SR.
    #[error("namespace {namespace} holds no nvmetcp SR {sr_uuid}{found}")]
    NotThisSr {
        /// Its identity.
        namespace: String,
        /// The SR expected.
        sr_uuid: String,
        /// What it holds instead.
        found: String,
    },
    /// An operation that only the pool master may do, on a host that must not write.
    #[error(transparent)]
    NotMaster(#[from] role::NotWriter),
    /// The SR still has volumes.
    #[error("SR {sr_uuid} still holds {count} volume(s); destroy them first")]
    NotEmpty {
        /// The SR.
        sr_uuid: String,
        /// How many.
        count: usize,
    },
    /// A name or description too long for the metadata.
    #[error("the {what} is {bytes} bytes long; nvmetcp stores at most {MAX_LABEL_BYTES}")]
    LabelTooLong {
        /// "name" or "description".
        what: &'static str,
        /// Its length.
        bytes: usize,
    },
    /// The uuid passed by xapi is not a UUID.
    #[error("SR uuid {0:?} is not a UUID")]
    BadUuid(String),
    /// LVM failed.
    #[error(transparent)]
    Lvm(#[from] LvmError),
    /// Probing the namespace for data failed.
    #[error("cannot check {device} for existing data")]
    Inspect {
        /// The device.
        device: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Attachment state.
    #[error(transparent)]
    State(#[from] StateError),
    /// The fabric layer failed.
    #[error(transparent)]
    Nvme(#[from] crate::nvme::NvmeError),
    /// A volume call failed.
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    /// The host's state could not be read.
    #[error(transparent)]
    Read(#[from] crate::host::HostError),
}

impl From<SrError> for DriverError {
    fn from(error: SrError) -> Self {
        let host = crate::host::HostRoot::system().read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default();
        Self::Sr { host, source: Box::new(error) }
    }
}

fn label_tag(prefix: &str, what: &'static str, text: &str) -> Result<String, SrError> {
    if text.len() > MAX_LABEL_BYTES {
        return Err(SrError::LabelTooLong { what, bytes: text.len() });
    }
    Ok(format!("{prefix}{}", crate::hex::encode(text)))
}

fn tag_value<'a>(vg: &'a Vg, prefix: &str) -> Option<&'a str> {
    vg.tags.iter().find_map(|t| t.strip_prefix(prefix))
}

fn vg_name(uuid: &str) -> String {
    format!("nvmetcp_{}", uuid.replace('-', ""))
}

fn is_uuid(text: &str) -> bool {
    text.parse::<crate::nvme::names::HostId>().is_ok()
}

/// Runs `f` as an SR operation, mapping its error.
pub(crate) fn sr_call<T: serde::Serialize>(
    params: &Params,
    f: impl FnOnce() -> Result<T, SrError>,
) -> Result<Value, Failure> {
    let value = f().map_err(DriverError::from)?;
    serde_json::to_value(value)
        .map_err(|source| DriverError::Encode { method: params.method().call_name(), source }.into())
}

/// `SR.create`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn create(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let uuid: String = params.get("uuid")?;
    let configuration: StringMap = params.get("configuration")?;
    let name: String = params.get("name")?;
    let description: String = params.get("description")?;
    sr_call(params, || {
        if !is_uuid(&uuid) {
            return Err(SrError::BadUuid(uuid.clone()));
        }
        role::require_master(&ctx.host, "SR.create")?;
        let config = SrConfig::parse(&configuration, Purpose::Create)?;
        let nqn = required_nqn(&config)?;
        let reference =
            config.namespace.clone().ok_or(ConfigError::Missing { key: "namespace", why: "name the namespace" })?;
        let tags = vec![
            SR_TAG.to_owned(),
            format!("{UUID_TAG}{uuid}"),
            label_tag(NAME_TAG, "name", &name)?,
            label_tag(DESCRIPTION_TAG, "description", &description)?,
        ];
        let _lock = SrLock::acquire(&ctx.host, &uuid, SR_LOCK_TIMEOUT)?;
        let user = format!("create-{uuid}");
        paths::connect(&ctx.host, ctx.runner.as_ref(), &config, &nqn, &user)?;
        let outcome = create_on_namespace(ctx, &config, &nqn, &reference, &uuid, &tags);
        // Leave no connection behind that create made; PBD.plug attaches.
        release(&ctx.host, &user)?;
        let identity = outcome?;
        let mut stored = configuration.clone();
        stored.insert("namespace".to_owned(), identity.canonical());
        stored.insert(SR_UUID_KEY.to_owned(), uuid.clone());
        stored.remove("force");
        Ok(stored)
    })
}

fn required_nqn(config: &SrConfig) -> Result<Nqn, SrError> {
    config.nqn.clone().ok_or(SrError::Config(ConfigError::Missing { key: "nqn", why: "name the subsystem" }))
}

fn create_on_namespace(
    ctx: &Context,
    config: &SrConfig,
    nqn: &Nqn,
    reference: &NamespaceRef,
    uuid: &str,
    tags: &[String],
) -> Result<NamespaceIdentity, SrError> {
    let resolved = paths::namespace(&ctx.host, nqn, reference, NAMESPACE_TIMEOUT)?;
    let identity = resolved
        .namespace
        .identity
        .clone()
        .ok_or(SrError::NoIdentity { nqn: nqn.to_string(), nsid: resolved.namespace.nsid })?;
    let lvm = Lvm::new(ctx.runner.as_ref(), &resolved.device, true)?;
    // Already created by an earlier attempt of this very call: done.
    if lvm.vgs()?.iter().any(|vg| tag_value(vg, UUID_TAG) == Some(uuid)) {
        return Ok(identity);
    }
    let device = resolved.device.display().to_string();
    if let Some(found) = existing_data(ctx, &device)? {
        if !config.force {
            return Err(SrError::InUse { namespace: identity.canonical(), device, found });
        }
        tracing::warn!(%device, %found, "force=true: overwriting the namespace");
    }
    lvm.pvcreate(config.force)?;
    if let Err(error) = lvm.vgcreate(&vg_name(uuid), tags) {
        let undo = ctx.runner.run(&Command::new(Program::Lvm).args(["pvremove", "-y", &device]));
        if let Err(undo) = undo {
            tracing::error!(%device, %undo, "rollback of pvcreate failed");
        }
        return Err(error.into());
    }
    tracing::info!(sr = %uuid, vg = %vg_name(uuid), %device, "SR created");
    Ok(identity)
}

/// What the device holds, if anything: a signature blkid knows, or any
/// non-zero byte in its first MiB.
fn existing_data(ctx: &Context, device: &str) -> Result<Option<String>, SrError> {
    match ctx.runner.run(&Command::new(Program::Blkid).args(["-p", "-o", "export", device])) {
        Ok(output) => {
            let found: Vec<&str> = output
                .stdout
                .lines()
                .filter(|l| l.starts_with("TYPE=") || l.starts_with("PTTYPE=") || l.starts_with("LABEL="))
                .collect();
            if !found.is_empty() {
                return Ok(Some(format!("it holds {}", found.join(" "))));
            }
        }
        // blkid exits 2 when it finds nothing.
        Err(crate::cmd::CmdError::Failed { code: Some(2), .. }) => {}
        Err(error) => return Err(SrError::Lvm(LvmError::Command(error))),
    }
    use std::io::Read;
    let mut head = vec![0u8; 1 << 20];
    let mut file = std::fs::File::open(ctx.host.path(device))
        .map_err(|source| SrError::Inspect { device: device.to_owned(), source })?;
    let read = file.read(&mut head).map_err(|source| SrError::Inspect { device: device.to_owned(), source })?;
    if head[..read].iter().any(|b| *b != 0) {
        return Ok(Some("its first MiB holds data".to_owned()));
    }
    Ok(None)
}

/// Reconnects and resolves an SR from its device-config, and checks the
/// namespace holds it. Returns the state to record.
fn bring_up(ctx: &Context, configuration: &StringMap) -> Result<SrState, SrError> {
    let config = SrConfig::parse(configuration, Purpose::Attach)?;
    let nqn = required_nqn(&config)?;
    let uuid = config.sr_uuid.clone().ok_or(ConfigError::Missing {
        key: "sr_uuid",
        why: "this device-config was not returned by SR.create; create the SR with xe sr-create",
    })?;
    if !is_uuid(&uuid) {
        return Err(SrError::BadUuid(uuid));
    }
    let reference =
        config.namespace.clone().ok_or(ConfigError::Missing { key: "namespace", why: "name the namespace" })?;
    let expected = paths::connect(&ctx.host, ctx.runner.as_ref(), &config, &nqn, &uuid)?;
    let resolved = paths::namespace(&ctx.host, &nqn, &reference, NAMESPACE_TIMEOUT)?;
    let namespace = resolved.namespace.identity.as_ref().map(NamespaceIdentity::canonical).unwrap_or_default();
    let lvm = Lvm::new(ctx.runner.as_ref(), &resolved.device, role::is_master(&ctx.host))?;
    let vgs = lvm.vgs()?;
    let vg =
        vgs.iter().find(|vg| vg.tags.iter().any(|t| t == SR_TAG) && tag_value(vg, UUID_TAG) == Some(uuid.as_str()));
    let Some(vg) = vg.cloned() else {
        let found = match vgs.first() {
            Some(other) => format!(" (it holds volume group {})", other.name),
            None => " (it holds no volume group)".to_owned(),
        };
        return Err(SrError::NotThisSr { namespace, sr_uuid: uuid, found });
    };
    Ok(SrState {
        sr_uuid: uuid,
        vg: vg.name,
        nqn: nqn.to_string(),
        namespace,
        paths: expected,
        configuration: configuration.clone(),
        total_space: vg.size,
        free_space: vg.free,
        extent_size: vg.extent_size,
    })
}

/// `SR.attach`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn attach(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let configuration: StringMap = params.get("configuration")?;
    sr_call(params, || {
        let uuid = configuration.get(SR_UUID_KEY).cloned().unwrap_or_default();
        let _lock = if is_uuid(&uuid) { Some(SrLock::acquire(&ctx.host, &uuid, SR_LOCK_TIMEOUT)?) } else { None };
        let state = bring_up(ctx, &configuration)?;
        state::save(&ctx.host, &state)?;
        tracing::info!(sr = %state.sr_uuid, vg = %state.vg, "SR attached");
        Ok(handle_of(&state.sr_uuid))
    })
}

/// The attachment state behind a handle, locked.
pub(crate) fn attached(ctx: &Context, params: &Params) -> Result<(SrState, SrLock), SrError> {
    let handle: String = params.get("sr").map_err(|e| SrError::State(StateError::BadHandle(e.to_string())))?;
    let uuid = uuid_of_handle(&handle)?;
    let lock = SrLock::acquire(&ctx.host, &uuid, SR_LOCK_TIMEOUT)?;
    Ok((state::load(&ctx.host, &uuid)?, lock))
}

/// Fails at once when no path is live: LVM I/O would only queue until
/// `fast_io_fail_tmo`.
fn require_live_path(ctx: &Context, state: &SrState) -> Result<(), SrError> {
    let paths = health(&ctx.host, &state.paths)?;
    if paths.live() == 0 {
        return Err(SrError::NoPath { nqn: state.nqn.clone(), why: paths.summary() });
    }
    Ok(())
}

/// LVM on the SR's namespace, resolved anew; only while a path is live.
pub(crate) fn lvm_for<'c>(ctx: &'c Context, state: &SrState, writable: bool) -> Result<Lvm<'c>, SrError> {
    require_live_path(ctx, state)?;
    lvm_on_namespace(ctx, state, writable)
}

/// LVM on the SR's namespace, for callers that checked the paths already.
fn lvm_on_namespace<'c>(ctx: &'c Context, state: &SrState, writable: bool) -> Result<Lvm<'c>, SrError> {
    let nqn: Nqn = state.nqn.parse().map_err(|e: crate::nvme::names::InvalidValue| {
        SrError::State(StateError::Corrupt { path: "SR state".to_owned(), detail: e.to_string() })
    })?;
    let identity = NamespaceIdentity::parse(&state.namespace).ok_or_else(|| {
        SrError::State(StateError::Corrupt { path: "SR state".to_owned(), detail: "namespace identity".to_owned() })
    })?;
    let resolved =
        paths::namespace(&ctx.host, &nqn, &NamespaceRef::Identity(identity), std::time::Duration::from_secs(2))?;
    Ok(Lvm::new(ctx.runner.as_ref(), &resolved.device, writable)?)
}

fn our_vg(lvm: &Lvm<'_>, state: &SrState) -> Result<Option<Vg>, SrError> {
    Ok(lvm.vgs()?.into_iter().find(|vg| vg.name == state.vg))
}

/// `SR.stat`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn stat(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    sr_call(params, || {
        let (mut state, _lock) = attached(ctx, params)?;
        let paths = health(&ctx.host, &state.paths)?;
        let summary = paths.summary();
        let handle = handle_of(&state.sr_uuid);
        if paths.live() == 0 {
            return Ok(stat_record(&handle, &state, None, Health::Unreachable(summary)));
        }
        let lvm = lvm_on_namespace(ctx, &state, false)?;
        let vg = our_vg(&lvm, &state)?.ok_or_else(|| SrError::NotThisSr {
            namespace: state.namespace.clone(),
            sr_uuid: state.sr_uuid.clone(),
            found: " (its volume group is gone)".to_owned(),
        })?;
        state.total_space = vg.size;
        state.free_space = vg.free;
        state::save(&ctx.host, &state)?;
        Ok(stat_record(&handle, &state, Some(&vg), Health::Healthy(summary)))
    })
}

fn stat_record(handle: &str, state: &SrState, vg: Option<&Vg>, health: Health) -> SrStat {
    let label = |prefix| vg.and_then(|vg| tag_value(vg, prefix)).map(crate::hex::decode).unwrap_or_default();
    SrStat {
        sr: handle.to_owned(),
        name: label(NAME_TAG),
        uuid: Some(state.sr_uuid.clone()),
        description: label(DESCRIPTION_TAG),
        free_space: i64::try_from(state.free_space).unwrap_or(i64::MAX),
        total_space: i64::try_from(state.total_space).unwrap_or(i64::MAX),
        datasources: Vec::new(),
        clustered: false,
        health,
    }
}

/// `SR.ls`: every volume, or an error — never a partial list, because xapi
/// deletes the VDIs missing from it.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn ls(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    sr_call(params, || {
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, false)?;
        crate::volume::list(&lvm, &state)
    })
}

/// `SR.detach`: idempotent.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn detach(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    sr_call(params, || {
        let handle: String = params.get("sr").map_err(|e| SrError::State(StateError::BadHandle(e.to_string())))?;
        let uuid = uuid_of_handle(&handle)?;
        let _lock = SrLock::acquire(&ctx.host, &uuid, SR_LOCK_TIMEOUT)?;
        if let Ok(state) = state::load(&ctx.host, &uuid) {
            match lvm_for(ctx, &state, false) {
                Ok(lvm) => lvm.deactivate(&state.vg)?,
                Err(error) => tracing::warn!(%error, "namespace not reachable; nothing to deactivate"),
            }
        }
        let released = release(&ctx.host, &uuid)?;
        state::remove(&ctx.host, &uuid)?;
        tracing::info!(sr = %uuid, disconnected = ?released.disconnected, "SR detached");
        Ok(Value::Null)
    })
}

/// `SR.destroy` (master): refuses while volumes exist; idempotent.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn destroy(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    sr_call(params, || {
        role::require_master(&ctx.host, "SR.destroy")?;
        let (state, _lock) = match attached(ctx, params) {
            Ok(found) => found,
            // Destroyed already (xapi retried): nothing left to do.
            Err(SrError::State(StateError::NotAttached(uuid))) => {
                tracing::info!(sr = %uuid, "SR.destroy: not attached here; nothing to destroy");
                return Ok(Value::Null);
            }
            Err(error) => return Err(error),
        };
        let lvm = lvm_for(ctx, &state, true)?;
        if our_vg(&lvm, &state)?.is_some() {
            let volumes = lvm.lvs(&state.vg)?;
            if !volumes.is_empty() {
                return Err(SrError::NotEmpty { sr_uuid: state.sr_uuid.clone(), count: volumes.len() });
            }
            lvm.deactivate(&state.vg)?;
            lvm.remove_vg_and_pv(&state.vg)?;
        }
        release(&ctx.host, &state.sr_uuid)?;
        state::remove(&ctx.host, &state.sr_uuid)?;
        tracing::info!(sr = %state.sr_uuid, "SR destroyed");
        Ok(Value::Null)
    })
}

fn relabel(
    ctx: &Context,
    params: &Params,
    prefix: &'static str,
    what: &'static str,
    param: &'static str,
) -> Result<Value, Failure> {
    let text: String = params.get(param)?;
    sr_call(params, || {
        role::require_master(&ctx.host, if what == "name" { "SR.set_name" } else { "SR.set_description" })?;
        let new_tag = label_tag(prefix, what, &text)?;
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, true)?;
        let vg = our_vg(&lvm, &state)?.ok_or_else(|| SrError::NotThisSr {
            namespace: state.namespace.clone(),
            sr_uuid: state.sr_uuid.clone(),
            found: " (its volume group is gone)".to_owned(),
        })?;
        let old: Vec<String> = vg.tags.iter().filter(|t| t.starts_with(prefix)).cloned().collect();
        lvm.retag(&vg.name, &old, &[new_tag])?;
        Ok(Value::Null)
    })
}

/// `SR.probe`: with endpoints only, every subsystem they list and its
/// namespaces (incomplete results); with `nqn`, that subsystem's namespaces,
/// and every nvmetcp SR on them as a complete result with `sr_uuid` and its
/// `sr_stat`. Connections probe made are released before it returns.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn probe(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let configuration: StringMap = params.get("configuration")?;
    sr_call(params, || {
        let config = SrConfig::parse(&configuration, Purpose::Probe)?;
        let nqns: Vec<Nqn> = match &config.nqn {
            Some(nqn) => vec![nqn.clone()],
            None => {
                if config.discovery.is_empty() {
                    return Err(ConfigError::Missing {
                        key: "nqn",
                        why: "without discovery endpoints, probe needs the subsystem NQN (or give discovery= to list \
                              subsystems)",
                    }
                    .into());
                }
                ensure_fabric(ctx, &config)?;
                let identity = crate::nvme::identity::load_or_create(&ctx.host)?;
                let found = crate::nvme::discovery::discover(
                    &config.discovery,
                    &identity,
                    crate::nvme::discovery::DISCOVERY_TIMEOUT,
                );
                if found.subsystems.is_empty() && !found.failures.is_empty() {
                    let why = found.failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                    return Err(SrError::Discovery { nqn: "(any)".to_owned(), why });
                }
                found.subsystems.iter().filter_map(|s| s.nqn.parse().ok()).collect()
            }
        };
        let user = format!("probe-{}", std::process::id());
        let mut results = Vec::new();
        let mut outcome = Ok(());
        for nqn in &nqns {
            let mut one = config.clone();
            one.nqn = Some(nqn.clone());
            match probe_subsystem(ctx, &one, &configuration, nqn, &user, config.nqn.is_some()) {
                Ok(found) => results.extend(found),
                // Listing several subsystems: one failing is reported, not fatal.
                Err(error) if config.nqn.is_none() => tracing::warn!(%nqn, %error, "subsystem not probed"),
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        release(&ctx.host, &user)?;
        outcome.map(|()| results)
    })
}

fn ensure_fabric(ctx: &Context, config: &SrConfig) -> Result<(), SrError> {
    crate::nvme::checks::ensure_transport(&ctx.host, ctx.runner.as_ref(), config.transport)?;
    Ok(crate::nvme::checks::ensure_multipath(&ctx.host)?)
}

fn probe_subsystem(
    ctx: &Context,
    config: &SrConfig,
    given: &StringMap,
    nqn: &Nqn,
    user: &str,
    subsystem_given: bool,
) -> Result<Vec<crate::smapi::types::ProbeResult>, SrError> {
    use crate::smapi::types::ProbeResult;
    let expected = paths::connect(&ctx.host, ctx.runner.as_ref(), config, nqn, user)?;
    let path_health = health(&ctx.host, &expected)?;
    // Give the namespaces of a fresh connection a moment to show up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let heads = loop {
        let heads: Vec<_> = crate::nvme::sysfs::namespace_devices(&ctx.host)
            .map_err(|e| SrError::Namespace(e.into()))?
            .into_iter()
            .filter(|d| d.subsysnqn == nqn.as_str() && d.is_multipath_head)
            .collect();
        if !heads.is_empty() || std::time::Instant::now() >= deadline {
            break heads;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut results = Vec::new();
    for head in heads {
        let Some(identity) = head.identity.clone() else { continue };
        let mut configuration = given.clone();
        configuration.insert("nqn".to_owned(), nqn.to_string());
        configuration.insert("namespace".to_owned(), identity.canonical());
        let mut extra_info = StringMap::new();
        extra_info.insert("nsid".to_owned(), head.nsid.to_string());
        extra_info.insert("size".to_owned(), head.size_bytes.to_string());
        extra_info.insert("paths".to_owned(), path_health.summary());
        let device = std::path::PathBuf::from(format!("/dev/{}", head.name));
        let vgs = if subsystem_given { Lvm::new(ctx.runner.as_ref(), &device, false)?.vgs()? } else { Vec::new() };
        let ours: Vec<&Vg> = vgs.iter().filter(|vg| vg.tags.iter().any(|t| t == SR_TAG)).collect();
        if ours.is_empty() {
            // What is on a namespace that is not an SR, so a tool can refuse
            // it before SR.create does.
            if subsystem_given {
                match existing_data(ctx, &device.display().to_string()) {
                    Ok(Some(holds)) => {
                        extra_info.insert("holds".to_owned(), holds);
                    }
                    Ok(None) => {
                        extra_info.insert("holds".to_owned(), "nothing: empty".to_owned());
                    }
                    Err(error) => tracing::warn!(%error, "could not inspect the namespace"),
                }
            }
            results.push(ProbeResult {
                configuration: configuration.clone(),
                complete: subsystem_given,
                sr: None,
                extra_info: extra_info.clone(),
            });
        }
        for vg in ours {
            let Some(uuid) = tag_value(vg, UUID_TAG) else { continue };
            let mut configuration = configuration.clone();
            configuration.insert(SR_UUID_KEY.to_owned(), uuid.to_owned());
            let state = SrState {
                sr_uuid: uuid.to_owned(),
                vg: vg.name.clone(),
                nqn: nqn.to_string(),
                namespace: identity.canonical(),
                paths: expected.clone(),
                configuration: configuration.clone(),
                total_space: vg.size,
                free_space: vg.free,
                extent_size: vg.extent_size,
            };
            let stat = stat_record(&handle_of(uuid), &state, Some(vg), Health::Healthy(path_health.summary()));
            results.push(ProbeResult { configuration, complete: true, sr: Some(stat), extra_info: extra_info.clone() });
        }
    }
    Ok(results)
}

/// `SR.set_name`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn set_name(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    relabel(ctx, params, NAME_TAG, "name", "new_name")
}

/// `SR.set_description`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn set_description(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    relabel(ctx, params, DESCRIPTION_TAG, "description", "new_description")
}

#[cfg(test)]
mod tests {
    use super::{label_tag, SrError, MAX_LABEL_BYTES, NAME_TAG};

    #[test]
    fn labels_survive_any_utf8_through_tags() {
        for text in ["", "fast NVMe", "données ✓ 日本語", "a,b=c\nd"] {
            let tag = label_tag(NAME_TAG, "name", text).unwrap();
            assert!(tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '='), "{tag}");
            assert_eq!(crate::hex::decode(&crate::hex::encode(text)), text);
        }
        let long = "x".repeat(MAX_LABEL_BYTES + 1);
        assert!(matches!(label_tag(NAME_TAG, "name", &long), Err(SrError::LabelTooLong { .. })));
    }
}
