//! `nvmetcp doctor`: the checks of the manual guide, on this host or, with
//! `--pool`, on every host through the XAPI host plugin, plus what only the
//! pool can tell: the SM record, and host NQNs unique across hosts.

use std::collections::BTreeMap;

use serde::Serialize;
use sm_driver::doctor::{Check, DoctorInput, Verdict};
use sm_driver::error_chain::chain;
use sm_driver::nvme::names::{Portal, Transport};
use xapi_client::api::{pbd, sm, sr};
use xapi_client::Session;

use crate::cli::DoctorArgs;
use crate::console::Console;
use crate::error::{AdminError, Exit};
use crate::pool::{host_plugin, PluginError, PoolView};
use crate::Local;

/// One host's checks.
#[derive(Debug, Serialize)]
struct HostChecks {
    host: String,
    checks: Vec<Check>,
}

/// The portals to check: those given, else those of existing nvmetcp SRs
/// (their I/O portals and discovery endpoints).
fn portals(args: &DoctorArgs, session: Option<&Session>) -> Result<Vec<Portal>, AdminError> {
    let mut lists: Vec<(String, u16)> = Vec::new();
    match (&args.portals, session) {
        (Some(given), _) => lists.push((given.clone(), Portal::IO_PORT)),
        (None, Some(session)) => {
            for (_, record) in
                sr::get_all_records(session)?.iter().filter(|(_, r)| r.sr_type == sm_driver::plugin::SR_TYPE)
            {
                if let Some(first) = record.pbds.first() {
                    let config = pbd::get_record(session, first)?.device_config;
                    lists.extend(config.get("portals").map(|p| (p.clone(), Portal::IO_PORT)));
                    lists.extend(config.get("discovery").map(|d| (d.clone(), Portal::DISCOVERY_PORT)));
                }
            }
        }
        (None, None) => {}
    }
    let mut portals = Vec::new();
    for (list, default_port) in &lists {
        let listed = sm_driver::nvme::names::portal_list(list, *default_port)
            .map_err(|e| AdminError::Usage(format!("--portals {}: {}", e.value, e.why)))?;
        for portal in listed {
            if !portals.contains(&portal) {
                portals.push(portal);
            }
        }
    }
    Ok(portals)
}

fn transport(args: &DoctorArgs) -> Transport {
    match args.transport {
        crate::cli::TransportArg::Tcp => Transport::Tcp,
        crate::cli::TransportArg::Rdma => Transport::Rdma,
    }
}

fn sm_record(session: &Session) -> Check {
    const NAME: &str = "SR type registered";
    match sm::get_all_records(session) {
        Ok(records) => match records.iter().find(|(_, r)| r.sr_type == sm_driver::plugin::SR_TYPE) {
            Some((_, record)) => Check::pass(NAME, format!("xe sm-list shows nvmetcp {}", record.version)),
            None => Check::fail(
                NAME,
                "xapi has no nvmetcp SM record: xe sr-create type=nvmetcp would fail and Xen Orchestra does not offer it",
                "install the nvmetcp RPM on every host, then run xe-toolstack-restart on each host (xapi registers \
                 SR types when it starts)",
            ),
        },
        Err(e) => Check::fail(NAME, format!("cannot read the SM records: {}", chain(&e)), "check that xapi runs"),
    }
}

/// Host NQNs must differ: a target's allow-list names hosts by NQN, and two
/// hosts with one NQN look like one host whose connections keep replacing
/// each other.
fn unique_nqns(identities: &[(String, String)]) -> Check {
    const NAME: &str = "host NQNs unique";
    let mut by_nqn: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (host, nqn) in identities {
        by_nqn.entry(nqn.as_str()).or_default().push(host.as_str());
    }
    let shared: Vec<String> = by_nqn
        .iter()
        .filter(|(_, hosts)| hosts.len() > 1)
        .map(|(nqn, hosts)| format!("{} share {nqn}", hosts.join(" and ")))
        .collect();
    if shared.is_empty() {
        Check::pass(NAME, format!("{} hosts, {} distinct NQNs", identities.len(), by_nqn.len()))
    } else {
        Check::fail(
            NAME,
            format!("{} (cloned hosts keep the NQN of their image)", shared.join("; ")),
            "on all but one of those hosts: rm /etc/nvme/hostnqn /etc/nvme/hostid, then run \
             /usr/libexec/nvmetcp/nvmetcp-plugin --post-install, and update the target's allow-list",
        )
    }
}

