//! The error record a plugin prints on stdout with a non-zero exit.
//!
//! xapi-storage-script parses it and re-raises a XenAPI error whose code is
//! `code` and whose parameters are `params`: that is what `xe` prints and what
//! Xen Orchestra shows. All three top-level fields and all three backtrace
//! fields are required by its rpclib unmarshaller.

use serde::{Deserialize, Serialize};

/// `{"code": …, "params": [...], "backtrace": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// The XenAPI error code xapi raises.
    pub code: String,
    /// Its parameters; by our convention `params[0]` is the human message.
    pub params: Vec<String>,
    /// Where the error arose.
    pub backtrace: Backtrace,
}

/// The backtrace part of an [`ErrorRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backtrace {
    /// The full error text, including causes.
    pub error: String,
    /// Source files, innermost first.
    pub files: Vec<String>,
    /// Line numbers matching `files`.
    pub lines: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::ErrorRecord;

    #[test]
    fn python_plugin_error_record_round_trips() {
        let path = format!("{}/tests/fixtures/smapi/error_record.json", env!("CARGO_MANIFEST_DIR"));
        let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let record: ErrorRecord = serde_json::from_value(expected.clone()).unwrap();
        assert_eq!(serde_json::to_value(&record).unwrap(), expected);
    }
}
