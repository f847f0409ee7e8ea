//! The daemon's configuration: one root-only file per SR,
//! `/run/nvmetcp/initiator/<sr-uuid>.conf`, written by sm-driver's door at
//! SR.attach. It holds the DH-HMAC-CHAP keys, so they never appear in argv
//! (the daemon's command line carries only the SR's UUID); a file others can
//! read, or owned by another user, is refused.
//!
//! The format is `key = value` lines, `#` comments; `portal` repeats. The
//! keys and their meanings are the kernel's `nvme connect` ones.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crate::config::{
    parse_uuid, AuthKeys, ConfigError, DhchapSecret, HostIdentity, IoPolicy, MultipathConfig, NamespaceIdentity,
    TransportOptions,
};
use crate::identify::StableId;
use crate::nbd::export::ExportConfig;

/// An SR's UUID, the daemon's instance name (checked: it becomes paths).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SrId(String);

impl SrId {
    /// Parses a dashed UUID.
    ///
    /// # Errors
    /// [`ConfigError`] naming `sr`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        parse_uuid("sr", text)?;
        Ok(Self(text.to_ascii_lowercase()))
    }

    /// The UUID text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The NBD backend identifier of this SR's device.
    #[must_use]
    pub fn backend(&self) -> String {
        format!("nvmetcp:{}", self.0)
    }
}

impl std::fmt::Display for SrId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything one daemon needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The SR.
    pub sr: SrId,
    /// The namespace and how to reach it.
    pub multipath: MultipathConfig,
    /// The namespace's stable identity (`namespace = uuid.…|eui.…`): at every
    /// start the daemon finds today's NSID by it, so a renumbered namespace
    /// is followed and a namespace that changed identity is refused.
    pub identity: Option<StableId>,
    /// How it is served to the host.
    pub export: ExportConfig,
}

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Missing or unreadable.
    #[error("cannot read the initiator configuration {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The system's error.
        error: std::io::Error,
    },
    /// Others could read the keys in it.
    #[error("the initiator configuration {path} is readable by others or owned by uid {uid}: it holds keys; it must be mode 0600 and owned by root (SR.attach writes it so)")]
    Exposed {
        /// The file.
        path: String,
        /// Its owner.
        uid: u32,
    },
    /// A line that is not `key = value`, or an unknown key.
    #[error("{path} line {line}: {why}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A value out of range.
    #[error("{path}: {error}")]
    Invalid {
        /// The file.
        path: String,
        /// The field and the fix.
        error: ConfigError,
    },
}

/// Reads and checks the file: mode, owner (`expected_uid`: root in dom0),
/// then every key.
///
/// # Errors
/// [`ConfigFileError`] naming the file, the line or the field.
pub fn load(path: &Path, expected_uid: u32) -> Result<DaemonConfig, ConfigFileError> {
    let shown = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|error| ConfigFileError::Read { path: shown.clone(), error })?;
    if metadata.mode() & 0o077 != 0 || metadata.uid() != expected_uid {
        return Err(ConfigFileError::Exposed { path: shown, uid: metadata.uid() });
    }
    let text = std::fs::read_to_string(path).map_err(|error| ConfigFileError::Read { path: shown.clone(), error })?;
    parse(&shown, &text)
}

fn seconds(field: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| ConfigError { field, why: format!("{value:?} is not a whole number of seconds") })
}

/// `-1` (never) or seconds.
fn optional_seconds(field: &'static str, value: &str) -> Result<Option<Duration>, ConfigError> {
    if value == "-1" {
        Ok(None)
    } else {
        seconds(field, value).map(Some)
    }
}

fn number<T: std::str::FromStr>(field: &'static str, value: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| ConfigError { field, why: format!("{value:?} is not a number in range") })
}

fn flag(field: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "0" | "false" | "no" => Ok(false),
        "1" | "true" | "yes" => Ok(true),
        other => Err(ConfigError { field, why: format!("{other:?}: expected 0 or 1") }),
    }
}

fn missing(field: &'static str) -> ConfigError {
    ConfigError { field, why: "missing".into() }
}

