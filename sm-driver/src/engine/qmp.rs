//! A minimal QMP client: one JSON object per line over a unix socket.
//!
//! The protocol (QEMU `docs/interop/qmp-spec.rst`): the server greets with
//! `{"QMP": {...}}`; the client sends `{"execute": "qmp_capabilities"}` to
//! leave negotiation mode; then each `{"execute": NAME, "arguments": {...}}`
//! is answered by `{"return": ...}` or `{"error": {"class", "desc"}}`, with
//! asynchronous `{"event": ...}` lines possibly in between (skipped here:
//! job progress is polled with `query-block-jobs` instead).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

/// How long one QMP answer may take.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest line accepted from the server.
const MAX_LINE: u64 = 1 << 20;

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be used.
    #[error("QMP socket {path}")]
    Io {
        /// The socket.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("QMP socket {0}: the daemon closed the connection")]
    Closed(String),
    /// The server sent something that is not QMP.
    #[error("QMP socket {path}: unexpected message {message}")]
    Protocol {
        /// The socket.
        path: String,
        /// What arrived (shortened).
        message: String,
    },
    /// The command was refused.
    #[error("{command}: {class}: {desc}")]
    Refused {
        /// The command.
        command: String,
        /// QMP's error class (`GenericError`, `DeviceNotFound`, …).
        class: String,
        /// QEMU's sentence.
        desc: String,
    },
}

/// A negotiated QMP connection.
pub struct Qmp {
    path: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `socket`, reads the greeting and negotiates capabilities.
    ///
    /// # Errors
    /// [`QmpError`].
    pub fn connect(socket: &Path) -> Result<Self, QmpError> {
        let path = socket.display().to_string();
        let io = |source| QmpError::Io { path: path.clone(), source };
        let stream = UnixStream::connect(socket).map_err(io)?;
        stream.set_read_timeout(Some(QMP_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(QMP_TIMEOUT)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut qmp = Self { path: path.clone(), reader: BufReader::new(stream), writer };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(qmp.protocol(&greeting));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments` (an object, or `{}`) and returns what
    /// it returned.
    ///
    /// # Errors
    /// [`QmpError::Refused`] with QEMU's own sentence, or a transport error.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let mut request = Map::new();
        request.insert("execute".into(), Value::String(command.to_owned()));
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            request.insert("arguments".into(), arguments);
        }
        let mut line = Value::Object(request).to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|source| QmpError::Io { path: self.path.clone(), source })?;
        loop {
            let message = self.read_message()?;
            if message.get("event").is_some() {
                continue;
            }
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let text = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
                return Err(QmpError::Refused {
                    command: command.to_owned(),
                    class: text("class"),
                    desc: text("desc"),
                });
            }
            return Err(self.protocol(&message));
        }
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let read = (&mut self.reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .map_err(|source| QmpError::Io { path: self.path.clone(), source })?;
        if read == 0 {
            return Err(QmpError::Closed(self.path.clone()));
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol { path: self.path.clone(), message: shorten(&line) })
    }

    fn protocol(&self, message: &Value) -> QmpError {
        QmpError::Protocol { path: self.path.clone(), message: shorten(&message.to_string()) }
    }
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}
