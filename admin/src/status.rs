//! `nvmetcp status`: every nvmetcp SR, on every host, with every path.

use std::collections::BTreeMap;

use serde::Serialize;
use sm_driver::agent::status::AgentReport;
use sm_driver::status::{HostReport, SrReport};
use xapi_client::api::{pbd, sr};
use xapi_client::Session;

use crate::cli::StatusArgs;
use crate::console::Console;
use crate::error::{AdminError, Exit};
use crate::pool::{host_plugin, PoolView};

/// One SR on one host.
#[derive(Debug, Serialize)]
struct OnHost {
    host: String,
    attached: bool,
    report: Option<SrReport>,
    error: Option<String>,
}

/// One SR across the pool.
#[derive(Debug, Serialize)]
struct SrStatus {
    uuid: String,
    name_label: String,
    hosts: Vec<OnHost>,
}

fn healthy(on: &OnHost) -> bool {
    on.attached && on.report.as_ref().is_some_and(|r| !r.paths.is_empty() && r.paths.iter().all(|p| p.live))
}

/// Runs `status`.
///
/// # Errors
/// XAPI failures.
pub fn run(args: &StatusArgs, session: &Session, console: &mut Console) -> Result<Exit, AdminError> {
    let view = PoolView::read(session)?;
    let srs: Vec<_> =
        sr::get_all_records(session)?.into_iter().filter(|(_, r)| r.sr_type == sm_driver::plugin::SR_TYPE).collect();
    // One read of every PBD, and one host-plugin call per host, for all SRs.
    let pbds: BTreeMap<_, _> = pbd::get_all_records(session)?.into_iter().collect();
    let mut reports: BTreeMap<String, Result<HostReport, String>> = BTreeMap::new();
    let mut statuses = Vec::new();
    for (_, record) in &srs {
        let mut hosts = Vec::new();
        for pbd_record in record.pbds.iter().filter_map(|r| pbds.get(r)) {
            let name = view.name(&pbd_record.host);
            if !pbd_record.currently_attached {
                hosts.push(OnHost { host: name, attached: false, report: None, error: None });
                continue;
            }
            let report = reports
                .entry(pbd_record.host.0.clone())
                .or_insert_with(|| {
                    host_plugin::<HostReport>(session, &pbd_record.host, "status", &BTreeMap::new())
                        .map_err(|e| e.to_string())
                })
                .clone();
            let (report, error) = match report {
                Ok(report) => (report.srs.into_iter().find(|s| s.sr_uuid == record.uuid), None),
                Err(e) => (None, Some(e)),
            };
            hosts.push(OnHost { host: name, attached: true, report, error });
        }
        hosts.sort_by(|a, b| a.host.cmp(&b.host));
        statuses.push(SrStatus { uuid: record.uuid.clone(), name_label: record.name_label.clone(), hosts });
    }
    let all_healthy = statuses.iter().all(|s| s.hosts.iter().all(healthy));
    let agents: BTreeMap<String, Option<AgentReport>> = reports
        .iter()
        .map(|(host, report)| {
            let name = view.name(&xapi_client::api::HostRef(host.clone()));
            (name, report.as_ref().ok().and_then(|r| r.agent.clone()))
        })
        .collect();
    let initiators: BTreeMap<String, Option<String>> = reports
        .iter()
        .map(|(host, report)| {
            let name = view.name(&xapi_client::api::HostRef(host.clone()));
            (name, report.as_ref().ok().and_then(|r| r.initiator.clone()))
        })
        .collect();
    if args.json {
        console.json(
            &serde_json::json!({"srs": statuses, "agents": agents, "initiators": initiators, "healthy": all_healthy}),
        );
    } else if statuses.is_empty() {
        console.line("no nvmetcp SR in this pool (nvmetcp sr-create makes one)");
    }
    if !args.json {
        for status in &statuses {
            console.line(&format!("SR '{}' {}", status.name_label, status.uuid));
            for on in &status.hosts {
                show_host(console, on);
            }
        }
        if !agents.is_empty() {
            console.line("Host agents (path counts and alerts to XAPI, SR I/O graphs)");
        }
        for (host, agent) in &agents {
            let shown = match agent {
                Some(a) if a.running => console.good(&a.summary),
                Some(a) => console.alert(&a.summary),
                None => console.alert("unknown: this host's nvmetcp predates the agent"),
            };
            console.line(&format!("  {host:<20} {shown}"));
        }
        if !initiators.is_empty() {
            console.line("NVMe/TCP initiators (kernel where nvme_tcp loads, else nvmetcp's own in userspace)");
        }
        for (host, initiator) in &initiators {
            let shown = initiator.clone().unwrap_or_else(|| "unknown: this host's nvmetcp predates the choice".into());
            console.line(&format!("  {host:<20} {shown}"));
        }
    }
    Ok(if all_healthy { Exit::Ok } else { Exit::Partial })
}

fn show_host(console: &mut Console, on: &OnHost) {
    if !on.attached {
        let unplugged = console.alert("not attached");
        console.line(&format!(
            "  {:<20} {unplugged} (xe pbd-plug on this host's PBD; nvmetcp doctor --pool says why it may fail)",
            on.host
        ));
        return;
    }
    let Some(report) = &on.report else {
        let why = on.error.clone().unwrap_or_else(|| "the host does not report this SR attached".into());
        console.line(&format!("  {:<20} {}", on.host, console.alert(&format!("unknown: {why}"))));
        return;
    };
    let summary =
        if healthy(on) { console.good(&report.summary) } else { console.alert(&report.summary.to_uppercase()) };
    let policy = report.iopolicy.clone().unwrap_or_else(|| "?".into());
    let initiator = report.initiator.as_ref().map(|i| format!("  initiator {i}")).unwrap_or_default();
    console.line(&format!("  {:<20} {summary}  iopolicy {policy}{initiator}", on.host));
    for path in &report.paths {
        let state = format!("{}{}", path.state, path.ana_state.as_ref().map(|a| format!(" {a}")).unwrap_or_default());
        let state = if path.live { state } else { console.alert(&state) };
        let controller = path.controller.clone().unwrap_or_else(|| "-".into());
        console.line(&format!("    {} {:<22} {controller:<8} {state}", path.transport, path.portal));
    }
}
