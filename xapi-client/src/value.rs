//! The transport-neutral value of an XAPI call or result.
//!
//! XAPI's datamodel types map onto XML-RPC types in a lossy way (strings,
//! refs, enums and 64-bit integers all arrive as untyped text), so records are
//! decoded field by field with the accessors below, which accept each type in
//! every spelling XAPI uses for it.

use std::collections::BTreeMap;

/// An XML-RPC value as XAPI writes and reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string: `<string>` or untyped text, kept byte for byte.
    String(String),
    /// `<i4>`, `<int>` or `<i8>`.
    Int(i64),
    /// `<boolean>`.
    Bool(bool),
    /// `<double>`, including non-finite values.
    Double(f64),
    /// `<dateTime.iso8601>`, kept as sent: XAPI's spellings vary by version.
    DateTime(String),
    /// `<base64>`, kept encoded.
    Base64(String),
    /// `<array>`.
    Array(Vec<Value>),
    /// `<struct>` (a record or a map).
    Struct(BTreeMap<String, Value>),
    /// `<nil/>`.
    Nil,
}

/// A value of the wrong type where a field or result was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{context}: expected {expected}, got {got}")]
pub struct TypeError {
    /// Which field or result.
    pub context: String,
    /// What was expected.
    pub expected: &'static str,
    /// What arrived (type and a short excerpt).
    pub got: String,
}

impl Value {
    /// A struct from `(name, value)` pairs.
    #[must_use]
    pub fn record<K: Into<String>>(members: impl IntoIterator<Item = (K, Value)>) -> Self {
        Self::Struct(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A string-to-string map as a struct.
    #[must_use]
    pub fn map(map: &BTreeMap<String, String>) -> Self {
        Self::Struct(map.iter().map(|(k, v)| (k.clone(), Self::String(v.clone()))).collect())
    }

    /// A short description for error messages (never the whole value: it may
    /// be large, and it may be a secret).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::String(_) => "a string",
            Self::Int(_) => "an integer",
            Self::Bool(_) => "a boolean",
            Self::Double(_) => "a double",
            Self::DateTime(_) => "a datetime",
            Self::Base64(_) => "base64",
            Self::Array(_) => "an array",
            Self::Struct(_) => "a struct",
            Self::Nil => "nil",
        }
    }

    fn mismatch(&self, context: &str, expected: &'static str) -> TypeError {
        TypeError { context: context.to_owned(), expected, got: self.kind().to_owned() }
    }

    /// The text of a string (refs, uuids, enums are strings).
    ///
    /// # Errors
    /// [`TypeError`] for any other type.
    pub fn as_str(&self, context: &str) -> Result<&str, TypeError> {
        match self {
            Self::String(s) => Ok(s),
            other => Err(other.mismatch(context, "a string")),
        }
    }

    /// A 64-bit integer, sent typed or (as XAPI does) as decimal text.
    ///
    /// # Errors
    /// [`TypeError`] when it is neither.
    pub fn as_i64(&self, context: &str) -> Result<i64, TypeError> {
        match self {
            Self::Int(i) => Ok(*i),
            Self::String(s) => s.parse().map_err(|_| self.mismatch(context, "an integer")),
            other => Err(other.mismatch(context, "an integer")),
        }
    }

    /// A boolean (`<boolean>` only, as XAPI requires).
    ///
    /// # Errors
    /// [`TypeError`] for any other type.
    pub fn as_bool(&self, context: &str) -> Result<bool, TypeError> {
        match self {
            Self::Bool(b) => Ok(*b),
            other => Err(other.mismatch(context, "a boolean")),
        }
    }

    /// A float: a double, an integer or decimal text (as XAPI accepts).
    ///
    /// # Errors
    /// [`TypeError`] otherwise.
    pub fn as_f64(&self, context: &str) -> Result<f64, TypeError> {
        match self {
            Self::Double(d) => Ok(*d),
            #[allow(clippy::cast_precision_loss)] // progress and timeouts, not sizes
            Self::Int(i) => Ok(*i as f64),
            Self::String(s) => s.parse().map_err(|_| self.mismatch(context, "a number")),
            other => Err(other.mismatch(context, "a number")),
        }
    }