/// Parses the text of a configuration file.
///
/// # Errors
/// [`ConfigFileError`] naming the line or the field.
pub fn parse(path: &str, text: &str) -> Result<DaemonConfig, ConfigFileError> {
    let invalid = |error: ConfigError| ConfigFileError::Invalid { path: path.to_owned(), error };
    let mut sr = None;
    let mut nqn = None;
    let mut nsid = None;
    let mut ns_uuid = None;
    let mut identity = None;
    let mut portals: Vec<SocketAddr> = Vec::new();
    let mut host_nqn = None;
    let mut host_id = None;
    let mut host_key = None;
    let mut ctrl_key = None;
    let mut iopolicy = IoPolicy::default();
    let mut transport = TransportOptions::default();
    let mut connections = None;
    let mut io_timeout = None;
    let mut dead_conn_timeout = None;
    let mut memory_mib = None;
    for (number_, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |why: String| ConfigFileError::Syntax { path: path.to_owned(), line: number_ + 1, why };
        let Some((key, value)) = line.split_once('=') else {
            return Err(syntax("expected key = value".into()));
        };
        let (key, value) = (key.trim(), value.trim());
        let result: Result<(), ConfigError> = (|| {
            match key {
                "sr" => sr = Some(SrId::parse(value)?),
                "subsystem_nqn" => nqn = Some(value.to_owned()),
                "nsid" => nsid = Some(number::<u32>("nsid", value)?),
                "namespace_uuid" => ns_uuid = Some(parse_uuid("namespace_uuid", value)?),
                "namespace" => {
                    identity = Some(StableId::parse(value).ok_or_else(|| ConfigError {
                        field: "namespace",
                        why: format!("{value:?}: expected uuid.<32 hex>, eui.<32 hex> or eui.<16 hex>"),
                    })?);
                }
                "portal" => portals.push(value.parse().map_err(|_| ConfigError {
                    field: "portal",
                    why: format!("{value:?}: expected address:port (IPv6 in brackets)"),
                })?),
                "host_nqn" => host_nqn = Some(value.to_owned()),
                "host_id" => host_id = Some(value.to_owned()),
                "dhchap_secret" => host_key = Some(DhchapSecret::new("dhchap_secret", value)?),
                "dhchap_ctrl_secret" => ctrl_key = Some(DhchapSecret::new("dhchap_ctrl_secret", value)?),
                "iopolicy" => iopolicy = IoPolicy::parse(value)?,
                "keep_alive_tmo" => transport.keep_alive_tmo = seconds("keep_alive_tmo", value)?,
                "reconnect_delay" => transport.reconnect_delay = seconds("reconnect_delay", value)?,
                "ctrl_loss_tmo" => transport.ctrl_loss_tmo = optional_seconds("ctrl_loss_tmo", value)?,
                "fast_io_fail_tmo" => transport.fast_io_fail_tmo = optional_seconds("fast_io_fail_tmo", value)?,
                "nr_io_queues" => transport.nr_io_queues = Some(number("nr_io_queues", value)?),
                "queue_size" => transport.queue_size = number("queue_size", value)?,
                "hdr_digest" => transport.hdr_digest = flag("hdr_digest", value)?,
                "data_digest" => transport.data_digest = flag("data_digest", value)?,
                "nbd_connections" => connections = Some(number::<usize>("nbd_connections", value)?),
                "nbd_io_timeout" => io_timeout = Some(seconds("nbd_io_timeout", value)?.as_secs()),
                "nbd_dead_conn_timeout" => {
                    dead_conn_timeout = Some(seconds("nbd_dead_conn_timeout", value)?.as_secs());
                }
                "memory_limit_mib" => memory_mib = Some(number::<usize>("memory_limit_mib", value)?),
                _ => return Err(ConfigError { field: "key", why: String::new() }),
            }
            Ok(())
        })();
        match result {
            Ok(()) => {}
            Err(ConfigError { field: "key", .. }) => return Err(syntax(format!("unknown key {key:?}"))),
            Err(error) => return Err(invalid(error)),
        }
    }
    let sr = sr.ok_or_else(|| invalid(missing("sr")))?;
    let host = HostIdentity::parse(
        &host_nqn.ok_or_else(|| invalid(missing("host_nqn")))?,
        &host_id.ok_or_else(|| invalid(missing("host_id")))?,
    )
    .map_err(invalid)?;
    let auth = match (host_key, ctrl_key) {
        (Some(host), ctrl) => Some(AuthKeys { host, ctrl }),
        (None, Some(_)) => {
            return Err(invalid(ConfigError {
                field: "dhchap_ctrl_secret",
                why: "a controller key needs a host key (dhchap_secret)".into(),
            }))
        }
        (None, None) => None,
    };
    let multipath = MultipathConfig {
        subsystem_nqn: nqn.ok_or_else(|| invalid(missing("subsystem_nqn")))?,
        namespace: NamespaceIdentity { nsid: nsid.ok_or_else(|| invalid(missing("nsid")))?, uuid: ns_uuid },
        portals,
        host,
        auth,
        iopolicy,
        transport,
    };
    multipath.validate().map_err(invalid)?;
    let mut export = ExportConfig::for_backend(&sr.backend());
    // One connection per I/O queue, and at least two (see nbd::export).
    let queues = multipath.transport.nr_io_queues.map_or_else(default_queues, usize::from);
    export.connections = connections.unwrap_or(queues).max(2);
    if export.connections > 64 {
        return Err(invalid(ConfigError { field: "nbd_connections", why: "at most 64".into() }));
    }
    if let Some(timeout) = io_timeout {
        export.io_timeout_secs = timeout;
    }
    if let Some(timeout) = dead_conn_timeout {
        export.dead_conn_timeout_secs = timeout;
    }
    if let Some(mib) = memory_mib {
        if !(4..=1024).contains(&mib) {
            return Err(invalid(ConfigError { field: "memory_limit_mib", why: "between 4 and 1024".into() }));
        }
        export.memory_limit = mib << 20;
    }
    Ok(DaemonConfig { sr, multipath, identity, export })
}

