//! `event`: waiting for changes instead of polling. `event.from` blocks until
//! something in the named classes changes or the timeout passes.

use crate::client::Session;
use crate::error::Result;
use crate::value::{Fields, TypeError, Value};

/// One change.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The class, lower case (`pbd`, `sr`, …).
    pub class: String,
    /// `add`, `mod` or `del`.
    pub operation: String,
    /// The object's ref.
    pub reference: String,
    /// The record after the change (absent for `del`).
    pub snapshot: Option<Value>,
}

/// What `event.from` returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The changes, oldest first.
    pub events: Vec<Event>,
    /// The token for the next call.
    pub token: String,
}

fn decode(value: &Value) -> std::result::Result<Batch, TypeError> {
    let f = Fields::of(value, "event.from")?;
    let events = f
        .optional("events")
        .map(|v| v.as_array("event.from.events"))
        .transpose()?
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let e_fields = Fields::of(e, "event")?;
            Ok(Event {
                class: e_fields.string("class")?,
                operation: e_fields.string("operation")?,
                reference: e_fields.string("ref")?,
                snapshot: e_fields.optional("snapshot").cloned(),
            })
        })
        .collect::<std::result::Result<_, TypeError>>()?;
    Ok(Batch { events, token: f.string("token")? })
}

/// `event.from(classes, token, timeout)`; start with an empty token.
///
/// # Errors
/// [`crate::Error`]; `EVENTS_LOST` means: re-read the records and start over.
pub fn from(session: &Session, classes: &[&str], token: &str, timeout_secs: f64) -> Result<Batch> {
    let classes = Value::Array(classes.iter().map(|c| Value::from(*c)).collect());
    session.call_as("event.from", vec![classes, Value::from(token), Value::Double(timeout_secs)], decode)
}

/// `event.inject(class, ref)`: returns a token from which `from` sees only
/// later changes.
///
/// # Errors
/// [`crate::Error`].
pub fn inject(session: &Session, class: &str, reference: &str) -> Result<String> {
    session.call_as("event.inject", vec![Value::from(class), Value::from(reference)], |v| {
        v.as_str("event.inject").map(str::to_owned)
    })
}
