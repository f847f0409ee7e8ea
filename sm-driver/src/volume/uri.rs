//! A volume's names: its key (the LV name `vol-<uuid>`, xapi's VDI location)
//! and its URI `nvmetcp://<sr uuid>/<lv>`, from which the datapath plugin
//! finds the SR's attachment on its host and nothing else.

use crate::error::VolumeError;
use crate::ids::is_uuid;

/// The URI scheme of volumes (the datapath plugin's directory name).
pub const SCHEME: &str = crate::plugin::DATAPATH_SCHEME;

/// The URI of volume `lv` of SR `sr_uuid`.
#[must_use]
pub fn uri(sr_uuid: &str, lv: &str) -> String {
    format!("{SCHEME}://{sr_uuid}/{lv}")
}

/// Whether `name` is an LV name nvmetcp gives volumes.
pub(crate) fn is_volume_name(name: &str) -> bool {
    name.strip_prefix("vol-").is_some_and(is_uuid)
}

/// `(sr uuid, lv name)` of a volume URI.
///
/// # Errors
/// [`VolumeError::BadUri`] for anything else.
pub fn parse_uri(uri: &str) -> Result<(String, String), VolumeError> {
    let bad = || VolumeError::BadUri(uri.to_owned());
    let rest = uri.strip_prefix(SCHEME).and_then(|r| r.strip_prefix("://")).ok_or_else(bad)?;
    let (sr, lv) = rest.split_once('/').ok_or_else(bad)?;
    if is_uuid(sr) && is_volume_name(lv) {
        Ok((sr.to_owned(), lv.to_owned()))
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_uri;

    #[test]
    fn uris_name_the_sr_and_the_volume() {
        let (sr, lv) =
            parse_uri("nvmetcp://3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11/vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11")
                .unwrap();
        assert_eq!(
            (sr.as_str(), lv.as_str()),
            ("3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11", "vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11")
        );
        for bad in [
            "",
            "file:///dev/sda",
            "nvmetcp://x/../../etc",
            "nvmetcp://3f1c/vol-",
            "nvmetcp://3f1c/other",
            "nvmetcp:/3f1c/vol-1",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }
}
