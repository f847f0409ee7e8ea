//! How the binary is invoked, and one call from request to reply.
//!
//! xapi-storage-script runs `<plugin dir>/<Method> --json` with the named
//! parameters on stdin and reads exactly one JSON value from stdout: the
//! result with exit 0, or the error record with exit 1. People run the same
//! binary as `nvmetcp-plugin <Method> [name=value …]` (or through a link
//! without `--json`) and get the same JSON, pretty-printed.
//!
//! This module never writes anything: [`execute`] returns the [`Reply`] and the
//! binary prints it, so stdout has exactly one writer.

use std::io::Read;
use std::path::Path;

use crate::context::Context;
use crate::dispatch::implemented;
use crate::error::{to_error_record, DriverError, Failure};
use crate::plugin::{DATAPATH_SCHEME, HOST_PLUGINS_DIR, VERSION, VOLUME_PLUGIN_DIR};
use crate::smapi::method::{Interface, Method, PluginKind};
use crate::smapi::params::{Params, RequestError};

/// The installed name of the multi-call binary.
pub const BINARY_NAME: &str = "nvmetcp-plugin";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Run one SMAPIv3 method.
    Call(CallRequest),
    /// Print usage.
    Help,
    /// Print the version.
    Version,
    /// Answer one XAPI host-plugin call (run as `/etc/xapi.d/plugins/nvmetcp`
    /// with the XML-RPC request as the only argument).
    HostPlugin(String),
    /// The package's post-install steps (`--post-install`).
    PostInstall,
    /// The userspace initiator's daemon for one SR (`--initiator-daemon
    /// <sr-uuid>`, as its systemd template unit runs it).
    InitiatorDaemon(String),
    /// Where systemd does not run: the supervisor that restarts one SR's
    /// daemon as its unit's `Restart=always` would (`--initiator-supervise
    /// <sr-uuid>`, started detached by `SR.attach`).
    InitiatorSupervise(String),
    /// List the method links to install, one `<plugin dir> <file>` per line
    /// (`--list-links`, for packaging).
    ListLinks,
    /// Run the host agent (invoked as `nvmetcp-agent`, see [`crate::agent`]).
    Agent,
}

/// One method call as requested on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRequest {
    /// Which plugin answers.
    pub kind: PluginKind,
    /// The method name as invoked (looked up case-insensitively later).
    pub method: String,
    /// Where the parameters come from.
    pub input: Input,
    /// Whether logs should also go to stderr.
    pub verbose: bool,
}

/// Where a call's parameters come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// One JSON object on stdin (`--json`, the xapi-storage-script protocol).
    JsonOnStdin,
    /// `name=value` words typed by a person.
    Words(Vec<String>),
}

/// A command line that makes no sense.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    /// No method named.
    #[error("no method given; try '{BINARY_NAME} --help'")]
    NoMethod,
    /// An option that does not exist.
    #[error("unknown option '{0}'; try '{BINARY_NAME} --help'")]
    UnknownOption(String),
    /// The host plugin takes exactly one argument.
    #[error("as an XAPI host plugin, nvmetcp takes one argument: the XML-RPC request xapi passes")]
    HostPluginArgs,
    /// `--initiator-daemon` and `--initiator-supervise` take the SR's UUID and nothing else.
    #[error("{0} takes one argument: the SR's UUID")]
    InitiatorDaemonArgs(&'static str),
    /// `--json` together with `name=value` words.
    #[error("--json reads the parameters from stdin; do not also give name=value arguments")]
    JsonAndWords,
}

