//! The named parameters of one call, validated against the method catalogue.
//!
//! xapi-storage-script writes the parameters as one JSON object on stdin. A
//! request is checked completely (every declared parameter present and of its
//! declared type) before a handler runs, so every error names the parameter
//! and what was expected, and handlers can read typed values knowing they are
//! there. Like rpclib, an `int64` parameter also accepts a numeric string, and
//! keys that the method does not declare are ignored.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::method::{Method, ParamKind};

/// Why a request could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// stdin was not one JSON document.
    #[error("the parameters on stdin are not valid JSON ({detail}); expected one JSON object of named parameters")]
    MalformedJson {
        /// The parser's complaint.
        detail: String,
    },
    /// stdin was JSON, but not an object.
    #[error("the parameters on stdin are {found}, not a JSON object of named parameters")]
    NotAnObject {
        /// What was found instead.
        found: &'static str,
    },
    /// A declared parameter is absent.
    #[error("{method} needs the parameter '{name}' ({kind})")]
    MissingParam {
        /// The method called.
        method: String,
        /// The parameter.
        name: &'static str,
        /// Its expected type.
        kind: ParamKind,
    },
    /// A declared parameter has the wrong JSON type.
    #[error("{method}: parameter '{name}' must be {kind}, not {found}")]
    IllTypedParam {
        /// The method called.
        method: String,
        /// The parameter.
        name: &'static str,
        /// Its expected type.
        kind: ParamKind,
        /// A description of what was received.
        found: String,
    },
    /// A command-line argument was not `name=value`.
    #[error("argument '{arg}' is not of the form name=value")]
    BadArgument {
        /// The argument.
        arg: String,
    },
    /// A command-line argument names no parameter of the method.
    #[error("{method} has no parameter '{name}'; its parameters are: {known}")]
    UnknownArgument {
        /// The method called.
        method: String,
        /// The name given.
        name: String,
        /// The declared names.
        known: String,
    },
    /// Reading stdin failed.
    #[error("cannot read the parameters from stdin")]
    Stdin(#[source] std::io::Error),
}

/// The validated parameters of one call.
#[derive(Debug, Clone)]
pub struct Params {
    method: &'static Method,
    values: Map<String, Value>,
}

impl Params {
    /// Parses and validates the JSON text xapi-storage-script wrote on stdin.
    ///
    /// # Errors
    /// [`RequestError`] naming what is malformed, missing or ill-typed.
    pub fn from_json(method: &'static Method, text: &str) -> Result<Self, RequestError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| RequestError::MalformedJson { detail: e.to_string() })?;
        match value {
            Value::Object(values) => Self::validated(method, values),
            other => Err(RequestError::NotAnObject { found: json_type(&other) }),
        }
    }

    /// Builds parameters from `name=value` words typed by a person. Each value
    /// is read according to the parameter's declared type (`size=10` is an
    /// integer, `name=10` a string; maps and structured values are JSON). A
    /// missing `dbg` defaults to `"cli"`.
    ///
    /// # Errors
    /// [`RequestError`] naming the argument that does not fit.
    pub fn from_words(method: &'static Method, words: &[String]) -> Result<Self, RequestError> {
        let mut values = Map::new();
        values.insert("dbg".to_owned(), Value::String("cli".to_owned()));
        for word in words {
            let (name, raw) = word.split_once('=').ok_or_else(|| RequestError::BadArgument { arg: word.clone() })?;
            let param = method.param(name).ok_or_else(|| RequestError::UnknownArgument {
                method: method.to_string(),
                name: name.to_owned(),
                known: method.params.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
            })?;
            let value = match param.kind {
                ParamKind::String | ParamKind::Int64 | ParamKind::Int => Value::String(raw.to_owned()),
                ParamKind::Bool => match raw {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    other => Value::String(other.to_owned()),
                },
                ParamKind::StringMap | ParamKind::Operation | ParamKind::BlockList => {
                    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
                }
            };
            values.insert(name.to_owned(), value);
        }
        Self::validated(method, values)
    }

    fn validated(method: &'static Method, mut values: Map<String, Value>) -> Result<Self, RequestError> {
        for param in method.params {
            let Some(value) = values.get_mut(param.name) else {
                return Err(RequestError::MissingParam {
                    method: method.to_string(),
                    name: param.name,
                    kind: param.kind,
                });
            };
            if let Some(normalised) = check(param.kind, value) {
                *value = normalised;
            } else {
                return Err(RequestError::IllTypedParam {
                    method: method.to_string(),
                    name: param.name,
                    kind: param.kind,
                    found: describe(value),
                });
            }
        }
        Ok(Self { method, values })
    }

    /// The parameters as one JSON object, as `from_json` reads them (a
    /// member forwards them to the master so).
    #[must_use]
    pub fn to_json(&self) -> String {
        Value::Object(self.values.clone()).to_string()
    }

    /// The method these parameters are for.
    #[must_use]
    pub fn method(&self) -> &'static Method {
        self.method
    }

    /// The opaque `dbg` string xapi passes for correlation.
    #[must_use]
    pub fn dbg(&self) -> &str {
        self.str("dbg").unwrap_or_default()
    }

    /// A string parameter, if the method declares it and it is present.
    #[must_use]
    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(Value::as_str)
    }

    /// A declared parameter decoded into `T`.
    ///
    /// # Errors
    /// [`RequestError`] if the method does not declare `name` or its value does
    /// not decode into `T` (a bug in the caller; validation ran already).
    pub fn get<T: DeserializeOwned>(&self, name: &'static str) -> Result<T, RequestError> {
        let param = self.method.param(name).ok_or_else(|| RequestError::UnknownArgument {
            method: self.method.to_string(),
            name: name.to_owned(),
            known: self.method.params.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
        })?;
        let value = self.values.get(name).cloned().unwrap_or(Value::Null);
        serde_json::from_value(value.clone()).map_err(|_| RequestError::IllTypedParam {
            method: self.method.to_string(),
            name,
            kind: param.kind,
            found: describe(&value),
        })
    }
}

