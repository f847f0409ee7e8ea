//! The table people read and the JSON machines read: each measure next to
//! its floor, as medians with min–max, the ratio, the target and whether it
//! is met on this run.

use std::fmt::Write as _;

use nvmetcp_testbed::ScenarioResult;

use crate::host::Plan;
use crate::stats::Samples;

/// Everything measured.
pub struct Measures {
    /// Short (CI) or full mode.
    pub short: bool,
    /// What was asked for.
    pub plan: Plan,
    /// `Plugin.Query` on the host.
    pub query: Samples,
    /// The static no-op on the host.
    pub noop: Samples,
    /// The Python entry point on the host.
    pub python: Samples,
    /// Peak memory of `Plugin.Query`.
    pub query_rss_kib: i64,
    /// The control-plane scenario.
    pub control: ScenarioResult,
    /// The fio scenario.
    pub data: ScenarioResult,
    /// The path-cut scenario.
    pub stall: ScenarioResult,
}

struct Row {
    measure: String,
    value: String,
    floor: String,
    ratio: String,
    target: String,
    met: Option<bool>,
    json: serde_json::Value,
}

fn json_file(result: &ScenarioResult, name: &str) -> Result<serde_json::Value, String> {
    let text = result.file(name).ok_or_else(|| format!("{} wrote no {name}", result.name))?;
    serde_json::from_str(&text).map_err(|e| format!("{}/{name}: {e}", result.name))
}

fn lines(result: &ScenarioResult, name: &str, column: usize) -> Result<Samples, String> {
    let text = result.file(name).ok_or_else(|| format!("{} wrote no {name}", result.name))?;
    Ok(Samples(text.lines().filter_map(|l| l.split_whitespace().nth(column)?.parse().ok()).collect()))
}

fn compare(measure: &str, value: &Samples, floor_name: &str, floor: &Samples, max_ratio: f64) -> Row {
    let ratio = value.median() / floor.median().max(f64::MIN_POSITIVE);
    Row {
        measure: measure.to_owned(),
        value: value.show(),
        floor: format!("{floor_name}: {}", floor.show()),
        ratio: format!("{ratio:.2}×"),
        target: format!("≤ {max_ratio}×"),
        met: Some(ratio <= max_ratio),
        json: serde_json::json!({"value": value.json(), "floor": floor.json(), "floor_name": floor_name, "ratio": ratio, "max_ratio": max_ratio}),
    }
}

fn fio(result: &ScenarioResult, target: &str, rw: &str) -> Result<(f64, f64), String> {
    let value = json_file(result, &format!("fio_{target}_{rw}.json"))?;
    let side = if rw.contains("read") { "read" } else { "write" };
    let job = &value["jobs"][0][side];
    let bw = job["bw_bytes"].as_f64().unwrap_or(0.0) / f64::from(1u32 << 20);
    Ok((bw, job["iops"].as_f64().unwrap_or(0.0)))
}

