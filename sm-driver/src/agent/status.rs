//! The agent's status file, `/run/nvmetcp/agent.json`: what `nvmetcp status`
//! and `doctor` show (is it running, when did it last publish), and what a
//! restarted agent resumes from (what it last announced per SR).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::host::HostRoot;

/// The file.
pub const STATUS_FILE: &str = "/run/nvmetcp/agent.json";
/// A status older than this means the agent is not running (it rewrites the
/// file every reading, five seconds).
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// One SR as the agent last saw and announced it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrStatus {
    /// Live paths.
    pub live: usize,
    /// Expected paths.
    pub total: usize,
    /// The live portals last announced in an alert (or expected at attach).
    pub announced: Vec<String>,
}

/// What the agent writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Its process.
    pub pid: u32,
    /// When it started (Unix seconds).
    pub started: u64,
    /// When it wrote this (Unix seconds).
    pub updated: u64,
    /// When it last wrote an xcp-rrdd reading.
    pub last_rrd_write: Option<u64>,
    /// Whether xcp-rrdd accepted its registration.
    pub rrdd_registered: bool,
    /// When XAPI last took a path update or alert.
    pub last_xapi_publish: Option<u64>,
    /// Why XAPI did not take the last one, if it did not.
    pub xapi_error: Option<String>,
    /// Per SR.
    pub srs: BTreeMap<String, SrStatus>,
}

/// Seconds since the epoch.
#[must_use]
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The last status written, if any.
#[must_use]
pub fn load(host: &HostRoot) -> Option<AgentStatus> {
    let text = std::fs::read_to_string(host.path(STATUS_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the status atomically.
///
/// # Errors
/// The OS error.
pub fn save(host: &HostRoot, status: &AgentStatus) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    if let Some(parent) = host.path(STATUS_FILE).parent() {
        std::fs::create_dir_all(parent)?;
    }
    host.write_atomically(STATUS_FILE, &text, 0o644)
}

/// What `nvmetcp status` and `doctor` say about the agent on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    /// Whether it runs: its process exists and it wrote recently.
    pub running: bool,
    /// When it last published to XAPI (Unix seconds).
    pub last_xapi_publish: Option<u64>,
    /// When it last wrote an RRD reading (Unix seconds).
    pub last_rrd_write: Option<u64>,
    /// Whether xcp-rrdd knows it.
    pub rrdd_registered: bool,
    /// One line for administrators.
    pub summary: String,
}

/// Reads the agent's state on `host` as of `now`.
#[must_use]
pub fn report(host: &HostRoot, now: SystemTime) -> AgentReport {
    let Some(status) = load(host) else {
        return AgentReport {
            running: false,
            last_xapi_publish: None,
            last_rrd_write: None,
            rrdd_registered: false,
            summary: "not running (no status; start it: systemctl enable --now nvmetcp-agent)".into(),
        };
    };
    let age = unix_seconds(now).saturating_sub(status.updated);
    let alive = host.exists(&format!("/proc/{}", status.pid));
    let running = alive && age <= STALE_AFTER.as_secs();
    let ago = |t: Option<u64>| {
        t.map_or_else(|| "never".to_owned(), |t| format!("{}s ago", unix_seconds(now).saturating_sub(t)))
    };
    let summary = if running {
        let xapi = status.xapi_error.as_ref().map_or_else(String::new, |e| format!("; XAPI failing: {e}"));
        format!(
            "running (pid {}); published to XAPI {}, RRD written {}{}{xapi}",
            status.pid,
            ago(status.last_xapi_publish),
            ago(status.last_rrd_write),
            if status.rrdd_registered { "" } else { " (xcp-rrdd not registered)" },
        )
    } else {
        format!(
            "not running (last seen {}s ago; systemctl status nvmetcp-agent); last published to XAPI {}",
            age,
            ago(status.last_xapi_publish)
        )
    };
    AgentReport {
        running,
        last_xapi_publish: status.last_xapi_publish,
        last_rrd_write: status.last_rrd_write,
        rrdd_registered: status.rrdd_registered,
        summary,
    }
}