/// Checks `value` against `kind`; returns the normalised value, or `None` if
/// it does not fit.
fn check(kind: ParamKind, value: &Value) -> Option<Value> {
    let fits = match kind {
        ParamKind::String => value.is_string(),
        ParamKind::Int64 => return integer(value, i64::MIN, i64::MAX),
        ParamKind::Int => return integer(value, i64::from(i32::MIN), i64::from(i32::MAX)),
        ParamKind::Bool => value.is_boolean(),
        ParamKind::StringMap => value.as_object().is_some_and(|m| m.values().all(Value::is_string)),
        ParamKind::Operation => serde_json::from_value::<super::types::Operation>(value.clone()).is_ok(),
        ParamKind::BlockList => serde_json::from_value::<super::types::BlockList>(value.clone()).is_ok(),
    };
    fits.then(|| value.clone())
}

/// A JSON integer in range, or a string holding one (rpclib accepts both).
fn integer(value: &Value, min: i64, max: i64) -> Option<Value> {
    let number = match value {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    (min..=max).contains(&number).then(|| Value::from(number))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Describes a received value for an error message, briefly.
fn describe(value: &Value) -> String {
    let mut text = value.to_string();
    if text.chars().count() > 60 {
        text = text.chars().take(57).collect::<String>() + "...";
    }
    format!("{} {text}", json_type(value))
}

#[cfg(test)]
mod tests {
    use super::{Params, RequestError};
    use crate::smapi::method::Method;
    use crate::smapi::types::StringMap;

    fn method(name: &str) -> &'static Method {
        Method::lookup(name).unwrap()
    }

    #[test]
    fn golden_request_parses() {
        let text = r#"{"description":"dummy description","name":"dummy name","configuration":{"uri":"file:///dev/null"},"uuid":"dummySR","dbg":"debug"}"#;
        let params = Params::from_json(method("SR.create"), text).unwrap();
        assert_eq!(params.dbg(), "debug");
        assert_eq!(params.str("uuid"), Some("dummySR"));
        let config: StringMap = params.get("configuration").unwrap();
        assert_eq!(config["uri"], "file:///dev/null");
    }

    #[test]
    fn int64_accepts_integers_and_numeric_strings_only() {
        let create = method("Volume.create");
        let base = r#""dbg":"d","sr":"s","name":"n","description":"","sharable":false"#;
        for (size, ok) in [
            ("10", true),
            ("\"4096\"", true),
            ("9223372036854775807", true),
            ("1.5", false),
            ("\"x\"", false),
            ("-1", true),
            ("null", false),
        ] {
            let result = Params::from_json(create, &format!("{{{base},\"size\":{size}}}"));
            assert_eq!(result.is_ok(), ok, "size={size}: {result:?}");
        }
        let params = Params::from_json(create, &format!("{{{base},\"size\":\"4096\"}}")).unwrap();
        assert_eq!(params.get::<i64>("size").unwrap(), 4096);
    }

    #[test]
    fn errors_name_the_parameter() {
        let err = Params::from_json(method("SR.attach"), r#"{"dbg":"d"}"#).unwrap_err();
        assert!(matches!(err, RequestError::MissingParam { name: "configuration", .. }));
        assert!(err.to_string().contains("'configuration'"), "{err}");
        let err = Params::from_json(method("SR.attach"), r#"{"dbg":"d","configuration":{"a":1}}"#).unwrap_err();
        assert!(err.to_string().contains("'configuration' must be an object of strings"), "{err}");
        let err = Params::from_json(method("Plugin.query"), "[1]").unwrap_err();
        assert!(matches!(err, RequestError::NotAnObject { found: "an array" }));
        let err = Params::from_json(method("Plugin.query"), "{\"dbg\":").unwrap_err();
        assert!(matches!(err, RequestError::MalformedJson { .. }));
        let err = Params::from_json(method("Plugin.query"), r#"{"dbg":"a"} {"dbg":"b"}"#).unwrap_err();
        assert!(matches!(err, RequestError::MalformedJson { .. }), "two documents are not one");
    }

    #[test]
    fn words_are_typed_by_the_declaration() {
        let words = ["sr=s", "name=10", "description=a=b", "size=1024", "sharable=true"].map(String::from);
        let params = Params::from_words(method("Volume.create"), &words).unwrap();
        assert_eq!(params.dbg(), "cli");
        assert_eq!(params.str("name"), Some("10"));
        assert_eq!(params.str("description"), Some("a=b"));
        assert_eq!(params.get::<i64>("size").unwrap(), 1024);
        let err = Params::from_words(method("Volume.create"), &["bogus=1".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("no parameter 'bogus'"), "{err}");
        let err = Params::from_words(method("SR.attach"), &["configuration=notjson".to_owned()]).unwrap_err();
        assert!(matches!(err, RequestError::IllTypedParam { name: "configuration", .. }));
    }

    #[test]
    fn structured_params_are_checked() {
        let ok = r#"{"dbg":"d","operation":["Copy",["a","b"]]}"#;
        assert!(Params::from_json(method("Data.stat"), ok).is_ok());
        let bad = r#"{"dbg":"d","operation":"Copy"}"#;
        assert!(Params::from_json(method("Data.stat"), bad).is_err());
        let length = r#"{"dbg":"d","sr":"s","key":"k","key2":"j","offset":0,"length":4294967296}"#;
        assert!(Params::from_json(method("Volume.list_changed_blocks"), length).is_err(), "int is 32-bit");
    }
}
