//! Calls and sessions.
//!
//! A [`Session`] is opened with `session.login_with_password` (always with a
//! version and an `originator`, so XAPI accounts sessions per tool) and is
//! always logged out: explicitly with [`Session::logout`], or when dropped.
//! Over the network a pool member answers a login with `HOST_IS_SLAVE`; the
//! login is then retried once on the master it names, and when the member's
//! certificate was pinned, the master's certificate is pinned from the
//! fingerprint the member vouches for. On the dom0 socket a member forwards
//! calls itself.
//!
//! Nothing logged here carries a parameter: only method names, endpoints and
//! outcomes, so passwords, session refs and secret values never reach a log.

use std::time::Instant;

use tracing::{debug, warn};

use crate::codec::{decode_envelope, parse_response, write_call, MethodResponse};
use crate::error::{Error, Result, XapiError};
use crate::secret::Secret;
use crate::transport::{exchange, Endpoint, ExchangeError, Fingerprint, Timeouts};
use crate::value::{TypeError, Value};

/// The XML-RPC path (XAPI serves XML-RPC on every path but `/jsonrpc`).
const PATH: &str = "/";
/// The request header that asks a member for the master's certificate
/// fingerprint along with `HOST_IS_SLAVE`, and the reply header with it.
const THUMBPRINT_REQUEST: (&str, &str) = ("x-xenapi-request-host-certificate-thumbprint", "sha-256:master");
const THUMBPRINT_REPLY: &str = "x-xenapi-response-host-certificate-thumbprint";
/// The API version sent at login (XAPI ignores it; its default is 1.1).
const API_VERSION: &str = "1.1";

/// An endpoint and its time limits: makes calls that need no session.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    timeouts: Timeouts,
}

/// One call's reply with the headers that matter.
struct Reply {
    result: std::result::Result<Value, XapiError>,
    master_thumbprint: Option<String>,
}

impl Client {
    /// A client for `endpoint`.
    #[must_use]
    pub fn new(endpoint: Endpoint, timeouts: Timeouts) -> Self {
        Self { endpoint, timeouts }
    }

    /// The endpoint.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn raw(&self, method: &str, params: &[Value], thumbprint: bool) -> Result<Reply> {
        let started = Instant::now();
        let endpoint = self.endpoint.to_string();
        let body = write_call(method, params);
        let header = thumbprint.then_some(THUMBPRINT_REQUEST);
        let reply = exchange(&self.endpoint, PATH, "text/xml", header, body.as_bytes(), self.timeouts).map_err(
            |e| match e {
                ExchangeError::Connect(source) => Error::Connect { endpoint: endpoint.clone(), source },
                ExchangeError::Tls(why) => Error::Tls { endpoint: endpoint.clone(), why },
                ExchangeError::Http(crate::http::HttpError::Timeout(after)) => {
                    Error::Timeout { endpoint: endpoint.clone(), method: method.to_owned(), after }
                }
                ExchangeError::Http(other) => {
                    Error::Transport { endpoint: endpoint.clone(), method: method.to_owned(), why: other.to_string() }
                }
            },
        )?;
        debug!(method, %endpoint, status = reply.status, elapsed_ms = started.elapsed().as_millis(), "XAPI call");
        if reply.status != 200 {
            return Err(Error::Transport {
                endpoint,
                method: method.to_owned(),
                why: format!("HTTP {} {}", reply.status, reply.reason),
            });
        }
        let text = String::from_utf8(reply.body).map_err(|_| Error::Transport {
            endpoint: endpoint.clone(),
            method: method.to_owned(),
            why: "the reply is not UTF-8".into(),
        })?;
        let codec = |source| Error::Codec { endpoint: endpoint.clone(), method: method.to_owned(), source };
        let value = match parse_response(&text).map_err(codec)? {
            MethodResponse::Value(value) => value,
            MethodResponse::Fault { code, message } => {
                return Err(Error::Api {
                    method: method.to_owned(),
                    source: XapiError { code: "XMLRPC_FAULT".into(), params: vec![code.to_string(), message] },
                })
            }
        };
        let result = match decode_envelope(value) {
            Ok(value) => Ok(value),
            Err(Some(f)) => Err(XapiError { code: f.code, params: f.params }),
            Err(None) => {
                return Err(Error::Transport {
                    endpoint,
                    method: method.to_owned(),
                    why: "the reply lacks XAPI's Status/Value envelope".into(),
                })
            }
        };
        Ok(Reply { result, master_thumbprint: reply.head.header(THUMBPRINT_REPLY).map(str::to_owned) })
    }

    /// Calls `method` with `params` as given (no session is added).
    ///
    /// # Errors
    /// [`Error`] for transport, codec and XAPI failures.
    pub fn call(&self, method: &str, params: &[Value]) -> Result<Value> {
        self.raw(method, params, false)?.result.map_err(|source| Error::Api { method: method.to_owned(), source })
    }

    /// Logs in (following `HOST_IS_SLAVE` once over the network).
    ///
    /// # Errors
    /// [`Error`]; a wrong password is `Error::Api` with
    /// `SESSION_AUTHENTICATION_FAILED`.
    pub fn login(self, credentials: &Credentials, originator: &str) -> Result<Session> {
        const LOGIN: &str = "session.login_with_password";
        let params = [
            Value::from(credentials.user.as_str()),
            Value::from(credentials.password.expose()),
            Value::from(API_VERSION),
            Value::from(originator),
        ];
        let reply = self.raw(LOGIN, &params, self.endpoint.is_network())?;
        let (client, result) = match reply.result {
            Err(e) if self.endpoint.is_network() && e.master_address().is_some() => {
                let master = e.master_address().unwrap_or_default().to_owned();
                let pin = reply.master_thumbprint.as_deref().and_then(|t| t.parse::<Fingerprint>().ok());
                let client = Self { endpoint: self.endpoint.on_host(&master, pin), timeouts: self.timeouts };
                warn!(member = %self.endpoint, master = %client.endpoint, "XAPI host is a pool member; logging in to the master");
                let retry = client.raw(LOGIN, &params, false)?.result;
                (client, retry)
            }
            other => (self, other),
        };
        let reference = result.map_err(|source| Error::Api { method: LOGIN.to_owned(), source })?;
        let reference =
            reference.as_str("session ref").map_err(|source| Error::Type { method: LOGIN.into(), source })?;
        Ok(Session { client, reference: Secret::new(reference), open: true })
    }
}

