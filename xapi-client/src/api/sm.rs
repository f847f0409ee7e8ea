//! `SM`: one record per storage type. SMAPIv3 types appear here only once
//! xapi has seen the plugin's queue at start-up, so this is how a tool checks
//! that `nvmetcp` is registered.

use std::collections::BTreeMap;

use crate::api::{all_records, SmRef};
use crate::client::Session;
use crate::error::Result;
use crate::value::{Fields, TypeError, Value};

/// The fields of an SM record nvmetcp reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sm {
    /// UUID.
    pub uuid: String,
    /// The SR type, e.g. `nvmetcp`.
    pub sr_type: String,
    /// Name.
    pub name_label: String,
    /// Plugin version.
    pub version: String,
    /// The SMAPI version the plugin requires.
    pub required_api_version: String,
    /// device-config keys and their descriptions.
    pub configuration: BTreeMap<String, String>,
    /// Features and their versions.
    pub features: BTreeMap<String, i64>,
}

impl Sm {
    fn decode(value: &Value) -> std::result::Result<Self, TypeError> {
        let f = Fields::of(value, "SM")?;
        let features = match f.optional("features") {
            None => BTreeMap::new(),
            Some(v) => v
                .as_struct("SM.features")?
                .iter()
                .map(|(k, n)| Ok((k.clone(), n.as_i64(&format!("SM.features.{k}"))?)))
                .collect::<std::result::Result<_, TypeError>>()?,
        };
        Ok(Self {
            uuid: f.string("uuid")?,
            sr_type: f.string("type")?,
            name_label: f.string("name_label")?,
            version: f.string_or_empty("version")?,
            required_api_version: f.string_or_empty("required_api_version")?,
            configuration: f.string_map("configuration")?,
            features,
        })
    }
}

/// `SM.get_all_records`.
///
/// # Errors
/// [`crate::Error`].
pub fn get_all_records(session: &Session) -> Result<Vec<(SmRef, Sm)>> {
    session.call_as("SM.get_all_records", vec![], |v| all_records(v, "SM", SmRef, Sm::decode))
}
