//! Calls SMAPIv3 plugin executables exactly as xapi-storage-script does.
//!
//! The caller side of the protocol, reproduced from xapi-storage-script's
//! `fork_exec_rpc` so tests exercise the plugin the way XCP-ng will:
//!
//! 1. the script is looked up in the plugin directory **case-insensitively**
//!    and must be a regular, executable file after following symlinks;
//! 2. it runs as `<dir>/<Method> --json` from `/`, with the named parameters
//!    written as one compact JSON object on stdin, which is then closed;
//! 3. exit 0: the *whole* stdout must be one JSON value (the result);
//!    non-zero: the whole stdout must be the error record
//!    `{"code", "params", "backtrace": {"error", "files", "lines"}}` with
//!    every field present and typed. Anything else is a protocol violation,
//!    which is how xapi would see it (`SCRIPT_FAILED … bad json on stdout`).
//!
//! [`PluginTree`] builds the two plugin directories with method links to a
//! binary, as the RPM installs them.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The volume plugin directory name.
pub const VOLUME_DIR: &str = "org.xen.xapi.storage.nvmetcp";
/// The datapath plugin directory name.
pub const DATAPATH_DIR: &str = "nvmetcp";

/// A violation of the protocol, or a failure to run the script at all.
#[derive(Debug)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// How a well-behaved call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Exit 0 and this value on stdout.
    Success(Value),
    /// Non-zero exit and this error record on stdout.
    Failure {
        /// `code`.
        code: String,
        /// `params`.
        params: Vec<String>,
        /// `backtrace.error`.
        error: String,
    },
}

/// Everything a call produced.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The parsed outcome.
    pub outcome: Outcome,
    /// The exit code.
    pub exit_code: i32,
    /// Raw stdout.
    pub stdout: String,
    /// Raw stderr (xapi-storage-script ignores it on success).
    pub stderr: String,
}

impl Reply {
    /// The result value, or a panic showing the error record.
    ///
    /// # Panics
    /// If the call failed.
    #[must_use]
    pub fn value(&self) -> &Value {
        match &self.outcome {
            Outcome::Success(value) => value,
            Outcome::Failure { code, params, .. } => {
                panic!("call failed: {code} {params:?}\nstderr: {}", self.stderr)
            }
        }
    }

    /// The error code and params, or a panic showing the value.
    ///
    /// # Panics
    /// If the call succeeded.
    #[must_use]
    pub fn failure(&self) -> (&str, &[String]) {
        match &self.outcome {
            Outcome::Failure { code, params, .. } => (code, params),
            Outcome::Success(value) => panic!("call unexpectedly succeeded: {value}"),
        }
    }
}

/// Runs plugin scripts the way xapi-storage-script does, with optional extra
/// environment variables (xapi-storage-script's own environment is inherited).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    env: Vec<(String, String)>,
}

impl Caller {
    /// A caller with the test process's environment.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an environment variable for the script.
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Calls `method` in `plugin_dir` with `params` (a JSON object).
    ///
    /// # Errors
    /// [`ProtocolError`] if the script is missing or its output breaks the protocol.
    pub fn call(&self, plugin_dir: &Path, method: &str, params: &Value) -> Result<Reply, ProtocolError> {
        let compact = serde_json::to_string(params).map_err(|e| ProtocolError(e.to_string()))?;
        self.call_raw(plugin_dir, method, compact.as_bytes())
    }

