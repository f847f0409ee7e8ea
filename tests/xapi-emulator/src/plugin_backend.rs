//! A storage backend that runs the real nvmetcp plugin on this machine, as
//! xapi would through xapi-storage-script and `/etc/xapi.d/plugins`: SR
//! calls through the method links, `host.call_plugin` through the host
//! plugin link. With it the emulator and the plugin together behave like a
//! one-host pool, which is how the demo and the test bed run the admin
//! command against the real kernel target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use smapi_harness::{Caller, Outcome, PluginTree};
use xapi_client::codec::{decode_envelope, parse_response, write_call, MethodResponse};
use xapi_client::Value;

use crate::backend::{Backend, Failure, HostInfo, NewSr, NewVolume, Scan, Volume};

/// The real plugin behind the emulated pool.
pub struct PluginBackend {
    tree: PluginTree,
    host_plugin: PathBuf,
    _plugins_dir: tempfile::TempDir,
}

impl PluginBackend {
    /// Links `binary` as xapi-storage-script and xapi would find it.
    ///
    /// # Errors
    /// When the binary cannot list its links or the links cannot be made.
    pub fn new(binary: &Path) -> Result<Self, String> {
        #[allow(clippy::disallowed_methods)] // asks the binary under test which links it wants
        let listed = std::process::Command::new(binary).arg("--list-links").output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&listed.stdout).into_owned();
        let (mut volume, mut datapath) = (Vec::new(), Vec::new());
        for line in text.lines() {
            match line.split_once(' ') {
                Some((dir, file)) if dir.starts_with("volume/") => volume.push(file.to_owned()),
                Some((_, file)) => datapath.push(file.to_owned()),
                None => {}
            }
        }
        let volume: Vec<&str> = volume.iter().map(String::as_str).collect();
        let datapath: Vec<&str> = datapath.iter().map(String::as_str).collect();
        let tree = PluginTree::new(binary, &volume, &datapath).map_err(|e| e.to_string())?;
        let plugins_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let plugins = plugins_dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).map_err(|e| e.to_string())?;
        let host_plugin = plugins.join("nvmetcp");
        std::os::unix::fs::symlink(binary, &host_plugin).map_err(|e| e.to_string())?;
        Ok(Self { tree, host_plugin, _plugins_dir: plugins_dir })
    }

    /// The volume plugin directory (for calls the emulator does not make).
    #[must_use]
    pub fn volume_dir(&self) -> PathBuf {
        self.tree.volume_dir()
    }

    /// The datapath plugin directory.
    #[must_use]
    pub fn datapath_dir(&self) -> PathBuf {
        self.tree.datapath_dir()
    }

    fn call(&self, method: &str, params: &serde_json::Value) -> Result<serde_json::Value, Failure> {
        let reply = Caller::new()
            .call(&self.tree.volume_dir(), method, params)
            .map_err(|v| Failure::new("SR_BACKEND_FAILURE", &["protocol violation", &v.to_string()]))?;
        match reply.outcome {
            Outcome::Success(value) => Ok(value),
            // xapi raises a SMAPIv3 error record as the API error it names.
            Outcome::Failure { code, params, .. } => Err(Failure { code, params }),
        }
    }
}

