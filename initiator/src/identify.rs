//! Which namespaces a subsystem has, and their stable identities, asked over
//! one short-lived admin queue (no I/O queue, nothing left behind): Identify
//! with CNS 02h (active namespace IDs), 00h (NGUID, EUI-64, size) and 03h
//! (the identification descriptors: EUI-64, NGUID, UUID), NVMe base spec
//! 2.0 §5.17.2.
//!
//! An SR records its namespace by a stable identity, never by NSID (an
//! array may renumber namespaces): `find` turns the identity back into
//! today's NSID, and says plainly when no namespace has it any more.

use std::fmt;
use std::net::SocketAddr;

use crate::command;
use crate::config::MultipathConfig;
use crate::controller::{admin_call, enable_admin, Admin, ControllerError};

/// A namespace's stable identity, in the kernel's `wwid` spelling:
/// `uuid.<32 hex>`, `eui.<32 hex>` (NGUID) or `eui.<16 hex>` (EUI-64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StableId {
    /// RFC 4122 UUID (descriptor type 3).
    Uuid([u8; 16]),
    /// NGUID (descriptor type 2, Identify Namespace bytes 104..120).
    Nguid([u8; 16]),
    /// IEEE EUI-64 (descriptor type 1, Identify Namespace bytes 120..128).
    Eui64([u8; 8]),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl StableId {
    /// Parses the canonical spelling (what sm-driver records in device-config).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        let (kind, value) = text.split_once('.')?;
        let value: String = value.chars().filter(|c| *c != '-').collect();
        let id = match (kind, value.len()) {
            ("uuid", 32) => Self::Uuid(unhex(&value)?),
            ("eui", 32) => Self::Nguid(unhex(&value)?),
            ("eui", 16) => Self::Eui64(unhex(&value)?),
            _ => return None,
        };
        (!id.bytes().iter().all(|b| *b == 0)).then_some(id)
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Uuid(b) | Self::Nguid(b) => b,
            Self::Eui64(b) => b,
        }
    }
}

impl fmt::Display for StableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(b) => write!(f, "uuid.{}", hex(b)),
            Self::Nguid(b) => write!(f, "eui.{}", hex(b)),
            Self::Eui64(b) => write!(f, "eui.{}", hex(b)),
        }
    }
}

/// One active namespace as its controller identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceIds {
    /// Namespace ID today.
    pub nsid: u32,
    /// UUID, if given.
    pub uuid: Option<[u8; 16]>,
    /// NGUID, if given.
    pub nguid: Option<[u8; 16]>,
    /// EUI-64, if given.
    pub eui64: Option<[u8; 8]>,
    /// Size in bytes.
    pub size_bytes: u64,
}

impl NamespaceIds {
    /// Whether the namespace has `id`.
    #[must_use]
    pub fn has(&self, id: &StableId) -> bool {
        match id {
            StableId::Uuid(b) => self.uuid.as_ref() == Some(b),
            StableId::Nguid(b) => self.nguid.as_ref() == Some(b),
            StableId::Eui64(b) => self.eui64.as_ref() == Some(b),
        }
    }

    /// The identity the kernel would report as `wwid` (UUID, else NGUID, else
    /// EUI-64), so both initiators record the same one.
    #[must_use]
    pub fn stable_id(&self) -> Option<StableId> {
        self.uuid.map(StableId::Uuid).or(self.nguid.map(StableId::Nguid)).or(self.eui64.map(StableId::Eui64))
    }
}

/// Why a namespace could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// No portal answered.
    #[error("no portal of {nqn} answered: {}", why.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Unreachable {
        /// The subsystem.
        nqn: String,
        /// Each portal's failure.
        why: Vec<ControllerError>,
    },
    /// The subsystem has no namespace with the identity.
    #[error(
        "subsystem {nqn} has no namespace {wanted} any more (it has: {listed}): the namespace was removed or \
         changed identity; check the array, and never reuse the SR on another namespace"
    )]
    NotFound {
        /// The subsystem.
        nqn: String,
        /// The identity looked for.
        wanted: String,
        /// What it has, `nsid=identity`.
        listed: String,
    },
}