/// Runs `doctor`.
///
/// # Errors
/// Usage errors and, with `--pool`, an unreachable XAPI.
pub fn run(
    args: &DoctorArgs,
    session: Result<Session, AdminError>,
    local: &Local,
    console: &mut Console,
) -> Result<Exit, AdminError> {
    let transport = transport(args);
    let mut hosts = Vec::new();
    let mut pool_checks = Vec::new();
    if args.pool {
        let session = session?;
        let portals = portals(args, Some(&session))?;
        let view = PoolView::read(&session)?;
        let mut identities = Vec::new();
        let plugin_args: BTreeMap<String, String> = [
            ("transport".to_owned(), transport.to_string()),
            ("portals".to_owned(), portals.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")),
        ]
        .into();
        for (reference, record) in &view.hosts {
            console.note(&format!("checking {} …", record.name_label));
            let live = xapi_client::api::host::is_live(&session, &record.metrics).unwrap_or(false);
            let checks = if !live {
                vec![Check::fail(
                    "host reachable",
                    "the host is not live in XAPI",
                    "start the host or remove it from the pool",
                )]
            } else {
                match host_plugin::<Vec<Check>>(&session, reference, "doctor", &plugin_args) {
                    Ok(checks) => checks,
                    Err(PluginError::Missing) => vec![Check::fail(
                        "plugin installed",
                        "the nvmetcp XAPI host plugin is missing",
                        "install the nvmetcp RPM on this host",
                    )],
                    Err(e) => vec![Check::fail("nvmetcp host plugin", e.to_string(), "see /var/log/SMlog on the host")],
                }
            };
            if live {
                #[derive(serde::Deserialize)]
                struct Identity {
                    hostnqn: String,
                }
                if let Ok(identity) = host_plugin::<Identity>(&session, reference, "host_identity", &BTreeMap::new()) {
                    identities.push((record.name_label.clone(), identity.hostnqn));
                }
            }
            hosts.push(HostChecks { host: format!("{} ({})", record.name_label, record.address), checks });
        }
        pool_checks.push(sm_record(&session));
        pool_checks.push(unique_nqns(&identities));
    } else {
        let session = session.ok();
        let portals = portals(args, session.as_ref())?;
        let checks = sm_driver::doctor::run(&local.host, local.runner.as_ref(), &DoctorInput { transport, portals });
        hosts.push(HostChecks { host: "this host".to_owned(), checks });
        pool_checks.push(match &session {
            Some(session) => sm_record(session),
            None => Check::warn(
                "SR type registered",
                "XAPI cannot be reached on this host, so the SM record was not checked",
                "run doctor on a host whose xapi runs",
            ),
        });
    }
    let all: Vec<&Check> = hosts.iter().flat_map(|h| &h.checks).chain(&pool_checks).collect();
    let count = |v| all.iter().filter(|c| c.verdict == v).count();
    let (passed, warned, failed) = (count(Verdict::Pass), count(Verdict::Warn), count(Verdict::Fail));
    if args.json {
        console.json(&serde_json::json!({
            "hosts": hosts,
            "pool": pool_checks,
            "summary": {"passed": passed, "warnings": warned, "failed": failed},
        }));
    } else {
        for host in &hosts {
            console.line(&format!("host {}", host.host));
            show(console, &host.checks);
        }
        console.line("pool");
        show(console, &pool_checks);
        console.line(&format!("{passed} passed, {warned} warning(s), {failed} failed"));
    }
    Ok(if failed > 0 { Exit::Failed } else { Exit::Ok })
}

fn show(console: &mut Console, checks: &[Check]) {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let verdict = console.verdict(c.verdict);
        console.line(&format!("  {verdict}  {:<width$}  {}", c.name, c.detail));
        if !c.fix.is_empty() {
            console.line(&format!("        {:<width$}  fix: {}", "", c.fix));
        }
    }
}