fn string_map(value: &serde_json::Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

/// What xapi makes of one SMAPIv3 probe result: a `probe_result` record.
pub(crate) fn probe_result(r: &serde_json::Value) -> Value {
    let mut fields = vec![
        ("configuration", Value::map(&string_map(&r["configuration"]))),
        ("complete", Value::Bool(r["complete"].as_bool().unwrap_or(false))),
        ("extra_info", Value::map(&string_map(&r["extra_info"]))),
    ];
    if let Some(sr) = r.get("sr").filter(|s| s.is_object()) {
        let mut stat = vec![
            ("name_label", Value::from(sr["name"].as_str().unwrap_or_default())),
            ("name_description", Value::from(sr["description"].as_str().unwrap_or_default())),
            ("free_space", Value::Int(sr["free_space"].as_i64().unwrap_or(0))),
            ("total_space", Value::Int(sr["total_space"].as_i64().unwrap_or(0))),
            ("clustered", Value::Bool(false)),
            ("health", Value::from("healthy")),
        ];
        if let Some(uuid) = sr["uuid"].as_str() {
            stat.push(("uuid", Value::from(uuid)));
        }
        fields.push(("sr", Value::record(stat)));
    }
    Value::record(fields)
}

/// What xapi makes of one SMAPIv3 `Volume` record.
fn volume(v: &serde_json::Value) -> Volume {
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    Volume {
        key: text("key"),
        uuid: v["uuid"].as_str().map(str::to_owned),
        name_label: text("name"),
        name_description: text("description"),
        virtual_size: v["virtual_size"].as_i64().unwrap_or(0),
        physical_utilisation: v["physical_utilisation"].as_i64().unwrap_or(0),
        sharable: v["sharable"].as_bool().unwrap_or(false),
        read_only: !v["read_write"].as_bool().unwrap_or(true),
    }
}

fn handle(sr_uuid: &str) -> String {
    format!("nvmetcp://sr/{sr_uuid}")
}

impl Backend for PluginBackend {
    fn sr_create(&self, _master: &HostInfo, sr: &NewSr) -> Result<BTreeMap<String, String>, Failure> {
        let params = serde_json::json!({"dbg": "xapi", "uuid": sr.uuid, "configuration": sr.device_config,
            "name": sr.name_label, "description": sr.name_description});
        self.call("SR.create", &params).map(|v| string_map(&v))
    }

    fn sr_probe(&self, _host: &HostInfo, config: &BTreeMap<String, String>) -> Result<Vec<Value>, Failure> {
        let results = self.call("SR.probe", &serde_json::json!({"dbg": "xapi", "configuration": config}))?;
        Ok(results.as_array().into_iter().flatten().map(probe_result).collect())
    }

    fn pbd_plug(&self, _host: &HostInfo, _sr_uuid: &str, config: &BTreeMap<String, String>) -> Result<(), Failure> {
        self.call("SR.attach", &serde_json::json!({"dbg": "xapi", "configuration": config})).map(drop)
    }

    fn pbd_unplug(&self, _host: &HostInfo, sr_uuid: &str) -> Result<(), Failure> {
        self.call("SR.detach", &serde_json::json!({"dbg": "xapi", "sr": handle(sr_uuid)})).map(drop)
    }

    fn sr_destroy(&self, _host: &HostInfo, sr_uuid: &str, config: &BTreeMap<String, String>) -> Result<(), Failure> {
        // As xapi: attach for the call, then destroy (which leaves it detached).
        self.call("SR.attach", &serde_json::json!({"dbg": "xapi", "configuration": config}))?;
        self.call("SR.destroy", &serde_json::json!({"dbg": "xapi", "sr": handle(sr_uuid)})).map(drop)
    }

    fn sr_scan(&self, _host: &HostInfo, sr_uuid: &str) -> Result<Option<Scan>, Failure> {
        let sr = serde_json::json!({"dbg": "xapi", "sr": handle(sr_uuid)});
        let stat = self.call("SR.stat", &sr)?;
        let listed = self.call("SR.ls", &sr)?;
        Ok(Some(Scan {
            total_space: stat["total_space"].as_i64().unwrap_or(0),
            free_space: stat["free_space"].as_i64().unwrap_or(0),
            volumes: listed.as_array().into_iter().flatten().map(volume).collect(),
        }))
    }

    fn volume_create(&self, _host: &HostInfo, sr_uuid: &str, new: &NewVolume) -> Result<Option<Volume>, Failure> {
        let params = serde_json::json!({"dbg": "xapi", "sr": handle(sr_uuid), "name": new.name_label,
            "description": new.name_description, "size": new.virtual_size, "sharable": new.sharable});
        self.call("Volume.create", &params).map(|v| Some(volume(&v)))
    }

    fn call_plugin(
        &self,
        _host: &HostInfo,
        plugin: &str,
        function: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<String, Failure> {
        if plugin != "nvmetcp" {
            return Err(Failure::new("XENAPI_MISSING_PLUGIN", &[plugin]));
        }
        let request = write_call(function, &[Value::from("OpaqueRef:session"), Value::map(args)]);
        #[allow(clippy::disallowed_methods)] // xapi runs host plugins itself; so does this stand-in
        let output = std::process::Command::new(&self.host_plugin).arg(request).output();
        let failure = |why: String| Failure { code: "XENAPI_PLUGIN_FAILURE".into(), params: vec![why] };
        let output = output.map_err(|e| failure(e.to_string()))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let Ok(MethodResponse::Value(envelope)) = parse_response(&text) else { return Err(failure(text)) };
        match decode_envelope(envelope) {
            Ok(value) => Ok(value.as_str("result").unwrap_or_default().to_owned()),
            Err(Some(f)) => Err(Failure { code: f.code, params: f.params }),
            Err(None) => Err(failure(text)),
        }
    }
}
