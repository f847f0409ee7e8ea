//! `message`: alerts shown in Xen Orchestra and `xe message-list`.

use crate::api::MessageRef;
use crate::client::Session;
use crate::error::Result;
use crate::value::Value;

/// The class of object a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum About {
    /// An SR.
    Sr,
    /// A host.
    Host,
    /// The pool.
    Pool,
}

impl About {
    fn wire(self) -> &'static str {
        match self {
            Self::Sr => "SR",
            Self::Host => "Host",
            Self::Pool => "Pool",
        }
    }
}

/// `message.create`: `priority` 1 (most urgent) to 5.
///
/// # Errors
/// [`crate::Error`].
pub fn create(
    session: &Session,
    name: &str,
    priority: i64,
    about: About,
    object_uuid: &str,
    body: &str,
) -> Result<MessageRef> {
    session.call_as(
        "message.create",
        vec![
            Value::from(name),
            Value::Int(priority),
            Value::from(about.wire()),
            Value::from(object_uuid),
            Value::from(body),
        ],
        |v| MessageRef::decode(v, "message ref"),
    )
}
