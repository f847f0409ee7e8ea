//! A minimal QMP client: one JSON object per line over a unix socket.
//!
//! The protocol (QEMU `docs/interop/qmp-spec.rst`): the server greets with
//! `{"QMP": {...}}`; the client sends `{"execute": "qmp_capabilities"}` to
//! leave negotiation mode; then each `{"execute": NAME, "arguments": {...}}`
//! is answered by `{"return": ...}` or `{"error": {"class", "desc"}}`, with
//! asynchronous `{"event": ...}` lines possibly in between (skipped here:
//! job progress is polled with `query-block-jobs` instead).
//!
//! A daemon can greet one connection twice: a QMP monitor that runs in its
//! I/O thread installs its handlers from a bottom half (QEMU
//! `monitor/qmp.c`, `monitor_qmp_setup_handlers_bh`), and when a client
//! connects while that runs, both the socket's accept and the handler setup
//! deliver `CHR_EVENT_OPENED` (`chardev/char-fe.c`,
//! `qemu_chr_fe_set_handlers_full`: handlers first, then "already open?").
//! Each delivery resets the monitor to negotiation mode and greets
//! (`monitor_qmp_event`). A client that connects as soon as
//! `qemu-storage-daemon --daemonize` returns meets this, so a second
//! greeting is not an error here: it means "negotiate again", and a command
//! the reset refused (before it ran) is sent again.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

/// How long one QMP answer may take.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest line accepted from the server.
const MAX_LINE: u64 = 1 << 20;

/// Greetings one negotiation tolerates (QEMU sends at most two).
const MAX_GREETINGS: usize = 3;

/// QMP's error class for a command the monitor's mode does not have.
const COMMAND_NOT_FOUND: &str = "CommandNotFound";

/// QEMU's sentence for a command sent in negotiation mode (`monitor/qmp.c`,
/// `monitor_qmp_dispatch`).
const NOT_NEGOTIATED: &str = "Expecting capabilities negotiation with 'qmp_capabilities'";

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
        if !is_greeting(&greeting) {
            return Err(qmp.protocol(&greeting));
        }
        qmp.negotiate()?;
        Ok(qmp)
    }

    /// Leaves negotiation mode, and stays out of it: a greeting that arrives
    /// meanwhile may have reset the monitor after `qmp_capabilities` ran, so
    /// the exchange is repeated until one passes with no greeting (a monitor
    /// already in command mode refuses with QEMU's "already complete").
    fn negotiate(&mut self) -> Result<(), QmpError> {
        for _ in 0..MAX_GREETINGS {
            let (answer, greeted) = self.exchange("qmp_capabilities", &json!({}))?;
            match answer {
                Ok(_) => {}
                Err(QmpError::Refused { class, .. }) if class == COMMAND_NOT_FOUND => {}
                Err(error) => return Err(error),
            }
            if !greeted {
                return Ok(());
            }
        }
        Err(QmpError::Protocol {
            path: self.path.clone(),
            message: format!("greeted more than {MAX_GREETINGS} times on one connection"),
        })
    }

    /// Runs `command` with `arguments` (an object, or `{}`) and returns what
    /// it returned.
    ///
    /// # Errors
    /// [`QmpError::Refused`] with QEMU's own sentence, or a transport error.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let (answer, greeted) = self.exchange(command, &arguments)?;
        if !greeted {
            return answer;
        }
        self.negotiate()?;
        match answer {
            // The reset came first: the command did not run.
            Err(QmpError::Refused { class, desc, .. }) if class == COMMAND_NOT_FOUND && desc == NOT_NEGOTIATED => {
                let (again, greeted) = self.exchange(command, &arguments)?;
                if greeted {
                    self.negotiate()?;
                }
                again
            }
            answer => answer,
        }
    }

    /// Sends one command and reads its answer, skipping events; says whether
    /// a greeting (a monitor reset) came before the answer.
    fn exchange(&mut self, command: &str, arguments: &Value) -> Result<(Result<Value, QmpError>, bool), QmpError> {
        let mut request = Map::new();
        request.insert("execute".into(), Value::String(command.to_owned()));
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            request.insert("arguments".into(), arguments.clone());
        }
        let mut line = Value::Object(request).to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|source| QmpError::Io { path: self.path.clone(), source })?;
        let mut greeted = false;
        loop {
            let message = self.read_message()?;
            if message.get("event").is_some() {
                continue;
            }
            if is_greeting(&message) {
                greeted = true;
                continue;
            }
            if let Some(value) = message.get("return") {
                return Ok((Ok(value.clone()), greeted));
            }
            if let Some(error) = message.get("error") {
                let text = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
                let refused =
                    QmpError::Refused { command: command.to_owned(), class: text("class"), desc: text("desc") };
                return Ok((Err(refused), greeted));
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

fn is_greeting(message: &Value) -> bool {
    message.get("QMP").is_some()
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests;
