//! device-config of an nvmetcp SR, validated key by key.
//!
//! xapi copies device-config to every host of the pool, so it only says what
//! is the same everywhere: the transport, where to discover or connect, which
//! subsystem and namespace, tuning. Every key is checked here and every error
//! names the key and how to fix it. An unknown key is an error (a typo such as
//! `portal=` must not be silently ignored), except the keys nvmetcp itself
//! returns from `SR.create` for xapi to store.
//!
//! DH-HMAC-CHAP keys: device-config keys ending in `password` are moved by
//! xapi into secrets, so the plugin receives `dhchap_password_secret` (a
//! secret UUID) and resolves it through XAPI when it connects
//! ([`crate::secrets`]). Host-local key files ([`crate::host_config`]) take
//! precedence, for targets that give each host its own key.

use std::collections::BTreeMap;

use crate::device_config::KEYS;
use crate::ids::SrUuid;
use crate::nvme::health::IoPolicy;
use crate::nvme::names::{DhchapKey, Nqn, Portal, Transport};
use crate::nvme::options::Timers;
use crate::nvme::sysfs::NamespaceIdentity;

/// Keys nvmetcp adds to device-config itself (returned by `SR.create`).
pub const SR_UUID_KEY: &str = "sr_uuid";

/// What the configuration is for: each call needs different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `SR.probe`: endpoints are enough.
    Probe,
    /// `SR.create`: the namespace may be an NSID.
    Create,
    /// `SR.attach`: the namespace must be a stable identifier.
    Attach,
}

/// How the namespace is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceRef {
    /// A stable identifier (UUID, NGUID, EUI-64).
    Identity(NamespaceIdentity),
    /// An NSID, accepted at create time only (create replaces it).
    Nsid(u32),
}

/// A bad device-config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key nvmetcp does not know.
    #[error("device-config:{key} is not an nvmetcp setting{suggestion}; the settings are: {known}")]
    UnknownKey {
        /// The key given.
        key: String,
        /// ", did you mean …?" or empty.
        suggestion: String,
        /// All known keys.
        known: String,
    },
    /// A key's value is wrong.
    #[error("device-config:{key}={value:?} is not valid: {why}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value (or `<redacted>`).
        value: String,
        /// What is wrong and what to do.
        why: String,
    },
    /// A required key is absent.
    #[error("device-config:{key} is required: {why}")]
    Missing {
        /// The key.
        key: &'static str,
        /// Why it is needed and what to put there.
        why: &'static str,
    },
}

/// Where a DH-HMAC-CHAP key of the SR comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An XAPI secret, by UUID (what xapi stores for `dhchap_password`).
    Secret(String),
    /// The key itself (only when the plugin is called without xapi).
    Inline(DhchapKey),
}

/// The SR's DH-HMAC-CHAP keys, as device-config names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySources {
    /// The host key (`dhchap_password`).
    pub host_key: Option<KeySource>,
    /// The controller key (`dhchap_ctrl_password`).
    pub ctrl_key: Option<KeySource>,
}

/// The suffix xapi gives a `*password` key once it moved it into a secret.
pub const SECRET_SUFFIX: &str = "_secret";

/// device-config keys that carry a DH-HMAC-CHAP key inline.
pub const INLINE_KEYS: [&str; 2] = ["dhchap_password", "dhchap_ctrl_password"];

/// `configuration` without inline DH-HMAC-CHAP keys: what nvmetcp may echo
/// in a reply (stdout lands in xapi's logs and records) or keep in a state
/// file. Through xapi the keys arrive as secrets (`…_secret`), which stay.
#[must_use]
pub fn without_inline_keys(configuration: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    configuration
        .iter()
        .filter(|(k, _)| !INLINE_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What every purpose's device-config shares: how to reach the subsystem
/// and connect its paths. Each purpose's config ([`ProbeConfig`],
/// [`CreateConfig`], [`AttachConfig`]) adds what that call needs, with the
/// keys it requires typed as present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrConfig {
    /// TCP or RDMA.
    pub transport: Transport,
    /// Discovery endpoints.
    pub discovery: Vec<Portal>,
    /// I/O portals used as given.
    pub portals: Vec<Portal>,
    /// Whether create may take a namespace holding data.
    pub force: bool,
    /// Reconnect tuning.
    pub timers: Timers,
    /// Multipath I/O policy.
    pub iopolicy: IoPolicy,
    /// DH-HMAC-CHAP keys from device-config.
    pub keys: KeySources,
}

/// `SR.probe`'s device-config: endpoints, and the subsystem if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// How to reach the subsystems.
    pub endpoints: SrConfig,
    /// The subsystem to look into; without it probe lists every subsystem.
    pub nqn: Option<Nqn>,
}

