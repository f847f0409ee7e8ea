//! A storage backend that answers `SR.probe` from a file of the plugin's own
//! probe results (its SMAPIv3 JSON) and accepts every other call: a storage
//! array to click through by hand, for clients such as the Xen Orchestra
//! wizard walk, on a machine without an NVMe target.

use std::collections::BTreeMap;
use std::path::Path;

use xapi_client::Value;

use crate::backend::{Backend, Failure, HostInfo};
use crate::plugin_backend::probe_result;

/// Probe results from a file.
pub struct FixtureBackend {
    results: Vec<serde_json::Value>,
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
        Ok(Self { results })
    }
}

impl Backend for FixtureBackend {
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