/// Reads the command line. `argv0` decides a lot: invoked through a link
/// named after a method, the link name is the method and the link's
/// directory tells the volume plugin from the datapath plugin.
///
/// # Errors
/// [`UsageError`] for a command line that names no method or has unknown options.
pub fn parse_args(argv0: &str, args: &[String]) -> Result<Invocation, UsageError> {
    let path = Path::new(argv0);
    let invoked_as = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let directory = path.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
    if directory.as_deref() == Path::new(HOST_PLUGINS_DIR).file_name().and_then(|n| n.to_str()) {
        return match args {
            [request] => Ok(Invocation::HostPlugin(request.clone())),
            _ => Err(UsageError::HostPluginArgs),
        };
    }
    if invoked_as == crate::agent::LINK_NAME {
        return match args.first().map(String::as_str) {
            None => Ok(Invocation::Agent),
            Some("-h" | "--help") => Ok(Invocation::Help),
            Some("-V" | "--version") => Ok(Invocation::Version),
            Some(other) => Err(UsageError::UnknownOption(other.to_owned())),
        };
    }
    match args.first().map(String::as_str) {
        Some("--post-install") => return Ok(Invocation::PostInstall),
        Some("--list-links") => return Ok(Invocation::ListLinks),
        Some("--initiator-daemon") => {
            return match args {
                [_, sr] => Ok(Invocation::InitiatorDaemon(sr.clone())),
                _ => Err(UsageError::InitiatorDaemonArgs("--initiator-daemon")),
            }
        }
        Some("--initiator-supervise") => {
            return match args {
                [_, sr] => Ok(Invocation::InitiatorSupervise(sr.clone())),
                _ => Err(UsageError::InitiatorDaemonArgs("--initiator-supervise")),
            }
        }
        _ => {}
    }
    let mut method = (invoked_as.contains('.') && invoked_as != BINARY_NAME).then_some(invoked_as);
    let mut kind = match directory.as_deref() {
        Some(VOLUME_PLUGIN_DIR) => Some(PluginKind::Volume),
        Some(DATAPATH_SCHEME) => Some(PluginKind::Datapath),
        _ => None,
    };
    let (mut json, mut verbose, mut words) = (false, false, Vec::new());
    for arg in args {
        match arg.as_str() {
            "--json" => json = true,
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            "-v" | "--verbose" => verbose = true,
            "--datapath" => kind = Some(PluginKind::Datapath),
            "--volume" => kind = Some(PluginKind::Volume),
            option if option.starts_with('-') => return Err(UsageError::UnknownOption(option.to_owned())),
            word if method.is_none() => method = Some(word.to_owned()),
            word => words.push(word.to_owned()),
        }
    }
    let method = method.ok_or(UsageError::NoMethod)?;
    if json && !words.is_empty() {
        return Err(UsageError::JsonAndWords);
    }
    let kind = kind.unwrap_or_else(|| match Method::lookup(&method).map(|m| m.interface) {
        Some(Interface::Datapath | Interface::Data) => PluginKind::Datapath,
        _ => PluginKind::Volume,
    });
    let input = if json { Input::JsonOnStdin } else { Input::Words(words) };
    Ok(Invocation::Call(CallRequest { kind, method, input, verbose }))
}

/// What to print on stdout, and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Exactly one JSON document (plus a newline).
    pub stdout: String,
    /// 0 on success, 1 with an error record.
    pub exit_code: i32,
}

/// Runs one call: reads the parameters, dispatches inside a span carrying
/// `dbg`, the SR and the volume, and turns any failure — a panic included —
/// into the error record.
pub fn execute(ctx: &Context, request: &CallRequest, stdin: &mut dyn Read) -> Reply {
    let pretty = matches!(request.input, Input::Words(_));
    let result = run(ctx, request, stdin);
    let (value, exit_code) = match result {
        Ok(value) => (value, 0),
        Err(failure) => {
            let host = ctx.host.read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default();
            let record = to_error_record(&failure, &host);
            (serde_json::to_value(record).unwrap_or_default(), 1)
        }
    };
    let text = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) };
    Reply { stdout: text.unwrap_or_else(|_| "null".to_owned()) + "\n", exit_code }
}

fn run(ctx: &Context, request: &CallRequest, stdin: &mut dyn Read) -> Result<serde_json::Value, Failure> {
    let params = read_params(request, stdin).inspect_err(|failure| {
        tracing::error!(method = %request.method, error = %crate::error::chain(&failure.error), "call rejected");
    })?;
    let method = params.method();
    let span = tracing::info_span!(
        "call",
        method = %method,
        dbg = params.dbg(),
        sr = tracing::field::Empty,
        volume = tracing::field::Empty,
    );
    if let Some(sr) = params.str("sr") {
        span.record("sr", sr);
    }
    if let Some(volume) = params.str("key").or_else(|| params.str("uri")) {
        span.record("volume", volume);
    }
    let _entered = span.enter();
    tracing::debug!(plugin = %request.kind, "call started");
    let result = contain_panics(method, || crate::pool_forward::dispatch_here_or_on_master(ctx, request.kind, &params));
    match &result {
        Ok(_) => tracing::debug!("call succeeded"),
        Err(failure) => tracing::error!(error = %crate::error::chain(&failure.error), "call failed"),
    }
    result
}

