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

/// Where a call made on a pool member runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnMember {
    /// On the member itself (a read, a datapath call, or an SR call whose
    /// handler refuses on a member).
    Here,
    /// On the master: the call writes LVM metadata, which only the master
    /// does, so the member forwards it ([`crate::pool_forward`]).
    Master,
}
use OnMember::{Here, Master};

/// Implemented methods: interface, IDL method name, where it runs when made
/// on a pool member, handler.
const HANDLERS: &[(Interface, &str, OnMember, Handler)] = &[
    (Interface::Plugin, "query", Here, |_, kind, params| encode(params, &query(kind))),
    (Interface::Plugin, "diagnostics", Here, |ctx, kind, params| {
        encode(params, &diagnostics::report(kind, &ctx.host, ctx.runner.as_ref()))
    }),
    (Interface::Sr, "probe", Here, |ctx, _, params| call(ctx, params, sr::probe)),
    (Interface::Sr, "create", Here, |ctx, _, params| call(ctx, params, sr::create)),
    (Interface::Sr, "attach", Here, |ctx, _, params| call(ctx, params, sr::attach)),
    (Interface::Sr, "detach", Here, |ctx, _, params| call(ctx, params, sr::detach)),
    (Interface::Sr, "destroy", Here, |ctx, _, params| call(ctx, params, sr::destroy)),
    (Interface::Sr, "stat", Here, |ctx, _, params| call(ctx, params, sr::stat)),
    (Interface::Sr, "ls", Here, |ctx, _, params| call(ctx, params, sr::ls)),
    (Interface::Sr, "set_name", Here, |ctx, _, params| call(ctx, params, sr::set_name)),
    (Interface::Sr, "set_description", Here, |ctx, _, params| call(ctx, params, sr::set_description)),
    (Interface::Volume, "create", Master, |ctx, _, params| call(ctx, params, volume::create)),
    (Interface::Volume, "snapshot", Master, |ctx, _, params| call(ctx, params, volume::snapshot)),
    (Interface::Volume, "clone", Master, |ctx, _, params| call(ctx, params, volume::clone)),
    (Interface::Volume, "destroy", Master, |ctx, _, params| call(ctx, params, volume::destroy)),
    (Interface::Volume, "set_name", Master, |ctx, _, params| call(ctx, params, volume::set_name)),
    (Interface::Volume, "set_description", Master, |ctx, _, params| call(ctx, params, volume::set_description)),
    (Interface::Volume, "set", Master, |ctx, _, params| call(ctx, params, volume::set)),
    (Interface::Volume, "unset", Master, |ctx, _, params| call(ctx, params, volume::unset)),
    (Interface::Volume, "resize", Master, |ctx, _, params| call(ctx, params, volume::resize)),
    (Interface::Volume, "stat", Here, |ctx, _, params| call(ctx, params, volume::stat)),
    (Interface::Datapath, "attach", Here, |ctx, _, params| call(ctx, params, datapath::attach)),
    (Interface::Datapath, "activate", Here, |ctx, _, params| call(ctx, params, datapath::activate)),
    (Interface::Datapath, "deactivate", Here, |ctx, _, params| call(ctx, params, datapath::deactivate)),
    (Interface::Datapath, "detach", Here, |ctx, _, params| call(ctx, params, datapath::detach)),
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
        .find(|(interface, name, _, _)| *interface == method.interface && *name == method.name)
        .map(|(_, _, _, handler)| handler)
        .ok_or_else(|| DriverError::Unimplemented { method: method.call_name() })?;
    handler(ctx, kind, params)
}

/// The methods a plugin of `kind` implements, in catalogue order.
#[must_use]
pub fn implemented(kind: PluginKind) -> Vec<&'static Method> {
    CATALOGUE
        .iter()
        .filter(|m| m.interface.served_by(kind))
        .filter(|m| HANDLERS.iter().any(|(interface, name, _, _)| *interface == m.interface && *name == m.name))
        .collect()
}

/// Whether a call of `method` made on a pool member runs on the master.
#[must_use]
pub fn runs_on_master(method: &Method) -> bool {
    HANDLERS.iter().any(|(interface, name, on_member, _)| {
        *interface == method.interface && *name == method.name && *on_member == Master
    })
}

/// The methods a pool member forwards to the master, in catalogue order.
#[must_use]
pub fn forwarded() -> Vec<&'static Method> {
    CATALOGUE.iter().filter(|m| runs_on_master(m)).collect()
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
    use super::{forwarded, implemented, query};
    use crate::smapi::method::{Interface, PluginKind};

    /// The backticked names after `marker` on the line of `doc` holding it:
    /// "`create`, `snapshot`, …".
    fn listed_after(doc: &str, marker: &str) -> Vec<String> {
        let text = std::fs::read_to_string(format!("{}/../{doc}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let line = text.lines().find(|l| l.contains(marker)).unwrap_or_else(|| panic!("{doc} lacks {marker:?}"));
        let mut rest = &line[line.find(marker).unwrap() + marker.len()..];
        let mut names = Vec::new();
        while let Some((name, after)) = rest.strip_prefix('`').and_then(|r| r.split_once('`')) {
            names.push(name.to_owned());
            match after.strip_prefix(", ") {
                Some(next) => rest = next,
                None => break,
            }
        }
        names
    }

    #[test]
    fn forwarded_methods_are_the_documented_ones() {
        let names: Vec<String> = forwarded()
            .iter()
            .inspect(|m| assert_eq!(m.interface, Interface::Volume, "only Volume calls are forwarded"))
            .map(|m| m.name.to_owned())
            .collect();
        assert_eq!(
            names,
            ["create", "snapshot", "clone", "destroy", "set_name", "set_description", "set", "unset", "resize"]
        );
        assert_eq!(
            listed_after("ARCHITECTURE.md", "the metadata-writing `Volume.*` calls: "),
            names,
            "ARCHITECTURE.md"
        );
        assert_eq!(listed_after("docs/errors.md", "Every mutating `Volume.*` call ("), names, "docs/errors.md");
    }

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
