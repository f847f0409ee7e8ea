//! The call-level error of the handler layer: what an SR, Volume or Datapath
//! handler returns. [`super::to_error_record`] is the one place it becomes a
//! record.

use crate::cmd::CmdError;
use crate::host_config::HostConfigError;
use crate::lvm::LvmError;
use crate::nvme::checks::CheckError;
use crate::nvme::identity::IdentityError;
use crate::nvme::resolve::ResolveError;
use crate::nvme::users::{RegistryError, ReleaseError};
use crate::pool_role::NotWriter;
use crate::sr_config::ConfigError;
use crate::sr_state::StateError;

/// Why an SR, Volume or Datapath call failed: the one error of the handler
/// layer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
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
    HostConfig(#[from] HostConfigError),
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
    /// The userspace initiator could not serve the SR.
    #[error(transparent)]
    Userspace(#[from] crate::initiator::userspace::UserspaceError),
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
    /// Some namespaces of the subsystem's active list never appeared.
    #[error(
        "subsystem {nqn} reports namespace(s) {missing} to this host, but the kernel showed no device for them \
         within {timeout:?}; check dmesg for the namespace scan, then retry"
    )]
    ScanIncomplete {
        /// The subsystem.
        nqn: String,
        /// The NSIDs missing, comma-separated.
        missing: String,
        /// How long we waited.
        timeout: std::time::Duration,
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
    /// The namespace holds another nvmetcp SR, which `force` never overrides.
    #[error(
        "namespace {namespace} ({device}) holds nvmetcp SR {sr_uuid} (volume group {vg}); force never overwrites \
         an nvmetcp SR, whose volumes may be in use on any host: destroy that SR first (xe sr-destroy)"
    )]
    OtherSr {
        /// Its identity.
        namespace: String,
        /// Its device now.
        device: String,
        /// The SR found there.
        sr_uuid: String,
        /// Its VG.
        vg: String,
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
    NotMaster(#[from] NotWriter),
    /// Another host may be writing the SR's metadata.
    #[error(transparent)]
    SecondWriter(#[from] crate::writer_guard::SecondWriter),
    /// The pool could not be asked whether a volume is mapped elsewhere.
    #[error(transparent)]
    PoolCheck(#[from] crate::pool_mappings::PoolCheckError),
    /// The SR still has volumes.
    #[error("SR {sr_uuid} still holds {count} volume(s); destroy them first")]
    NotEmpty {
        /// The SR.
        sr_uuid: String,
        /// How many.
        count: usize,
    },
    /// A name or description too long for the metadata.
    #[error("the {what} is {bytes} bytes long; nvmetcp stores at most {limit}")]
    LabelTooLong {
        /// "name" or "description".
        what: &'static str,
        /// Its length.
        bytes: usize,
        /// The longest allowed.
        limit: usize,
    },
    /// The uuid passed by xapi is not a UUID.
    #[error("SR uuid {0:?} is not a UUID")]
    BadUuid(String),
    /// LVM failed.
    #[error(transparent)]
    Lvm(#[from] LvmError),
    /// Another program (blkid, dmsetup) failed.
    #[error(transparent)]
    Tool(CmdError),
    /// Creating the VG failed, and removing the PV made for it failed too.
    #[error(
        "the volume group could not be created on {device}, and removing the physical volume made for it failed \
         too ({undo}); run 'pvremove {device}' before retrying"
    )]
    CreateRolledBackBadly {
        /// The device.
        device: String,
        /// Why the removal failed.
        undo: Box<LvmError>,
        /// Why the VG was not created.
        #[source]
        source: Box<LvmError>,
    },
    /// Probing the namespace for data failed.
    #[error("cannot check {device} for existing data")]
    Inspect {
        /// The device.
        device: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `/dev/<vg>` holds live nodes although no VG of that name exists.
    #[error(
        "{dir} holds {left:?} although no volume group of that name exists: a device-mapper mapping of an \
         earlier SR with this UUID is left on this host. Nothing was written. Remove it (`dmsetup ls`, then \
         `dmsetup remove` each of its mappings) and create the SR again"
    )]
    DeviceNodesLeft {
        /// The directory.
        dir: String,
        /// What is left in it.
        left: Vec<String>,
    },
    /// Wiping what `SR.destroy` wrote failed (the VG and PV are gone already).
    #[error(
        "the SR's volume group was removed but its metadata area on {device} could not be wiped; a new SR there \
         will need force=true"
    )]
    Wipe {
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
    Volume(#[from] VolumeError),
    /// A snapshot chain call failed.
    #[error(transparent)]
    Chain(#[from] crate::snapshot::calls::ChainCallError),
    /// The host's state could not be read.
    #[error(transparent)]
    Read(#[from] crate::host::HostError),
}

/// Why a volume call failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No such volume in the SR.
    #[error("volume {key} does not exist in SR {sr_uuid}")]
    NotFound {
        /// The key.
        key: String,
        /// The SR.
        sr_uuid: String,
    },
    /// The volume is in use on this host.
    #[error("volume {key} is active on this host; detach it from its VM first")]
    Active {
        /// The key.
        key: String,
    },
    /// The volume is mapped on other hosts of the pool.
    #[error(
        "volume {key} is mapped on host(s) {}; nothing was changed. Shut down or migrate the VM using it there, \
         or detach the VDI, then retry",
        hosts.join(", ")
    )]
    ActiveElsewhere {
        /// The key.
        key: String,
        /// The hosts that map it.
        hosts: Vec<String>,
    },
    /// A shrink was asked for.
    #[error("volume {key} is {current} bytes; shrinking to {requested} would destroy data, so it is refused")]
    Shrink {
        /// The key.
        key: String,
        /// Its size.
        current: u64,
        /// The size asked for.
        requested: u64,
    },
    /// A key that is not an nvmetcp volume's.
    #[error("{0:?} is not an nvmetcp volume key (vol-<uuid>)")]
    BadKey(String),
    /// A URI that is not an nvmetcp volume's.
    #[error("{0:?} is not an nvmetcp volume URI (nvmetcp://<sr uuid>/<volume>)")]
    BadUri(String),
    /// A size that is not positive.
    #[error("a volume size must be positive, not {0}")]
    BadSize(i64),
    /// A value too long for the metadata.
    #[error(transparent)]
    TooLong(#[from] TooLong),
    /// The change would exceed the metadata budget ([`crate::volume::budget`]).
    #[error(
        "volume {key}: this change would bring the metadata of {scope} to {bytes} bytes, over its budget of {limit} \
         (every change of the SR rewrites its LVM metadata, which must stay well inside the 8 MiB area); nothing \
         was changed. Unset keys or store shorter values"
    )]
    MetadataFull {
        /// The volume.
        key: String,
        /// `this volume` or `the SR`.
        scope: &'static str,
        /// The size it would reach.
        bytes: usize,
        /// The budget.
        limit: usize,
    },
}

/// A value too large for the metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {what} is {bytes} bytes long; nvmetcp stores at most {limit}")]
pub struct TooLong {
    /// What it is.
    pub what: String,
    /// Its length.
    pub bytes: usize,
    /// The limit.
    pub limit: usize,
}