fn nonzero<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    let array: [u8; N] = bytes.get(..N)?.try_into().ok()?;
    (!array.iter().all(|b| *b == 0)).then_some(array)
}

/// Decodes Identify Namespace (00h) and the descriptor list (03h).
fn parse_namespace(nsid: u32, ns: &[u8], descriptors: &[u8]) -> NamespaceIds {
    let mut ids = NamespaceIds {
        nsid,
        uuid: None,
        nguid: ns.get(104..120).and_then(nonzero::<16>),
        eui64: ns.get(120..128).and_then(nonzero::<8>),
        size_bytes: 0,
    };
    if ns.len() >= 4096 {
        let blocks = u64::from_le_bytes(ns[0..8].try_into().unwrap_or_default());
        let flbas = usize::from(ns[26] & 0x0f | (ns[26] >> 5 & 0x3) << 4);
        let lbads = u32::from(ns[128 + 4 * flbas + 2]);
        ids.size_bytes = if (9..=16).contains(&lbads) { blocks << lbads } else { 0 };
    }
    let mut at = 0;
    while at + 4 <= descriptors.len() {
        let (kind, len) = (descriptors[at], usize::from(descriptors[at + 1]));
        if kind == 0 || len == 0 {
            break;
        }
        let Some(value) = descriptors.get(at + 4..at + 4 + len) else { break };
        match (kind, len) {
            (1, 8) => ids.eui64 = ids.eui64.or_else(|| nonzero::<8>(value)),
            (2, 16) => ids.nguid = ids.nguid.or_else(|| nonzero::<16>(value)),
            (3, 16) => ids.uuid = nonzero::<16>(value),
            _ => {}
        }
        at += 4 + len;
    }
    ids
}

/// Every active namespace of `config`'s subsystem as the controller at
/// `portal` identifies it (the namespace in `config` is not used).
///
/// # Errors
/// [`ControllerError`] naming the step that failed.
pub fn namespaces(portal: SocketAddr, config: &MultipathConfig) -> Result<Vec<NamespaceIds>, ControllerError> {
    let Admin { queue, .. } = enable_admin(portal, config)?;
    let call = |step, sqe, expect| admin_call(portal, config, &queue, step, sqe, expect);
    let mut found = Vec::new();
    let mut after = 0u32;
    // 1024 IDs per page; continue after the last one while pages are full.
    loop {
        let (_, list) = call("Identify active namespace IDs", command::identify(2, after), 4096)?;
        let page: Vec<u32> = list
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .take_while(|nsid| *nsid != 0)
            .collect();
        for nsid in &page {
            let (_, ns) = call("Identify namespace", command::identify(0, *nsid), 4096)?;
            let (_, descriptors) = call("Identify namespace descriptors", command::identify(3, *nsid), 4096)?;
            found.push(parse_namespace(*nsid, &ns, &descriptors));
        }
        match page.last() {
            Some(last) if page.len() == 1024 && *last < u32::MAX - 1 => after = *last,
            _ => break,
        }
    }
    queue.kill("identification done");
    Ok(found)
}

/// The active namespaces, from the first of `config`'s portals that answers.
///
/// # Errors
/// [`IdentifyError::Unreachable`] when none does.
pub fn list(config: &MultipathConfig) -> Result<Vec<NamespaceIds>, IdentifyError> {
    let mut why = Vec::new();
    for portal in &config.portals {
        match namespaces(*portal, config) {
            Ok(found) => return Ok(found),
            Err(error) => why.push(error),
        }
    }
    Err(IdentifyError::Unreachable { nqn: config.subsystem_nqn.clone(), why })
}

