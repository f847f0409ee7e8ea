//! The agent as an xcp-rrdd plugin: the protocol-v2 file ([`v2`]) and the
//! registration with xcp-rrdd.
//!
//! A local plugin registers over xcp-rrdd's XML-RPC socket with
//! `Plugin.Local.register {uid, info: Five_Seconds, protocol: V2}`, which
//! answers the seconds until xcp-rrdd's next reading, and writes its readings
//! to the file `Plugin.get_path {uid}` names, `/dev/shm/metrics/<uid>`
//! (`xapi-project/xen-api` `ocaml/xapi-idl/rrd/rrd_interface.ml` for the
//! calls and their parameters, `ocaml/xcp-rrdd/scripts/rrdd/rrdd.py` for how
//! a plugin uses them). Replies carry XAPI's `Status`/`Value` envelope, so
//! `xapi-client` speaks to xcp-rrdd too. Registration is renewed every
//! reading: xcp-rrdd forgets plugins when it restarts.
//!
//! One plugin per attached SR, uid `nvmetcp-sr-<SR uuid>`, because that is
//! what `SR.stat`'s `datasources` can name: xapi-storage-script, after
//! `SR.attach`, registers every `xeno+shm:///<uid>` URI `SR.stat` returns
//! with xcp-rrdd (`Plugin.Local.register uid Five_Seconds V2`) and
//! deregisters it after `SR.detach` (`ocaml/xapi-storage-script/main.ml`,
//! `sr_attach_impl`, `sr_detach_impl`). A plugin per SR makes that
//! lifecycle exact; one shared plugin would be deregistered by the first
//! SR's detach while others are still attached.
//!
//! The file is rewritten in place, never truncated (xcp-rrdd may have it
//! mapped); a reader that catches a half-written file sees a checksum
//! mismatch and waits for the next reading, as the protocol intends.

pub mod v2;

use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Duration;

use xapi_client::{Client, Endpoint, Timeouts, Value};

use crate::host::HostRoot;

/// xcp-rrdd's socket.
pub const RRDD_SOCKET: &str = "/var/lib/xcp/xcp-rrdd";
/// Where local plugins' files live.
pub const METRICS_DIR: &str = "/dev/shm/metrics";
/// The prefix of the plugins' uids (and their files' names).
pub const PLUGIN_PREFIX: &str = "nvmetcp-sr-";
/// How often xcp-rrdd reads local plugins (`Five_Seconds`, its only frequency).
pub const READING_INTERVAL: Duration = Duration::from_secs(5);

/// Why a reading could not be published.
#[derive(Debug, thiserror::Error)]
pub enum RrdError {
    /// The metrics file could not be written.
    #[error("cannot write the RRD plugin file {path}")]
    File {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// xcp-rrdd did not accept the registration.
    #[error("xcp-rrdd did not register plugin {uid}")]
    Register {
        /// The plugin.
        uid: String,
        /// What xcp-rrdd (or the socket) said.
        #[source]
        source: xapi_client::Error,
    },
}

/// The uid of SR `sr_uuid`'s plugin.
#[must_use]
pub fn plugin_uid(sr_uuid: &str) -> String {
    format!("{PLUGIN_PREFIX}{sr_uuid}")
}

/// The URI `SR.stat` returns in `datasources` for SR `sr_uuid`: the scheme
/// xapi-storage-script registers with xcp-rrdd, the path its uid.
#[must_use]
pub fn datasource_uri(sr_uuid: &str) -> String {
    format!("xeno+shm:///{}", plugin_uid(sr_uuid))
}

/// One SR's plugin file and its registration.
#[derive(Debug)]
pub struct RrdPlugin {
    host: HostRoot,
    uid: String,
    file: Option<std::fs::File>,
}

impl RrdPlugin {
    /// The plugin of SR `sr_uuid` on `host` (nothing is opened yet).
    #[must_use]
    pub fn new(host: &HostRoot, sr_uuid: &str) -> Self {
        Self { host: host.clone(), uid: plugin_uid(sr_uuid), file: None }
    }

    /// The file xcp-rrdd reads.
    #[must_use]
    pub fn path(&self) -> String {
        format!("{METRICS_DIR}/{}", self.uid)
    }

    /// Writes one reading.
    ///
    /// # Errors
    /// [`RrdError::File`].
    pub fn write(&mut self, reading: &[u8]) -> Result<(), RrdError> {
        let path = self.path();
        let error = |source| RrdError::File { path: path.clone(), source };
        if self.file.is_none() {
            std::fs::create_dir_all(self.host.path(METRICS_DIR)).map_err(error)?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(self.host.path(&path))
                .map_err(error)?;
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        let written = file.write_all_at(reading, 0).and_then(|()| file.flush());
        if written.is_err() {
            self.file = None;
        }
        written.map_err(error)
    }

    /// Registers with xcp-rrdd (again: it is idempotent) and returns the time
    /// until its next reading.
    ///
    /// # Errors
    /// [`RrdError::Register`] when xcp-rrdd is not there or refuses.
    pub fn register(&self) -> Result<Duration, RrdError> {
        let params = Value::record([
            ("uid", Value::from(self.uid.as_str())),
            ("info", Value::from("Five_Seconds")),
            ("protocol", Value::from("V2")),
        ]);
        let next = self
            .rrdd()
            .call("Plugin.Local.register", &[params])
            .map_err(|source| RrdError::Register { uid: self.uid.clone(), source })?;
        let seconds = next.as_f64("Plugin.Local.register result").unwrap_or(0.0);
        Ok(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO).min(READING_INTERVAL))
    }

    /// The SR is gone from this host: its file is removed and the plugin
    /// deregistered (xapi-storage-script deregisters it after `SR.detach`
    /// too; this covers a registration the agent renewed meanwhile).
    pub fn remove(self) {
        let _ = std::fs::remove_file(self.host.path(&self.path()));
        let params = Value::record([("uid", Value::from(self.uid.as_str()))]);
        if let Err(e) = self.rrdd().call("Plugin.Local.deregister", &[params]) {
            tracing::debug!(uid = %self.uid, error = %e, "xcp-rrdd deregistration");
        }
    }

    fn rrdd(&self) -> Client {
        let endpoint = Endpoint::Unix(self.host.path(RRDD_SOCKET));
        Client::new(endpoint, Timeouts { connect: Duration::from_secs(2), call: Duration::from_secs(5) })
    }
}
