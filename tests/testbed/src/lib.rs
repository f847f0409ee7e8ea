//! Runs scenarios in the test bed and hands their results to Rust tests.
//!
//! The test bed (see `tests/testbed/README.md`) is a QEMU guest booted from a
//! stock Debian kernel whose root is the host's `/` read-only over 9p with a
//! tmpfs overlay, so binaries just built by cargo run inside unchanged. In the
//! guest the kernel's own NVMe target (nvmet, configured through configfs)
//! serves subsystems on several TCP ports, and the same kernel's NVMe/TCP
//! initiator connects to them with native multipath.
//!
//! One boot runs several scenarios one after another (each in a clean state),
//! because a boot costs seconds under software emulation. A test suite
//! typically collects its scenarios into one [`run`] shared through a
//! `OnceLock`, then asserts on each [`ScenarioResult`].
//!
//! A missing prerequisite (the test bed was never prepared, QEMU is absent)
//! is a [`TestbedError`], never a skipped test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the test-bed scripts live.
#[must_use]
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace's target directory (results are kept under `testbed/`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| scripts_dir().join("../../target"), PathBuf::from)
}

/// A scenario to run in the guest.
#[derive(Debug, Clone)]
pub struct Scenario {
    spec: String,
    name: String,
    body: Option<String>,
    timeout_secs: u32,
    peer: bool,
}

impl Scenario {
    /// A scenario of `tests/testbed/scenarios/` by name (without `.sh`).
    #[must_use]
    pub fn named(name: &str) -> Self {
        Self { spec: name.to_owned(), name: name.to_owned(), body: None, timeout_secs: 300, peer: false }
    }

    /// A scenario whose bash body is given here. It runs with `bash -eu -o
    /// pipefail` after sourcing `lib/target.sh`, like the named ones.
    #[must_use]
    pub fn script(name: &str, body: &str) -> Self {
        Self { spec: String::new(), name: name.to_owned(), body: Some(body.to_owned()), timeout_secs: 300, peer: false }
    }

    /// The scenario's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the scenario in a second guest booted alongside the first (its
    /// own kernel: a second pool host). Guests reach each other at 10.98.0.1
    /// and 10.98.0.2 and synchronise with `tb_signal`/`tb_await`.
    #[must_use]
    pub fn on_peer(mut self) -> Self {
        self.peer = true;
        self
    }

    /// Sets the scenario's own time limit.
    #[must_use]
    pub fn timeout_secs(mut self, seconds: u32) -> Self {
        self.timeout_secs = seconds;
        self
    }
}

/// Why the test bed could not run at all.
#[derive(Debug)]
pub enum TestbedError {
    /// `tests/testbed/prepare` was not run (or its cache is gone).
    NotPrepared(String),
    /// The runner could not be started or the results not read.
    Io(String),
}

impl std::fmt::Display for TestbedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotPrepared(detail) => {
                write!(f, "the test bed is not prepared; run tests/testbed/prepare ({detail})")
            }
            Self::Io(detail) => write!(f, "cannot run the test bed: {detail}"),
        }
    }
}

impl std::error::Error for TestbedError {}

/// The outcome of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// Its name.
    pub name: String,
    /// Its exit status; `None` if the guest never finished it.
    pub status: Option<i32>,
    /// Its combined stdout and stderr.
    pub log: String,
    /// Seconds it took.
    pub seconds: Option<f64>,
    /// The directory it wrote files to (`$SCENARIO_OUT`).
    pub files: PathBuf,
}

impl ScenarioResult {
    /// Whether it exited 0.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.status == Some(0)
    }

    /// A file the scenario wrote to `$SCENARIO_OUT`.
    #[must_use]
    pub fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.files.join(name)).ok()
    }
}

/// The results of one boot.
#[derive(Debug, Clone)]
pub struct Run {
    /// The results directory (kept after the run).
    pub dir: PathBuf,
    /// The runner's exit status: 0 all passed, 1 some failed, 2 guest did not finish.
    pub exit_code: i32,
    /// The runner's summary (stderr).
    pub summary: String,
    /// Each scenario, in the order given.
    pub scenarios: Vec<ScenarioResult>,
}

impl Run {
    /// The guest's serial console log.
    #[must_use]
    pub fn serial_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serial.log")).unwrap_or_default()
    }

    /// The result of scenario `name`.
    ///
    /// # Panics
    /// If no such scenario was part of the run.
    #[must_use]
    pub fn scenario(&self, name: &str) -> &ScenarioResult {
        self.scenarios.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no scenario {name} in this run"))
    }

    /// Panics with the scenario's log, the console's tail and where the
    /// results are kept, unless scenario `name` passed.
    ///
    /// # Panics
    /// If the scenario did not pass.
    pub fn assert_passed(&self, name: &str) {
        let result = self.scenario(name);
        if !result.passed() {
            let serial = self.serial_log();
            let tail: Vec<&str> = serial.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            panic!(
                "scenario {name} did not pass (status {:?})\n--- scenario log ---\n{}\n--- guest console (tail) ---\n{}\n\
                 --- results kept in {} ---",
                result.status,
                result.log,
                tail.join("\n"),
                self.dir.display()
            );
        }
    }
}

