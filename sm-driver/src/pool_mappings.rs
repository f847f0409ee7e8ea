//! Whether a volume is mapped on another host of the pool.
//!
//! `Volume.destroy` and `Volume.resize` run on the master, and LVM's
//! `lv_active` only describes the host it runs on. A volume still mapped on a
//! member (its VM running there) whose LV is removed gives its extents to the
//! next `Volume.create` while that VM keeps writing into them; one grown
//! under a member's mapping leaves the member on the old size. So before
//! `lvremove` or `lvextend` the master asks every other host of the pool,
//! through XAPI's `host.call_plugin` to the nvmetcp host plugin
//! ([`FUNCTION`]), whether the LV's device-mapper device exists there, and
//! refuses while any host maps it. A host that cannot answer (down, not
//! reachable, without the plugin) makes the answer unknown, which is also a
//! refusal: only an administrator can tell that a host that does not answer
//! runs no VM. A machine that is no XCP-ng host ([`Role::Standalone`]) has
//! no pool to ask.

use std::collections::BTreeMap;
use std::time::Duration;

use xapi_client::api::host;
use xapi_client::{Client, Credentials, Endpoint, Timeouts};

use crate::host::HostRoot;
use crate::pool_role::{role, Role, INVENTORY};
use crate::secrets::XAPI_SOCKET;

/// The host plugin's function answering whether a volume is mapped.
pub const FUNCTION: &str = "volume_mapped";
const PLUGIN: &str = "nvmetcp";
const ORIGINATOR: &str = "nvmetcp-plugin";

/// The device-mapper name LVM gives `vg/lv`: dashes doubled, joined by one.
#[must_use]
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// Whether the kernel has a device-mapper device named `name` (sysfs is the
/// truth: `/dev/mapper` nodes can outlive their device where udev does not
/// run).
#[must_use]
pub fn mapping_active(host: &HostRoot, name: &str) -> bool {
    host.list_dir("/sys/block")
        .unwrap_or_default()
        .iter()
        .filter(|d| d.starts_with("dm-"))
        .any(|d| host.read_trimmed(&format!("/sys/block/{d}/dm/name")).is_ok_and(|n| n == name))
}

/// The device-mapper devices of every LV of `vg` on this host.
#[must_use]
pub fn mappings_of_vg(host: &HostRoot, vg: &str) -> Vec<String> {
    let prefix = format!("{}-", vg.replace('-', "--"));
    let mut names: Vec<String> = host
        .list_dir("/sys/block")
        .unwrap_or_default()
        .iter()
        .filter(|d| d.starts_with("dm-"))
        .filter_map(|d| host.read_trimmed(&format!("/sys/block/{d}/dm/name")).ok())
        .filter(|name| name.strip_prefix(&prefix).is_some_and(|rest| !rest.is_empty() && !rest.starts_with('-')))
        .collect();
    names.sort();
    names
}

/// The host plugin's side: `args` `vg` and `lv`; answers `{"mapped": bool}`.
///
/// # Errors
/// The message naming a missing argument (the host plugin answers it as
/// `NVMETCP_BAD_PLUGIN_CALL`).
pub fn answer(host: &HostRoot, args: &BTreeMap<String, String>) -> Result<String, String> {
    let arg = |name: &str| {
        args.get(name).filter(|v| !v.is_empty()).ok_or_else(|| format!("{FUNCTION} needs the argument {name}"))
    };
    let mapped = mapping_active(host, &dm_name(arg("vg")?, arg("lv")?));
    Ok(serde_json::json!({ "mapped": mapped }).to_string())
}

/// Why the pool could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolCheckError {
    /// XAPI itself could not be reached or asked.
    #[error("cannot ask the pool's hosts whether the volume is mapped there: XAPI answered {0}")]
    Xapi(String),
    /// A host did not answer.
    #[error(
        "host {host} cannot tell whether it maps the volume ({why}); nothing was changed. Bring the host back, or \
         shut it down and remove it from the pool if it is gone for good"
    )]
    NoAnswer {
        /// The host's name.
        host: String,
        /// Why.
        why: String,
    },
}

/// The other hosts of the pool (by name) that map `vg/lv` now; empty on a
/// machine that is no XCP-ng host.
///
/// # Errors
/// [`PoolCheckError`] when XAPI or a host cannot answer.
pub fn hosts_mapping(root: &HostRoot, vg: &str, lv: &str) -> Result<Vec<String>, PoolCheckError> {
    if role(root) == Role::Standalone {
        return Ok(Vec::new());
    }
    let me = this_host_uuid(root);
    let xapi = |e: xapi_client::Error| PoolCheckError::Xapi(crate::error_chain::chain(&e));
    let endpoint = Endpoint::Unix(root.path(XAPI_SOCKET));
    let timeouts = Timeouts { connect: Duration::from_secs(5), call: Duration::from_secs(30) };
    let session = Client::new(endpoint, timeouts).login(&Credentials::local_root(), ORIGINATOR).map_err(xapi)?;
    let args: BTreeMap<String, String> =
        [("vg".to_owned(), vg.to_owned()), ("lv".to_owned(), lv.to_owned())].into_iter().collect();
    let mut mapping = Vec::new();
    for (reference, record) in host::get_all_records(&session).map_err(xapi)? {
        if Some(record.uuid.as_str()) == me.as_deref() {
            continue;
        }
        let name = record.name_label.clone();
        let no_answer = |why: String| PoolCheckError::NoAnswer { host: name.clone(), why };
        if !host::is_live(&session, &record.metrics).map_err(xapi)? {
            return Err(no_answer("XAPI reports it is not live".to_owned()));
        }
        let reply = host::call_plugin(&session, &reference, PLUGIN, FUNCTION, &args)
            .map_err(|e| no_answer(crate::error_chain::chain(&e)))?;
        let mapped = serde_json::from_str::<serde_json::Value>(&reply)
            .ok()
            .and_then(|v| v.get("mapped").and_then(serde_json::Value::as_bool))
            .ok_or_else(|| no_answer(format!("its plugin answered {reply:?}")))?;
        if mapped {
            mapping.push(name);
        }
    }
    Ok(mapping)
}

