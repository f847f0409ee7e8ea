//! Listeners and the HTTP side: a thread per connection, keep-alive, XML-RPC
//! on every path but `/jsonrpc`, exact content types, compact XML.

use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value as Json;
use xapi_client::codec::json::{from_json, object, to_json};
use xapi_client::codec::{failure, parse_call, success, write_response, Encoding};
use xapi_client::http::{read_body, read_head, Head};
use xapi_client::Value;

use crate::backend::{Backend, Failure};
use crate::handlers::handle;
use crate::model::{Config, Model};

/// State shared by every connection.
pub struct Shared {
    model: Mutex<Model>,
    pub(crate) changed: Condvar,
    pub(crate) config: Config,
    pub(crate) backend: Box<dyn Backend>,
}

impl Shared {
    /// The model, even if a handler panicked while holding it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a change or `limit`.
    pub(crate) fn wait<'a>(&self, guard: MutexGuard<'a, Model>, limit: Duration) -> MutexGuard<'a, Model> {
        match self.changed.wait_timeout(guard, limit) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }
}

/// A running emulator. Listeners live as long as the process (tests are
/// short-lived).
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
}

impl Emulator {
    /// An emulated pool with `backend` for storage.
    #[must_use]
    pub fn new(config: Config, backend: impl Backend + 'static) -> Self {
        let model = Model::new(&config);
        Self {
            shared: Arc::new(Shared {
                model: Mutex::new(model),
                changed: Condvar::new(),
                config,
                backend: Box::new(backend),
            }),
        }
    }

    /// Serves HTTP on 127.0.0.1 and returns `http://127.0.0.1:<port>`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn listen_http(&self) -> std::io::Result<String> {
        self.listen_http_at("127.0.0.1:0")
    }

    /// Serves HTTP on `address` (e.g. `127.0.0.2:<port>`, to put a pool
    /// member and its master on one port) and returns the URL.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn listen_http_at(&self, address: &str) -> std::io::Result<String> {
        let listener = TcpListener::bind(address)?;
        let url = format!("http://{}", listener.local_addr()?);
        let emulator = self.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let emulator = emulator.clone();
                std::thread::spawn(move || emulator.serve_connection(stream, false));
            }
        });
        Ok(url)
    }

    /// Serves HTTP on the unix socket `path`: callers there are root, as on
    /// dom0's `/var/lib/xcp/xapi`.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub fn listen_unix(&self, path: &Path) -> std::io::Result<()> {
        let listener = UnixListener::bind(path)?;
        let emulator = self.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let emulator = emulator.clone();
                std::thread::spawn(move || emulator.serve_connection(stream, true));
            }
        });
        Ok(())
    }

    /// Serves one connection (any byte stream, e.g. a TLS session) until
    /// the peer closes it.
    pub fn serve_connection<S: Read + Write>(&self, stream: S, local: bool) {
        let mut stream = BufReader::new(stream);
        while let Ok(true) = self.serve_request(&mut stream, local) {}
    }

    fn serve_request<S: Read + Write>(&self, stream: &mut BufReader<S>, local: bool) -> std::io::Result<bool> {
        let head = match read_head(stream) {
            Ok(Some(head)) => head,
            Ok(None) | Err(_) => return Ok(false),
        };
        let Ok(body) = read_body(stream, &head, false) else { return Ok(false) };
        let path = head.start.get(1).cloned().unwrap_or_default();
        let (status, content_type, reply, extra) = if path.starts_with("/jsonrpc") {
            let reply = self.json_rpc(&body, local);
            ("200 OK", "application/json", reply, None)
        } else {
            match self.xml_rpc(&head, &body, local) {
                Some((reply, extra)) => ("200 OK", "text/xml", reply, extra),
                None => (
                    "500 Internal Server Error",
                    "text/html",
                    "<html><body><h1>HTTP 500 internal server error</h1>An unexpected error occurred; please wait a \
                     while and try again. If the problem persists, please contact your support representative.\
                     </body></html>"
                        .to_owned(),
                    None,
                ),
            }
        };
        let close = head.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"))
            || head.start.get(2).is_some_and(|v| v == "HTTP/1.0");
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            reply.len(),
            if close { "close" } else { "keep-alive" }
        );
        if let Some((name, value)) = extra {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply);
        let writer = stream.get_mut();
        writer.write_all(out.as_bytes())?;
        writer.flush()?;
        Ok(!close)
    }

    fn xml_rpc(&self, head: &Head, body: &[u8], local: bool) -> Option<(String, Option<(&'static str, String)>)> {
        let text = std::str::from_utf8(body).ok()?;
        let (method, params) = parse_call(text).ok()?;
        let outcome = handle(&self.shared, local, &method, params);
        let mut extra = None;
        if let Err(f) = &outcome {
            let asked = head.header("x-xenapi-request-host-certificate-thumbprint").is_some();
            if f.code == "HOST_IS_SLAVE" && asked {
                extra = self
                    .shared
                    .config
                    .master_thumbprint
                    .clone()
                    .map(|t| ("x-xenapi-response-host-certificate-thumbprint", t));
            }
        }
        let envelope = match outcome {
            Ok(value) => success(value),
            Err(Failure { code, params }) => failure(&code, &params),
        };
        Some((write_response(&envelope, Encoding::Xapi), extra))
    }

    fn json_rpc(&self, body: &[u8], local: bool) -> String {
        let request: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
        let version_two = request.get("jsonrpc").and_then(Json::as_str) == Some("2.0");
        let id = request.get("id").cloned().unwrap_or(Json::Null);
        let method = request.get("method").and_then(Json::as_str).unwrap_or_default().to_owned();
        let params = match request.get("params") {
            Some(Json::Array(items)) => items.iter().map(from_json).collect(),
            _ => Vec::new(),
        };
        let outcome = if method.is_empty() {
            Err(Failure::new("MESSAGE_METHOD_UNKNOWN", &[""]))
        } else {
            handle(&self.shared, local, &method, params)
        };
        let reply = match (outcome, version_two) {
            (Ok(value), true) => object([("jsonrpc", Json::from("2.0")), ("result", to_json(&value)), ("id", id)]),
            (Ok(value), false) => object([("result", to_json(&value)), ("error", Json::Null), ("id", id)]),
            (Err(f), true) => object([
                ("jsonrpc", Json::from("2.0")),
                (
                    "error",
                    object([("code", Json::from(1)), ("message", Json::from(f.code)), ("data", Json::from(f.params))]),
                ),
                ("id", id),
            ]),
            (Err(f), false) => {
                let error: Vec<Json> = std::iter::once(f.code).chain(f.params).map(Json::from).collect();
                object([("result", Json::Null), ("error", Json::Array(error)), ("id", id)])
            }
        };
        reply.to_string()
    }

    /// The records of `class` (`"SR"`, `"PBD"`, …) as the model holds them.
    #[must_use]
    pub fn records(&self, class: &str) -> Vec<(String, Value)> {
        let model = self.shared.lock();
        model
            .objects
            .get(class)
            .map(|objects| objects.iter().map(|(r, rec)| (r.clone(), Value::Struct(rec.clone()))).collect())
            .unwrap_or_default()
    }

    /// Every `add_to_<field>` and `remove_from_<field>` change so far, in order.
    #[must_use]
    pub fn map_updates(&self) -> Vec<crate::model::MapUpdate> {
        self.shared.lock().map_updates.clone()
    }

    /// How many sessions are logged in.
    #[must_use]
    pub fn open_sessions(&self) -> usize {
        self.shared.lock().sessions.len()
    }
}
