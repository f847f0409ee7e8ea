//! Metadata-writing volume calls made on a pool member run on the pool
//! master.
//!
//! xapi-storage-script runs `Volume.clone` + `Volume.set` (at the start of
//! a VM with a reset-on-boot disk) and `Volume.destroy` + `Volume.unset`
//! (at its shutdown) on the host where the VM runs, which is usually a
//! member (`shared/reference/smapiv3.md` §3.4-3.5). Only the master writes
//! LVM metadata ([`crate::pool_role`]), so a member does not refuse those
//! calls: it sends them, parameters as xapi gave them, to the master's host
//! plugin through XAPI (`host.call_plugin(<master>, "nvmetcp",`
//! [`FUNCTION`]`, {method, request})`), and prints the master's reply or
//! error record as its own.
//!
//! Which calls go is a flag of each method in the dispatch table
//! ([`crate::dispatch::forwarded`]), so a new metadata-writing method is
//! marked where it is registered. The master's side ([`answer`]) takes only
//! those methods,
//! parses the request again with the very parser of a local call, runs the
//! same handler, and refuses unless it is the master itself (a forwarded
//! call is never forwarded again). A master that cannot be reached is the
//! error `NVMETCP_POOL_UNREACHABLE`, and nothing is written. Volume calls
//! carry no secret (their parameters are `dbg`, the SR's URI, the key and
//! the volume's own fields), so nothing secret crosses XAPI.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use xapi_client::api::{host, pool};
use xapi_client::{Client, Credentials, Endpoint, Timeouts};

use crate::context::Context;
use crate::dispatch::{dispatch, forwarded, runs_on_master};
use crate::error::{to_error_record, DriverError, ErrorCode, Failure};
use crate::pool_role::{role, Role};
use crate::secrets::XAPI_SOCKET;
use crate::smapi::error_record::ErrorRecord;
use crate::smapi::method::{Method, PluginKind};
use crate::smapi::params::Params;

/// The host plugin function that runs a forwarded call on the master:
/// args `method` (one of [`crate::dispatch::forwarded`]) and `request` (its
/// JSON parameters).
pub const FUNCTION: &str = "volume_call";

const PLUGIN: &str = "nvmetcp";
const ORIGINATOR: &str = "nvmetcp-plugin";

/// Runs `params` here, or, for a call the dispatch table marks as running
/// on the master, made on a pool member, on the master.
///
/// # Errors
/// The handler's [`Failure`], here or on the master (its record as it made
/// it), or [`DriverError::MasterUnreachable`].
pub fn dispatch_here_or_on_master(ctx: &Context, kind: PluginKind, params: &Params) -> Result<Value, Failure> {
    // Only a forwardable call reads pool.conf: the datapath calls of a VM
    // start and SR.stat do not pay for it.
    if kind != PluginKind::Volume || !runs_on_master(params.method()) {
        return dispatch(ctx, kind, params);
    }
    match role(&ctx.host) {
        Role::Member(master) => on_master(ctx, params, &master),
        _ => dispatch(ctx, kind, params),
    }
}

/// Sends the call to the master (`address` from `pool.conf`, for messages).
fn on_master(ctx: &Context, params: &Params, address: &str) -> Result<Value, Failure> {
    let method = params.method().call_name();
    let unreachable =
        |why: String| DriverError::MasterUnreachable { method: method.clone(), master: address.to_owned(), why };
    let endpoint = Endpoint::Unix(ctx.host.path(XAPI_SOCKET));
    // A snapshot or clone on the master may wait for its SR lock and journal.
    let timeouts = Timeouts { connect: Duration::from_secs(5), call: Duration::from_secs(300) };
    let session = Client::new(endpoint, timeouts)
        .login(&Credentials::local_root(), ORIGINATOR)
        .map_err(|e| unreachable(format!("this host's XAPI: {e}")))?;
    let (_, the_pool) = pool::the_pool(&session).map_err(|e| unreachable(format!("XAPI: {e}")))?;
    let args = BTreeMap::from([("method".to_owned(), method.clone()), ("request".to_owned(), params.to_json())]);
    tracing::info!(%method, master = %address, "forwarding the call to the pool master");
    let text = match host::call_plugin(&session, &the_pool.master, PLUGIN, FUNCTION, &args) {
        Ok(text) => text,
        Err(error) => match error.xapi() {
            // The master's plugin ran and refused the call itself.
            Some(failure) if failure.code.starts_with("NVMETCP_") => {
                return Err(DriverError::Forwarded(Box::new(refused(&failure.code, &failure.params))).into())
            }
            _ => return Err(unreachable(format!("host.call_plugin: {error}")).into()),
        },
    };
    match serde_json::from_str::<Reply>(&text) {
        Ok(Reply::Result(value)) => Ok(value),
        Ok(Reply::Error(record)) => Err(DriverError::Forwarded(Box::new(record)).into()),
        Err(e) => Err(unreachable(format!("its plugin answered {text:?} ({e})")).into()),
    }
}

/// A record for a refusal of the master's plugin itself.
fn refused(code: &str, params: &[String]) -> ErrorRecord {
    let message = format!("the pool master refused the forwarded call: {}", params.join(" "));
    ErrorRecord {
        code: code.to_owned(),
        params: vec![message.clone()],
        backtrace: crate::smapi::error_record::Backtrace {
            error: message,
            files: vec![file!().to_owned()],
            lines: vec![i64::from(line!())],
        },
    }
}

/// What the master's plugin answers: the call's result or its error record.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    /// The handler's result.
    Result(Value),
    /// The handler's error record.
    Error(ErrorRecord),
}

/// The master's side of [`FUNCTION`]: validates and runs the forwarded call.
///
/// # Errors
/// `NVMETCP_BAD_PLUGIN_CALL` for a method not forwarded or a request
/// that does not parse; `NVMETCP_NOT_MASTER` on a host that is not the master.
pub fn answer(ctx: &Context, args: &BTreeMap<String, String>) -> Result<String, (ErrorCode, Vec<String>)> {
    let bad = |why: String| (ErrorCode::BadPluginCall, vec![why]);
    let name = args.get("method").map(String::as_str).unwrap_or_default();
    let method = Method::lookup(name).filter(|m| runs_on_master(m)).ok_or_else(|| {
        let names: Vec<String> = forwarded().iter().map(|m| m.call_name()).collect();
        bad(format!("{FUNCTION}: method {name:?} is not one of {}", names.join(", ")))
    })?;
    if !role(&ctx.host).writes_metadata() {
        return Err((
            ErrorCode::NotMaster,
            vec![format!("{name} was forwarded to this host as the pool master, but it is not the master")],
        ));
    }
    let request = args.get("request").map(String::as_str).unwrap_or_default();
    let reply = match Params::from_json(method, request).map_err(Failure::from).and_then(|params| {
        tracing::info!(method = %name, dbg = params.dbg(), "running a call forwarded by a pool member");
        dispatch(ctx, PluginKind::Volume, &params)
    }) {
        Ok(value) => Reply::Result(value),
        Err(failure) => {
            let host = ctx.host.read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default();
            Reply::Error(to_error_record(&failure, &host))
        }
    };
    serde_json::to_string(&reply).map_err(|e| (ErrorCode::InternalError, vec![e.to_string()]))
}

#[cfg(test)]
mod tests;
