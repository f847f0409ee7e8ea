//! The XenAPI error codes nvmetcp answers with, on the SMAPI path and from
//! the XAPI host plugin: one list, which `docs/errors.md` documents entry by
//! entry (the docs test iterates [`ErrorCode::ALL`]).

/// Declares the codes once: the enum, its wire names and the list of all.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal,)*) => {
        /// A XenAPI error code nvmetcp answers with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order `docs/errors.md` lists them.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as xapi raises it.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                }
            }
        }
    };
}

error_codes! {
    /// The parameters on stdin are not one JSON object.
    InvalidRequest = "NVMETCP_INVALID_REQUEST",
    /// A parameter is missing or has the wrong type.
    InvalidParameter = "NVMETCP_INVALID_PARAMETER",
    /// Invoked under a name that is no method of this plugin.
    UnknownMethod = "NVMETCP_UNKNOWN_METHOD",
    /// A known SMAPIv3 method this version does not implement (xapi's own code).
    Unimplemented = "Unimplemented",
    /// A bug: a panic, or a result that could not be encoded.
    InternalError = "NVMETCP_INTERNAL_ERROR",
    /// device-config (or a name, description, uuid) is wrong.
    InvalidConfig = "NVMETCP_INVALID_CONFIG",
    /// This host cannot do NVMe-oF as configured.
    HostNotReady = "NVMETCP_HOST_NOT_READY",
    /// A DH-HMAC-CHAP key held by XAPI could not be read.
    Secret = "NVMETCP_SECRET",
    /// Discovery found nothing usable.
    DiscoveryFailed = "NVMETCP_DISCOVERY_FAILED",
    /// No path could be connected, or none is live.
    NoPath = "NVMETCP_NO_PATH",
    /// The namespace is missing, unusable or not the right one.
    Namespace = "NVMETCP_NAMESPACE",
    /// The namespace holds data and `force` was not given.
    NamespaceInUse = "NVMETCP_NAMESPACE_IN_USE",
    /// The namespace does not hold this SR.
    SrNotFound = "NVMETCP_SR_NOT_FOUND",
    /// A metadata-writing call on a pool member.
    NotMaster = "NVMETCP_NOT_MASTER",
    /// A metadata-writing call on a host whose role cannot be trusted.
    PoolRoleUnknown = "NVMETCP_POOL_ROLE_UNKNOWN",
    /// Another host may be writing the SR's metadata (the VG's writer tag).
    SecondWriter = "NVMETCP_SECOND_WRITER",
    /// `SR.destroy` while volumes exist.
    SrNotEmpty = "NVMETCP_SR_NOT_EMPTY",
    /// An lvm2 command failed.
    LvmFailed = "NVMETCP_LVM_FAILED",
    /// Another program (blkid, dmsetup) failed.
    ToolFailed = "NVMETCP_TOOL_FAILED",
    /// nvmetcp's state on this host is unusable, or a lock was held too long.
    HostState = "NVMETCP_HOST_STATE",
    /// The userspace NVMe/TCP initiator daemon of the SR did not come up or cannot be stopped.
    Initiator = "NVMETCP_INITIATOR",
    /// The SR is not attached on this host (xapi's own code).
    SrNotAttached = "Sr_not_attached",
    /// The volume is not in the SR (xapi's own code).
    VolumeDoesNotExist = "Volume_does_not_exist",
    /// The volume is active on this host.
    VolumeActive = "NVMETCP_VOLUME_ACTIVE",
    /// Another host of the pool could not be asked whether it maps a volume.
    PoolUnreachable = "NVMETCP_POOL_UNREACHABLE",
    /// A change would exceed the SR's or the volume's metadata budget.
    MetadataFull = "NVMETCP_METADATA_FULL",
    /// A volume request nvmetcp refuses (shrink, bad size, too long).
    VolumeInvalid = "NVMETCP_VOLUME_INVALID",
    /// A snapshot or clone refused (in use, chain too long, no space), or an
    /// operation a layered volume cannot have.
    SnapshotRefused = "NVMETCP_SNAPSHOT_REFUSED",
    /// The SR's snapshot chain metadata is inconsistent.
    ChainDamaged = "NVMETCP_CHAIN_DAMAGED",
    /// A detach refused until an interrupted online merge is finished.
    MergeUnfinished = "NVMETCP_MERGE_UNFINISHED",
    /// A disk not opened while the master changes its chain.
    ChainBusy = "NVMETCP_CHAIN_BUSY",
    /// The host plugin has no such function.
    UnknownFunction = "NVMETCP_UNKNOWN_FUNCTION",
    /// The host plugin's call is malformed.
    BadPluginCall = "NVMETCP_BAD_PLUGIN_CALL",
    /// The host serving a disk did not switch it to the master's new leaf.
    SwapNotDone = "NVMETCP_SWAP_NOT_DONE",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
