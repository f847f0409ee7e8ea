//! What `nvmetcp status` shows for one host: each nvmetcp SR attached here,
//! with every path's state, ANA state and address, and the multipath I/O
//! policy. The admin command gathers it from every host through the XAPI
//! host plugin (`host.call_plugin(…, "status")`).

use serde::{Deserialize, Serialize};

use crate::host::HostRoot;
use crate::initiator::InitiatorKind;

/// One path of an attached SR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathReport {
    /// `tcp` or `rdma`.
    pub transport: String,
    /// Target address and port.
    pub portal: String,
    /// The controller (`nvme3`), when one exists.
    pub controller: Option<String>,
    /// Controller state (`live`, `connecting`, …) or `absent`.
    pub state: String,
    /// ANA state, when known.
    pub ana_state: Option<String>,
    /// Whether I/O can use the path.
    pub live: bool,
}

/// One SR attached on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrReport {
    /// The SR's UUID.
    pub sr_uuid: String,
    /// The subsystem.
    pub nqn: String,
    /// The namespace's identity.
    pub namespace: String,
    /// The multipath I/O policy now.
    pub iopolicy: Option<String>,
    /// "2/2 paths live", "degraded: …".
    pub summary: String,
    /// Each path.
    pub paths: Vec<PathReport>,
    /// Why the paths could not be read, if they could not.
    pub error: Option<String>,
    /// Which initiator serves the SR here: `kernel`, or `userspace` with
    /// its device (absent from hosts with an older nvmetcp).
    #[serde(default)]
    pub initiator: Option<String>,
}

/// This host's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// The host NQN.
    pub hostnqn: String,
    /// Attached SRs.
    pub srs: Vec<SrReport>,
    /// The host agent: running, when it last published (absent from hosts
    /// with an older nvmetcp).
    #[serde(default)]
    pub agent: Option<crate::agent::status::AgentReport>,
    /// The NVMe/TCP initiator this host uses, and why (absent from hosts
    /// with an older nvmetcp).
    #[serde(default)]
    pub initiator: Option<String>,
}

/// `kernel`, or `userspace (/dev/nbdN)` for an SR served by its daemon.
fn served_by(host: &HostRoot, state: &crate::sr_state::SrState) -> String {
    match state.initiator {
        InitiatorKind::Kernel => "kernel".to_owned(),
        InitiatorKind::Userspace => match crate::initiator::userspace::device(host, &state.sr_uuid) {
            Ok(device) => format!("userspace ({})", device.display()),
            Err(error) => format!("userspace (no device: {error})"),
        },
    }
}

/// Reads the state of every SR attached on this host.
#[must_use]
pub fn report(host: &HostRoot) -> HostReport {
    let srs = crate::sr_state::attached_uuids(host)
        .iter()
        .map(|uuid| match crate::sr_state::load(host, uuid) {
            Ok(state) => match crate::sr_paths::health_of(host, &state) {
                Ok(health) => SrReport {
                    initiator: Some(served_by(host, &state)),
                    sr_uuid: state.sr_uuid.into(),
                    nqn: state.nqn.to_string(),
                    namespace: state.namespace.canonical(),
                    iopolicy: health.iopolicy.clone(),
                    summary: health.summary(),
                    paths: health
                        .paths
                        .iter()
                        .map(|p| PathReport {
                            transport: p.key.transport.as_str().to_owned(),
                            portal: crate::nvme::names::Portal { addr: p.key.traddr, port: p.key.trsvcid }.to_string(),
                            controller: p.controller.clone(),
                            state: p.state.clone(),
                            ana_state: p.ana_state.clone(),
                            live: p.is_live(),
                        })
                        .collect(),
                    error: None,
                },
                Err(e) => SrReport {
                    initiator: Some(served_by(host, &state)),
                    sr_uuid: state.sr_uuid.into(),
                    nqn: state.nqn.to_string(),
                    namespace: state.namespace.canonical(),
                    iopolicy: None,
                    summary: "paths unknown".into(),
                    paths: vec![],
                    error: Some(e.to_string()),
                },
            },
            Err(e) => SrReport {
                sr_uuid: uuid.to_owned(),
                nqn: String::new(),
                namespace: String::new(),
                iopolicy: None,
                summary: "state unreadable".into(),
                paths: vec![],
                error: Some(e.to_string()),
                initiator: None,
            },
        })
        .collect();
    HostReport {
        hostnqn: host.read_trimmed("/etc/nvme/hostnqn").unwrap_or_default(),
        srs,
        agent: Some(crate::agent::status::report(host, std::time::SystemTime::now())),
        initiator: Some(
            crate::initiator::predict(
                host,
                crate::host_config::HostConfig::load(host).ok().and_then(|c| c.initiator),
                &crate::sr_state::attached_on(host, crate::initiator::InitiatorKind::Userspace),
            )
            .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::report;
    use crate::host::HostRoot;

    #[test]
    fn no_attached_sr_is_an_empty_report_and_broken_state_is_reported_not_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        assert!(report(&host).srs.is_empty());
        std::fs::create_dir_all(host.path("/run/nvmetcp/srs")).unwrap();
        std::fs::write(host.path("/run/nvmetcp/srs/3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11.json"), "{garbage").unwrap();
        let shown = report(&host);
        assert_eq!(shown.srs.len(), 1);
        assert_eq!(shown.srs[0].summary, "state unreadable");
        assert!(shown.srs[0].error.is_some());
    }
}
