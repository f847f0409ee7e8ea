//! `nvmetcp probe`: what the storage offers, through XAPI's `SR.probe_ext`
//! on the master (so the plugin itself looks, with the pool's own view).

use std::collections::BTreeMap;

use xapi_client::api::sr::{self, ProbeResult};
use xapi_client::Session;

use crate::cli::{TargetArgs, TransportArg};
use crate::console::Console;
use crate::error::{AdminError, Exit};
use crate::pool::PoolView;

/// device-config for `target`.
///
/// # Errors
/// [`AdminError::Usage`] without portals or discovery endpoints.
pub fn device_config(target: &TargetArgs) -> Result<BTreeMap<String, String>, AdminError> {
    let mut config = BTreeMap::new();
    if target.portals.is_none() && target.discovery.is_none() {
        return Err(AdminError::Usage(
            "give --portals (I/O ports) or --discovery (discovery controllers), or both".into(),
        ));
    }
    config.extend(target.portals.clone().map(|p| ("portals".to_owned(), p)));
    config.extend(target.discovery.clone().map(|d| ("discovery".to_owned(), d)));
    config.extend(target.nqn.clone().map(|n| ("nqn".to_owned(), n)));
    if target.transport == TransportArg::Rdma {
        config.insert("transport".into(), "rdma".into());
    }
    Ok(config)
}

/// Probes `config` on the master.
///
/// # Errors
/// XAPI failures (the plugin's own, such as an unreachable portal, included).
pub fn probe(session: &Session, config: &BTreeMap<String, String>) -> Result<Vec<ProbeResult>, AdminError> {
    let view = PoolView::read(session)?;
    Ok(sr::probe_ext(session, &view.master, config, sm_driver::plugin::SR_TYPE, &BTreeMap::new())?)
}

/// Bytes for people.
#[must_use]
pub fn size(text: &str) -> String {
    let Ok(bytes) = text.parse::<u64>() else { return text.to_owned() };
    #[allow(clippy::cast_precision_loss)] // display only
    let bytes = bytes as f64;
    let units = [("TiB", 40), ("GiB", 30), ("MiB", 20)];
    for (unit, shift) in units {
        let scale = f64::from(1u32 << (shift - 20)) * f64::from(1u32 << 20);
        if bytes >= scale {
            return format!("{:.1} {unit}", bytes / scale);
        }
    }
    format!("{bytes} bytes")
}

/// One line per namespace.
#[must_use]
pub fn describe(result: &ProbeResult) -> String {
    let get = |k: &str| result.extra_info.get(k).cloned().unwrap_or_default();
    let namespace = result.configuration.get("namespace").cloned().unwrap_or_default();
    let what = match &result.sr {
        Some(found) => format!(
            "nvmetcp SR '{}' ({})",
            found.name_label,
            found.uuid.clone().unwrap_or_else(|| "uuid unknown".into())
        ),
        None if get("holds").is_empty() => "contents not inspected (give --nqn)".to_owned(),
        None => get("holds"),
    };
    format!("namespace {namespace}  nsid {}  {}  {}  {what}", get("nsid"), size(&get("size")), get("paths"))
}

/// JSON for one result.
#[must_use]
pub fn to_json(result: &ProbeResult) -> serde_json::Value {
    serde_json::json!({
        "configuration": result.configuration,
        "complete": result.complete,
        "sr": result.sr.as_ref().map(|s| serde_json::json!({
            "uuid": s.uuid, "name_label": s.name_label, "total_space": s.total_space, "free_space": s.free_space,
        })),
        "extra_info": result.extra_info,
    })
}

/// Runs `probe`.
///
/// # Errors
/// Usage and XAPI failures.
pub fn run(args: &TargetArgs, session: &Session, console: &mut Console) -> Result<Exit, AdminError> {
    let config = device_config(args)?;
    console.note("probing through the pool master …");
    let results = probe(session, &config)?;
    if args.json {
        console.json(&serde_json::Value::Array(results.iter().map(to_json).collect()));
        return Ok(Exit::Ok);
    }
    if results.is_empty() {
        console.line("no namespace found: check the NQN, and that the target exports namespaces to this host's NQN");
        return Ok(Exit::Failed);
    }
    let mut by_nqn: BTreeMap<String, Vec<&ProbeResult>> = BTreeMap::new();
    for result in &results {
        by_nqn.entry(result.configuration.get("nqn").cloned().unwrap_or_default()).or_default().push(result);
    }
    for (nqn, found) in by_nqn {
        console.line(&format!("subsystem {nqn}"));
        for result in found {
            console.line(&format!("  {}", describe(result)));
        }
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_read_like_an_array_ui() {
        assert_eq!(size(&(64u64 << 20).to_string()), "64.0 MiB");
        assert_eq!(size(&(64u64 << 30).to_string()), "64.0 GiB");
        assert_eq!(size(&(3u64 << 40).to_string()), "3.0 TiB");
        assert_eq!(size("512"), "512 bytes");
        assert_eq!(size("n/a"), "n/a");
    }
}
