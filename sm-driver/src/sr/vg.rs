//! The VG tag scheme: an SR is a VG `nvmetcp_<uuid without dashes>` tagged
//! `nvmetcp_sr` and `nvmetcp.uuid=<uuid>`; its name and description are
//! hex-encoded tags (any UTF-8, at most [`MAX_LABEL_BYTES`] bytes).

use crate::error::CallError;
use crate::ids::{SrUuid, VgName};
use crate::lvm::Vg;

/// The tag every nvmetcp VG carries.
pub const SR_TAG: &str = "nvmetcp_sr";
/// The prefix of the tag holding the SR's uuid.
pub const UUID_TAG: &str = "nvmetcp.uuid=";
/// The prefix of the tag holding the SR's name, hex-encoded.
pub const NAME_TAG: &str = "nvmetcp.name=";
/// The prefix of the tag holding the SR's description, hex-encoded.
pub const DESCRIPTION_TAG: &str = "nvmetcp.desc=";
/// Longest name or description, in bytes (tags hold at most 1024 characters).
pub const MAX_LABEL_BYTES: usize = 500;

/// The tag holding `text` (a name or description) after `prefix`.
///
/// # Errors
/// [`CallError::LabelTooLong`] beyond [`MAX_LABEL_BYTES`].
pub fn label_tag(prefix: &str, what: &'static str, text: &str) -> Result<String, CallError> {
    if text.len() > MAX_LABEL_BYTES {
        return Err(CallError::LabelTooLong { what, bytes: text.len(), limit: MAX_LABEL_BYTES });
    }
    Ok(format!("{prefix}{}", crate::hex::encode(text)))
}

/// The value of the VG's tag with `prefix`.
#[must_use]
pub fn tag_value<'a>(vg: &'a Vg, prefix: &str) -> Option<&'a str> {
    vg.tags.iter().find_map(|t| t.strip_prefix(prefix))
}

/// Whether the VG is an nvmetcp SR.
#[must_use]
pub fn is_sr(vg: &Vg) -> bool {
    vg.tags.iter().any(|t| t == SR_TAG)
}

/// The VG name of SR `uuid`.
#[must_use]
pub fn vg_name(uuid: &SrUuid) -> VgName {
    VgName::of_sr(uuid)
}

#[cfg(test)]
mod tests {
    use super::{label_tag, CallError, MAX_LABEL_BYTES, NAME_TAG};

    #[test]
    fn labels_survive_any_utf8_through_tags() {
        for text in ["", "fast NVMe", "données ✓ 日本語", "a,b=c\nd"] {
            let tag = label_tag(NAME_TAG, "name", text).unwrap();
            assert!(tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '='), "{tag}");
            assert_eq!(crate::hex::decode(&crate::hex::encode(text)), text);
        }
        let long = "x".repeat(MAX_LABEL_BYTES + 1);
        assert!(matches!(label_tag(NAME_TAG, "name", &long), Err(CallError::LabelTooLong { .. })));
    }
}
