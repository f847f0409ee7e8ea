//! The kernel's view of NVMe controllers, subsystems and namespaces, read from
//! sysfs through a [`HostRoot`].
//!
//! Names like `nvme3` or `nvme-subsys1` are handed out by the kernel (lowest
//! free instance first) and are reused as soon as they are freed, so nothing
//! here is keyed by them across calls: controllers are found again by what
//! they connect to (transport, address, port, subsystem, host NQN), and
//! namespaces by (subsystem NQN, NSID) plus their identifiers. `address` is
//! parsed as key=value pairs, because kernels append fields (`src_addr=`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::host::{HostError, HostRoot};

use super::options::PathKey;

/// The `address` attribute of a controller, as key/value pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address(BTreeMap<String, String>);

impl Address {
    /// Parses `traddr=..,trsvcid=..[,host_traddr=..][,host_iface=..][,src_addr=..]`.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        Self(
            text.trim()
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        )
    }

    /// A field by name.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The target address, parsed (so `fd00::1` and `fd00:0::1` compare equal).
    #[must_use]
    pub fn traddr(&self) -> Option<IpAddr> {
        self.get("traddr").and_then(|a| a.parse().ok())
    }

    /// The target port.
    #[must_use]
    pub fn trsvcid(&self) -> Option<u16> {
        self.get("trsvcid").and_then(|p| p.parse().ok())
    }
}

/// One NVMe controller (one path, for fabrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// Kernel name, e.g. `nvme3` (valid only for now).
    pub name: String,
    /// `tcp`, `rdma`, `loop`, `pcie`, …
    pub transport: String,
    /// The subsystem NQN it belongs to.
    pub subsysnqn: String,
    /// Where it connects to.
    pub address: Address,
    /// The host NQN it connected with (fabrics only).
    pub hostnqn: Option<String>,
    /// Its state, as the kernel reports it.
    pub state: ControllerState,
}

/// A controller's state (`/sys/class/nvme/<ctrl>/state`), parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerState {
    /// `live`: I/O flows.
    Live,
    /// `connecting`: (re)connecting after a loss.
    Connecting,
    /// `resetting`.
    Resetting,
    /// `new`: being set up.
    New,
    /// `deleting`: being torn down.
    Deleting,
    /// `deleting (no IO)`: being torn down, I/O already failed.
    DeletingNoIo,
    /// `dead`.
    Dead,
    /// A state this version does not know, as read.
    Other(String),
}

impl ControllerState {
    /// The state named by the sysfs text.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        match text.trim() {
            "live" => Self::Live,
            "connecting" => Self::Connecting,
            "resetting" => Self::Resetting,
            "new" => Self::New,
            "deleting" => Self::Deleting,
            "deleting (no IO)" => Self::DeletingNoIo,
            "dead" => Self::Dead,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The state as the kernel writes it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Live => "live",
            Self::Connecting => "connecting",
            Self::Resetting => "resetting",
            Self::New => "new",
            Self::Deleting => "deleting",
            Self::DeletingNoIo => "deleting (no IO)",
            Self::Dead => "dead",
            Self::Other(text) => text,
        }
    }
}

impl std::fmt::Display for ControllerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Controller {
    /// Whether the controller exists for good (not being torn down).
    #[must_use]
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, ControllerState::Deleting | ControllerState::DeletingNoIo | ControllerState::Dead)
    }

    /// Whether this controller is the path `key` describes: exact subsystem
    /// NQN, transport, address, port and host NQN, and the same source binding
    /// (or none on both sides), like the kernel's own duplicate check.
    #[must_use]
    pub fn matches(&self, key: &PathKey) -> bool {
        let same_binding = |field: &str, wanted: Option<String>| match (self.address.get(field), wanted) {
            (None, None) => true,
            (Some(have), Some(want)) => have == want || have.parse::<IpAddr>().ok() == want.parse::<IpAddr>().ok(),
            _ => false,
        };
        self.transport == key.transport.as_str()
            && self.subsysnqn == key.subsysnqn.as_str()
            && self.address.traddr() == Some(key.traddr)
            && self.address.trsvcid() == Some(key.trsvcid)
            && self.hostnqn.as_deref() == Some(key.hostnqn.as_str())
            && same_binding("host_traddr", key.host_traddr.map(|a| a.to_string()))
            && same_binding("host_iface", key.host_iface.as_ref().map(ToString::to_string))
    }
}