#[allow(clippy::too_many_lines)] // one row after another, in the order of the table in the issue
fn rows(m: &Measures) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let query_ms = m.query.median();
    rows.push(Row {
        measure: "Plugin.Query, whole process (host)".into(),
        value: m.query.show(),
        floor: format!("static no-op: {}", m.noop.show()),
        ratio: format!("{:.2}× the no-op", query_ms / m.noop.median().max(f64::MIN_POSITIVE)),
        target: "≤ 3 ms".into(),
        met: Some(query_ms <= 3.0),
        json: serde_json::json!({"value": m.query.json(), "floor": m.noop.json()}),
    });
    let speedup = m.python.median() / query_ms.max(f64::MIN_POSITIVE);
    rows.push(Row {
        measure: "Plugin.Query vs a Python 3 entry point (host)".into(),
        value: m.query.show(),
        floor: format!("Python: {}", m.python.show()),
        ratio: format!("{speedup:.1}× faster"),
        target: "≥ 30× faster".into(),
        met: Some(speedup >= 30.0),
        json: serde_json::json!({"value": m.query.json(), "python": m.python.json(), "speedup": speedup}),
    });
    let c = &m.control;
    let stat = Samples::from_list(&json_file(c, "sr_stat.json")?);
    let guest_noop = Samples::from_list(&json_file(c, "noop.json")?);
    let guest_query = Samples::from_list(&json_file(c, "query.json")?);
    rows.push(Row {
        measure: "SR.stat, whole process (guest, emulated CPU)".into(),
        value: stat.show(),
        floor: format!("static no-op in the guest: {}", guest_noop.show()),
        ratio: format!("{:.2}× the no-op", stat.median() / guest_noop.median().max(f64::MIN_POSITIVE)),
        target: "≤ 3 ms on real hardware".into(),
        met: None,
        json: serde_json::json!({"value": stat.json(), "floor": guest_noop.json(), "plugin_query_in_guest": guest_query.json()}),
    });
    let attach_lvm = json_file(c, "sr_attach_lvm.json")?.as_u64().unwrap_or(0);
    let mut attach = compare(
        &format!("SR.attach, 2 portals, fresh host (guest) [{attach_lvm} LVM call(s)]"),
        &lines(c, "attach.txt", 0)?,
        "2× nvme connect",
        &lines(c, "attach.txt", 1)?,
        1.2,
    );
    attach.json["lvm_calls"] = serde_json::json!(attach_lvm);
    rows.push(attach);
    let create_lvm = json_file(c, "volume_create_lvm.json")?.as_u64().unwrap_or(0);
    let mut create = compare(
        &format!("Volume.create (guest) [{create_lvm} LVM call(s)]"),
        &Samples::from_list(&json_file(c, "volume_create.json")?),
        "bare lvcreate",
        &lines(c, "lvcreate.txt", 0)?,
        1.2,
    );
    create.json["lvm_calls"] = serde_json::json!(create_lvm);
    rows.push(create);
    let mut lvm_calls = Vec::new();
    for size in &m.plan.sizes {
        let mut row = compare(
            &format!("SR.ls at {size} volumes (guest)"),
            &Samples::from_list(&json_file(c, &format!("sr_ls_{size}.json"))?),
            "one lvs of the VG",
            &lines(c, &format!("lvs_{size}.txt"), 0)?,
            1.5,
        );
        let calls = json_file(c, &format!("sr_ls_lvm_{size}.json"))?.as_u64().unwrap_or(0);
        lvm_calls.push(calls);
        row.measure = format!("{} [{calls} LVM call(s)]", row.measure);
        row.json["lvm_calls"] = serde_json::json!(calls);
        rows.push(row);
    }
    let constant = lvm_calls.windows(2).all(|w| w[0] == w[1]);
    rows.push(Row {
        measure: "LVM calls per SR.ls, by volume count".into(),
        value: format!("{lvm_calls:?}"),
        floor: "—".into(),
        ratio: "—".into(),
        target: "independent of the count".into(),
        met: Some(constant),
        json: serde_json::json!({"lvm_calls": lvm_calls}),
    });
    for rw in ["read", "write", "randread", "randwrite"] {
        let (volume_bw, volume_iops) = fio(&m.data, "volume", rw)?;
        let (head_bw, head_iops) = fio(&m.data, "head", rw)?;
        let (single_bw, single_iops) = fio(&m.data, "single", rw)?;
        let random = rw.starts_with("rand");
        let (value, head, single, unit) = if random {
            (volume_iops, head_iops, single_iops, "IOPS")
        } else {
            (volume_bw, head_bw, single_bw, "MiB/s")
        };
        let ratio = value / head.max(f64::MIN_POSITIVE);
        let label = if random { format!("fio {rw} 4 KiB") } else { format!("fio {rw} 1 MiB") };
        rows.push(Row {
            measure: format!("{label} through the datapath device (guest)"),
            value: format!("{value:.0} {unit}"),
            floor: format!("multipath head {head:.0}; one path {single:.0}"),
            ratio: format!("{ratio:.3} of the head"),
            target: "≥ 0.97 of the head".into(),
            met: Some(ratio >= 0.97),
            json: serde_json::json!({"unit": unit, "volume": value, "head": head, "single_path": single, "ratio": ratio}),
        });
    }
    for (cut, limit_ms) in [("port", 1000.0), ("address", 6000.0)] {
        let stall = json_file(&m.stall, &format!("stall_{cut}.json"))?;
        let path = json_file(&m.stall, &format!("path_{cut}.json"))?;
        let longest = stall["longest_ms"].as_f64().unwrap_or(f64::MAX);
        let errors = stall["errors"].as_u64().unwrap_or(u64::MAX);
        rows.push(Row {
            measure: format!("longest I/O stall, 1 of 2 paths cut by {cut} removal (guest)"),
            value: format!("{longest:.0} ms, {errors} I/O errors, {} writes", stall["ops"]),
            floor: format!(
                "noticed in {:.0} ms; live again {:.0} ms after restore",
                path["noticed_ms"].as_f64().unwrap_or(0.0),
                path["live_again_ms"].as_f64().unwrap_or(0.0)
            ),
            ratio: "—".into(),
            target: format!("≤ {limit_ms:.0} ms, 0 errors"),
            met: Some(longest <= limit_ms && errors == 0),
            json: serde_json::json!({"stall": stall, "path": path, "limit_ms": limit_ms}),
        });
    }
    let stat_rss = json_file(c, "sr_stat_rss.json")?.as_i64().unwrap_or(0);
    for (what, kib) in [("Plugin.Query (host)", m.query_rss_kib), ("SR.stat (guest)", stat_rss)] {
        #[allow(clippy::cast_precision_loss)] // KiB to MiB for display
        let mib = kib as f64 / 1024.0;
        rows.push(Row {
            measure: format!("peak memory of {what}"),
            value: format!("{mib:.1} MiB"),
            floor: "—".into(),
            ratio: "—".into(),
            target: "≤ 10 MiB".into(),
            met: Some(mib <= 10.0),
            json: serde_json::json!({"max_rss_kib": kib}),
        });
    }
    Ok(rows)
}

fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_owned();
    let cores = read("/proc/cpuinfo").lines().filter(|l| l.starts_with("processor")).count();
    let memory = read("/proc/meminfo").lines().next().unwrap_or_default().to_owned();
    // As tests/testbed/run decides: /dev/kvm writable and the CPU shows vmx/svm.
    let virt = read("/proc/cpuinfo").split_whitespace().any(|w| w == "vmx" || w == "svm");
    let kvm = virt && std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    serde_json::json!({"cpu": cpu, "cores": cores, "memory": memory.trim(), "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "guest_cpu": if kvm { "KVM" } else { "TCG (emulated: guest timings are far slower than real hardware)" }})
}

/// Prints the table and writes `target/bench/results.json`.
///
/// # Errors
/// A scenario that wrote no result, or an unwritable results file.
#[allow(clippy::print_stdout)] // the table is the program's output
pub fn write(m: &Measures) -> Result<(), String> {
    let rows = rows(m)?;
    let mut table = String::new();
    let _ = writeln!(table, "| measure | value (median, min–max) | compared with | ratio | target | met |");
    let _ = writeln!(table, "|---|---|---|---|---|---|");
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        };
        let _ = writeln!(table, "| {} | {} | {} | {} | {} | {met} |", r.measure, r.value, r.floor, r.ratio, r.target);
    }
    print!("{table}");
    let json = serde_json::json!({
        "mode": if m.short { "short" } else { "full" },
        "machine": machine(),
        "results": rows.iter().map(|r| serde_json::json!({"measure": r.measure, "met": r.met, "target": r.target, "data": r.json})).collect::<Vec<_>>(),
        "table": table,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(if m.short { "results-short.json" } else { "results.json" });
    std::fs::write(&path, serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    println!("\nresults written to {}", path.display());
    Ok(())
}
