//! `xapi-emulator`: serves an emulated pool until killed, for driving real
//! XAPI clients and the `nvmetcp` command by hand and in the demo.
//!
//! ```text
//! xapi-emulator [--hosts N] [--unix PATH] [--plugin BINARY | --probe-fixture FILE]
//! ```
//!
//! Serves HTTP on 127.0.0.1 (its URL is the first line on stdout) and, with
//! `--unix`, the unix socket PATH (callers there are root, as on dom0). With
//! `--plugin`, storage calls run that nvmetcp plugin binary on this machine
//! (a pool of one real host); without it every storage call succeeds.

use std::path::PathBuf;
use std::process::ExitCode;

use xapi_emulator::{AcceptAll, Config, Emulator, FixtureBackend, PluginBackend};

#[allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut hosts, mut unix, mut plugin, mut fixture) = (1usize, None::<PathBuf>, None::<PathBuf>, None::<PathBuf>);
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match (word.as_str(), words.next()) {
            ("--hosts", Some(n)) => hosts = n.parse().unwrap_or(1),
            ("--unix", Some(path)) => unix = Some(path.into()),
            ("--plugin", Some(path)) => plugin = Some(path.into()),
            ("--probe-fixture", Some(path)) => fixture = Some(path.into()),
            _ => {
                eprintln!("usage: xapi-emulator [--hosts N] [--unix PATH] [--plugin BINARY | --probe-fixture FILE]");
                return ExitCode::from(2);
            }
        }
    }
    let names: Vec<String> = match (&plugin, hosts) {
        (Some(_), _) => vec![hostname()],
        (None, n) => (1..=n).map(|i| format!("xcp-ng-{i}")).collect(),
    };
    let config = Config { hosts: names, ..Config::default() };
    let emulator = match (&plugin, &fixture) {
        (Some(binary), _) => PluginBackend::new(binary).map(|backend| Emulator::new(config, backend)),
        (None, Some(file)) => FixtureBackend::from_file(file).map(|backend| Emulator::new(config, backend)),
        (None, None) => Ok(Emulator::new(config, AcceptAll)),
    };
    let emulator = match emulator {
        Ok(emulator) => emulator,
        Err(e) => {
            eprintln!("xapi-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = emulator.listen_http().and_then(|url| {
        if let Some(path) = &unix {
            let _ = std::fs::remove_file(path);
            emulator.listen_unix(path)?;
        }
        Ok(url)
    });
    match served {
        Ok(url) => println!("{url}"),
        Err(e) => {
            eprintln!("xapi-emulator: {e}");
            return ExitCode::FAILURE;
        }
    }
    loop {
        std::thread::park();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "host".into(), |h| h.trim().to_owned())
}