/// This host's XAPI uuid (`INSTALLATION_UUID` in the inventory).
pub(crate) fn this_host_uuid(host: &HostRoot) -> Option<String> {
    let inventory = host.read_trimmed(INVENTORY).ok()?;
    inventory.lines().find_map(|line| {
        line.strip_prefix("INSTALLATION_UUID=").map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use xapi_emulator::{Backend, Config, Emulator, Failure, HostInfo};

    use super::{answer, hosts_mapping, PoolCheckError};
    use crate::host::HostRoot;
    use crate::xapi_fixture::XapiHost;

    /// Members answer as their plugin would, from a list of who maps what.
    struct Members {
        mapped_on: Vec<String>,
        silent: Vec<String>,
        asked: Mutex<Vec<(String, String)>>,
    }

    impl Backend for Members {
        fn call_plugin(
            &self,
            host: &HostInfo,
            plugin: &str,
            function: &str,
            args: &BTreeMap<String, String>,
        ) -> Result<String, Failure> {
            assert_eq!((plugin, function), ("nvmetcp", "volume_mapped"));
            self.asked.lock().unwrap().push((host.name_label.clone(), args["lv"].clone()));
            if self.silent.contains(&host.name_label) {
                return Err(Failure::new("XENAPI_MISSING_PLUGIN", &["nvmetcp"]));
            }
            Ok(serde_json::json!({ "mapped": self.mapped_on.contains(&host.name_label) }).to_string())
        }
    }

    /// A pool master (`xcp-1`, this host) whose dom0 socket is served by the
    /// emulator.
    fn pool(mapped_on: &[&str], silent: &[&str]) -> XapiHost {
        let config = Config { hosts: vec!["xcp-1".into(), "xcp-2".into(), "xcp-3".into()], ..Config::default() };
        let members = Members {
            mapped_on: mapped_on.iter().map(|s| (*s).to_owned()).collect(),
            silent: silent.iter().map(|s| (*s).to_owned()).collect(),
            asked: Mutex::default(),
        };
        XapiHost::master(Emulator::new(config, members), "xcp-1")
    }

    #[test]
    fn every_other_host_is_asked_and_a_mapping_anywhere_is_reported() {
        assert_eq!(hosts_mapping(&pool(&["xcp-3"], &[]).root, "nvmetcp_x", "vol-1").unwrap(), ["xcp-3"]);
        assert!(hosts_mapping(&pool(&[], &[]).root, "nvmetcp_x", "vol-1").unwrap().is_empty());
    }

    #[test]
    fn a_host_that_cannot_answer_is_a_refusal_naming_it() {
        let pool = pool(&[], &["xcp-2"]);
        let err = hosts_mapping(&pool.root, "nvmetcp_x", "vol-1").unwrap_err();
        assert!(matches!(err, PoolCheckError::NoAnswer { ref host, .. } if host == "xcp-2"), "{err}");
        assert!(err.to_string().contains("nothing was changed"), "{err}");
        // No XAPI at all on an XCP-ng host: refused too.
        let dir = tempfile::tempdir().unwrap();
        let lone = HostRoot::at(dir.path());
        std::fs::create_dir_all(lone.path("/etc/xensource")).unwrap();
        std::fs::write(lone.path("/etc/xensource-inventory"), "INSTALLATION_UUID='x'\n").unwrap();
        std::fs::write(lone.path("/etc/xensource/pool.conf"), "master").unwrap();
        assert!(matches!(hosts_mapping(&lone, "vg", "lv"), Err(PoolCheckError::Xapi(_))));
        // A machine that is no XCP-ng host has no pool.
        let dir = tempfile::tempdir().unwrap();
        assert!(hosts_mapping(&HostRoot::at(dir.path()), "vg", "lv").unwrap().is_empty());
    }

    #[test]
    fn the_plugin_side_reads_device_mapper_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        let args: BTreeMap<String, String> =
            [("vg".to_owned(), "nvmetcp_ab".to_owned()), ("lv".to_owned(), "vol-1-2".to_owned())].into_iter().collect();
        assert_eq!(answer(&host, &args).unwrap(), r#"{"mapped":false}"#);
        std::fs::create_dir_all(host.path("/sys/block/dm-3/dm")).unwrap();
        std::fs::write(host.path("/sys/block/dm-3/dm/name"), "nvmetcp_ab-vol--1--2\n").unwrap();
        assert_eq!(answer(&host, &args).unwrap(), r#"{"mapped":true}"#);
        assert!(answer(&host, &BTreeMap::new()).is_err());
        std::fs::create_dir_all(host.path("/sys/block/dm-4/dm")).unwrap();
        std::fs::write(host.path("/sys/block/dm-4/dm/name"), "nvmetcp_abc-vol--9\n").unwrap();
        assert_eq!(super::mappings_of_vg(&host, "nvmetcp_ab"), ["nvmetcp_ab-vol--1--2"]);
    }
}
