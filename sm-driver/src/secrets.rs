//! DH-HMAC-CHAP keys that xapi keeps as secrets, resolved through XAPI.
//!
//! xapi moves every device-config value whose key ends in `password` into a
//! `secret` object and hands the plugin `<key>_secret=<uuid>`. The plugin
//! reads the value over the dom0 socket (`/var/lib/xcp/xapi`, root without a
//! password; a pool member forwards the call to the master), and only when a
//! connection needs it. A host-local key file wins over the SR's key, so a
//! target that gives each host its own key is configured on the hosts.
//!
//! Values never leave [`DhchapKey`], which does not print; errors name the
//! device-config key and the secret's UUID, never the value.

use std::time::Duration;

use xapi_client::api::secret;
use xapi_client::{Client, Credentials, Endpoint, Session, Timeouts};

use crate::host::HostRoot;
use crate::nvme::names::DhchapKey;
use crate::nvme::options::Authentication;
use crate::sr_config::{KeySource, KeySources};

/// The dom0 XAPI socket, under the host root.
pub const XAPI_SOCKET: &str = xapi_client::transport::DOM0_SOCKET;
/// The originator XAPI accounts the plugin's sessions to.
const ORIGINATOR: &str = "nvmetcp-plugin";

/// A key could not be read from XAPI.
#[derive(Debug, thiserror::Error)]
#[error(
    "device-config:{key} refers to XAPI secret {uuid}, which could not be read: {why}; check that xapi is running \
     and the secret exists (xe secret-list uuid={uuid}), or put this host's key in \
     /etc/nvmetcp/dhchap/<subsystem NQN>.key"
)]
pub struct SecretError {
    /// The device-config key.
    pub key: &'static str,
    /// The secret's UUID.
    pub uuid: String,
    /// Why (an XAPI or transport error, or an invalid key).
    pub why: String,
}

/// A lazily opened XAPI session: at most one login per call, and none when
/// no key needs XAPI.
struct Xapi<'h> {
    host: &'h HostRoot,
    session: Option<Session>,
}

impl Xapi<'_> {
    fn fetch(&mut self, key: &'static str, uuid: &str) -> Result<DhchapKey, SecretError> {
        let fail = |why: String| SecretError { key, uuid: uuid.to_owned(), why };
        let session = match &mut self.session {
            Some(session) => session,
            empty => {
                let endpoint = Endpoint::Unix(self.host.path(XAPI_SOCKET));
                let timeouts = Timeouts { connect: Duration::from_secs(5), call: Duration::from_secs(30) };
                let opened = Client::new(endpoint, timeouts)
                    .login(&Credentials::local_root(), ORIGINATOR)
                    .map_err(|e| fail(crate::error_chain::chain(&e)))?;
                empty.insert(opened)
            }
        };
        let reference = secret::get_by_uuid(session, uuid).map_err(|e| fail(crate::error_chain::chain(&e)))?;
        let value = secret::get_value(session, &reference).map_err(|e| fail(crate::error_chain::chain(&e)))?;
        value.expose().parse().map_err(|e: crate::nvme::names::InvalidValue| {
            fail(format!("the secret is not a DH-HMAC-CHAP key: {}", e.why))
        })
    }

    /// The key from this host's file if any, else from the SR's device-config.
    fn key(
        &mut self,
        local: Option<DhchapKey>,
        name: &'static str,
        source: Option<&KeySource>,
    ) -> Result<Option<DhchapKey>, SecretError> {
        match (local, source) {
            (Some(key), _) => Ok(Some(key)),
            (None, None) => Ok(None),
            (None, Some(KeySource::Inline(value))) => Ok(Some(value.clone())),
            (None, Some(KeySource::Secret(uuid))) => self.fetch(name, uuid).map(Some),
        }
    }
}

/// The keys to connect with: this host's key files where present, otherwise
/// the SR's keys (read from XAPI, in one session, only when needed).
///
/// # Errors
/// [`SecretError`] when a needed secret cannot be read or is not a key.
pub fn authentication(host: &HostRoot, local: Authentication, sr: &KeySources) -> Result<Authentication, SecretError> {
    let mut xapi = Xapi { host, session: None };
    let host_key = xapi.key(local.host_key, "dhchap_password", sr.host_key.as_ref())?;
    let ctrl_key = xapi.key(local.ctrl_key, "dhchap_ctrl_password", sr.ctrl_key.as_ref())?;
    Ok(Authentication { host_key, ctrl_key })
}

