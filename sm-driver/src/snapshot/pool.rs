//! The master's side of the pool's snapshot calls: it asks the other hosts,
//! through XAPI's `host.call_plugin` to the nvmetcp host plugin
//! ([`crate::chain_member`] answers), which layered volumes their engines serve,
//! switches a running volume to its new leaf on the host that serves it,
//! has that host's engine merge a node of the chain it serves
//! ([`MergeInPool`]), and has every host deactivate an LV before it is
//! removed.
//!
//! A host that cannot be asked is never taken to serve nothing: a snapshot
//! of a layered volume is refused, the collector leaves everything alone,
//! an `lvremove` is refused, and an interrupted swap stays journalled
//! ([`super::journal`]: replay waits until the host says which leaf it
//! writes). A machine that is no XCP-ng host has no other host.

use std::collections::BTreeMap;
use std::time::Duration;

use xapi_client::api::host;
use xapi_client::api::HostRef;
use xapi_client::{Client, Credentials, Endpoint, Session, Timeouts};

use crate::engine::{EngineError, Image};
use crate::host::HostRoot;
use crate::pool_mappings::{this_host_uuid, PoolCheckError};
use crate::pool_role::{role, Role};
use crate::secrets::XAPI_SOCKET;

use super::journal::Serving;
use super::ops::{Elsewhere, OpError, Running, ServingProbe};
use super::served::HereProbe;

mod merging;

pub use merging::MergeInPool;

const PLUGIN: &str = "nvmetcp";
const ORIGINATOR: &str = "nvmetcp-plugin";

/// The host plugin function (`crate::chain_member` answers): which leaf a
/// host writes for a volume, `{"open", "leaf"}`.
pub const SERVING: &str = "chain_serving";
/// The volumes of an SR a host serves: `{"volumes": [...]}`.
pub const OPEN: &str = "chains_open";
/// Switch a served volume to a new leaf: `{"leaf"}`.
pub const SWAP: &str = "chain_swap";
/// Deactivate an LV before the master removes it: `{"released"}`.
pub const RELEASE: &str = "lv_release";
/// An online merge by the engine serving a volume: `action` start, state or leaf.
pub const COMMIT: &str = "chain_commit";
/// The code a host answers when it did not switch the disk (its disk still
/// writes the old leaf): `NVMETCP_SWAP_NOT_DONE` of the error-code list.
pub const SWAP_NOT_DONE: &str = "NVMETCP_SWAP_NOT_DONE";

/// The other hosts of the pool, for one SR.
pub struct Pool<'a> {
    /// This host.
    pub root: &'a HostRoot,
    /// The SR.
    pub sr_uuid: &'a str,
    /// The SR's VG.
    pub vg: &'a str,
}

/// Another host: its reference, its name, whether XAPI reports it live.
type OtherHost = (HostRef, String, bool);

/// A volume another host's engine serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOn {
    /// The host.
    pub host: String,
    /// The volume.
    pub volume: String,
    /// Served read-write with no swap in its handle: its engine may merge
    /// in its chain (a host of an older version says nothing: not mergeable).
    pub mergeable: bool,
}

/// How one host's plugin answered.
enum Reply {
    /// Its function's JSON answer.
    Answer(serde_json::Value),
    /// It answered with a failure: code and parameters.
    Refused(String, Vec<String>),
}

