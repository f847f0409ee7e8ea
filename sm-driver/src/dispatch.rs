//! Which handler answers which method: the table every implemented method is
//! registered in.
//!
//! The table is also the list of implemented methods, from which packaging
//! creates one link per method (xapi infers features from the links present)
//! and `--help` lists what works; any other catalogue method answers the
//! explicit `Unimplemented` error.

use serde::Serialize;
use serde_json::Value;

use crate::cmd::Runner;
use crate::diagnostics;
use crate::error::{DriverError, Failure};
use crate::host::HostRoot;
use crate::plugin;
use crate::smapi::method::{Interface, Method, PluginKind, CATALOGUE};
use crate::smapi::params::Params;

/// What handlers reach the host through.
pub struct Context {
    /// The host filesystem (sysfs, /dev, /etc).
    pub host: HostRoot,
    /// The runner of external programs.
    pub runner: Box<dyn Runner>,
}

type Handler = fn(&Context, PluginKind, &Params) -> Result<Value, Failure>;

/// Implemented methods: interface, IDL method name, handler.
const HANDLERS: &[(Interface, &str, Handler)] = &[
    (Interface::Plugin, "query", |_, kind, params| encode(params, &plugin::query(kind))),
    (Interface::Plugin, "diagnostics", |ctx, kind, params| {
        encode(params, &diagnostics::report(kind, &ctx.host, ctx.runner.as_ref()))
    }),
];

/// Runs the handler of `params.method()` for the plugin of `kind`.
///
/// # Errors
/// The handler's [`Failure`], or `Unimplemented` for a catalogue method
/// without a handler.
pub fn dispatch(ctx: &Context, kind: PluginKind, params: &Params) -> Result<Value, Failure> {
    let method = params.method();
    let handler = HANDLERS
        .iter()
        .find(|(interface, name, _)| *interface == method.interface && *name == method.name)
        .map(|(_, _, handler)| handler)
        .ok_or_else(|| DriverError::Unimplemented { method: method.call_name() })?;
    handler(ctx, kind, params)
}

/// The methods a plugin of `kind` implements, in catalogue order.
#[must_use]
pub fn implemented(kind: PluginKind) -> Vec<&'static Method> {
    CATALOGUE
        .iter()
        .filter(|m| m.interface.served_by(kind))
        .filter(|m| HANDLERS.iter().any(|(interface, name, _)| *interface == m.interface && *name == m.name))
        .collect()
}

fn encode<T: Serialize>(params: &Params, value: &T) -> Result<Value, Failure> {
    serde_json::to_value(value)
        .map_err(|source| DriverError::Encode { method: params.method().call_name(), source }.into())
}

#[cfg(test)]
mod tests {
    use super::implemented;
    use crate::smapi::method::PluginKind;

    #[test]
    fn both_plugins_implement_the_plugin_interface() {
        for kind in [PluginKind::Volume, PluginKind::Datapath] {
            let names: Vec<String> = implemented(kind).iter().map(|m| m.file_name()).collect();
            assert_eq!(names, ["Plugin.Query", "Plugin.diagnostics"]);
        }
    }
}
