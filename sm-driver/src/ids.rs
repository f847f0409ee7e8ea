//! Typed identifiers, each with its one parser, and the one UUID rule every
//! UUID-shaped value (SR uuids, volume keys, handles, URIs, host IDs) is
//! checked by.

use std::fmt;
use std::str::FromStr;

/// The one UUID rule: five groups of 8-4-4-4-12 hexadecimal digits, in
/// either case (xapi writes lowercase).
#[must_use]
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A text that is not the identifier it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not {what}")]
pub struct BadId {
    /// What it should have been.
    pub what: &'static str,
    /// The text.
    pub value: String,
}

/// The one LVM name rule, lvm2's own for VG and LV names: letters, digits
/// and `+_.-`, not starting with `-`, at most 127 bytes, not `.` or `..`.
/// Nothing else can reach an `lvm` argument as a name.
fn lvm_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 127
        && !text.starts_with('-')
        && text != "."
        && text != ".."
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
}

/// A validated text identifier: its one parser is `FromStr` (also used when
/// deserialising, so a state file cannot smuggle in another value).
macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $rule:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier as text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = BadId;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let rule: fn(&str) -> bool = $rule;
                if rule(text) {
                    Ok(Self(text.to_owned()))
                } else {
                    Err(BadId { what: $what, value: text.to_owned() })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = BadId;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                text.parse()
            }
        }

        /// Test fixtures write literals; a bad one fails the test.
        #[cfg(test)]
        impl From<&str> for $name {
            #[allow(clippy::expect_used)] // a test's own literal
            fn from(text: &str) -> Self {
                text.parse().expect("a valid literal")
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Reads as its text (it cannot be changed through it).
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<&$name> for $name {
            fn eq(&self, other: &&$name) -> bool {
                self.0 == other.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

text_id!(
    /// An SR's uuid (xapi's `SR.uuid`), validated by [`is_uuid`].
    SrUuid,
    "an SR uuid (like 3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11)",
    is_uuid
);

text_id!(
    /// An LVM volume group's name.
    VgName,
    "an LVM volume group name (letters, digits and +_.- only, at most 127 bytes)",
    lvm_name
);

text_id!(
    /// An LVM logical volume's name.
    LvName,
    "an LVM logical volume name (letters, digits and +_.- only, at most 127 bytes)",
    lvm_name
);

text_id!(
    /// A volume's key, xapi's VDI location: its LV's name `vol-<uuid>`.
    VolumeKey,
    "an nvmetcp volume key (vol-<uuid>)",
    |text| text.strip_prefix("vol-").is_some_and(is_uuid)
);

impl VolumeKey {
    /// The key of a new volume whose uuid is `uuid`.
    ///
    /// # Errors
    /// [`BadId`] when `uuid` is not a UUID.
    pub fn for_uuid(uuid: &str) -> Result<Self, BadId> {
        format!("vol-{uuid}").parse()
    }

    /// The volume's LV.
    #[must_use]
    pub fn lv(&self) -> LvName {
        LvName(self.0.clone())
    }
}

impl VgName {
    /// The VG of SR `uuid`: `nvmetcp_` and its 32 hex digits, a name LVM
    /// always takes.
    #[must_use]
    pub fn of_sr(uuid: &SrUuid) -> Self {
        Self(format!("nvmetcp_{}", uuid.as_str().replace('-', "")))
    }
}

/// The URI scheme of volumes (the datapath plugin's directory name).
pub const VOLUME_SCHEME: &str = "nvmetcp";

/// A volume's URI, `nvmetcp://<sr uuid>/<volume key>`: from it the datapath
/// plugin finds the SR's attachment on its host and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeUri {
    /// The SR.
    pub sr: SrUuid,
    /// The volume.
    pub key: VolumeKey,
}

impl FromStr for VolumeUri {
    type Err = BadId;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadId { what: "an nvmetcp volume URI (nvmetcp://<sr uuid>/vol-<uuid>)", value: text.to_owned() };
        let rest = text.strip_prefix(VOLUME_SCHEME).and_then(|r| r.strip_prefix("://")).ok_or_else(bad)?;
        let (sr, key) = rest.split_once('/').ok_or_else(bad)?;
        Ok(Self { sr: sr.parse().map_err(|_| bad())?, key: key.parse().map_err(|_| bad())? })
    }
}

impl fmt::Display for VolumeUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{VOLUME_SCHEME}://{}/{}", self.sr, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::{is_uuid, LvName, SrUuid, VgName, VolumeKey, VolumeUri};

    const UUID: &str = "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";

    #[test]
    fn lvm_names_refuse_what_lvm_or_a_shell_would_misread() {
        for good in ["nvmetcp_3f1c6d0e8a8f", "vol-1", "a+b.c_d", &"x".repeat(127)] {
            assert_eq!(good.parse::<VgName>().unwrap().as_str(), good);
            assert_eq!(good.parse::<LvName>().unwrap(), good);
        }
        for bad in ["", "-vg", ".", "..", "a/b", "a b", "a,b", "a\nb", "a\"b", "é", &"x".repeat(128)] {
            assert!(bad.parse::<VgName>().is_err(), "{bad:?}");
            assert!(bad.parse::<LvName>().is_err(), "{bad:?}");
        }
        // A state file is read through the same parser.
        assert!(serde_json::from_str::<VgName>("\"a b\"").is_err());
        assert_eq!(serde_json::to_string(&"vg".parse::<VgName>().unwrap()).unwrap(), "\"vg\"");
    }

    #[test]
    fn volume_keys_and_uris_have_one_parser_each() {
        let key = VolumeKey::for_uuid(UUID).unwrap();
        assert_eq!(key.as_str(), format!("vol-{UUID}"));
        assert_eq!(key.lv(), format!("vol-{UUID}"));
        for bad in ["", "vol-", "vol-3f1c", "other", "nod-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11", UUID] {
            assert!(bad.parse::<VolumeKey>().is_err(), "{bad:?}");
        }
        let text = format!("nvmetcp://3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11/vol-{UUID}");
        let uri: VolumeUri = text.parse().unwrap();
        assert_eq!((uri.sr.as_str(), uri.key.as_str()), ("3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11", key.as_str()));
        assert_eq!(uri.to_string(), text);
        for bad in [
            "",
            "file:///dev/sda",
            "nvmetcp://x/../../etc",
            "nvmetcp://3f1c/vol-",
            "nvmetcp://3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11/other",
            "nvmetcp:/3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11/vol-1",
        ] {
            assert!(bad.parse::<VolumeUri>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_rule_for_every_uuid() {
        for good in ["3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11", "3F1C6D0E-8A8F-4E0A-9B5E-2D7C1F0A9E11"] {
            assert!(is_uuid(good), "{good}");
            assert_eq!(good.parse::<SrUuid>().unwrap().as_str(), good);
        }
        for bad in [
            "",
            "3f1c",
            "3f1c6d0e8a8f4e0a9b5e2d7c1f0a9e11",
            "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e1",
            "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11-",
            "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9exx",
            "../../etc/passwd-8a8f-4e0a-9b5e-2d7c1f0a",
        ] {
            assert!(!is_uuid(bad), "{bad:?}");
            assert!(bad.parse::<SrUuid>().is_err(), "{bad:?}");
        }
    }
}
