//! `nvmetcp sr-create`: from endpoints and a subsystem to a shared SR plugged
//! on every host, refusing a namespace that holds data unless forced.
//!
//! XAPI's shared `SR.create` makes a PBD per host and plugs them all, but a
//! PBD that fails to plug only leaves a line in xapi's log. So once the SR
//! exists, each unplugged PBD is plugged again to learn its host's reason,
//! and the summary says, host by host, what is live and what to do.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

use serde::Serialize;
use sm_driver::error_chain::chain;
use xapi_client::api::sr::{ProbeResult, SrCreate};
use xapi_client::api::{event, pbd, pool, sm, sr, task, SrRef, TaskRef};
use xapi_client::Session;

use crate::cli::CreateArgs;
use crate::console::Console;
use crate::error::{AdminError, Exit};
use crate::pool::{host_plugin, PoolView};
use crate::probe::{describe, device_config, probe};

/// How long SR.create may take on the whole pool.
const CREATE_LIMIT: Duration = Duration::from_secs(900);

/// One host's outcome.
#[derive(Debug, Serialize)]
struct HostOutcome {
    host: String,
    attached: bool,
    /// The path summary as the host gave it, or why it is unknown.
    paths: String,
    /// What the host's path states add up to.
    health: PathsHealth,
    error: Option<String>,
}

/// What a host's paths to the new SR add up to, from the typed path states
/// of its status report (never from the summary's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum PathsHealth {
    /// Every path is live.
    AllLive,
    /// Some path is not live.
    Degraded,
    /// No path is live.
    NoPath,
    /// The host's report could not be had or does not list the SR.
    Unknown,
    /// Not attached: no paths.
    None,
}

impl PathsHealth {
    fn of(report: &sm_driver::status::SrReport) -> Self {
        let live = report.paths.iter().filter(|p| p.live).count();
        if report.error.is_some() || report.paths.is_empty() {
            Self::Unknown
        } else if live == report.paths.len() {
            Self::AllLive
        } else if live == 0 {
            Self::NoPath
        } else {
            Self::Degraded
        }
    }
}

fn choose<'a>(
    found: &'a [ProbeResult],
    wanted: Option<&str>,
    interactive: bool,
    console: &mut Console,
) -> Result<&'a ProbeResult, AdminError> {
    let listing = || found.iter().map(|r| format!("  {}", describe(r))).collect::<Vec<_>>().join("\n");
    if let Some(wanted) = wanted {
        return found
            .iter()
            .find(|r| {
                r.configuration.get("namespace").is_some_and(|n| n.eq_ignore_ascii_case(wanted))
                    || r.extra_info.get("nsid").is_some_and(|n| n == wanted)
            })
            .ok_or_else(|| {
                AdminError::Failed(format!("the subsystem has no namespace {wanted}; it has:\n{}", listing()))
            });
    }
    match found {
        [] => Err(AdminError::Failed(
            "the subsystem shows this host no namespace: check that the target exports one to the pool's host NQNs"
                .into(),
        )),
        [only] => Ok(only),
        several if interactive => {
            console.note("the subsystem has several namespaces:");
            for (i, r) in several.iter().enumerate() {
                console.note(&format!("  [{}] {}", i + 1, describe(r)));
            }
            console.note("which one? (number) ");
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer).map_err(|e| AdminError::Usage(e.to_string()))?;
            let index: usize =
                answer.trim().parse().map_err(|_| AdminError::Usage(format!("{:?} is not a number", answer.trim())))?;
            several
                .get(index.wrapping_sub(1))
                .ok_or_else(|| AdminError::Usage(format!("there is no namespace {index}")))
        }
        _ => Err(AdminError::Usage(format!(
            "the subsystem has several namespaces; pick one with --namespace (UUID or NSID):\n{}",
            listing()
        ))),
    }
}