/// Whether `name` is a controller name (`nvme3`), not a namespace (`nvme3n1`).
#[must_use]
pub fn is_controller_name(name: &str) -> bool {
    name.strip_prefix("nvme").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `name` is a namespace block device with a `/dev` node
/// (`nvme0n1`), not a hidden multipath path device (`nvme0c1n1`).
#[must_use]
pub fn is_namespace_device_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else { return false };
    let Some((ctrl, ns)) = rest.split_once('n') else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(ctrl) && digits(ns)
}

/// Reads one controller.
///
/// # Errors
/// [`HostError`] if its mandatory attributes cannot be read (it may be going away).
pub fn controller(host: &HostRoot, name: &str) -> Result<Controller, HostError> {
    let base = format!("/sys/class/nvme/{name}");
    let read = |attr: &str| host.read_trimmed(&format!("{base}/{attr}"));
    Ok(Controller {
        name: name.to_owned(),
        transport: read("transport")?,
        subsysnqn: read("subsysnqn")?,
        address: Address::parse(&read("address").unwrap_or_default()),
        hostnqn: read("hostnqn").ok(),
        state: ControllerState::parse(&read("state")?),
    })
}

/// Every NVMe controller on the host. Controllers that vanish while being
/// read are left out.
///
/// # Errors
/// [`HostError`] if `/sys/class/nvme` exists but cannot be listed.
pub fn controllers(host: &HostRoot) -> Result<Vec<Controller>, HostError> {
    if !host.exists("/sys/class/nvme") {
        return Ok(Vec::new());
    }
    Ok(host
        .list_dir("/sys/class/nvme")?
        .iter()
        .filter(|n| is_controller_name(n))
        .filter_map(|n| controller(host, n).ok())
        .collect())
}

/// A namespace's stable identity, normalised (lower-case hex, no dashes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamespaceIdentity {
    /// RFC 4122 UUID (NIDT 3).
    Uuid(String),
    /// 128-bit NGUID (NIDT 2).
    Nguid(String),
    /// 64-bit IEEE EUI-64 (NIDT 1).
    Eui64(String),
}

impl NamespaceIdentity {
    /// Reads the identity the kernel derived for `wwid` (`uuid.…`, `eui.…`);
    /// `None` for namespaces without a stable identifier (`nvme.…`).
    #[must_use]
    pub fn from_wwid(wwid: &str) -> Option<Self> {
        let hex = |s: &str| s.chars().filter(|c| *c != '-').collect::<String>().to_ascii_lowercase();
        let (kind, value) = wwid.trim().split_once('.')?;
        let value = hex(value);
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_hexdigit()) || value.bytes().all(|b| b == b'0') {
            return None;
        }
        match (kind, value.len()) {
            ("uuid", 32) => Some(Self::Uuid(value)),
            ("eui", 32) => Some(Self::Nguid(value)),
            ("eui", 16) => Some(Self::Eui64(value)),
            _ => None,
        }
    }

    /// Parses what an administrator types: a UUID (dashed or not), a 32-hex
    /// NGUID (`eui.` prefix optional) or a 16-hex EUI-64.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        if let Some(rest) = text.strip_prefix("uuid.").or_else(|| text.strip_prefix("urn:uuid:")) {
            return Self::from_wwid(&format!("uuid.{rest}"));
        }
        if text.starts_with("eui.") {
            return Self::from_wwid(&text);
        }
        if text.contains('-') {
            return Self::from_wwid(&format!("uuid.{text}"));
        }
        Self::from_wwid(&format!("eui.{text}"))
    }

    /// The canonical text form: `uuid.<32 hex>`, `eui.<32 hex>` or `eui.<16 hex>`.
    #[must_use]
    pub fn canonical(&self) -> String {
        match self {
            Self::Uuid(v) => format!("uuid.{v}"),
            Self::Nguid(v) | Self::Eui64(v) => format!("eui.{v}"),
        }
    }
}

/// Shown as its canonical text.
impl std::fmt::Display for NamespaceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Written as its canonical text, read back through [`NamespaceIdentity::parse`].
impl serde::Serialize for NamespaceIdentity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NamespaceIdentity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a namespace identity (uuid.<32 hex>, eui.<32 or 16 hex>)"
            ))
        })
    }
}

/// Test fixtures write literals; a bad one fails the test.
#[cfg(test)]
impl From<&str> for NamespaceIdentity {
    #[allow(clippy::expect_used)] // a test's own literal
    fn from(text: &str) -> Self {
        Self::parse(text).expect("a valid literal")
    }
}

