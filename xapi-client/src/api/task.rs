//! `task`: what `Async.*` calls return. Its `result` is an XML-RPC `<value>`
//! fragment stored as a string, decoded here with the codec.

use std::time::{Duration, Instant};

use crate::api::TaskRef;
use crate::client::Session;
use crate::codec::parse_value;
use crate::error::{Error, Result, XapiError};
use crate::value::{Fields, TypeError, Value};

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Still running.
    Pending,
    /// Done.
    Success,
    /// Failed (see `error_info`).
    Failure,
    /// Being cancelled.
    Cancelling,
    /// Cancelled.
    Cancelled,
}

impl Status {
    fn decode(value: &Value) -> std::result::Result<Self, TypeError> {
        Ok(match value.as_str("task.status")? {
            "pending" => Self::Pending,
            "success" => Self::Success,
            "failure" => Self::Failure,
            "cancelling" => Self::Cancelling,
            "cancelled" => Self::Cancelled,
            other => {
                return Err(TypeError {
                    context: "task.status".into(),
                    expected: "pending|success|failure|cancelling|cancelled",
                    got: other.chars().take(20).collect(),
                })
            }
        })
    }
}

/// The fields of a task record nvmetcp reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// UUID.
    pub uuid: String,
    /// The call it runs, e.g. `Async.PBD.plug`.
    pub name_label: String,
    /// State.
    pub status: Status,
    /// 0.0 to 1.0.
    pub progress: f64,
    /// The result fragment (`<value>…</value>`), once successful.
    pub result: String,
    /// `[CODE, params…]`, once failed.
    pub error_info: Vec<String>,
}

impl Task {
    fn decode(value: &Value) -> std::result::Result<Self, TypeError> {
        let f = Fields::of(value, "task")?;
        Ok(Self {
            uuid: f.string("uuid")?,
            name_label: f.string("name_label")?,
            status: Status::decode(f.optional("status").unwrap_or(&Value::Nil))?,
            progress: f.float("progress")?,
            result: f.string_or_empty("result")?,
            error_info: f.strings("error_info")?,
        })
    }
}

/// `task.get_record`.
///
/// # Errors
/// [`crate::Error`].
pub fn get_record(session: &Session, task: &TaskRef) -> Result<Task> {
    session.call_as("task.get_record", vec![task.into()], Task::decode)
}

/// `task.get_status`.
///
/// # Errors
/// [`crate::Error`].
pub fn get_status(session: &Session, task: &TaskRef) -> Result<Status> {
    session.call_as("task.get_status", vec![task.into()], Status::decode)
}

/// `task.cancel` (best effort on XAPI's side).
///
/// # Errors
/// [`crate::Error`].
pub fn cancel(session: &Session, task: &TaskRef) -> Result<()> {
    session.call("task.cancel", vec![task.into()]).map(drop)
}

/// `task.destroy`.
///
/// # Errors
/// [`crate::Error`].
pub fn destroy(session: &Session, task: &TaskRef) -> Result<()> {
    session.call("task.destroy", vec![task.into()]).map(drop)
}

/// The outcome of a finished task: its decoded result, or its error as the
/// XAPI error the synchronous call would have raised.
///
/// # Errors
/// [`Error::Api`] carrying the task's `error_info`; [`Error::Codec`] for a
/// result that is not a value fragment.
pub fn outcome(task: &Task) -> Result<Value> {
    match task.status {
        Status::Success if task.result.is_empty() => Ok(Value::String(String::new())),
        Status::Success => parse_value(&task.result).map_err(|source| Error::Codec {
            endpoint: "task.result".into(),
            method: task.name_label.clone(),
            source,
        }),
        _ => {
            let mut info = task.error_info.iter().cloned();
            let code = info.next().unwrap_or_else(|| format!("TASK_{:?}", task.status).to_uppercase());
            Err(Error::Api { method: task.name_label.clone(), source: XapiError { code, params: info.collect() } })
        }
    }
}

/// Polls `task` until it finishes or `limit` passes, calling `progress` with
/// each new record; destroys the task once finished.
///
/// # Errors
/// [`Error::Timeout`] after `limit` (the task is cancelled first), or the
/// task's own failure.
pub fn wait(session: &Session, task: &TaskRef, limit: Duration, mut progress: impl FnMut(&Task)) -> Result<Value> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let record = get_record(session, task)?;
        progress(&record);
        if !matches!(record.status, Status::Pending | Status::Cancelling) {
            let result = outcome(&record);
            let _ = destroy(session, task);
            return result;
        }
        if started.elapsed() > limit {
            let _ = cancel(session, task);
            return Err(Error::Timeout {
                endpoint: session.endpoint().to_string(),
                method: record.name_label,
                after: limit,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