/// Refuses a namespace that holds an SR or data, unless forced.
fn refuse_data(chosen: &ProbeResult, force: bool) -> Result<(), AdminError> {
    if let Some(existing) = &chosen.sr {
        return Err(AdminError::Failed(format!(
            "the namespace already holds the nvmetcp SR '{}' ({}): nothing was changed. To use it in this pool, \
             introduce it (xe sr-introduce type=nvmetcp uuid=… shared=true, then a PBD per host) instead of \
             creating a new one",
            existing.name_label,
            existing.uuid.clone().unwrap_or_default()
        )));
    }
    let holds = chosen.extra_info.get("holds").cloned().unwrap_or_default();
    if !holds.is_empty() && !holds.starts_with("nothing") && !force {
        return Err(AdminError::Failed(format!(
            "the namespace holds data ({holds}): nothing was changed. Pick an empty namespace, or pass --force to \
             destroy what it holds"
        )));
    }
    Ok(())
}

/// Follows the create task, printing each host's PBD as it appears and plugs.
fn follow(
    session: &Session,
    view: &PoolView,
    task_ref: &TaskRef,
    mut token: String,
    console: &mut Console,
) -> Result<SrRef, AdminError> {
    let started = Instant::now();
    loop {
        if let Ok(batch) = event::from(session, &["pbd"], &token, 1.0) {
            token = batch.token;
            for change in batch.events {
                let Some(snapshot) = change.snapshot.as_ref().and_then(|s| s.as_struct("PBD").ok()) else { continue };
                let host = snapshot.get("host").and_then(|h| h.as_str("host").ok()).unwrap_or_default();
                let name = view.name(&xapi_client::api::HostRef(host.to_owned()));
                match (change.operation.as_str(), snapshot.get("currently_attached")) {
                    ("add", _) => console.note(&format!("  {name}: PBD created")),
                    ("mod", Some(xapi_client::Value::Bool(true))) => console.note(&format!("  {name}: attached")),
                    _ => {}
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
        let record = task::get_record(session, task_ref)?;
        if !matches!(record.status, task::Status::Pending) {
            let result = task::outcome(&record);
            let _ = task::destroy(session, task_ref);
            let value = result?;
            let reference = value.as_str("SR ref").map_err(|e| AdminError::Failed(e.to_string()))?;
            return Ok(SrRef(reference.to_owned()));
        }
        if started.elapsed() > CREATE_LIMIT {
            let _ = task::cancel(session, task_ref);
            return Err(AdminError::Failed(format!(
                "SR.create did not finish within {CREATE_LIMIT:?}; it was asked to cancel. Check xe task-list and \
                 xe sr-list type=nvmetcp before trying again"
            )));
        }
    }
}

/// Each host's outcome: plugged or why not, and its paths.
fn outcomes(session: &Session, view: &PoolView, record: &sr::Sr) -> Result<Vec<HostOutcome>, AdminError> {
    let pbds: BTreeMap<_, _> = pbd::get_all_records(session)?.into_iter().collect();
    let mut outcomes = Vec::new();
    for (pbd_ref, pbd_record) in record.pbds.iter().filter_map(|r| pbds.get(r).map(|p| (r, p))) {
        let host = view.name(&pbd_record.host);
        let mut error = None;
        if !pbd_record.currently_attached {
            // Plugging again is how the host's reason is learnt.
            if let Err(e) = pbd::plug(session, pbd_ref) {
                error = Some(format!("{}. After fixing it: xe pbd-plug uuid={}", chain(&e), pbd_record.uuid));
            }
        }
        let attached = error.is_none();
        let (paths, health) = if attached {
            match host_plugin::<sm_driver::status::HostReport>(session, &pbd_record.host, "status", &BTreeMap::new()) {
                Ok(report) => report.srs.iter().find(|s| s.sr_uuid == record.uuid).map_or_else(
                    || ("unknown".into(), PathsHealth::Unknown),
                    |s| (s.summary.clone(), PathsHealth::of(s)),
                ),
                Err(e) => (format!("unknown ({e})"), PathsHealth::Unknown),
            }
        } else {
            ("none".into(), PathsHealth::None)
        };
        outcomes.push(HostOutcome { host, attached, paths, health, error });
    }
    Ok(outcomes)
}

/// Runs `sr-create`.
///
/// # Errors
/// Usage errors, a refused namespace, XAPI failures.
pub fn run(args: &CreateArgs, session: &Session, console: &mut Console, interactive: bool) -> Result<Exit, AdminError> {
    let mut config = device_config(&args.target)?;
    for extra in &args.extra {
        let (key, value) =
            extra.split_once('=').ok_or_else(|| AdminError::Usage(format!("--config {extra}: use key=value")))?;
        config.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    let view = PoolView::read(session)?;
    if !sm::get_all_records(session)?.iter().any(|(_, r)| r.sr_type == sm_driver::plugin::SR_TYPE) {
        return Err(AdminError::Failed(
            "xapi has no nvmetcp SR type yet: install the nvmetcp RPM on every host, run xe-toolstack-restart on \
             each host, then try again (nvmetcp doctor --pool checks this)"
                .into(),
        ));
    }
    if !config.contains_key("nqn") {
        return Err(AdminError::Usage("give the subsystem with --nqn (nvmetcp probe --discovery … lists them)".into()));
    }
    console.note("1/3 looking at the namespaces through the pool master …");
    let found = probe(session, &config)?;
    let chosen = choose(&found, args.namespace.as_deref(), interactive, console)?;
    refuse_data(chosen, args.force)?;
    config.insert("namespace".into(), chosen.configuration.get("namespace").cloned().unwrap_or_default());
    if args.force {
        config.insert("force".into(), "true".into());
    }
    console.note(&format!("   using {}", describe(chosen)));
    console
        .note(&format!("2/3 creating the SR; every one of the {} host(s) gets a PBD and connects …", view.hosts.len()));
    let create = SrCreate {
        host: view.master.clone(),
        device_config: config,
        physical_size: 0,
        name_label: args.name.clone(),
        name_description: args.description.clone(),
        sr_type: sm_driver::plugin::SR_TYPE.into(),
        content_type: "user".into(),
        shared: true,
        sm_config: BTreeMap::new(),
    };
    // Events from before the create starts, so every PBD is seen being made.
    let (pool_ref, _) = pool::the_pool(session)?;
    let token = event::inject(session, "pool", &pool_ref.0).unwrap_or_default();
    let task_ref = sr::create_async(session, &create)?;
    let sr_ref = follow(session, &view, &task_ref, token, console).map_err(|e| {
        AdminError::Failed(format!(
            "SR.create failed, and xapi removed what it had made (no SR, no PBD): {}",
            chain(&e)
        ))
    })?;
    let record = sr::get_record(session, &sr_ref)?;
    console.note("3/3 checking every host …");
    let hosts = outcomes(session, &view, &record)?;
    let attached = hosts.iter().filter(|h| h.attached).count();
    let healthy = hosts.iter().all(|h| h.attached && h.health == PathsHealth::AllLive);
    if args.target.json {
        console
            .json(&serde_json::json!({"sr": {"uuid": record.uuid, "name_label": record.name_label}, "hosts": hosts}));
    } else {
        console.line(&format!("SR '{}' {} created", record.name_label, record.uuid));
        for h in &hosts {
            let state = if h.attached { console.good("attached") } else { console.alert("NOT ATTACHED") };
            console.line(&format!("  {:<20} {state:<12} {}", h.host, h.paths));
            if let Some(error) = &h.error {
                console.line(&format!("  {:<20} {}", "", error));
            }
        }
        if attached < hosts.len() {
            console.line(&format!(
                "The SR exists and is attached on {attached} of {} hosts; VMs can use it there. Fix each cause above, \
                 then plug the remaining PBDs as shown.",
                hosts.len()
            ));
        }
    }
    Ok(if healthy { Exit::Ok } else { Exit::Partial })
}
