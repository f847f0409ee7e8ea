//! What handlers reach the host through: the one value every call is given.
//!
//! The binary builds it from the real host; unit tests build it from a
//! temporary tree and a recording runner, so a handler never touches the host
//! except through these fields.

use crate::cmd::Runner;
use crate::host::HostRoot;

/// What handlers reach the host through.
pub struct Context {
    /// The host filesystem (sysfs, /dev, /etc).
    pub host: HostRoot,
    /// The runner of external programs.
    pub runner: Box<dyn Runner>,
}
