//! The SR's LVM metadata budget.
//!
//! Every volume's metadata lives in its LV's tags, and every change of the
//! SR rewrites the VG's whole metadata text into the PV's metadata area
//! ([`crate::lvm::PV_METADATA_SIZE`], 8 MiB), next to the previous copy
//! while it commits. Once the text no longer fits, *every* metadata change of
//! the SR fails, not just the one that grew it: one volume's 35th 64 KiB
//! `Volume.set` used to do that. So metadata has a budget: each volume at
//! most [`VOLUME_BUDGET`] bytes of tags, the whole SR at most [`SR_BUDGET`]
//! of estimated metadata text (tags plus [`LV_OVERHEAD`] per LV), which
//! leaves room for two copies in the area. A change that would exceed either
//! is refused with [`VolumeError::MetadataFull`]; changes that shrink the
//! metadata (unset, shorter values, destroy) are always allowed.

use crate::error::VolumeError;
use crate::lvm::Lv;

/// Tag bytes one volume may hold (its name, description and keys,
/// hex-encoded: about 512 KiB of text).
pub const VOLUME_BUDGET: usize = 1024 * 1024;
/// Estimated metadata text the whole SR may hold: under half of the 8 MiB
/// area, so the new copy fits beside the old one while committing.
pub const SR_BUDGET: usize = 3 * 1024 * 1024;
/// Metadata text per LV besides its tags (name, id, segments, status).
pub const LV_OVERHEAD: usize = 512;

/// Bytes `tags` take in the metadata text (quoted, comma-separated).
#[must_use]
pub fn tag_bytes(tags: &[String]) -> usize {
    tags.iter().map(|t| t.len() + 4).sum()
}

/// Checks that volume `key`, whose tags are `before` (empty for a new
/// volume) and become `after`, stays within both budgets, given every LV of
/// the SR now (`volumes`, which may include it).
///
/// # Errors
/// [`VolumeError::MetadataFull`] naming the budget and what to do.
pub fn check(key: &str, before: &[String], after: &[String], volumes: &[Lv]) -> Result<(), VolumeError> {
    let (old, new) = (tag_bytes(before), tag_bytes(after));
    if new <= old {
        return Ok(());
    }
    if new > VOLUME_BUDGET {
        return Err(VolumeError::MetadataFull {
            key: key.to_owned(),
            scope: "this volume",
            bytes: new,
            limit: VOLUME_BUDGET,
        });
    }
    let others: usize =
        volumes.iter().filter(|lv| lv.name != key).map(|lv| tag_bytes(&lv.tags) + LV_OVERHEAD).sum::<usize>();
    let total = others + new + LV_OVERHEAD;
    if total > SR_BUDGET {
        return Err(VolumeError::MetadataFull { key: key.to_owned(), scope: "the SR", bytes: total, limit: SR_BUDGET });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check, tag_bytes, SR_BUDGET, VOLUME_BUDGET};
    use crate::lvm::Lv;
    use crate::volume::meta;

    fn lv(name: &str, tags: Vec<String>) -> Lv {
        Lv { name: name.into(), vg: "vg".into(), size: 0, tags, active: false }
    }

    #[test]
    fn one_volume_cannot_fill_the_sr_metadata_area() {
        // The reported failure: 64 KiB values set one after the other on one volume.
        let value = "x".repeat(meta::MAX_VALUE_BYTES);
        let mut tags = meta::to_tags(&meta::VolumeMeta { uuid: "u".into(), ..Default::default() }).unwrap();
        let mut accepted = 0;
        for i in 0..35 {
            let mut after: Vec<String> = tags.clone();
            after.extend(meta::key_tags(&format!("key{i}"), &value).unwrap());
            match check("vol-1", &tags, &after, &[lv("vol-1", tags.clone())]) {
                Ok(()) => {
                    tags = after;
                    accepted += 1;
                }
                Err(error) => {
                    let text = error.to_string();
                    assert!(text.contains("this volume") && text.contains("Unset keys"), "{text}");
                    break;
                }
            }
        }
        assert!((4..35).contains(&accepted), "{accepted} values of 64 KiB accepted");
        assert!(tag_bytes(&tags) <= VOLUME_BUDGET);
        // Shrinking is always allowed, even over budget.
        assert!(check("vol-1", &tags, &tags[..1], &[]).is_ok());
    }

    #[test]
    fn many_volumes_share_the_sr_budget() {
        let full: Vec<String> = (0..1700).map(|i| format!("k.{i:04}.0={}", "a".repeat(590))).collect();
        assert!(tag_bytes(&full) < VOLUME_BUDGET);
        let volumes: Vec<Lv> = (0..3).map(|i| lv(&format!("vol-{i}"), full.clone())).collect();
        let err = check("vol-new", &[], &full, &volumes).unwrap_err();
        assert!(err.to_string().contains("the SR"), "{err}");
        assert!(check("vol-new", &[], &full[..10], &volumes).is_ok(), "a small volume still fits");
        assert!(3 * (tag_bytes(&full) + super::LV_OVERHEAD) < SR_BUDGET);
    }
}