    /// The elements of an array.
    ///
    /// # Errors
    /// [`TypeError`] for any other type.
    pub fn as_array(&self, context: &str) -> Result<&[Value], TypeError> {
        match self {
            Self::Array(items) => Ok(items),
            other => Err(other.mismatch(context, "an array")),
        }
    }

    /// The members of a struct.
    ///
    /// # Errors
    /// [`TypeError`] for any other type.
    pub fn as_struct(&self, context: &str) -> Result<&BTreeMap<String, Value>, TypeError> {
        match self {
            Self::Struct(members) => Ok(members),
            other => Err(other.mismatch(context, "a struct")),
        }
    }

    /// An array of strings (a `string set`, a `ref set`).
    ///
    /// # Errors
    /// [`TypeError`] when it is not an array of strings.
    pub fn as_strings(&self, context: &str) -> Result<Vec<String>, TypeError> {
        self.as_array(context)?.iter().map(|v| v.as_str(context).map(str::to_owned)).collect()
    }

    /// A struct of strings (a `(string -> string) map`).
    ///
    /// # Errors
    /// [`TypeError`] when a member is not a string.
    pub fn as_string_map(&self, context: &str) -> Result<BTreeMap<String, String>, TypeError> {
        self.as_struct(context)?
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_str(&format!("{context}.{k}"))?.to_owned())))
            .collect()
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

/// A record being decoded: looks fields up by name and says which record and
/// field was wrong.
pub struct Fields<'a> {
    what: &'a str,
    members: &'a BTreeMap<String, Value>,
}

impl<'a> Fields<'a> {
    /// The members of `value`, a record of class `what`.
    ///
    /// # Errors
    /// [`TypeError`] when `value` is not a struct.
    pub fn of(value: &'a Value, what: &'a str) -> Result<Self, TypeError> {
        Ok(Self { what, members: value.as_struct(what)? })
    }

    fn context(&self, name: &str) -> String {
        format!("{}.{name}", self.what)
    }

    fn get(&self, name: &str) -> Result<&'a Value, TypeError> {
        self.members.get(name).ok_or_else(|| TypeError {
            context: self.context(name),
            expected: "a member",
            got: "nothing (the field is missing)".to_owned(),
        })
    }

    /// A required string field.
    ///
    /// # Errors
    /// [`TypeError`] when missing or not a string.
    pub fn string(&self, name: &str) -> Result<String, TypeError> {
        self.get(name)?.as_str(&self.context(name)).map(str::to_owned)
    }

    /// A string field that older XAPI versions omit (empty when absent).
    ///
    /// # Errors
    /// [`TypeError`] when present but not a string.
    pub fn string_or_empty(&self, name: &str) -> Result<String, TypeError> {
        self.members.get(name).map_or(Ok(String::new()), |v| v.as_str(&self.context(name)).map(str::to_owned))
    }

    /// A required integer field.
    ///
    /// # Errors
    /// [`TypeError`] when missing or not an integer.
    pub fn int(&self, name: &str) -> Result<i64, TypeError> {
        self.get(name)?.as_i64(&self.context(name))
    }

    /// A required boolean field.
    ///
    /// # Errors
    /// [`TypeError`] when missing or not a boolean.
    pub fn bool(&self, name: &str) -> Result<bool, TypeError> {
        self.get(name)?.as_bool(&self.context(name))
    }

    /// A required float field.
    ///
    /// # Errors
    /// [`TypeError`] when missing or not a number.
    pub fn float(&self, name: &str) -> Result<f64, TypeError> {
        self.get(name)?.as_f64(&self.context(name))
    }

    /// A string-set field (empty when absent).
    ///
    /// # Errors
    /// [`TypeError`] when present but not an array of strings.
    pub fn strings(&self, name: &str) -> Result<Vec<String>, TypeError> {
        self.members.get(name).map_or(Ok(Vec::new()), |v| v.as_strings(&self.context(name)))
    }

    /// A string map field (empty when absent).
    ///
    /// # Errors
    /// [`TypeError`] when present but not a map of strings.
    pub fn string_map(&self, name: &str) -> Result<BTreeMap<String, String>, TypeError> {
        self.members.get(name).map_or(Ok(BTreeMap::new()), |v| v.as_string_map(&self.context(name)))
    }

    /// An optional field of any type (XAPI omits `None` options).
    #[must_use]
    pub fn optional(&self, name: &str) -> Option<&'a Value> {
        self.members.get(name)
    }
}