/// The Rust target of the binaries the RPM ships.
pub const SHIPPED_TARGET: &str = "x86_64-unknown-linux-musl";

/// The arguments of `cargo build` that make the binaries the RPM ships,
/// word for word as `rpm/build` and `bench/run` spell them (a test keeps
/// the three equal): the guests run exactly what an XCP-ng host installs,
/// and no build of one replaces the binary another is running.
pub const SHIPPED_BUILD: [&str; 12] = [
    "--release",
    "--locked",
    "--target",
    SHIPPED_TARGET,
    "-p",
    "sm-driver",
    "--bin",
    "nvmetcp-plugin",
    "-p",
    "nvmetcp-admin",
    "--bin",
    "nvmetcp",
];

/// A test program the tiers run in their guests (the XAPI emulator), next
/// to the test binary that asks (`target/debug/deps/<tier>-…` →
/// `target/debug/<name>`).
#[must_use]
pub fn built_binary(name: &str) -> PathBuf {
    profile_dir().join(name)
}

/// A binary the RPM ships (`nvmetcp-plugin`, `nvmetcp`), as
/// [`SHIPPED_BUILD`] makes it: `target/x86_64-unknown-linux-musl/release/<name>`.
#[must_use]
pub fn shipped_binary(name: &str) -> PathBuf {
    let target = profile_dir().parent().map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    target.join(SHIPPED_TARGET).join("release").join(name)
}

/// `target/debug`, where cargo put the running test binary.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().and_then(Path::parent).unwrap_or(Path::new(".")).to_path_buf()
}

/// The plugin binary every tier calls.
#[must_use]
pub fn plugin_binary() -> PathBuf {
    shipped_binary("nvmetcp-plugin")
}

/// Builds the binaries under test, current: the plugin and the `nvmetcp`
/// command as the RPM ships them (static musl, release: a debug plugin
/// takes three times as long to start in a guest), and the XAPI emulator.
/// Every tier builds this one set, so they all run the very same plugin,
/// and a tier starting in one lane of `tests/run` never replaces the binary
/// the other lane's guest is running. Says why on failure.
#[must_use]
pub fn build_under_test() -> bool {
    #![allow(clippy::print_stderr)] // a test program's report
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let build = |args: &[&str]| {
        #[allow(clippy::disallowed_methods)] // test tooling: builds the binaries under test
        let status = Command::new(&cargo).arg("build").args(args).status();
        status.is_ok_and(|s| s.success())
    };
    let ready = build(&SHIPPED_BUILD)
        && build(&["-p", "xapi-emulator", "--bin", "xapi-emulator"])
        && ["nvmetcp-plugin", "nvmetcp"].iter().all(|n| shipped_binary(n).exists())
        && built_binary("xapi-emulator").exists();
    if !ready {
        eprintln!(
            "cannot build the binaries under test ({} and {}); tests/testbed/prepare installs musl-tools and the Rust target {SHIPPED_TARGET}",
            plugin_binary().display(),
            built_binary("xapi-emulator").display()
        );
    }
    ready
}

/// Boots one guest and runs `scenarios` in it, in order.
///
/// # Errors
/// [`TestbedError`] when the test bed is not prepared or cannot be run; a
/// scenario that fails is reported in its [`ScenarioResult`] instead.
pub fn run(label: &str, scenarios: &[Scenario]) -> Result<Run, TestbedError> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let dir = target_dir().join("testbed").join(format!("{label}-{stamp}-{}", std::process::id()));
    let scripts = dir.join("inline");
    std::fs::create_dir_all(&scripts).map_err(|e| TestbedError::Io(format!("{}: {e}", scripts.display())))?;
    let mut specs = Vec::new();
    for scenario in scenarios {
        let spec = match &scenario.body {
            Some(body) => {
                let path = scripts.join(format!("{}.sh", scenario.name));
                std::fs::write(&path, body).map_err(|e| TestbedError::Io(format!("{}: {e}", path.display())))?;
                path.display().to_string()
            }
            None => scenario.spec.clone(),
        };
        let prefix = if scenario.peer { "b:" } else { "" };
        specs.push(format!("{prefix}{spec}:{}", scenario.timeout_secs));
    }
    #[allow(clippy::disallowed_methods)] // test tooling: runs the test-bed script
    let output = Command::new(scripts_dir().join("run"))
        .arg("--results")
        .arg(&dir)
        .args(&specs)
        .output()
        .map_err(|e| TestbedError::Io(format!("tests/testbed/run: {e}")))?;
    let summary = String::from_utf8_lossy(&output.stderr).into_owned();
    let exit_code = output.status.code().unwrap_or(-1);
    if exit_code == 3 {
        return Err(TestbedError::NotPrepared(summary.trim().to_owned()));
    }
    let scenarios =
        scenarios.iter().map(|s| read_result(&if s.peer { dir.join("peer") } else { dir.clone() }, &s.name)).collect();
    Ok(Run { dir, exit_code, summary, scenarios })
}

