//! A volume's names: its key ([`VolumeKey`], the LV name `vol-<uuid>`,
//! xapi's VDI location) and its URI ([`crate::ids::VolumeUri`],
//! `nvmetcp://<sr uuid>/<key>`), each with its one parser in [`crate::ids`].

use crate::ids::VolumeKey;

/// The URI scheme of volumes (the datapath plugin's directory name).
pub const SCHEME: &str = crate::ids::VOLUME_SCHEME;

/// The URI of volume `key` of SR `sr_uuid`.
#[must_use]
pub fn uri(sr_uuid: &str, key: &str) -> String {
    format!("{SCHEME}://{sr_uuid}/{key}")
}

/// Whether `name` is an LV name nvmetcp gives volumes.
pub(crate) fn is_volume_name(name: &str) -> bool {
    name.parse::<VolumeKey>().is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_scheme_is_the_datapath_plugins() {
        assert_eq!(super::SCHEME, crate::plugin::DATAPATH_SCHEME);
        assert_eq!(super::uri("s", "vol-1"), "nvmetcp://s/vol-1");
    }
}