/// A namespace block device with a `/dev` node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceDevice {
    /// Kernel name, e.g. `nvme0n1` (valid only for now).
    pub name: String,
    /// The namespace ID in its subsystem.
    pub nsid: u32,
    /// The subsystem NQN.
    pub subsysnqn: String,
    /// Its identity, if the target reports one.
    pub identity: Option<NamespaceIdentity>,
    /// True for a native multipath head (parent is an `nvme-subsystem`),
    /// false for a single controller's namespace (multipath off, or no CMIC).
    pub is_multipath_head: bool,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// Every namespace block device on the host.
///
/// # Errors
/// [`HostError`] if `/sys/block` cannot be listed.
pub fn namespace_devices(host: &HostRoot) -> Result<Vec<NamespaceDevice>, HostError> {
    let mut devices = Vec::new();
    for name in host.list_dir("/sys/block")?.into_iter().filter(|n| is_namespace_device_name(n)) {
        let base = format!("/sys/block/{name}");
        let read = |attr: &str| host.read_trimmed(&format!("{base}/{attr}"));
        let (Ok(nsid), Ok(subsysnqn)) = (read("nsid"), read("device/subsysnqn")) else { continue };
        let Ok(nsid) = nsid.parse() else { continue };
        let parent = std::fs::canonicalize(host.path(&format!("{base}/device"))).unwrap_or_default();
        let is_multipath_head = parent.components().any(|c| c.as_os_str() == "nvme-subsystem");
        let sectors: u64 = read("size").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        devices.push(NamespaceDevice {
            identity: read("wwid").ok().and_then(|w| NamespaceIdentity::from_wwid(&w)),
            name,
            nsid,
            subsysnqn,
            is_multipath_head,
            size_bytes: sectors.saturating_mul(512),
        });
    }
    Ok(devices)
}

/// The `nvme-subsystem` directory of `nqn`, e.g. `/sys/class/nvme-subsystem/nvme-subsys0`.
#[must_use]
pub fn subsystem_dir(host: &HostRoot, nqn: &str) -> Option<String> {
    host.list_dir("/sys/class/nvme-subsystem")
        .ok()?
        .into_iter()
        .map(|n| format!("/sys/class/nvme-subsystem/{n}"))
        .find(|dir| host.read_trimmed(&format!("{dir}/subsysnqn")).is_ok_and(|q| q == nqn))
}

#[cfg(test)]
pub(crate) mod fixture;

#[cfg(test)]
mod tests {
    use super::fixture::SysfsTree;
    use super::{controllers, namespace_devices, subsystem_dir, Address, NamespaceIdentity};
    use crate::nvme::options::tests::options;

    #[test]
    fn address_is_parsed_as_key_value_pairs() {
        let old = Address::parse("traddr=10.0.0.1,trsvcid=4420\n");
        let new = Address::parse("traddr=10.0.0.1,trsvcid=4420,src_addr=10.0.0.9");
        assert_eq!(old.traddr(), new.traddr());
        assert_eq!(new.get("src_addr"), Some("10.0.0.9"));
        assert_eq!(Address::parse("traddr=fd00:0::1,trsvcid=4420").traddr(), "fd00::1".parse().ok());
    }

    #[test]
    fn controllers_match_exactly_on_every_identity_field() {
        let tree = SysfsTree::new();
        let opts = options();
        tree.controller(
            "nvme0",
            "tcp",
            opts.subsystem.as_str(),
            "traddr=10.0.0.1,trsvcid=4420,src_addr=10.0.0.5",
            opts.host.nqn.as_str(),
            "live",
        );
        tree.controller(
            "nvme1",
            "tcp",
            &format!("{}-backup", opts.subsystem),
            "traddr=10.0.0.1,trsvcid=4420",
            opts.host.nqn.as_str(),
            "live",
        );
        tree.controller(
            "nvme2",
            "tcp",
            opts.subsystem.as_str(),
            "traddr=10.0.0.1,trsvcid=4421",
            opts.host.nqn.as_str(),
            "live",
        );
        tree.controller(
            "nvme3",
            "rdma",
            opts.subsystem.as_str(),
            "traddr=10.0.0.1,trsvcid=4420",
            opts.host.nqn.as_str(),
            "live",
        );
        tree.controller(
            "nvme4",
            "tcp",
            opts.subsystem.as_str(),
            "traddr=10.0.0.1,trsvcid=4420",
            "nqn.2014-08.org.nvmexpress:uuid:other",
            "live",
        );
        tree.controller(
            "nvme5",
            "tcp",
            opts.subsystem.as_str(),
            "traddr=10.0.0.1,trsvcid=4420,host_iface=eth1",
            opts.host.nqn.as_str(),
            "live",
        );
        let all = controllers(&tree.host()).unwrap();
        assert_eq!(all.len(), 6);
        let matching: Vec<&str> = all.iter().filter(|c| c.matches(&opts.key())).map(|c| c.name.as_str()).collect();
        assert_eq!(matching, ["nvme0"], "no prefix match, no other port, transport, host or binding");
        let mut bound = opts.clone();
        bound.host_iface = Some("eth1".parse().unwrap());
        let matching: Vec<&str> = all.iter().filter(|c| c.matches(&bound.key())).map(|c| c.name.as_str()).collect();
        assert_eq!(matching, ["nvme5"]);
    }

