//! The pool as the admin command sees it, and calls to the nvmetcp XAPI host
//! plugin on each host.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use xapi_client::api::host::{self, Host};
use xapi_client::api::{pool, HostRef};
use xapi_client::Session;

use crate::error::AdminError;

/// The hosts, master first.
pub struct PoolView {
    /// The master.
    pub master: HostRef,
    /// Every host, master first, then by name.
    pub hosts: Vec<(HostRef, Host)>,
}

impl PoolView {
    /// Reads the pool.
    ///
    /// # Errors
    /// XAPI failures.
    pub fn read(session: &Session) -> Result<Self, AdminError> {
        let (_, the_pool) = pool::the_pool(session)?;
        let mut hosts = host::get_all_records(session)?;
        hosts.sort_by(|a, b| (a.0 != the_pool.master, &a.1.name_label).cmp(&(b.0 != the_pool.master, &b.1.name_label)));
        Ok(Self { master: the_pool.master, hosts })
    }

    /// A host's name for people.
    #[must_use]
    pub fn name(&self, reference: &HostRef) -> String {
        self.hosts
            .iter()
            .find(|(r, _)| r == reference)
            .map_or_else(|| reference.to_string(), |(_, h)| h.name_label.clone())
    }
}

/// Why a host plugin call failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin is not installed on the host.
    #[error("the nvmetcp RPM is not installed on this host (no XAPI plugin nvmetcp): install it on every host")]
    Missing,
    /// The call failed.
    #[error("{0}")]
    Call(String),
}

/// Calls `function` of the nvmetcp host plugin on `host` and decodes its JSON.
///
/// # Errors
/// [`PluginError`].
pub fn host_plugin<T: DeserializeOwned>(
    session: &Session,
    host: &HostRef,
    function: &str,
    args: &BTreeMap<String, String>,
) -> Result<T, PluginError> {
    match host::call_plugin(session, host, sm_driver::plugin::HOST_PLUGIN_NAME, function, args) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| PluginError::Call(format!("unexpected answer: {e}"))),
        Err(e) if e.xapi().is_some_and(|x| x.code == "XENAPI_MISSING_PLUGIN") => Err(PluginError::Missing),
        Err(e) => Err(PluginError::Call(sm_driver::error_chain::chain(&e))),
    }
}
