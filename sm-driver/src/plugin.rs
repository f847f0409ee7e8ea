//! `Plugin.Query` for the two plugins this binary serves.
//!
//! xapi creates the SM record of the SR type from the volume plugin's answer
//! (type = lowercase `plugin`, which must equal the directory suffix), and
//! registers the datapath plugin under its `plugin` name, which must equal its
//! directory name and the scheme of the volume URIs. `features` lists only
//! what works today: xapi also adds features for the method files present, so
//! packaging installs links only for implemented methods.

use crate::device_config;
use crate::smapi::method::{Method, PluginKind};
use crate::smapi::types::QueryResult;

/// The SR type, as typed in `xe sr-create type=`.
pub const SR_TYPE: &str = "nvmetcp";

/// The volume plugin directory name (the message-switch queue xapi binds to).
pub const VOLUME_PLUGIN_DIR: &str = "org.xen.xapi.storage.nvmetcp";

/// The datapath plugin directory name, which is also the URI scheme it serves.
pub const DATAPATH_SCHEME: &str = "nvmetcp";

/// The XAPI host plugin's file name under [`HOST_PLUGINS_DIR`]
/// (`host.call_plugin(host, "nvmetcp", …)`).
pub const HOST_PLUGIN_NAME: &str = "nvmetcp";

/// The directory xapi runs host plugins from (its last component is how the
/// binary knows it was run as the host plugin).
pub const HOST_PLUGINS_DIR: &str = "/etc/xapi.d/plugins";

/// The SMAPI version spoken.
pub const API_VERSION: &str = "5.0";

/// The plugin version, from the workspace.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The capability xapi derives from each method file (xapi-storage-script's
/// table); `features` is computed from the implemented methods through it,
/// so it can never claim a method that does not work.
const FEATURE_OF_METHOD: &[(&str, &str)] = &[
    ("SR.probe", "SR_PROBE"),
    ("SR.create", "SR_CREATE"),
    ("SR.destroy", "SR_DELETE"),
    ("SR.attach", "SR_ATTACH"),
    ("SR.detach", "SR_DETACH"),
    ("SR.ls", "SR_SCAN"),
    ("SR.stat", "SR_UPDATE"),
    ("Volume.create", "VDI_CREATE"),
    ("Volume.destroy", "VDI_DELETE"),
    ("Volume.clone", "VDI_CLONE"),
    ("Volume.snapshot", "VDI_SNAPSHOT"),
    ("Volume.resize", "VDI_RESIZE"),
    ("Volume.stat", "VDI_UPDATE"),
];

/// The features of a plugin that implements `methods`.
#[must_use]
pub fn features(methods: &[&Method]) -> Vec<String> {
    methods
        .iter()
        .filter_map(|m| FEATURE_OF_METHOD.iter().find(|(name, _)| *name == m.call_name()).map(|(_, f)| (*f).to_owned()))
        .collect()
}

/// The answer of `Plugin.Query` for the plugin of `kind`, which implements
/// `methods` (the dispatch table's list).
#[must_use]
pub fn query(kind: PluginKind, methods: &[&Method]) -> QueryResult {
    let (plugin, name, description, configuration) = match kind {
        PluginKind::Volume => (
            SR_TYPE,
            "NVMe over TCP shared SR",
            "Shared LVM storage on an NVMe over Fabrics (TCP or RDMA) subsystem, connected on every host of \
             the pool over all paths with Linux native multipath",
            device_config::KEYS.iter().map(|k| (k.name.to_owned(), k.description.to_owned())).collect(),
        ),
        PluginKind::Datapath => (
            DATAPATH_SCHEME,
            "nvmetcp datapath",
            "Hands nvmetcp volumes (LVs on the multipath NVMe namespace) to VMs: blkback on a plain volume's LV, \
             or a chain of qcow2 layers opened by tapdisk or qemu-storage-daemon (vbd3)",
            Default::default(),
        ),
    };
    QueryResult {
        plugin: plugin.to_owned(),
        name: name.to_owned(),
        description: description.to_owned(),
        vendor: "nvmetcp developers".to_owned(),
        copyright: "Copyright (C) the nvmetcp developers; GPL-2.0-only".to_owned(),
        version: VERSION.to_owned(),
        required_api_version: API_VERSION.to_owned(),
        features: features(methods),
        configuration,
        required_cluster_stack: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{query, DATAPATH_SCHEME, SR_TYPE, VOLUME_PLUGIN_DIR};
    use crate::device_config::KEYS;
    use crate::smapi::method::PluginKind;

    #[test]
    fn plugin_names_match_their_directories() {
        assert_eq!(VOLUME_PLUGIN_DIR.rsplit('.').next(), Some(SR_TYPE));
        assert_eq!(query(PluginKind::Volume, &[]).plugin, SR_TYPE);
        assert_eq!(query(PluginKind::Datapath, &[]).plugin, DATAPATH_SCHEME);
        assert!(!SR_TYPE.contains('.') && SR_TYPE == SR_TYPE.to_ascii_lowercase());
    }

    #[test]
    fn volume_query_documents_every_device_config_key() {
        let result = query(PluginKind::Volume, &[]);
        assert_eq!(result.required_api_version, "5.0");
        assert_eq!(result.configuration.len(), KEYS.len());
        for key in KEYS {
            assert_eq!(result.configuration[key.name], key.description);
        }
        assert!(result.required_cluster_stack.is_empty());
    }
}
