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

/// An SR's uuid (xapi's `SR.uuid`), validated by [`is_uuid`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrUuid(String);

impl SrUuid {
    /// The uuid as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SrUuid {
    type Err = BadId;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if is_uuid(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(BadId { what: "an SR uuid (like 3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11)", value: text.to_owned() })
        }
    }
}

impl fmt::Display for SrUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{is_uuid, SrUuid};

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
