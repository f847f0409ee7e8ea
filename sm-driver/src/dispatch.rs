//! Which handler answers which method: the table every implemented method is
//! registered in.
//!
//! The table is also the list of implemented methods, from which packaging
//! creates one link per method (xapi infers features from the links present)
//! and `--help` lists what works; any other catalogue method answers the
//! explicit `Unimplemented` error.

use serde::Serialize;
use serde_json::Value;

use crate::context::Context;
use crate::error::{CallResult, DriverError, Failure};
use crate::request::Request;
use crate::smapi::method::{Interface, Method, PluginKind, CATALOGUE};
use crate::smapi::params::Params;
use crate::smapi::types::QueryResult;
use crate::{datapath, diagnostics, plugin, sr, volume};

type Handler = fn(&Context, PluginKind, &Params) -> Result<Value, Failure>;

/// Implemented methods: interface, IDL method name, handler.
const HANDLERS: &[(Interface, &str, Handler)] = &[
    (Interface::Plugin, "query", |_, kind, params| encode(params, &query(kind))),
    (Interface::Plugin, "diagnostics", |ctx, kind, params| {
        encode(params, &diagnostics::report(kind, &ctx.host, ctx.runner.as_ref()))
    }),
    (Interface::Sr, "probe", |ctx, _, params| call(ctx, params, sr::probe)),
    (Interface::Sr, "create", |ctx, _, params| call(ctx, params, sr::create)),
    (Interface::Sr, "attach", |ctx, _, params| call(ctx, params, sr::attach)),
    (Interface::Sr, "detach", |ctx, _, params| call(ctx, params, sr::detach)),
    (Interface::Sr, "destroy", |ctx, _, params| call(ctx, params, sr::destroy)),
    (Interface::Sr, "stat", |ctx, _, params| call(ctx, params, sr::stat)),
    (Interface::Sr, "ls", |ctx, _, params| call(ctx, params, sr::ls)),
    (Interface::Sr, "set_name", |ctx, _, params| call(ctx, params, sr::set_name)),
    (Interface::Sr, "set_description", |ctx, _, params| call(ctx, params, sr::set_description)),
    (Interface::Volume, "create", |ctx, _, params| call(ctx, params, volume::create)),
    (Interface::Volume, "snapshot", |ctx, _, params| call(ctx, params, volume::snapshot)),
    (Interface::Volume, "clone", |ctx, _, params| call(ctx, params, volume::clone)),
    (Interface::Volume, "destroy", |ctx, _, params| call(ctx, params, volume::destroy)),
    (Interface::Volume, "set_name", |ctx, _, params| call(ctx, params, volume::set_name)),
    (Interface::Volume, "set_description", |ctx, _, params| call(ctx, params, volume::set_description)),
    (Interface::Volume, "set", |ctx, _, params| call(ctx, params, volume::set)),
    (Interface::Volume, "unset", |ctx, _, params| call(ctx, params, volume::unset)),
    (Interface::Volume, "resize", |ctx, _, params| call(ctx, params, volume::resize)),
    (Interface::Volume, "stat", |ctx, _, params| call(ctx, params, volume::stat)),
    (Interface::Datapath, "attach", |ctx, _, params| call(ctx, params, datapath::attach)),
    (Interface::Datapath, "activate", |ctx, _, params| call(ctx, params, datapath::activate)),
    (Interface::Datapath, "deactivate", |ctx, _, params| call(ctx, params, datapath::deactivate)),
    (Interface::Datapath, "detach", |ctx, _, params| call(ctx, params, datapath::detach)),
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

/// The answer of `Plugin.Query` for the plugin of `kind`.
#[must_use]
pub fn query(kind: PluginKind) -> QueryResult {
    plugin::query(kind, &implemented(kind))
}

/// Builds the method's typed request, runs its handler and encodes the
/// answer: the one place SR, Volume and Datapath results and errors are
/// encoded (the handler's failure keeps where it was raised).
fn call<R: Request, T: Serialize>(
    ctx: &Context,
    params: &Params,
    handler: fn(&Context, &R) -> CallResult<T>,
) -> Result<Value, Failure> {
    let request = R::from_params(params)?;
    let answer = handler(ctx, &request)?;
    encode(params, &answer)
}

fn encode<T: Serialize>(params: &Params, value: &T) -> Result<Value, Failure> {
    serde_json::to_value(value)
        .map_err(|source| DriverError::Encode { method: params.method().call_name(), source }.into())
}

#[cfg(test)]
mod tests {
    use super::{implemented, query};
    use crate::smapi::method::PluginKind;

    #[test]
    fn features_follow_the_implemented_methods() {
        assert_eq!(
            query(PluginKind::Volume).features,
            [
                "SR_PROBE",
                "SR_CREATE",
                "SR_ATTACH",
                "SR_DETACH",
                "SR_DELETE",
                "SR_UPDATE",
                "SR_SCAN",
                "VDI_CREATE",
                "VDI_SNAPSHOT",
                "VDI_CLONE",
                "VDI_DELETE",
                "VDI_RESIZE",
                "VDI_UPDATE"
            ]
        );
        assert!(query(PluginKind::Datapath).features.is_empty());
    }

    #[test]
    fn implemented_methods_per_plugin() {
        let names = |kind| implemented(kind).iter().map(|m| m.file_name()).collect::<Vec<String>>();
        assert_eq!(
            names(PluginKind::Volume),
            [
                "Plugin.Query",
                "Plugin.diagnostics",
                "SR.probe",
                "SR.create",
                "SR.attach",
                "SR.detach",
                "SR.destroy",
                "SR.stat",
                "SR.ls",
                "SR.set_name",
                "SR.set_description",
                "Volume.create",
                "Volume.snapshot",
                "Volume.clone",
                "Volume.destroy",
                "Volume.set_name",
                "Volume.set_description",
                "Volume.set",
                "Volume.unset",
                "Volume.resize",
                "Volume.stat"
            ]
        );
        assert_eq!(
            names(PluginKind::Datapath),
            [
                "Plugin.Query",
                "Plugin.diagnostics",
                "Datapath.attach",
                "Datapath.activate",
                "Datapath.deactivate",
                "Datapath.detach"
            ]
        );
    }
}
