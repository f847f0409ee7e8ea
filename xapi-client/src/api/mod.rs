//! Typed calls for the XAPI classes nvmetcp uses, with record structs for the
//! fields it reads. Refs are opaque typed strings: never parsed, never kept
//! across sessions (UUIDs are the stable names).

use crate::value::{TypeError, Value};

pub mod event;
pub mod host;
pub mod message;
pub mod pbd;
pub mod pool;
pub mod secret;
pub mod sm;
pub mod sr;
pub mod task;

/// The null ref.
pub const NULL_REF: &str = "OpaqueRef:NULL";

macro_rules! refs {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub String);

        impl $name {
            /// Whether this is `OpaqueRef:NULL`.
            #[must_use]
            pub fn is_null(&self) -> bool {
                self.0 == NULL_REF
            }

            /// Reads a ref from `value`.
            ///
            /// # Errors
            /// [`TypeError`] when it is not a string.
            pub fn decode(value: &Value, context: &str) -> std::result::Result<Self, TypeError> {
                value.as_str(context).map(|s| Self(s.to_owned()))
            }
        }

        impl From<&$name> for Value {
            fn from(r: &$name) -> Self {
                Value::String(r.0.clone())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

refs! {
    /// A `pool` ref.
    PoolRef;
    /// A `host` ref.
    HostRef;
    /// An `SR` ref.
    SrRef;
    /// A `PBD` ref.
    PbdRef;
    /// An `SM` ref.
    SmRef;
    /// A `secret` ref.
    SecretRef;
    /// A `message` ref.
    MessageRef;
    /// A `task` ref.
    TaskRef;
    /// A `host_metrics` ref.
    HostMetricsRef;
}

/// Decodes a `get_all_records` result: a map from ref to record.
pub(crate) fn all_records<R, T>(
    value: &Value,
    class: &str,
    make_ref: impl Fn(String) -> R,
    decode: impl Fn(&Value) -> std::result::Result<T, TypeError>,
) -> std::result::Result<Vec<(R, T)>, TypeError>
where
    R: Ord,
{
    let members = value.as_struct(&format!("{class}.get_all_records"))?;
    let mut records = members
        .iter()
        .map(|(reference, record)| Ok((make_ref(reference.clone()), decode(record)?)))
        .collect::<Result<Vec<_>, TypeError>>()?;
    records.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(records)
}
