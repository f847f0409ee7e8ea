//! Logging for the plugin binary: syslog facility LOCAL2 with the ident
//! `nvmetcp`, which dom0's rsyslog writes to `/var/log/SMlog` next to every
//! other storage plugin's lines.
//!
//! Each line carries the fields of the call's span (method, `dbg`, SR,
//! volume), so an administrator can follow one xapi task through SMlog. The
//! syslog socket is written directly (one datagram per event, RFC 3164 style
//! `<PRI>ident[pid]: message`), which needs no libc and works in a static
//! binary. If the socket is missing the call still works: logs then go to
//! stderr, which xapi-storage-script records when a call fails. Nothing is
//! ever written to stdout.
//!
//! Environment: `NVMETCP_LOG` (an `EnvFilter` directive, default `debug`),
//! `NVMETCP_LOG_STDERR=1` (also log to stderr, like `--verbose`), and
//! `NVMETCP_SYSLOG_SOCKET` (default `/dev/log`; tests point it elsewhere).

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// syslog facility LOCAL2 (18), as XCP-ng's storage plugins use.
const FACILITY_LOCAL2: u8 = 18;
/// The syslog ident.
const IDENT: &str = "nvmetcp";
/// Longest message sent, to stay within datagram limits.
const MAX_MESSAGE: usize = 8000;

/// Installs the global subscriber. Never fails the call.
pub fn init(verbose: bool) {
    let filter = EnvFilter::try_from_env("NVMETCP_LOG").unwrap_or_else(|_| EnvFilter::new("debug"));
    let socket_path = std::env::var("NVMETCP_SYSLOG_SOCKET").unwrap_or_else(|_| "/dev/log".to_owned());
    let syslog = SyslogLayer::connect(&socket_path);
    let syslog_missing = syslog.is_none();
    let wants_stderr = verbose || std::env::var("NVMETCP_LOG_STDERR").is_ok_and(|v| v == "1");
    let stderr = (wants_stderr || syslog_missing)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false).with_target(false));
    let installed = tracing_subscriber::registry().with(filter).with(syslog).with(stderr).try_init();
    if installed.is_ok() && syslog_missing {
        tracing::warn!(socket = %socket_path, "syslog is unavailable; logging to stderr only");
    }
}

/// Sends each event to the syslog socket as one datagram.
struct SyslogLayer {
    socket: UnixDatagram,
    pid: u32,
}

impl SyslogLayer {
    fn connect(path: &str) -> Option<Self> {
        let socket = UnixDatagram::unbound().ok()?;
        socket.connect(path).ok()?;
        Some(Self { socket, pid: std::process::id() })
    }
}

/// The formatted fields of a span, kept in its extensions.
struct SpanFields(String);

/// Formats fields as `name=value`, keeping the event message apart.
#[derive(Default)]
struct FieldWriter {
    message: String,
    fields: String,
}

impl Visit for FieldWriter {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if value.is_empty() || value.contains(char::is_whitespace) || value.contains('=') {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SyslogLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut writer = FieldWriter::default();
        attrs.record(&mut writer);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(writer.fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut writer = FieldWriter::default();
        values.record(&mut writer);
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
                fields.0.push_str(&writer.fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut context = String::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    context.push_str(&fields.0);
                }
            }
        }
        let mut writer = FieldWriter::default();
        event.record(&mut writer);
        let severity = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        let level = event.metadata().level().as_str();
        let mut text = format!("{level} [{}] {}{}", context.trim_start(), writer.message, writer.fields);
        // One record per line: dbg may carry a newline and a trace context.
        text = text.replace(['\n', '\r'], " ");
        if text.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let priority = FACILITY_LOCAL2 * 8 + severity;
        let line = format!("<{priority}>{IDENT}[{}]: {text}", self.pid);
        // A lost log line must never fail the storage call.
        let _ = self.socket.send(line.as_bytes());
    }
}