/// `SR.create`'s device-config: the subsystem and the namespace to put the
/// SR on (by identity or, at create time only, by NSID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateConfig {
    /// How to reach the subsystem.
    pub endpoints: SrConfig,
    /// The subsystem.
    pub nqn: Nqn,
    /// The namespace.
    pub namespace: NamespaceRef,
}

/// `SR.attach`'s device-config, as `SR.create` stored it: the namespace by
/// its stable identity and the SR's uuid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachConfig {
    /// How to reach the subsystem.
    pub endpoints: SrConfig,
    /// The subsystem.
    pub nqn: Nqn,
    /// The namespace's stable identity.
    pub namespace: NamespaceIdentity,
    /// The xapi SR uuid.
    pub sr_uuid: SrUuid,
}

/// The keys that name what a call is about, as given (each purpose decides
/// which it requires).
#[derive(Debug)]
struct Named {
    nqn: Option<Nqn>,
    namespace: Option<NamespaceRef>,
    sr_uuid: Option<SrUuid>,
}

impl ProbeConfig {
    /// Validates `config` for `SR.probe`.
    ///
    /// # Errors
    /// The first [`ConfigError`] found, naming the key.
    pub fn parse(config: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let (endpoints, named) = SrConfig::parse(config, Purpose::Probe)?;
        Ok(Self { endpoints, nqn: named.nqn })
    }
}

impl CreateConfig {
    /// Validates `config` for `SR.create`.
    ///
    /// # Errors
    /// The first [`ConfigError`] found, naming the key.
    pub fn parse(config: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let (endpoints, named) = SrConfig::parse(config, Purpose::Create)?;
        Ok(Self { endpoints, nqn: required_nqn(named.nqn)?, namespace: required_namespace(named.namespace)? })
    }
}

impl AttachConfig {
    /// Validates `config` for `SR.attach`.
    ///
    /// # Errors
    /// The first [`ConfigError`] found, naming the key.
    pub fn parse(config: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let (endpoints, named) = SrConfig::parse(config, Purpose::Attach)?;
        let nqn = required_nqn(named.nqn)?;
        let namespace = match required_namespace(named.namespace)? {
            NamespaceRef::Identity(identity) => identity,
            // parse_namespace refuses an NSID for attach.
            NamespaceRef::Nsid(_) => return Err(ConfigError::Missing { key: "namespace", why: NAMESPACE_WHY }),
        };
        let sr_uuid = named.sr_uuid.ok_or(ConfigError::Missing {
            key: "sr_uuid",
            why: "this device-config was not returned by SR.create; create the SR with xe sr-create",
        })?;
        Ok(Self { endpoints, nqn, namespace, sr_uuid })
    }
}

const NAMESPACE_WHY: &str =
    "name the namespace by its UUID, NGUID or EUI-64 as SR.probe reports it (or by NSID at create)";

fn required_nqn(nqn: Option<Nqn>) -> Result<Nqn, ConfigError> {
    nqn.ok_or(ConfigError::Missing { key: "nqn", why: "name the subsystem (SR.probe lists them)" })
}

fn required_namespace(namespace: Option<NamespaceRef>) -> Result<NamespaceRef, ConfigError> {
    namespace.ok_or(ConfigError::Missing { key: "namespace", why: NAMESPACE_WHY })
}

