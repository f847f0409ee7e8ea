//! Volume metadata (name, description, sharable, and the arbitrary keys xapi
//! stores with `Volume.set`) kept in the LV's own tags.
//!
//! Why tags: every change is then one LVM metadata commit (`lvcreate` with
//! all tags, or one `lvchange --deltag … --addtag …`), which lvm2 makes
//! atomic and durable on disk: a call killed at any point leaves either the
//! old or the new metadata, never a mix, and there is no second store that
//! could disagree with the LVs (no orphaned records, no LV without its
//! metadata). Only the pool master writes it; every host reads it.
//!
//! Encoding: tags allow only `A-Za-z0-9._-+/=!:&#`, so texts are hex-encoded
//! UTF-8, split into chunks so no tag exceeds [`CHUNK_HEX`] characters:
//! `n.<i>=<hex>` (name), `d.<i>=<hex>` (description), `k.<hex key>.<i>=<hex>`
//! (each key; chunk 0 always exists, so empty values survive), `u=<uuid>`,
//! and `s` when sharable, next to the ownership tag `nvmetcp_vol`.

use std::collections::BTreeMap;

use crate::error::TooLong;
use crate::hex::{decode as unhex, encode as hex};

/// The tag every nvmetcp volume carries.
pub const VOLUME_TAG: &str = "nvmetcp_vol";
/// Hex characters per tag chunk: with the longest key prefix a tag stays
/// under the 1024 characters lvm2 2.03 allows.
pub const CHUNK_HEX: usize = 600;
/// Longest key name, in bytes.
pub const MAX_KEY_BYTES: usize = 100;
/// Longest name, description or value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Metadata of one volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeMeta {
    /// The volume's UUID (xapi's VDI uuid).
    pub uuid: String,
    /// Name label.
    pub name: String,
    /// Name description.
    pub description: String,
    /// Whether several hosts may attach it at once.
    pub sharable: bool,
    /// Keys stored by `Volume.set`.
    pub keys: BTreeMap<String, String>,
}

fn check(what: &str, text: &str, limit: usize) -> Result<(), TooLong> {
    if text.len() > limit {
        Err(TooLong { what: what.to_owned(), bytes: text.len(), limit })
    } else {
        Ok(())
    }
}

/// The tags of one text field, chunked; `prefix` is `n`, `d` or `k.<hex key>`.
fn field_tags(prefix: &str, text: &str) -> Vec<String> {
    let encoded = hex(text);
    let chunks: Vec<&str> = if encoded.is_empty() {
        vec![""]
    } else {
        encoded.as_bytes().chunks(CHUNK_HEX).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect()
    };
    chunks.iter().enumerate().map(|(i, chunk)| format!("{prefix}.{i}={chunk}")).collect()
}

/// The tags of key `k` set to `v`.
///
/// # Errors
/// [`TooLong`] if the key or value exceeds the limits.
pub fn key_tags(k: &str, v: &str) -> Result<Vec<String>, TooLong> {
    check("key name", k, MAX_KEY_BYTES)?;
    check(&format!("value of key {k:?}"), v, MAX_VALUE_BYTES)?;
    Ok(field_tags(&format!("k.{}", hex(k)), v))
}

/// The tags currently holding key `k` (to remove them).
#[must_use]
pub fn tags_of_key(tags: &[String], k: &str) -> Vec<String> {
    let prefix = format!("k.{}.", hex(k));
    tags.iter().filter(|t| t.starts_with(&prefix)).cloned().collect()
}

/// The tags of the name (`field` = `n`) or description (`d`).
///
/// # Errors
/// [`TooLong`] if the text exceeds the limit.
pub fn label_tags(field: &str, text: &str) -> Result<Vec<String>, TooLong> {
    check(if field == "n" { "name" } else { "description" }, text, MAX_VALUE_BYTES)?;
    Ok(field_tags(field, text))
}