    #[test]
    fn controller_states_decide_liveness() {
        let tree = SysfsTree::new();
        for (i, state) in
            ["live", "connecting", "resetting", "new", "deleting", "deleting (no IO)", "dead"].iter().enumerate()
        {
            tree.controller(&format!("nvme{i}"), "tcp", "nqn.a:b", "traddr=10.0.0.1,trsvcid=4420", "nqn.h:h", state);
        }
        let alive: Vec<bool> = controllers(&tree.host()).unwrap().iter().map(|c| c.is_alive()).collect();
        assert_eq!(alive, [true, true, true, true, false, false, false]);
        for state in ["live", "connecting", "resetting", "new", "deleting", "deleting (no IO)", "dead", "frozen"] {
            assert_eq!(super::ControllerState::parse(&format!("{state}\n")).as_str(), state);
        }
        assert_eq!(super::ControllerState::parse("live"), super::ControllerState::Live);
    }

    #[test]
    fn namespace_devices_tell_heads_from_single_controller_namespaces() {
        let tree = SysfsTree::new();
        tree.head("nvme-subsys0", "nvme0n1", "nqn.a:one", 1, "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc", 131_072);
        tree.path_device("nvme0", "nvme0c0n1");
        tree.single("nvme3", "nvme3n1", "nqn.a:two", 2, "eui.0025388b71b0e4c1");
        let devices = namespace_devices(&tree.host()).unwrap();
        assert_eq!(devices.len(), 2, "path devices are not namespace devices: {devices:?}");
        let head = devices.iter().find(|d| d.name == "nvme0n1").unwrap();
        assert!(head.is_multipath_head);
        assert_eq!(head.size_bytes, 131_072 * 512);
        assert_eq!(head.identity, Some(NamespaceIdentity::Uuid("8d30ade900c54fe69fbcbe2c924ffcdc".into())));
        let single = devices.iter().find(|d| d.name == "nvme3n1").unwrap();
        assert!(!single.is_multipath_head);
        assert_eq!(
            (single.nsid, single.identity.clone()),
            (2, Some(NamespaceIdentity::Eui64("0025388b71b0e4c1".into())))
        );
        assert_eq!(subsystem_dir(&tree.host(), "nqn.a:one").as_deref(), Some("/sys/class/nvme-subsystem/nvme-subsys0"));
        assert_eq!(subsystem_dir(&tree.host(), "nqn.a:on"), None);
    }

    #[test]
    fn namespace_identities_parse_and_normalise() {
        let uuid = NamespaceIdentity::parse("8D30ADE9-00C5-4FE6-9FBC-BE2C924FFCDC").unwrap();
        assert_eq!(uuid.canonical(), "uuid.8d30ade900c54fe69fbcbe2c924ffcdc");
        assert_eq!(
            NamespaceIdentity::parse("eui.6b1c3bb8a1c2e4f50025388b71b0e4c1"),
            NamespaceIdentity::parse("6B1C3BB8A1C2E4F50025388B71B0E4C1")
        );
        assert!(matches!(NamespaceIdentity::parse("0025388b71b0e4c1"), Some(NamespaceIdentity::Eui64(_))));
        for bad in ["", "1", "nvme.1234-5678", "uuid.00000000-0000-0000-0000-000000000000", "zz25388b71b0e4c1"] {
            assert_eq!(NamespaceIdentity::parse(bad), None, "{bad}");
        }
        assert_eq!(NamespaceIdentity::from_wwid("nvme.1b36-73657269616c-51454d55-00000001"), None);
    }
}