impl SrConfig {
    /// Validates `config` for `purpose`.
    ///
    /// # Errors
    /// The first [`ConfigError`] found, naming the key.
    fn parse(config: &BTreeMap<String, String>, purpose: Purpose) -> Result<(Self, Named), ConfigError> {
        for key in config.keys() {
            let base = key.strip_suffix(SECRET_SUFFIX).filter(|b| b.ends_with("password")).unwrap_or(key);
            if key != SR_UUID_KEY && !KEYS.iter().any(|k| k.name == base) {
                return Err(unknown(key));
            }
        }
        let get = |key: &str| config.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let transport = match get("transport") {
            None => Transport::Tcp,
            Some(v) => v.parse().map_err(|_| invalid("transport", v, "use tcp or rdma"))?,
        };
        let discovery = portal_list(get("discovery"), "discovery", Portal::DISCOVERY_PORT)?;
        let portals = portal_list(get("portals"), "portals", Portal::IO_PORT)?;
        if discovery.is_empty() && portals.is_empty() {
            return Err(ConfigError::Missing {
                key: "portals",
                why: "give discovery=<address[:port],…> (discovery controllers) or portals=<address[:port],…> (I/O \
                      ports), or both",
            });
        }
        if transport == Transport::Rdma && !discovery.is_empty() && portals.is_empty() {
            return Err(invalid(
                "discovery",
                get("discovery").unwrap_or_default(),
                "discovery is over TCP only; with transport=rdma list the I/O ports in portals=",
            ));
        }
        let nqn = get("nqn").map(|v| v.parse::<Nqn>().map_err(|e| invalid("nqn", v, &e.why))).transpose()?;
        if purpose != Purpose::Probe {
            required_nqn(nqn.clone())?;
        }
        let namespace = get("namespace").map(|v| parse_namespace(v, purpose)).transpose()?;
        if purpose != Purpose::Probe {
            required_namespace(namespace.clone())?;
        }
        let force = match get("force") {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => return Err(invalid("force", v, "use true or false")),
        };
        let mut timers = Timers::default();
        for name in Timers::NAMES {
            if let Some(value) = get(name) {
                timers.set(name, value).map_err(|e| invalid(key_name(name), value, &e.why))?;
            }
        }
        let iopolicy = match get("iopolicy") {
            None => IoPolicy::RoundRobin,
            Some(v) => v.parse().map_err(|e: crate::nvme::names::InvalidValue| invalid("iopolicy", v, &e.why))?,
        };
        let sr_uuid = match get(SR_UUID_KEY) {
            None => None,
            Some(v) => Some(
                v.parse::<SrUuid>()
                    .map_err(|e| invalid("sr_uuid", v, &format!("it must be {}, as SR.create stored it", e.what)))?,
            ),
        };
        let keys = KeySources {
            host_key: key_source(config, "dhchap_password")?,
            ctrl_key: key_source(config, "dhchap_ctrl_password")?,
        };
        if keys.ctrl_key.is_some() && keys.host_key.is_none() {
            return Err(ConfigError::Missing {
                key: "dhchap_password",
                why: "bidirectional authentication (dhchap_ctrl_password) also needs the host key",
            });
        }
        let named = Named { nqn, namespace, sr_uuid };
        Ok((Self { transport, discovery, portals, force, timers, iopolicy, keys }, named))
    }
}

/// A DH-HMAC-CHAP key given as `name` (inline) or `name_secret` (a secret
/// UUID, as xapi stores it).
fn key_source(config: &BTreeMap<String, String>, name: &'static str) -> Result<Option<KeySource>, ConfigError> {
    let secret_key = format!("{name}{SECRET_SUFFIX}");
    if let Some(uuid) = config.get(&secret_key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        let valid = uuid.len() == 36 && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !valid {
            return Err(ConfigError::Invalid {
                key: name,
                value: uuid.to_owned(),
                why: format!("{secret_key} must be the UUID of the XAPI secret that holds the key"),
            });
        }
        return Ok(Some(KeySource::Secret(uuid.to_owned())));
    }
    config
        .get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse().map(KeySource::Inline).map_err(|e: crate::nvme::names::InvalidValue| ConfigError::Invalid {
                key: name,
                value: "<redacted>".into(),
                why: e.why,
            })
        })
        .transpose()
}

/// The `&'static str` spelling of a known key.
fn key_name(name: &str) -> &'static str {
    KEYS.iter().find(|k| k.name == name).map_or("setting", |k| k.name)
}

fn invalid(key: &'static str, value: &str, why: &str) -> ConfigError {
    ConfigError::Invalid { key, value: value.to_owned(), why: why.to_owned() }
}

fn unknown(key: &str) -> ConfigError {
    let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    let closest = known.iter().map(|k| (distance(key, k), *k)).min().filter(|(d, _)| *d <= 2);
    ConfigError::UnknownKey {
        key: key.to_owned(),
        suggestion: closest.map(|(_, k)| format!(" (did you mean {k}?)")).unwrap_or_default(),
        known: known.join(", "),
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb)).min(row[j] + 1).min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

fn portal_list(value: Option<&str>, key: &'static str, default_port: u16) -> Result<Vec<Portal>, ConfigError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    crate::nvme::names::portal_list(value, default_port).map_err(|e| invalid(key, &e.value, &e.why))
}

