//! What storage does on each host, decided by the test.

use std::collections::BTreeMap;

use xapi_client::Value;

/// An XAPI error: a code and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The code.
    pub code: String,
    /// The parameters.
    pub params: Vec<String>,
}

impl Failure {
    /// A failure with `code` and `params`.
    #[must_use]
    pub fn new(code: &str, params: &[&str]) -> Self {
        Self { code: code.to_owned(), params: params.iter().map(|p| (*p).to_owned()).collect() }
    }
}

/// A host of the emulated pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name_label: String,
    /// Management address.
    pub address: String,
}

/// What `SR.create` passes to the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSr {
    /// The SR's UUID.
    pub uuid: String,
    /// Its name.
    pub name_label: String,
    /// Its description.
    pub name_description: String,
    /// device-config (secrets already moved).
    pub device_config: BTreeMap<String, String>,
}

/// One volume as `SR.scan` and `VDI.create` report it (the plugin's
/// `Volume` record, as xapi turns it into a VDI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The key: the VDI's `location`.
    pub key: String,
    /// The UUID the plugin gives, which xapi uses as the VDI's.
    pub uuid: Option<String>,
    /// Name.
    pub name_label: String,
    /// Description.
    pub name_description: String,
    /// Size seen by the VM, in bytes.
    pub virtual_size: i64,
    /// Space used, in bytes.
    pub physical_utilisation: i64,
    /// Whether several hosts may attach it at once.
    pub sharable: bool,
    /// Whether it is read-only.
    pub read_only: bool,
}

/// What `SR.scan` learns from the plugin (`SR.stat` and `SR.ls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Total bytes.
    pub total_space: i64,
    /// Free bytes.
    pub free_space: i64,
    /// Every volume of the SR.
    pub volumes: Vec<Volume>,
}

/// What `VDI.create` asks the plugin for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVolume {
    /// Name.
    pub name_label: String,
    /// Description.
    pub name_description: String,
    /// Size in bytes.
    pub virtual_size: i64,
    /// Whether several hosts may attach it at once.
    pub sharable: bool,
}

/// The storage side of the emulated pool. Every method has the behaviour of
/// a plugin that accepts everything.
pub trait Backend: Send + Sync {
    /// The plugin's `SR.create` on the master: returns the device-config to
    /// store in every PBD.
    ///
    /// # Errors
    /// The plugin's failure.
    fn sr_create(&self, _master: &HostInfo, sr: &NewSr) -> Result<BTreeMap<String, String>, Failure> {
        Ok(sr.device_config.clone())
    }

    /// The plugin's `SR.probe` on `host`: `probe_result` records.
    ///
    /// # Errors
    /// The plugin's failure.
    fn sr_probe(&self, _host: &HostInfo, _device_config: &BTreeMap<String, String>) -> Result<Vec<Value>, Failure> {
        Ok(Vec::new())
    }

    /// The plugin's `SR.attach` on `host` (a `PBD.plug`).
    ///
    /// # Errors
    /// The plugin's failure.
    fn pbd_plug(
        &self,
        _host: &HostInfo,
        _sr_uuid: &str,
        _device_config: &BTreeMap<String, String>,
    ) -> Result<(), Failure> {
        Ok(())
    }

    /// The plugin's `SR.detach` on `host` (a `PBD.unplug`).
    ///
    /// # Errors
    /// The plugin's failure.
    fn pbd_unplug(&self, _host: &HostInfo, _sr_uuid: &str) -> Result<(), Failure> {
        Ok(())
    }

    /// The plugin's `SR.destroy`, which xapi runs with the SR attached on
    /// one host for the call (`device_config` is that host's PBD's).
    ///
    /// # Errors
    /// The plugin's failure.
    fn sr_destroy(
        &self,
        _host: &HostInfo,
        _sr_uuid: &str,
        _device_config: &BTreeMap<String, String>,
    ) -> Result<(), Failure> {
        Ok(())
    }

    /// The plugin's `SR.stat` and `SR.ls` on `host` (an `SR.scan`), or
    /// `None` when this backend keeps no volumes (the records stay as they are).
    ///
    /// # Errors
    /// The plugin's failure.
    fn sr_scan(&self, _host: &HostInfo, _sr_uuid: &str) -> Result<Option<Scan>, Failure> {
        Ok(None)
    }

    /// The plugin's `Volume.create` on `host` (a `VDI.create`), or `None`
    /// when this backend keeps no volumes (the emulator makes up the record).
    ///
    /// # Errors
    /// The plugin's failure.
    fn volume_create(&self, _host: &HostInfo, _sr_uuid: &str, _volume: &NewVolume) -> Result<Option<Volume>, Failure> {
        Ok(None)
    }

    /// `host.call_plugin`: by default no plugin is installed.
    ///
    /// # Errors
    /// `XENAPI_MISSING_PLUGIN`, or the plugin's failure.
    fn call_plugin(
        &self,
        _host: &HostInfo,
        plugin: &str,
        _function: &str,
        _args: &BTreeMap<String, String>,
    ) -> Result<String, Failure> {
        Err(Failure::new("XENAPI_MISSING_PLUGIN", &[plugin]))
    }
}

/// A backend where every storage operation succeeds.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl Backend for AcceptAll {}
