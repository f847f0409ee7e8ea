//! The value mapping of XAPI's JSON-RPC endpoint (`POST /jsonrpc`).
//!
//! JSON loses XML-RPC's type tags: integers become JSON numbers, datetimes and
//! base64 become plain strings, and XAPI prints non-finite floats as bare
//! `NaN`/`Infinity` tokens that strict JSON parsers reject. Only the emulator
//! serves JSON-RPC today (Xen Orchestra's connector tries it first); the
//! client speaks XML-RPC, which keeps the types.

use serde_json::{Map, Number, Value as Json};

use crate::value::Value;

/// A value as XAPI's JSON-RPC writes it.
#[must_use]
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::String(s) | Value::DateTime(s) | Value::Base64(s) => Json::String(s.clone()),
        Value::Int(i) => Json::Number((*i).into()),
        Value::Bool(b) => Json::Bool(*b),
        Value::Double(d) => Number::from_f64(*d).map_or_else(|| Json::String(d.to_string()), Json::Number),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Struct(members) => Json::Object(members.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Value::Nil => Json::Null,
    }
}

/// A JSON-RPC parameter as a value: integral numbers become integers.
#[must_use]
pub fn from_json(json: &Json) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n.as_i64().map_or_else(|| Value::Double(n.as_f64().unwrap_or(f64::NAN)), Value::Int),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        Json::Object(members) => Value::Struct(members.iter().map(|(k, v)| (k.clone(), from_json(v))).collect()),
    }
}

/// An object from pairs, for building JSON-RPC replies.
#[must_use]
pub fn object<'a>(members: impl IntoIterator<Item = (&'a str, Json)>) -> Json {
    Json::Object(members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>())
}