impl Pool<'_> {
    fn session(&self) -> Result<Session, PoolCheckError> {
        let endpoint = Endpoint::Unix(self.root.path(XAPI_SOCKET));
        let timeouts = Timeouts { connect: Duration::from_secs(5), call: Duration::from_secs(60) };
        Client::new(endpoint, timeouts)
            .login(&Credentials::local_root(), ORIGINATOR)
            .map_err(|e| PoolCheckError::Xapi(e.to_string()))
    }

    /// The other hosts (reference, name); none on a machine that is no XCP-ng host.
    fn others(&self) -> Result<Option<(Session, Vec<OtherHost>)>, PoolCheckError> {
        if role(self.root) == Role::Standalone {
            return Ok(None);
        }
        let me = this_host_uuid(self.root);
        let session = self.session()?;
        let xapi = |e: xapi_client::Error| PoolCheckError::Xapi(e.to_string());
        let mut hosts = Vec::new();
        for (reference, record) in host::get_all_records(&session).map_err(xapi)? {
            if Some(record.uuid.as_str()) == me.as_deref() {
                continue;
            }
            let live = host::is_live(&session, &record.metrics).map_err(xapi)?;
            hosts.push((reference, record.name_label, live));
        }
        Ok(Some((session, hosts)))
    }

    fn call(
        &self,
        session: &Session,
        reference: &HostRef,
        name: &str,
        function: &str,
        extra: &[(&str, &str)],
    ) -> Result<Reply, PoolCheckError> {
        let no_answer = |why: String| PoolCheckError::NoAnswer { host: name.to_owned(), why };
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        args.insert("sr".to_owned(), self.sr_uuid.to_owned());
        args.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        match host::call_plugin(session, reference, PLUGIN, function, &args) {
            Ok(text) => serde_json::from_str(&text)
                .map(Reply::Answer)
                .map_err(|_| no_answer(format!("its plugin answered {function} with {text:?}"))),
            Err(error) => match error.xapi() {
                // The plugin ran and refused (xapi passes its failure on).
                Some(failure) if failure.code.starts_with("NVMETCP_") => {
                    Ok(Reply::Refused(failure.code.clone(), failure.params.clone()))
                }
                _ => Err(no_answer(error.to_string())),
            },
        }
    }

    /// Asks every other host `function`; a host that is down or cannot
    /// answer is an error naming it.
    fn ask_all(&self, function: &str, extra: &[(&str, &str)]) -> Result<Vec<(String, Reply)>, PoolCheckError> {
        let Some((session, hosts)) = self.others()? else { return Ok(Vec::new()) };
        let mut replies = Vec::new();
        for (reference, name, live) in hosts {
            if !live {
                return Err(PoolCheckError::NoAnswer { host: name, why: "XAPI reports it is not live".to_owned() });
            }
            let reply = self.call(&session, &reference, &name, function, extra)?;
            replies.push((name, reply));
        }
        Ok(replies)
    }

    fn answered(name: &str, function: &str, reply: Reply) -> Result<serde_json::Value, PoolCheckError> {
        match reply {
            Reply::Answer(value) => Ok(value),
            Reply::Refused(code, params) => Err(PoolCheckError::NoAnswer {
                host: name.to_owned(),
                why: format!("its plugin refused {function}: {code} {}", params.join(" ")),
            }),
        }
    }

    /// The other host whose engine serves `volume`, and the leaf it writes.
    ///
    /// # Errors
    /// [`PoolCheckError`] if XAPI or a host cannot answer.
    pub fn serving_host(&self, volume: &str) -> Result<Option<(String, String)>, PoolCheckError> {
        for (name, reply) in self.ask_all(SERVING, &[("volume", volume)])? {
            let value = Self::answered(&name, SERVING, reply)?;
            if value["open"].as_bool() == Some(true) {
                let leaf = value["leaf"].as_str().unwrap_or_default().to_owned();
                return Ok(Some((name, leaf)));
            }
        }
        Ok(None)
    }

    /// The layered volumes the other hosts' engines serve, by host.
    ///
    /// # Errors
    /// [`PoolCheckError`] if XAPI or a host cannot answer.
    pub fn open_on_others(&self) -> Result<Vec<OpenOn>, PoolCheckError> {
        let mut open = Vec::new();
        for (name, reply) in self.ask_all(OPEN, &[])? {
            let value = Self::answered(&name, OPEN, reply)?;
            let listed = value["volumes"].as_array().ok_or_else(|| PoolCheckError::NoAnswer {
                host: name.clone(),
                why: format!("its plugin answered {OPEN} with {value}"),
            })?;
            let mergeable: Vec<&str> = value["mergeable"]
                .as_array()
                .map(|m| m.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            open.extend(listed.iter().filter_map(|v| v.as_str()).map(|volume| OpenOn {
                host: name.clone(),
                volume: volume.to_owned(),
                mergeable: mergeable.contains(&volume),
            }));
        }
        Ok(open)
    }

    /// A session and the reference of `host_name`, another host of the
    /// pool that XAPI reports live; otherwise why it cannot be asked.
    fn live_other(&self, host_name: &str) -> Result<(Session, HostRef), String> {
        let Some((session, hosts)) = self.others().map_err(|e| e.to_string())? else {
            return Err("this machine is no XCP-ng host: it has no pool to ask".to_owned());
        };
        match hosts.into_iter().find(|(_, name, _)| name == host_name) {
            Some((reference, _, true)) => Ok((session, reference)),
            Some(_) => Err("XAPI reports it is not live".to_owned()),
            None => Err("it is no longer a host of the pool".to_owned()),
        }
    }

    /// Asks `host_name` [`COMMIT`] with `action` for `volume`: its answer,
    /// [`EngineError::RefusedOnHost`] if it refused, or
    /// [`EngineError::MergeUnasked`] if it could not be asked.
    fn commit_on(
        &self,
        host_name: &str,
        volume: &str,
        action: &str,
        extra: &[(&str, &str)],
    ) -> Result<serde_json::Value, EngineError> {
        let unasked = |why: String| EngineError::MergeUnasked { why: format!("host {host_name}: {why}") };
        let (session, reference) = self.live_other(host_name).map_err(unasked)?;
        let mut args = vec![("volume", volume), ("action", action)];
        args.extend_from_slice(extra);
        match self.call(&session, &reference, host_name, COMMIT, &args) {
            Ok(Reply::Answer(value)) => Ok(value),
            Ok(Reply::Refused(code, params)) => Err(EngineError::RefusedOnHost {
                host: host_name.to_owned(),
                why: format!("{code} {}", params.join(" ")),
            }),
            Err(PoolCheckError::NoAnswer { why, .. }) => Err(unasked(why)),
            Err(error) => Err(unasked(error.to_string())),
        }
    }

    /// Asks `host` to switch `volume` to `new_leaf` (an LV of the SR).
    fn swap_on(&self, host_name: &str, volume: &str, new_leaf: &str) -> Result<(), EngineError> {
        let not_swapped = |why: String| EngineError::NotSwappedOnHost { host: host_name.to_owned(), why };
        // Asked first whether it is there and serves the volume: if not, the
        // switch is never requested and the disk certainly writes its old leaf.
        let (session, reference) = self.live_other(host_name).map_err(not_swapped)?;
        match self.call(&session, &reference, host_name, SERVING, &[("volume", volume)]) {
            Ok(Reply::Answer(value)) if value["open"].as_bool() == Some(true) => {}
            Ok(Reply::Answer(_)) => return Err(not_swapped(format!("it no longer serves volume {volume}"))),
            Ok(Reply::Refused(code, params)) => return Err(not_swapped(format!("{code} {}", params.join(" ")))),
            Err(error) => return Err(not_swapped(error.to_string())),
        }
        match self.call(&session, &reference, host_name, SWAP, &[("volume", volume), ("new_leaf", new_leaf)]) {
            Ok(Reply::Answer(_)) => Ok(()),
            Ok(Reply::Refused(code, params)) if code == SWAP_NOT_DONE => Err(not_swapped(params.join(" "))),
            Ok(Reply::Refused(code, params)) => Err(EngineError::SwapUnknownOnHost {
                host: host_name.to_owned(),
                why: format!("{code} {}", params.join(" ")),
            }),
            Err(error) => Err(EngineError::SwapUnknownOnHost { host: host_name.to_owned(), why: error.to_string() }),
        }
    }
}