fn parse_namespace(value: &str, purpose: Purpose) -> Result<NamespaceRef, ConfigError> {
    if value.bytes().all(|b| b.is_ascii_digit()) && value.len() <= 10 {
        let nsid: u32 = value
            .parse()
            .ok()
            .filter(|n| *n > 0 && *n != u32::MAX)
            .ok_or_else(|| invalid("namespace", value, "an NSID is a number from 1 to 4294967294"))?;
        return match purpose {
            Purpose::Attach => Err(invalid(
                "namespace",
                value,
                "attach needs the namespace's stable identifier (UUID, NGUID or EUI-64) that SR.create stored, not an \
                 NSID, which the target may reassign",
            )),
            Purpose::Probe | Purpose::Create => Ok(NamespaceRef::Nsid(nsid)),
        };
    }
    NamespaceIdentity::parse(value).map(NamespaceRef::Identity).ok_or_else(|| {
        invalid(
            "namespace",
            value,
            "use the namespace's UUID (8-4-4-4-12 hex), NGUID (32 hex) or EUI-64 (16 hex) as SR.probe reports it, or \
             at create time its NSID",
        )
    })
}

#[cfg(test)]
mod inline_key_tests {
    #[test]
    fn inline_keys_never_leave_in_replies_or_state() {
        let given: std::collections::BTreeMap<String, String> = [
            ("nqn", "nqn.x"),
            ("dhchap_password", "DHHC-1:00:secret:"),
            ("dhchap_ctrl_password", "DHHC-1:00:other:"),
            ("dhchap_password_secret", "11111111-2222-3333-4444-555555555555"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let kept = super::without_inline_keys(&given);
        assert_eq!(kept.keys().map(String::as_str).collect::<Vec<_>>(), ["dhchap_password_secret", "nqn"]);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{
        AttachConfig, ConfigError, CreateConfig, KeySource, KeySources, NamespaceRef, ProbeConfig, Purpose, SrConfig,
    };
    use crate::nvme::health::IoPolicy;
    use crate::nvme::names::Transport;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const NQN: &str = "nqn.2024-01.io.example:array";
    const UUID: &str = "8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc";

    #[test]
    fn a_full_configuration_parses_with_defaults() {
        let (parsed, named) = SrConfig::parse(
            &config(&[("discovery", "10.0.0.1, [fd00::1]:4420"), ("nqn", NQN), ("namespace", UUID)]),
            Purpose::Attach,
        )
        .unwrap();
        assert_eq!(parsed.transport, Transport::Tcp);
        assert_eq!(
            parsed.discovery.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.1:8009", "[fd00::1]:4420"]
        );
        assert!(parsed.portals.is_empty());
        assert!(matches!(named.namespace, Some(NamespaceRef::Identity(_))));
        assert_eq!((parsed.force, parsed.iopolicy, parsed.timers.ctrl_loss_tmo), (false, IoPolicy::RoundRobin, -1));
        let (tuned, tuned_named) = SrConfig::parse(
            &config(&[
                ("portals", "10.0.0.1,10.0.0.2:4421,10.0.0.1"),
                ("nqn", NQN),
                ("namespace", "1"),
                ("transport", "rdma"),
                ("keep_alive_tmo", "10"),
                ("iopolicy", "queue-depth"),
                ("force", "true"),
            ]),
            Purpose::Create,
        )
        .unwrap();
        assert_eq!(tuned.portals.len(), 2, "duplicates dropped");
        assert_eq!(
            (tuned_named.namespace, tuned.force, tuned.timers.keep_alive_tmo),
            (Some(NamespaceRef::Nsid(1)), true, 10)
        );
    }

    #[test]
    fn every_error_names_the_key() {
        let base = [("portals", "10.0.0.1"), ("nqn", NQN), ("namespace", UUID)];
        let with = |key: &str, value: &str| {
            let mut c = config(&base);
            c.insert(key.to_owned(), value.to_owned());
            SrConfig::parse(&c, Purpose::Attach).unwrap_err().to_string()
        };
        assert!(with("transport", "fc").starts_with("device-config:transport=\"fc\" is not valid: use tcp or rdma"));
        assert!(with("portals", "10.0.0.1,,10.0.0.300").contains("device-config:portals=\"10.0.0.300\""));
        assert!(with("nqn", "iqn.2001-04.com.example").contains("device-config:nqn="));
        assert!(with("namespace", "1").contains("attach needs the namespace's stable identifier"));
        assert!(with("namespace", "xyz").contains("device-config:namespace=\"xyz\""));
        assert!(with("force", "yes").contains("device-config:force=\"yes\" is not valid: use true or false"));
        assert!(with("keep_alive_tmo", "0").contains("device-config:keep_alive_tmo=\"0\""));
        assert!(with("iopolicy", "fastest").contains("device-config:iopolicy"));
        let typo = with("portal", "10.0.0.2");
        assert!(typo.starts_with("device-config:portal is not an nvmetcp setting (did you mean portals?)"), "{typo}");
        let secret = with("dhchap_password_secret", "not-a-uuid");
        assert!(secret.contains("dhchap_password_secret must be the UUID of the XAPI secret"), "{secret}");
        let inline = with("dhchap_password", "DHHC-1:00:short:");
        assert!(inline.starts_with("device-config:dhchap_password=\"<redacted>\""), "{inline}");
        let one_way = with("dhchap_ctrl_password_secret", "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11");
        assert!(one_way.contains("device-config:dhchap_password is required"), "{one_way}");
    }

    #[test]
    fn dhchap_keys_come_as_secret_uuids_or_inline() {
        const KEY: &str = "DHHC-1:00:ia6zGodOr5SEG2U6ZlzCNX3CoGKlUcO+aHF2Ypw6lSGGKBUq:";
        const SECRET: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
        let base = [("portals", "10.0.0.1"), ("nqn", NQN), ("namespace", UUID)];
        let mut c = config(&base);
        c.insert("dhchap_password_secret".into(), SECRET.into());
        c.insert("dhchap_ctrl_password".into(), KEY.into());
        let (parsed, _) = SrConfig::parse(&c, Purpose::Attach).unwrap();
        assert_eq!(parsed.keys.host_key, Some(KeySource::Secret(SECRET.into())));
        assert_eq!(parsed.keys.ctrl_key, Some(KeySource::Inline(KEY.parse().unwrap())));
        assert_eq!(SrConfig::parse(&config(&base), Purpose::Attach).unwrap().0.keys, KeySources::default());
    }

    #[test]
    fn required_keys_depend_on_the_call() {
        let err = SrConfig::parse(&config(&[("nqn", NQN)]), Purpose::Probe).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { key: "portals", .. }));
        assert!(
            SrConfig::parse(&config(&[("discovery", "10.0.0.1")]), Purpose::Probe).is_ok(),
            "probe lists subsystems"
        );
        let err = SrConfig::parse(&config(&[("discovery", "10.0.0.1")]), Purpose::Create).unwrap_err();
        assert_eq!(err.to_string(), "device-config:nqn is required: name the subsystem (SR.probe lists them)");
        let err = SrConfig::parse(&config(&[("discovery", "10.0.0.1"), ("nqn", NQN)]), Purpose::Attach).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { key: "namespace", .. }));
        let err =
            SrConfig::parse(&config(&[("discovery", "10.0.0.1"), ("transport", "rdma")]), Purpose::Probe).unwrap_err();
        assert!(err.to_string().contains("discovery is over TCP only"));
        let stored = config(&[("portals", "10.0.0.1"), ("nqn", NQN), ("namespace", UUID), ("sr_uuid", UUID)]);
        assert_eq!(AttachConfig::parse(&stored).unwrap().sr_uuid.as_str(), UUID);
        let not_stored = config(&[("portals", "10.0.0.1"), ("nqn", NQN), ("namespace", UUID)]);
        let err = AttachConfig::parse(&not_stored).unwrap_err().to_string();
        assert!(err.contains("device-config:sr_uuid") && err.contains("not returned by SR.create"), "{err}");
        let by_nsid =
            CreateConfig::parse(&config(&[("portals", "10.0.0.1"), ("nqn", NQN), ("namespace", "3")])).unwrap();
        assert_eq!((by_nsid.nqn.as_str(), by_nsid.namespace), (NQN, NamespaceRef::Nsid(3)));
        assert_eq!(ProbeConfig::parse(&config(&[("portals", "10.0.0.1")])).unwrap().nqn, None);
        let bad = config(&[("portals", "10.0.0.1"), ("nqn", NQN), ("namespace", UUID), ("sr_uuid", "3f1c")]);
        assert!(SrConfig::parse(&bad, Purpose::Attach).is_err(), "sr_uuid follows the one UUID rule");
    }
}
