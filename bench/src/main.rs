//! `nvmetcp-bench`: control-plane cost and data-path speed, each measured in
//! one run next to the floor it is compared with, printed as a table and
//! written as JSON. `bench/run` is the command people use; it prepares the
//! test bed and builds what is measured.
//!
//! On the host it times plugin calls as whole processes against a static
//! no-op binary and a minimal Python entry point; in the test bed (where the
//! kernel is involved) it times `SR.attach` against `nvme connect`,
//! `Volume.create` against `lvcreate`, `SR.ls` against `lvs`, runs fio
//! through the datapath device, the raw multipath head and a single path, and
//! measures the I/O stall while a path is cut; `Volume.snapshot` against
//! the bare `lvcreate` + `qemu-img create`, and fio through a one-layer
//! chain against the raw volume in the same engine. Benchmarks, not tests: no
//! threshold fails the run; the table says which targets are met.

mod guest;
mod host;
mod report;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

#[allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("NVMETCP_GUEST_STEP").is_some() {
        let plugin = || PathBuf::from(std::env::var("NVMETCP_PLUGIN").unwrap_or_default());
        let n = |s: &String| s.parse::<usize>().unwrap_or(1);
        let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["time-calls", method, params, count] => {
                guest::time_calls(&plugin(), method, params, n(&(*count).to_owned())).map(|s| serde_json::json!(s.0))
            }
            ["call", method, params] => guest::call(&plugin(), method, params),
            ["count-lvm", method, params] => guest::count_lvm(&plugin(), method, params).map(|c| serde_json::json!(c)),
            ["lvm-report", device] => guest::lvm_report(device.as_ref()).map(|n| serde_json::json!(n)),
            ["rss", method, params] => guest::rss(&plugin(), method, params).map(|k| serde_json::json!(k)),
            ["io-stall", device, seconds] => guest::io_stall(device.as_ref(), seconds.parse().unwrap_or(5.0)),
            _ => Err(format!("unknown guest step {args:?}")),
        };
        return match result {
            Ok(value) => {
                println!("{value}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nvmetcp-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let short = args.iter().any(|a| a == "--short");
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: bench/run [--short] [--userspace | --attach | --snapshot]   (see BENCHMARKS.md)");
        return ExitCode::SUCCESS;
    }
    let run = if args.iter().any(|a| a == "--userspace") {
        host::run_userspace
    } else if args.iter().any(|a| a == "--attach") {
        host::run_attach
    } else if args.iter().any(|a| a == "--snapshot") {
        host::run_snapshot
    } else {
        host::run
    };
    match run(short) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nvmetcp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