    /// Calls `method` with arbitrary bytes on stdin (for malformed requests).
    ///
    /// # Errors
    /// [`ProtocolError`] if the script is missing or its output breaks the protocol.
    pub fn call_raw(&self, plugin_dir: &Path, method: &str, stdin: &[u8]) -> Result<Reply, ProtocolError> {
        let script = find_script(plugin_dir, method)?;
        #[allow(clippy::disallowed_methods)] // the harness is the caller, not driver code
        let mut command = Command::new(&script);
        command.arg("--json").current_dir("/").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().map_err(|e| ProtocolError(format!("cannot run {}: {e}", script.display())))?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin may exit before reading; that shows in its reply.
            let _ = pipe.write_all(stdin);
        }
        let output = child.wait_with_output().map_err(|e| ProtocolError(format!("waiting for {method}: {e}")))?;
        let stdout =
            String::from_utf8(output.stdout).map_err(|_| ProtocolError(format!("{method}: stdout is not UTF-8")))?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let exit_code =
            output.status.code().ok_or_else(|| ProtocolError(format!("{method}: signalled; stderr: {stderr}")))?;
        let parsed: Result<Value, _> = serde_json::from_str(&stdout);
        let outcome = match (exit_code, parsed) {
            (0, Ok(value)) => Outcome::Success(value),
            (0, Err(e)) => {
                return Err(ProtocolError(format!("{method}: bad json on stdout ({e}): {stdout:?}; stderr: {stderr}")))
            }
            (_, Ok(record)) => parse_error_record(&record).ok_or_else(|| {
                ProtocolError(format!("{method}: non-zero exit and ill-shaped error record: {stdout:?}"))
            })?,
            (_, Err(e)) => {
                return Err(ProtocolError(format!(
                    "{method}: non-zero exit and bad json on stdout ({e}): {stdout:?}; stderr: {stderr}"
                )))
            }
        };
        Ok(Reply { outcome, exit_code, stdout, stderr })
    }
}

/// Looks the script up as xapi-storage-script does: case-insensitively, and
/// it must be an executable regular file once symlinks are followed.
fn find_script(plugin_dir: &Path, method: &str) -> Result<PathBuf, ProtocolError> {
    let entries = std::fs::read_dir(plugin_dir).map_err(|e| ProtocolError(format!("{}: {e}", plugin_dir.display())))?;
    let path = entries
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(method))
        .map(|e| e.path())
        .ok_or_else(|| ProtocolError(format!("SCRIPT_MISSING {}/{method}", plugin_dir.display())))?;
    let metadata =
        std::fs::metadata(&path).map_err(|e| ProtocolError(format!("SCRIPT_MISSING {}: {e}", path.display())))?;
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
        return Err(ProtocolError(format!("SCRIPT_NOT_EXECUTABLE {}", path.display())));
    }
    Ok(path)
}

fn parse_error_record(record: &Value) -> Option<Outcome> {
    let strings = |v: &Value| v.as_array()?.iter().map(|s| s.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>();
    let code = record.get("code")?.as_str()?.to_owned();
    let params = strings(record.get("params")?)?;
    let backtrace = record.get("backtrace")?;
    let error = backtrace.get("error")?.as_str()?.to_owned();
    strings(backtrace.get("files")?)?;
    backtrace.get("lines")?.as_array()?.iter().map(Value::as_i64).collect::<Option<Vec<_>>>()?;
    Some(Outcome::Failure { code, params, error })
}

/// The two plugin directories, populated with method links to one binary.
#[derive(Debug)]
pub struct PluginTree {
    root: tempfile::TempDir,
}

impl PluginTree {
    /// Creates `volume/<VOLUME_DIR>/` and `datapath/<DATAPATH_DIR>/` in a
    /// temporary root, with a link to `binary` named after each method given.
    ///
    /// # Errors
    /// If the tree cannot be created.
    pub fn new(binary: &Path, volume_methods: &[&str], datapath_methods: &[&str]) -> std::io::Result<Self> {
        let tree = Self { root: tempfile::tempdir()? };
        for (dir, methods) in [(tree.volume_dir(), volume_methods), (tree.datapath_dir(), datapath_methods)] {
            std::fs::create_dir_all(&dir)?;
            for method in methods {
                std::os::unix::fs::symlink(binary, dir.join(method))?;
            }
        }
        Ok(tree)
    }

    /// The volume plugin directory.
    #[must_use]
    pub fn volume_dir(&self) -> PathBuf {
        self.root.path().join("volume").join(VOLUME_DIR)
    }

    /// The datapath plugin directory.
    #[must_use]
    pub fn datapath_dir(&self) -> PathBuf {
        self.root.path().join("datapath").join(DATAPATH_DIR)
    }
}