fn read_result(dir: &Path, name: &str) -> ScenarioResult {
    let base = dir.join("scenarios").join(name);
    let read = |file: &str| std::fs::read_to_string(base.join(file)).ok();
    ScenarioResult {
        name: name.to_owned(),
        status: read("status").and_then(|s| s.trim().parse().ok()),
        log: read("log").unwrap_or_default(),
        seconds: read("seconds").and_then(|s| s.trim().parse().ok()),
        files: base.join("files"),
    }
}

/// Runs `scenarios` in one boot as a test program (a `harness = false` test)
/// and reports each like libtest does, ending with `N passed, M failed`.
/// Returns the process exit code: failure if anything failed or the test bed
/// could not run.
#[must_use]
pub fn run_suite(label: &str, scenarios: &[Scenario]) -> std::process::ExitCode {
    #![allow(clippy::print_stdout, clippy::print_stderr)] // a test program's report
                                                          // NVMETCP_TESTBED_ONLY=a,b runs only those scenarios (while developing one).
    let only = std::env::var("NVMETCP_TESTBED_ONLY").ok();
    let chosen: Vec<Scenario> = scenarios
        .iter()
        .filter(|s| only.as_deref().is_none_or(|o| o.split(',').any(|n| n == s.name())))
        .cloned()
        .collect();
    if let Some(only) = &only {
        eprintln!("{label}: NVMETCP_TESTBED_ONLY={only}: running {} of {} scenarios", chosen.len(), scenarios.len());
    }
    let scenarios = chosen.as_slice();
    let outcome = match run(label, scenarios) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("{error}");
            println!("0 passed, {} failed", scenarios.len());
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut failed = 0;
    for scenario in scenarios {
        let name = scenario.name();
        if std::panic::catch_unwind(|| outcome.assert_passed(name)).is_ok() {
            println!("test {name} ... ok");
        } else {
            println!("test {name} ... FAILED");
            failed += 1;
        }
    }
    println!("{} passed, {failed} failed", scenarios.len() - failed);
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The `main` of a two-role test program (`harness = false`): inside the
/// guest (`NVMETCP_GUEST_STEP` set) it runs `guest_step` with the arguments
/// and turns its error into a failed exit; with `--list` it names itself the
/// way libtest does; otherwise it runs `host_side` with this program's path,
/// which the scenarios call back in the guest (the host's root is the guest's,
/// over 9p).
#[must_use]
pub fn two_role_main(
    name: &str,
    guest_step: fn(&[String]) -> Result<(), String>,
    host_side: impl FnOnce(&str) -> std::process::ExitCode,
) -> std::process::ExitCode {
    #![allow(clippy::print_stdout, clippy::print_stderr)] // a test program's report
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("NVMETCP_GUEST_STEP").is_some() {
        return match guest_step(&args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("step failed: {message}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if args.iter().any(|a| a == "--list") {
        println!("{name}: test");
        return std::process::ExitCode::SUCCESS;
    }
    match std::env::current_exe() {
        Ok(exe) => host_side(&exe.display().to_string()),
        Err(error) => {
            eprintln!("{name}: cannot find this test program: {error}");
            println!("0 passed, 1 failed");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{scripts_dir, SHIPPED_BUILD, SHIPPED_TARGET};

    /// `rpm/build` and `bench/run` build the shipped binaries with the
    /// arguments the test bed builds them with (`--quiet` and the
    /// redirection aside): a difference would test one binary and ship
    /// another, and rebuild it between steps of `tests/run`.
    #[test]
    fn the_rpm_the_bench_and_the_test_bed_build_the_same_binaries() {
        let wanted = format!("cargo build {}", SHIPPED_BUILD.join(" "));
        for script in ["../../rpm/build", "../../bench/run"] {
            let path = scripts_dir().join(script);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let builds: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with("cargo build") && l.contains("-p sm-driver"))
                .map(|l| l.replace(" --quiet", "").replace("\"$TARGET\"", SHIPPED_TARGET).replace(" >&2", ""))
                .collect();
            assert_eq!(builds, std::slice::from_ref(&wanted), "{script} builds the shipped binaries differently");
        }
    }
}
