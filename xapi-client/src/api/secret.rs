//! `secret`: where xapi keeps device-config values whose key ends in
//! `password`. Values come back wrapped in [`Secret`] so they cannot be
//! logged by accident.

use crate::api::SecretRef;
use crate::client::Session;
use crate::error::Result;
use crate::secret::Secret;
use crate::value::Value;

/// `secret.create` with `value`; returns its ref.
///
/// # Errors
/// [`crate::Error`].
pub fn create(session: &Session, value: &Secret) -> Result<SecretRef> {
    let record = Value::record([("value", Value::from(value.expose())), ("other_config", Value::record::<&str>([]))]);
    session.call_as("secret.create", vec![record], |v| SecretRef::decode(v, "secret ref"))
}

/// `secret.get_by_uuid`.
///
/// # Errors
/// [`crate::Error`]; `UUID_INVALID` when there is no such secret.
pub fn get_by_uuid(session: &Session, uuid: &str) -> Result<SecretRef> {
    session.call_as("secret.get_by_uuid", vec![Value::from(uuid)], |v| SecretRef::decode(v, "secret ref"))
}

/// `secret.get_uuid`.
///
/// # Errors
/// [`crate::Error`].
pub fn get_uuid(session: &Session, secret: &SecretRef) -> Result<String> {
    session.call_as("secret.get_uuid", vec![secret.into()], |v| v.as_str("secret uuid").map(str::to_owned))
}

/// `secret.get_value`.
///
/// # Errors
/// [`crate::Error`].
pub fn get_value(session: &Session, secret: &SecretRef) -> Result<Secret> {
    session.call_as("secret.get_value", vec![secret.into()], |v| v.as_str("secret value").map(Secret::new))
}