/// One I/O queue per host CPU, as the kernel initiator does.
fn default_queues() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SR: &str = "0c9b6a43-6f3e-4bd4-9c3e-5e0d0c1a2b3c";

    fn text() -> String {
        format!(
            "# written by SR.attach\nsr = {SR}\nsubsystem_nqn = nqn.2014-08.org.example:array\nnsid = 1\n\
             namespace_uuid = 11111111-2222-3333-4444-555555555555\nportal = 10.0.0.1:4420\nportal = [fd00::2]:4420\n\
             host_nqn = nqn.2014-08.org.nvmexpress:uuid:5e0d0c1a-0000-4000-8000-000000000001\n\
             host_id = 5e0d0c1a-0000-4000-8000-000000000001\niopolicy = round-robin\nctrl_loss_tmo = -1\n\
             fast_io_fail_tmo = 30\nnr_io_queues = 4\ndhchap_secret = DHHC-1:00:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0:\n"
        )
    }

    #[test]
    fn a_complete_file_parses() {
        let config = parse("x.conf", &text()).unwrap();
        assert_eq!(config.sr.as_str(), SR);
        assert_eq!(config.export.backend, format!("nvmetcp:{SR}"));
        assert_eq!(config.export.connections, 4);
        assert_eq!(config.multipath.portals.len(), 2);
        assert_eq!(config.multipath.iopolicy, IoPolicy::RoundRobin);
        assert_eq!(config.multipath.transport.ctrl_loss_tmo, None);
        assert_eq!(config.multipath.transport.fast_io_fail_tmo, Some(Duration::from_secs(30)));
        assert!(config.multipath.auth.is_some());
        // The key never shows in Debug output (logs, errors).
        assert!(!format!("{config:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn bad_lines_and_values_name_where() {
        let error = parse("x.conf", &format!("{}bogus = 1\n", text())).unwrap_err().to_string();
        assert!(error.contains("line 15") && error.contains("unknown key \"bogus\""), "{error}");
        let error = parse("x.conf", &text().replace("nsid = 1", "nsid = zero")).unwrap_err().to_string();
        assert!(error.contains("nsid"), "{error}");
        let error = parse("x.conf", &text().replace("portal = 10.0.0.1:4420\n", "portal = 10.0.0.1\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("portal"), "{error}");
        let error = parse("x.conf", &text().replace(&format!("sr = {SR}\n"), "")).unwrap_err().to_string();
        assert!(error.contains("sr: missing"), "{error}");
        let error = parse("x.conf", "just words\n").unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        let bad_key = text().replace("DHHC-1:00:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0:", "secretpassword");
        let error = parse("x.conf", &bad_key).unwrap_err().to_string();
        assert!(error.contains("dhchap_secret") && !error.contains("secretpassword"), "{error}");
    }

    #[test]
    fn one_connection_becomes_two() {
        let config = parse("x.conf", &format!("{}nbd_connections = 1\n", text())).unwrap();
        assert_eq!(config.export.connections, 2);
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sr.conf");
        std::fs::write(&path, text()).unwrap();
        let uid = std::fs::metadata(&path).unwrap().uid();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load(&path, uid).unwrap_err().to_string();
        assert!(error.contains("mode 0600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        load(&path, uid).unwrap();
        assert!(load(&path, uid + 1).is_err());
    }
}

fn seconds_text(value: Option<Duration>) -> String {
    value.map_or_else(|| "-1".to_owned(), |d| d.as_secs().to_string())
}

fn uuid_text(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The file's text for a configuration (what the door writes; [`parse`]
/// reads it back unchanged). It contains the keys: write it root-only.
#[must_use]
pub fn render(config: &DaemonConfig) -> String {
    let m = &config.multipath;
    let t = &m.transport;
    let mut out = String::from("# Written by nvmetcp SR.attach; read by nvmetcp-initiator@<SR uuid>.service.\n");
    let mut line = |key: &str, value: &str| {
        out.push_str(key);
        out.push_str(" = ");
        out.push_str(value);
        out.push('\n');
    };
    line("sr", config.sr.as_str());
    line("subsystem_nqn", &m.subsystem_nqn);
    line("nsid", &m.namespace.nsid.to_string());
    if let Some(uuid) = &m.namespace.uuid {
        line("namespace_uuid", &uuid_text(uuid));
    }
    if let Some(identity) = &config.identity {
        line("namespace", &identity.to_string());
    }
    for portal in &m.portals {
        line("portal", &portal.to_string());
    }
    line("host_nqn", &m.host.nqn);
    line("host_id", &uuid_text(&m.host.id));
    if let Some(auth) = &m.auth {
        line("dhchap_secret", auth.host.expose());
        if let Some(ctrl) = &auth.ctrl {
            line("dhchap_ctrl_secret", ctrl.expose());
        }
    }
    line(
        "iopolicy",
        match m.iopolicy {
            IoPolicy::Numa => "numa",
            IoPolicy::RoundRobin => "round-robin",
            IoPolicy::QueueDepth => "queue-depth",
        },
    );
    line("keep_alive_tmo", &t.keep_alive_tmo.as_secs().to_string());
    line("reconnect_delay", &t.reconnect_delay.as_secs().to_string());
    line("ctrl_loss_tmo", &seconds_text(t.ctrl_loss_tmo));
    line("fast_io_fail_tmo", &seconds_text(t.fast_io_fail_tmo));
    if let Some(queues) = t.nr_io_queues {
        line("nr_io_queues", &queues.to_string());
    }
    line("queue_size", &t.queue_size.to_string());
    line("hdr_digest", if t.hdr_digest { "1" } else { "0" });
    line("data_digest", if t.data_digest { "1" } else { "0" });
    let e = &config.export;
    line("nbd_connections", &e.connections.to_string());
    line("nbd_io_timeout", &e.io_timeout_secs.to_string());
    line("nbd_dead_conn_timeout", &e.dead_conn_timeout_secs.to_string());
    line("memory_limit_mib", &(e.memory_limit >> 20).to_string());
    out
}

#[cfg(test)]
mod render_tests {
    use super::*;

    #[test]
    fn render_then_parse_gives_the_same_configuration() {
        let text = "sr = 0c9b6a43-6f3e-4bd4-9c3e-5e0d0c1a2b3c\nsubsystem_nqn = nqn.2014-08.org.example:a\nnsid = 7\n\
                    namespace_uuid = 11111111-2222-3333-4444-555555555555\nportal = 10.0.0.1:4420\n\
                    host_nqn = nqn.2014-08.org.nvmexpress:uuid:5e0d0c1a-0000-4000-8000-000000000001\n\
                    host_id = 5e0d0c1a-0000-4000-8000-000000000001\n\
                    dhchap_secret = DHHC-1:00:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0:\n\
                    dhchap_ctrl_secret = DHHC-1:01:b3RoZXJvdGhlcm90aGVyb3RoZXJvdGhlcg==:\nfast_io_fail_tmo = 20\n\
                    namespace = eui.00112233445566778899aabbccddeeff\n";
        let config = parse("a", text).unwrap();
        assert_eq!(config.identity.unwrap().to_string(), "eui.00112233445566778899aabbccddeeff");
        assert!(parse("a", &text.replace("eui.0011", "eui.zz11")).unwrap_err().to_string().contains("namespace"));
        assert_eq!(parse("b", &render(&config)).unwrap(), config);
    }
}
