//! XAPI's result envelope: every reply is a struct with `Status` =
//! `Success` and a `Value`, or `Status` = `Failure` and an
//! `ErrorDescription` array `[CODE, param…]`.

use crate::value::Value;

/// A call XAPI answered with `Failure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// The error code, e.g. `HOST_IS_SLAVE`.
    pub code: String,
    /// Its parameters, in order.
    pub params: Vec<String>,
}

/// The result of a call, or its failure; `Err(None)` when the envelope is not
/// XAPI's.
///
/// # Errors
/// `Err(Some(failure))` for `Status: Failure`; `Err(None)` for a reply that is
/// not an envelope at all.
pub fn decode_envelope(reply: Value) -> Result<Value, Option<ApiFailure>> {
    let Value::Struct(mut members) = reply else { return Err(None) };
    match members.get("Status") {
        Some(Value::String(s)) if s == "Success" => Ok(members.remove("Value").unwrap_or(Value::String(String::new()))),
        Some(Value::String(s)) if s == "Failure" => {
            let description = match members.remove("ErrorDescription") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            let mut texts = description.into_iter().map(|v| match v {
                Value::String(s) | Value::DateTime(s) => s,
                Value::Int(i) => i.to_string(),
                other => format!("<{}>", other.kind()),
            });
            let code = texts.next().unwrap_or_else(|| "INTERNAL_ERROR".to_owned());
            Err(Some(ApiFailure { code, params: texts.collect() }))
        }
        _ => Err(None),
    }
}

/// A `Success` envelope around `value`.
#[must_use]
pub fn success(value: Value) -> Value {
    Value::record([("Status", Value::from("Success")), ("Value", value)])
}

/// A `Failure` envelope.
#[must_use]
pub fn failure(code: &str, params: &[String]) -> Value {
    let description = std::iter::once(code.to_owned()).chain(params.iter().cloned()).map(Value::String).collect();
    Value::record([("Status", Value::from("Failure")), ("ErrorDescription", Value::Array(description))])
}
