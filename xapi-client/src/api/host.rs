//! `host`: the pool's members, their addresses, and XAPI host plugins.

use std::collections::BTreeMap;

use crate::api::{all_records, HostMetricsRef, HostRef};
use crate::client::Session;
use crate::error::Result;
use crate::value::{Fields, TypeError, Value};

/// The fields of a host record nvmetcp reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name_label: String,
    /// Management address.
    pub address: String,
    /// Host name.
    pub hostname: String,
    /// Whether the host accepts new VMs.
    pub enabled: bool,
    /// Its metrics object (`live` tells whether it is up).
    pub metrics: HostMetricsRef,
    /// Versions (`product_version`, `xapi`, …).
    pub software_version: BTreeMap<String, String>,
}

impl Host {
    fn decode(value: &Value) -> std::result::Result<Self, TypeError> {
        let f = Fields::of(value, "host")?;
        Ok(Self {
            uuid: f.string("uuid")?,
            name_label: f.string("name_label")?,
            address: f.string("address")?,
            hostname: f.string_or_empty("hostname")?,
            enabled: f.bool("enabled")?,
            metrics: HostMetricsRef(f.string("metrics")?),
            software_version: f.string_map("software_version")?,
        })
    }
}

/// `host.get_all_records`, sorted by ref.
///
/// # Errors
/// [`crate::Error`].
pub fn get_all_records(session: &Session) -> Result<Vec<(HostRef, Host)>> {
    session.call_as("host.get_all_records", vec![], |v| all_records(v, "host", HostRef, Host::decode))
}

/// `host_metrics.get_live`: whether the host is up.
///
/// # Errors
/// [`crate::Error`].
pub fn is_live(session: &Session, metrics: &HostMetricsRef) -> Result<bool> {
    session.call_as("host_metrics.get_live", vec![metrics.into()], |v| v.as_bool("host_metrics.live"))
}

/// `host.call_plugin`: runs `/etc/xapi.d/plugins/<plugin>` function `function`
/// on `host` and returns the string it printed.
///
/// # Errors
/// [`crate::Error`]; `XENAPI_MISSING_PLUGIN` when the plugin is not installed
/// there, `XENAPI_PLUGIN_FAILURE` when it failed.
pub fn call_plugin(
    session: &Session,
    host: &HostRef,
    plugin: &str,
    function: &str,
    args: &BTreeMap<String, String>,
) -> Result<String> {
    session.call_as(
        "host.call_plugin",
        vec![host.into(), Value::from(plugin), Value::from(function), Value::map(args)],
        |v| v.as_str("host.call_plugin result").map(str::to_owned),
    )
}

/// `host.get_by_uuid`.
///
/// # Errors
/// [`crate::Error`]; `UUID_INVALID` when there is none.
pub fn get_by_uuid(session: &Session, uuid: &str) -> Result<HostRef> {
    session.call_as("host.get_by_uuid", vec![Value::from(uuid)], |v| HostRef::decode(v, "host ref"))
}

/// `host.get_name_label`.
///
/// # Errors
/// [`crate::Error`].
pub fn get_name_label(session: &Session, host: &HostRef) -> Result<String> {
    session.call_as("host.get_name_label", vec![host.into()], |v| v.as_str("host.name_label").map(str::to_owned))
}