/// A user name and password.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: Secret,
}

impl Credentials {
    /// What the dom0 socket needs: any name, no password (the socket itself
    /// authenticates the caller as root).
    #[must_use]
    pub fn local_root() -> Self {
        Self { user: "root".to_owned(), password: Secret::new("") }
    }
}

/// A logged-in session; logged out when dropped.
#[derive(Debug)]
pub struct Session {
    client: Client,
    reference: Secret,
    open: bool,
}

impl Session {
    /// The endpoint the session lives on (the master after a redirect).
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        self.client.endpoint()
    }

    /// The session ref, for XAPI features that need it passed on (such as
    /// `host.call_plugin`'s session argument). Never log it.
    #[must_use]
    pub fn reference(&self) -> &Secret {
        &self.reference
    }

    /// Calls `method` with the session ref first, then `params`.
    ///
    /// # Errors
    /// [`Error`] for transport, codec and XAPI failures.
    pub fn call(&self, method: &str, params: Vec<Value>) -> Result<Value> {
        let mut all = Vec::with_capacity(params.len() + 1);
        all.push(Value::from(self.reference.expose()));
        all.extend(params);
        self.client.call(method, &all)
    }

    /// Calls `method` and decodes its result with `decode`.
    ///
    /// # Errors
    /// [`Error::Type`] when the result has the wrong shape.
    pub fn call_as<T>(
        &self,
        method: &str,
        params: Vec<Value>,
        decode: impl FnOnce(&Value) -> std::result::Result<T, TypeError>,
    ) -> Result<T> {
        let value = self.call(method, params)?;
        decode(&value).map_err(|source| Error::Type { method: method.to_owned(), source })
    }

    /// Logs out now.
    ///
    /// # Errors
    /// [`Error`] when XAPI does not accept the logout (the session then
    /// expires on XAPI's side).
    pub fn logout(mut self) -> Result<()> {
        self.open = false;
        self.call("session.logout", vec![]).map(drop)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.call("session.logout", vec![]) {
                warn!(endpoint = %self.client.endpoint(), error = %e, "XAPI logout failed; the session will expire");
            }
        }
    }
}
