//! A storage backend that answers `SR.probe` from a file of the plugin's own
//! probe results (its SMAPIv3 JSON) and accepts every other call: a storage
//! array to click through by hand, for clients such as the Xen Orchestra
//! wizard walk, on a machine without an NVMe target. `SR.scan` reports the
//! size of an SR found in the file, or of the namespace an SR was created on.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use xapi_client::Value;

use crate::backend::{Backend, Failure, HostInfo, NewSr, Scan};
use crate::plugin_backend::probe_result;

/// Probe results from a file.
pub struct FixtureBackend {
    results: Vec<serde_json::Value>,
    /// (total, free) bytes of the SRs created here, by UUID.
    created: Mutex<BTreeMap<String, (i64, i64)>>,
}

impl FixtureBackend {
    /// Reads `path`: a JSON array of `SR.probe` results as the plugin prints
    /// them.
    ///
    /// # Errors
    /// When the file cannot be read or is not such an array.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let results: Vec<serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a JSON array of probe results: {e}", path.display()))?;
        Ok(Self { results, created: Mutex::new(BTreeMap::new()) })
    }
}

impl Backend for FixtureBackend {
    fn sr_create(&self, _master: &HostInfo, sr: &NewSr) -> Result<BTreeMap<String, String>, Failure> {
        let namespace = sr.device_config.get("namespace");
        let size = self
            .results
            .iter()
            .find(|r| namespace.is_some_and(|n| r["configuration"]["namespace"].as_str() == Some(n)))
            .and_then(|r| r["extra_info"]["size"].as_str()?.parse::<i64>().ok())
            .unwrap_or(0);
        self.created.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(sr.uuid.clone(), (size, size));
        Ok(sr.device_config.clone())
    }

    fn sr_scan(&self, _host: &HostInfo, sr_uuid: &str) -> Result<Option<Scan>, Failure> {
        let found = self
            .results
            .iter()
            .find(|r| r["sr"]["uuid"].as_str() == Some(sr_uuid))
            .map(|r| (r["sr"]["total_space"].as_i64().unwrap_or(0), r["sr"]["free_space"].as_i64().unwrap_or(0)));
        let created = self.created.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(sr_uuid).copied();
        Ok(found.or(created).map(|(total_space, free_space)| Scan { total_space, free_space, volumes: Vec::new() }))
    }

    /// With an `nqn`, that subsystem's results as the file has them; without,
    /// every subsystem listed, its namespaces not inspected (`complete`
    /// false, no SR, no `holds`), as the plugin answers a discovery listing.
    fn sr_probe(&self, _host: &HostInfo, config: &BTreeMap<String, String>) -> Result<Vec<Value>, Failure> {
        let wanted = config.get("nqn");
        Ok(self
            .results
            .iter()
            .filter(|r| wanted.is_none_or(|nqn| r["configuration"]["nqn"].as_str() == Some(nqn)))
            .map(|r| {
                if wanted.is_some() {
                    return probe_result(r);
                }
                let mut listed = r.clone();
                listed["complete"] = serde_json::Value::Bool(false);
                if let Some(object) = listed.as_object_mut() {
                    object.remove("sr");
                }
                if let Some(info) = listed["extra_info"].as_object_mut() {
                    info.remove("holds");
                }
                if let Some(configuration) = listed["configuration"].as_object_mut() {
                    configuration.remove("sr_uuid");
                }
                probe_result(&listed)
            })
            .collect())
    }
}
