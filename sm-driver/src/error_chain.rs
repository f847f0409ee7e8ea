//! The one sentence an error becomes: its own text, then each cause's,
//! `: `-separated. A leaf module, so every layer (the fabric layer too) can
//! use it without importing the handlers' error module.

/// An error and all its causes, `: `-separated: the one sentence an error
/// becomes.
#[must_use]
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