/// Today's NSID of the namespace with identity `wanted`.
///
/// # Errors
/// No portal answered, or no namespace has that identity.
pub fn find(config: &MultipathConfig, wanted: &StableId) -> Result<NamespaceIds, IdentifyError> {
    let found = list(config)?;
    if let Some(ids) = found.iter().find(|ids| ids.has(wanted)) {
        return Ok(ids.clone());
    }
    let listed: Vec<String> = found
        .iter()
        .map(|ids| format!("{}={}", ids.nsid, ids.stable_id().map_or_else(|| "no identity".into(), |i| i.to_string())))
        .collect();
    Err(IdentifyError::NotFound {
        nqn: config.subsystem_nqn.clone(),
        wanted: wanted.to_string(),
        listed: if listed.is_empty() { "no namespace".into() } else { listed.join(", ") },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostIdentity, IoPolicy, NamespaceIdentity, TransportOptions};
    use crate::fake_target::{FakeTarget, Script};

    fn config(portals: Vec<SocketAddr>) -> MultipathConfig {
        MultipathConfig {
            subsystem_nqn: "nqn.2024-01.io.example:fake".into(),
            namespace: NamespaceIdentity { nsid: 1, uuid: None },
            portals,
            host: HostIdentity::parse(
                "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            )
            .unwrap(),
            auth: None,
            iopolicy: IoPolicy::Numa,
            transport: TransportOptions::default(),
        }
    }

    #[test]
    fn the_canonical_spellings_round_trip_and_zero_is_no_identity() {
        for text in
            ["uuid.0707070707070707070707070707070a", "eui.00112233445566778899aabbccddeeff", "eui.0011223344556677"]
        {
            assert_eq!(StableId::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            StableId::parse("UUID.07070707-0707-0707-0707-07070707070A").unwrap().to_string(),
            "uuid.0707070707070707070707070707070a"
        );
        assert!(StableId::parse("uuid.00000000000000000000000000000000").is_none());
        assert!(StableId::parse("nvme.1234").is_none() && StableId::parse("eui.12").is_none());
    }

    #[test]
    fn descriptors_and_identify_namespace_give_every_identity() {
        let mut ns = vec![0u8; 4096];
        ns[0..8].copy_from_slice(&2048u64.to_le_bytes());
        ns[130] = 12;
        ns[120..128].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut descriptors = vec![0u8; 4096];
        descriptors[0] = 2;
        descriptors[1] = 16;
        descriptors[4..20].copy_from_slice(&[9; 16]);
        descriptors[20] = 3;
        descriptors[21] = 16;
        descriptors[24..40].copy_from_slice(&[5; 16]);
        let ids = parse_namespace(3, &ns, &descriptors);
        assert_eq!(ids.size_bytes, 2048 * 4096);
        assert_eq!((ids.uuid, ids.nguid, ids.eui64), (Some([5; 16]), Some([9; 16]), Some([1, 2, 3, 4, 5, 6, 7, 8])));
        assert_eq!(ids.stable_id(), Some(StableId::Uuid([5; 16])), "the kernel's wwid preference");
        assert!(ids.has(&StableId::Eui64([1, 2, 3, 4, 5, 6, 7, 8])) && !ids.has(&StableId::Nguid([5; 16])));
    }

    #[test]
    fn the_namespace_is_found_by_identity_and_a_changed_one_is_a_clear_error() {
        let target = FakeTarget::start(Script::default());
        let unreachable: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let config = config(vec![unreachable, target.addr]);
        let found = find(&config, &StableId::Uuid([7; 16])).unwrap();
        assert_eq!((found.nsid, found.size_bytes), (1, 2048 * 512));
        let error = find(&config, &StableId::Uuid([8; 16])).unwrap_err().to_string();
        assert!(error.contains("has no namespace uuid.0808") && error.contains("1=uuid.0707"), "{error}");
        let error = list(&super::tests::config(vec![unreachable])).unwrap_err().to_string();
        assert!(error.contains("no portal of nqn.2024-01.io.example:fake answered"), "{error}");
    }
}
