//! When a host's paths to an SR change, which XAPI message to send, if any.
//!
//! Pure logic over observations and instants, so a scripted sequence of path
//! states tests it. The rules:
//!
//! * **Deduplicated**: a message is about a change of the set of live paths
//!   against the set last announced; a path that stays down while its
//!   controller goes from `connecting` to `resetting` and back, or a second
//!   cut of the same path, announces nothing.
//! * **Severity**: a live path lost while others remain is `NVMETCP_PATH_LOST`
//!   (priority 3, service degraded); the last one lost is
//!   `NVMETCP_LAST_PATH_LOST` (2, service loss: I/O queues until a path
//!   returns); every path back is `NVMETCP_PATHS_RESTORED` (4, service
//!   recovered); some back but not all is `NVMETCP_PATH_RECOVERED` (4). XAPI's
//!   priorities: 1 data loss imminent … 5 informational.
//! * **Rate-limited** per SR: a bucket of [`BURST`] messages refilled by one
//!   every [`REFILL`]. A change that finds the bucket empty is held; the next
//!   message (when a token is back and the state still differs from what was
//!   announced) compares with the last announced state and says how many
//!   changes were not announced. So a port flapping for an hour yields at
//!   most `BURST + 60` messages for that SR and host, and the last one always
//!   tells the current state.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Messages a flapping SR may send at once.
pub const BURST: u32 = 4;
/// One more message allowed per this long.
pub const REFILL: Duration = Duration::from_secs(60);

/// One path as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathView {
    /// `10.0.0.2:4420`.
    pub portal: String,
    /// `nvme3`, when a controller exists.
    pub controller: Option<String>,
    /// Controller state (`live`, `connecting`, …, `absent`), with the ANA
    /// state when that is what makes the path unusable.
    pub state: String,
    /// Whether I/O can use it.
    pub live: bool,
}

/// A message for `message.create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The message name.
    pub name: &'static str,
    /// 1 (most urgent) to 5.
    pub priority: i64,
    /// The SR the message is about (class SR).
    pub sr_uuid: String,
    /// This host's hostname, its name until XAPI gives its `name_label`.
    pub hostname: String,
    /// What happened, the sentence after "Host `<name>`".
    pub what: String,
}

impl Alert {
    /// The message body, naming the host by its XAPI `name_label` (what
    /// administrators see in XO and `xe host-list`), with the hostname
    /// beside it when the two differ; by its hostname when the label is
    /// not known.
    #[must_use]
    pub fn text(&self, name_label: Option<&str>) -> String {
        let host = match name_label.map(str::trim).filter(|l| !l.is_empty()) {
            Some(label) if label == self.hostname => label.to_owned(),
            Some(label) => format!("{label} ({})", self.hostname),
            None => self.hostname.clone(),
        };
        format!("Host {host}{}", self.what)
    }
}

/// The alert state of one SR on this host.
#[derive(Debug, Clone)]
pub struct SrAlerts {
    sr_uuid: String,
    announced: BTreeSet<String>,
    seen: Option<BTreeSet<String>>,
    tokens: u32,
    refilled: Instant,
    held: u32,
}

fn describe(paths: &[&PathView]) -> String {
    paths
        .iter()
        .map(|p| match &p.controller {
            Some(c) => format!("{} (controller {c}: {})", p.portal, p.state),
            None => format!("{} ({})", p.portal, p.state),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl SrAlerts {
    /// A new SR whose paths were last announced (or, at attach, expected) to
    /// be `announced`.
    #[must_use]
    pub fn new(sr_uuid: &str, announced: BTreeSet<String>, now: Instant) -> Self {
        Self { sr_uuid: sr_uuid.to_owned(), announced, seen: None, tokens: BURST, refilled: now, held: 0 }
    }

    /// The live portals last announced (what the agent keeps across restarts).
    #[must_use]
    pub fn announced(&self) -> &BTreeSet<String> {
        &self.announced
    }

    fn refill(&mut self, now: Instant) {
        while self.tokens < BURST && now.duration_since(self.refilled) >= REFILL {
            self.tokens += 1;
            self.refilled += REFILL;
        }
        if self.tokens == BURST {
            self.refilled = now;
        }
    }

    /// One observation of the SR's paths on `hostname` at `now`: the message
    /// to send, if one is due.
    pub fn observe(&mut self, now: Instant, hostname: &str, paths: &[PathView]) -> Option<Alert> {
        let live: BTreeSet<String> = paths.iter().filter(|p| p.live).map(|p| p.portal.clone()).collect();
        if self.seen.as_ref() != Some(&live) {
            if self.seen.is_some() && live != self.announced {
                self.held += 1;
            }
            self.seen = Some(live.clone());
        }
        self.refill(now);
        if live == self.announced {
            return None;
        }
        if self.tokens == 0 {
            return None;
        }
        self.tokens -= 1;
        let alert = self.compose(hostname, paths, &live);
        self.announced = live;
        self.held = 0;
        Some(alert)
    }

    fn compose(&self, hostname: &str, paths: &[PathView], live: &BTreeSet<String>) -> Alert {
        let total = paths.len();
        let lost: Vec<&PathView> = paths.iter().filter(|p| !p.live && self.announced.contains(&p.portal)).collect();
        let back: Vec<&PathView> = paths.iter().filter(|p| p.live && !self.announced.contains(&p.portal)).collect();
        let down: Vec<&PathView> = paths.iter().filter(|p| !p.live).collect();
        let count = format!("{}/{total} paths live", live.len());
        let sr = &self.sr_uuid;
        let (name, priority, what) = if live.len() == total {
            ("NVMETCP_PATHS_RESTORED", 4, format!(": all NVMe paths to SR {sr} are back ({count})"))
        } else if live.is_empty() {
            (
                "NVMETCP_LAST_PATH_LOST",
                2,
                format!(
                    " lost its last NVMe path to SR {sr}: {}; {count}. I/O waits until a path returns",
                    describe(&down)
                ),
            )
        } else if !lost.is_empty() {
            ("NVMETCP_PATH_LOST", 3, format!(" lost NVMe path {} to SR {sr}; {count}", describe(&lost)))
        } else {
            (
                "NVMETCP_PATH_RECOVERED",
                4,
                format!(
                    ": NVMe path {} to SR {sr} is back; {count}, still down: {}",
                    back.iter().map(|p| p.portal.as_str()).collect::<Vec<_>>().join(", "),
                    describe(&down)
                ),
            )
        };
        let held = if self.held > 1 {
            format!(" ({} path changes since the last message; the path is flapping)", self.held)
        } else {
            String::new()
        };
        Alert {
            name,
            priority,
            sr_uuid: self.sr_uuid.clone(),
            hostname: hostname.to_owned(),
            what: format!("{what}{held}."),
        }
    }
}

#[cfg(test)]
mod tests;