/// Runs `handler`, turning a panic (a bug) into an internal error, so the
/// caller still gets an error record and never a half-written stdout.
fn contain_panics(
    method: &Method,
    handler: impl FnOnce() -> Result<serde_json::Value, Failure>,
) -> Result<serde_json::Value, Failure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(DriverError::Panicked { method: method.call_name(), message }.into())
    })
}

/// Finds the method and reads its parameters from stdin or the words given.
fn read_params(request: &CallRequest, stdin: &mut dyn Read) -> Result<Params, Failure> {
    let method = Method::lookup(&request.method)
        .filter(|m| m.interface.served_by(request.kind))
        .ok_or_else(|| DriverError::UnknownMethod { method: request.method.clone(), kind: request.kind })?;
    let params = match &request.input {
        Input::JsonOnStdin => {
            let mut text = String::new();
            stdin.read_to_string(&mut text).map_err(RequestError::Stdin)?;
            Params::from_json(method, &text)?
        }
        Input::Words(words) => Params::from_words(method, words)?,
    };
    Ok(params)
}

/// The `--list-links` output: every method link to install, as
/// `volume/<dir> <file>` or `datapath/<dir> <file>` lines.
#[must_use]
pub fn links() -> String {
    let mut out = String::new();
    for (kind, dir) in [
        (PluginKind::Volume, format!("volume/{VOLUME_PLUGIN_DIR}")),
        (PluginKind::Datapath, format!("datapath/{DATAPATH_SCHEME}")),
    ] {
        for method in implemented(kind) {
            out.push_str(&format!("{dir} {}\n", method.file_name()));
        }
    }
    out
}

/// The `--help` text.
#[must_use]
pub fn usage() -> String {
    let list = |kind| implemented(kind).iter().map(|m| m.file_name()).collect::<Vec<_>>().join(" ");
    format!(
        "{BINARY_NAME} {VERSION} — the nvmetcp SMAPIv3 volume and datapath plugin for XCP-ng

USAGE
  <plugin dir>/<Method> --json        as xapi-storage-script runs it: parameters as one
                                      JSON object on stdin, one JSON value on stdout
  {BINARY_NAME} <Method> [name=value ...] [--datapath] [--verbose]
                                      for people: parameters as words (dbg defaults to cli)
  {BINARY_NAME} --help | --version
  {BINARY_NAME} --post-install          the package's post-install steps (host identity,
                                      whether xapi knows the SR type yet); safe to repeat
  {BINARY_NAME} --list-links            the method links a package installs
  {BINARY_NAME} --initiator-daemon <SR uuid>
                                      the userspace NVMe/TCP initiator of one SR, served as
                                      /dev/nbdN (run by nvmetcp-initiator@<SR uuid>.service)
  {BINARY_NAME} --initiator-supervise <SR uuid>
                                      where systemd does not run: restarts that daemon
                                      whenever it dies (SR.attach starts it)
  {HOST_PLUGINS_DIR}/nvmetcp <XML-RPC call>  as xapi runs it for host.call_plugin
  /usr/libexec/nvmetcp/nvmetcp-agent   the host agent (systemd unit nvmetcp-agent): path
                                      counts and alerts to XAPI, SR I/O to xcp-rrdd

OPTIONS
  --json        read the parameters from stdin (the SMAPIv3 protocol)
  --datapath    answer as the datapath plugin (default: decided by the link's directory
                {VOLUME_PLUGIN_DIR}/ or {DATAPATH_SCHEME}/, else by the method)
  --volume      answer as the volume plugin
  -v, --verbose also log to stderr (the log always goes to syslog LOCAL2, /var/log/SMlog)

IMPLEMENTED METHODS
  volume plugin:   {}
  datapath plugin: {}

EXAMPLES
  {BINARY_NAME} Plugin.Query
  echo '{{\"dbg\":\"test\"}}' | /usr/libexec/xapi-storage-script/volume/{VOLUME_PLUGIN_DIR}/Plugin.Query --json
  {BINARY_NAME} Plugin.diagnostics

EXIT STATUS
  0 success (the result on stdout), 1 failure (the SMAPI error record on stdout),
  2 bad command line
",
        list(PluginKind::Volume),
        list(PluginKind::Datapath),
    )
}

#[cfg(test)]
mod tests;