impl Elsewhere for Pool<'_> {
    fn release(&self, lv: &str) -> Result<(), OpError> {
        let refused = |why: String| OpError::ActiveElsewhere { lv: lv.to_owned(), why };
        for (name, reply) in self.ask_all(RELEASE, &[("lv", lv)]).map_err(|e| refused(e.to_string()))? {
            match reply {
                Reply::Answer(value) => {
                    if value["released"].as_bool() == Some(true) {
                        tracing::info!(lv, host = %name, "deactivated on another host before its removal");
                    }
                }
                Reply::Refused(code, params) => {
                    return Err(refused(format!("host {name} answered {code}: {}", params.join(" "))));
                }
            }
        }
        Ok(())
    }
}

/// A running volume served by another host's engine: the snapshot's door
/// to it (pause first, then swap, on that host).
pub struct ServedOn<'a> {
    /// The pool.
    pub pool: Pool<'a>,
    /// The host serving the volume.
    pub host: String,
    /// The volume.
    pub volume: String,
}

impl Running for ServedOn<'_> {
    fn swap(&self, new_leaf: &Image) -> Result<(), EngineError> {
        let lv = new_leaf.path().file_name().and_then(|n| n.to_str()).unwrap_or_default();
        self.pool.swap_on(&self.host, &self.volume, lv)
    }

    fn host(&self) -> Option<String> {
        Some(self.host.clone())
    }
}

/// For replay: what this host's engines write to, and what the other
/// hosts' engines do.
pub struct PoolProbe<'a> {
    /// This host.
    pub here: HereProbe<'a>,
    /// The pool.
    pub pool: Pool<'a>,
}

impl ServingProbe for PoolProbe<'_> {
    fn serving(&self, volume: &str, old_leaf: &Image, new_leaf: &Image) -> Serving {
        match self.here.serving(volume, old_leaf, new_leaf) {
            Serving::NotOpen => {}
            known => return known,
        }
        match self.pool.serving_host(volume) {
            Ok(None) => Serving::NotOpen,
            // Only the new leaf is believed: a host killed between its
            // engine's switch and its handle's update still names the old one.
            Ok(Some((_, leaf))) if leaf == new_leaf.path_str() => Serving::NewLeaf,
            Ok(Some(_)) => Serving::Unknown,
            Err(error) => {
                tracing::warn!(%error, volume, "cannot learn which leaf the volume's host writes");
                Serving::Unknown
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod member_tests;

#[cfg(test)]
mod member_merge_tests;