/// The tags currently holding a label field.
#[must_use]
pub fn tags_of_label(tags: &[String], field: &str) -> Vec<String> {
    let prefix = format!("{field}.");
    tags.iter().filter(|t| t.starts_with(&prefix)).cloned().collect()
}

/// All tags of a new volume.
///
/// # Errors
/// [`TooLong`] if a field exceeds the limits.
pub fn to_tags(meta: &VolumeMeta) -> Result<Vec<String>, TooLong> {
    let mut tags = vec![VOLUME_TAG.to_owned(), format!("u={}", meta.uuid)];
    if meta.sharable {
        tags.push("s".to_owned());
    }
    tags.extend(label_tags("n", &meta.name)?);
    tags.extend(label_tags("d", &meta.description)?);
    for (k, v) in &meta.keys {
        tags.extend(key_tags(k, v)?);
    }
    Ok(tags)
}

/// Reads the metadata back from an LV's tags.
#[must_use]
pub fn from_tags(tags: &[String]) -> VolumeMeta {
    // field -> chunk index -> hex
    let mut fields: BTreeMap<String, BTreeMap<usize, String>> = BTreeMap::new();
    let mut meta = VolumeMeta::default();
    for tag in tags {
        if let Some(uuid) = tag.strip_prefix("u=") {
            uuid.clone_into(&mut meta.uuid);
        } else if tag == "s" {
            meta.sharable = true;
        } else if let Some((field, chunk)) = tag.split_once('=') {
            if let Some((name, index)) = field.rsplit_once('.') {
                if let Ok(index) = index.parse() {
                    fields.entry(name.to_owned()).or_default().insert(index, chunk.to_owned());
                }
            }
        }
    }
    for (field, chunks) in fields {
        let text = unhex(&chunks.into_values().collect::<String>());
        match field.as_str() {
            "n" => meta.name = text,
            "d" => meta.description = text,
            other => {
                if let Some(key) = other.strip_prefix("k.") {
                    meta.keys.insert(unhex(key), text);
                }
            }
        }
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::{from_tags, key_tags, tags_of_key, to_tags, VolumeMeta, MAX_KEY_BYTES};

    fn awkward() -> VolumeMeta {
        let mut meta = VolumeMeta {
            uuid: "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11".into(),
            name: "disk ✓ = , # \n two".into(),
            description: String::new(),
            sharable: true,
            keys: Default::default(),
        };
        meta.keys.insert("vdi-type".into(), "user".into());
        meta.keys.insert("_sm_config_a=b".into(), "x\ny=z".into());
        meta.keys.insert("empty".into(), String::new());
        meta.keys.insert("big".into(), "€".repeat(1400)); // 4.2 KB of UTF-8
        meta
    }

    #[test]
    fn awkward_metadata_round_trips_through_valid_tags() {
        let meta = awkward();
        let tags = to_tags(&meta).unwrap();
        for tag in &tags {
            assert!(tag.len() <= 1024, "{} characters", tag.len());
            assert!(tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-+/=!:&#".contains(c)), "{tag}");
        }
        assert!(tags.iter().filter(|t| t.starts_with("k.626967.")).count() > 1, "a big value is chunked");
        let mut shuffled = tags.clone();
        shuffled.reverse();
        assert_eq!(from_tags(&shuffled), meta, "LVM may list tags in any order");
    }

    #[test]
    fn a_key_is_replaced_by_exactly_its_own_tags() {
        let meta = awkward();
        let tags = to_tags(&meta).unwrap();
        let old = tags_of_key(&tags, "big");
        assert_eq!(old.len(), 14);
        assert!(tags_of_key(&tags, "bi").is_empty(), "no prefix confusion between keys");
        let mut updated: Vec<String> = tags.iter().filter(|t| !old.contains(t)).cloned().collect();
        updated.extend(key_tags("big", "small").unwrap());
        assert_eq!(from_tags(&updated).keys["big"], "small");
        assert!(key_tags(&"k".repeat(MAX_KEY_BYTES + 1), "v").is_err());
    }
}