#[cfg(test)]
mod tests {
    use xapi_emulator::{AcceptAll, Config, Emulator};

    use super::{authentication, XAPI_SOCKET};
    use crate::host::HostRoot;
    use crate::nvme::options::Authentication;
    use crate::sr_config::{KeySource, KeySources};

    const KEY: &str = "DHHC-1:00:ia6zGodOr5SEG2U6ZlzCNX3CoGKlUcO+aHF2Ypw6lSGGKBUq:";
    const OTHER: &str = "DHHC-1:00:fgPcS6ypNk6DdXfmYO2CWQG4eUdRtNp7z1qkq7q2V9H7xyK4:";

    /// A host root whose dom0 socket is served by the emulator, holding the
    /// SR secrets xapi would have made from `dhchap_password`.
    fn host_with_xapi(secrets: &[&str]) -> (tempfile::TempDir, HostRoot, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        std::fs::create_dir_all(host.path("/var/lib/xcp")).unwrap();
        let emulator = Emulator::new(Config::default(), AcceptAll);
        emulator.listen_unix(&host.path(XAPI_SOCKET)).unwrap();
        let url = emulator.listen_http().unwrap();
        let endpoint = xapi_client::Endpoint::parse(&url, xapi_client::TlsVerify::SystemRoots).unwrap();
        let admin = xapi_client::Client::new(endpoint, xapi_client::Timeouts::default())
            .login(
                &xapi_client::Credentials { user: "root".into(), password: xapi_client::Secret::new("xenroot") },
                "test",
            )
            .unwrap();
        let uuids = secrets
            .iter()
            .map(|value| {
                let created = xapi_client::api::secret::create(&admin, &xapi_client::Secret::new(*value)).unwrap();
                xapi_client::api::secret::get_uuid(&admin, &created).unwrap()
            })
            .collect();
        (dir, host, uuids)
    }

    #[test]
    fn secrets_are_read_from_xapi_over_the_dom0_socket() {
        let (_dir, host, uuids) = host_with_xapi(&[KEY, OTHER]);
        let sr = KeySources {
            host_key: Some(KeySource::Secret(uuids[0].clone())),
            ctrl_key: Some(KeySource::Secret(uuids[1].clone())),
        };
        let auth = authentication(&host, Authentication::default(), &sr).unwrap();
        assert_eq!(auth.host_key.unwrap().expose(), KEY);
        assert_eq!(auth.ctrl_key.unwrap().expose(), OTHER);
    }

    #[test]
    fn host_key_files_win_and_spare_the_xapi_call() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path()); // no XAPI socket at all
        let local = Authentication { host_key: Some(OTHER.parse().unwrap()), ctrl_key: None };
        let sr = KeySources {
            host_key: Some(KeySource::Secret("3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11".into())),
            ctrl_key: None,
        };
        let auth = authentication(&host, local, &sr).unwrap();
        assert_eq!(auth.host_key.unwrap().expose(), OTHER);
    }

    #[test]
    fn failures_name_the_key_and_secret_but_never_the_value() {
        let (_dir, host, uuids) = host_with_xapi(&["not a DHHC key, but secret text"]);
        let missing = "00000000-0000-4000-8000-000000000000";
        let sr = KeySources { host_key: Some(KeySource::Secret(missing.into())), ctrl_key: None };
        let error = authentication(&host, Authentication::default(), &sr).unwrap_err().to_string();
        assert!(error.contains("device-config:dhchap_password") && error.contains(missing), "{error}");
        assert!(error.contains("UUID_INVALID"), "{error}");
        let sr = KeySources { host_key: Some(KeySource::Secret(uuids[0].clone())), ctrl_key: None };
        let error = authentication(&host, Authentication::default(), &sr).unwrap_err().to_string();
        assert!(error.contains("not a DH-HMAC-CHAP key") && !error.contains("secret text"), "{error}");
        let no_xapi = HostRoot::at(tempfile::tempdir().unwrap().path());
        let error = authentication(&no_xapi, Authentication::default(), &sr).unwrap_err().to_string();
        assert!(error.contains("cannot connect to XAPI") && error.contains("xapi is running"), "{error}");
    }
}
