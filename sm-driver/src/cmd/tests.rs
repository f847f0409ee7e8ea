//! Tests of the runner against stand-in programs written as shell scripts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{CmdError, Command, FakeRunner, Program, Runner, SystemRunner};

/// Writing an executable while another test thread forks can make its exec
/// fail with ETXTBSY; these tests take turns.
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

struct StandIn {
    _dir: tempfile::TempDir,
    runner: SystemRunner,
    _turn: MutexGuard<'static, ()>,
}

/// A runner whose `lvm` is the given shell script body.
fn stand_in_lvm(body: &str) -> StandIn {
    let turn = SPAWN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lvm");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let runner = SystemRunner::with_search_dirs(vec![dir.path().join("absent"), dir.path().to_path_buf()]);
    StandIn { _dir: dir, runner, _turn: turn }
}

#[test]
fn child_gets_a_pinned_environment_and_captured_output() {
    std::env::set_var("NVMETCP_TEST_LEAK", "leaked");
    let fake = stand_in_lvm("env; echo to-stderr >&2; pwd");
    let out = fake.runner.run(&Command::new(Program::Lvm).arg("version")).unwrap();
    assert!(out.stdout.contains("LC_ALL=C\n"), "{}", out.stdout);
    assert!(out.stdout.contains("PATH=/usr/sbin:/sbin:/usr/bin:/bin\n"), "{}", out.stdout);
    assert!(!out.stdout.contains("NVMETCP_TEST_LEAK"), "the caller's environment must not leak");
    assert!(out.stdout.ends_with("/\n"), "runs in /");
    assert_eq!(out.stderr, "to-stderr\n");
}

#[test]
fn non_zero_exit_is_an_error_carrying_command_status_and_stderr() {
    let fake = stand_in_lvm("echo '  Volume group \"vg0\" not found' >&2; exit 5");
    let err = fake.runner.run(&Command::new(Program::Lvm).args(["vgs", "vg0"])).unwrap_err();
    let CmdError::Failed { command, status, code, stderr, .. } = &err else { panic!("{err:?}") };
    assert_eq!(command, "lvm vgs vg0");
    assert_eq!((status.as_str(), *code), ("exit status 5", Some(5)));
    assert!(stderr.contains("not found"));
    assert_eq!(err.to_string(), "'lvm vgs vg0' failed (exit status 5): Volume group \"vg0\" not found");
}

#[test]
fn deadline_kills_the_whole_process_group() {
    let fake = stand_in_lvm("sleep 30 & echo $! > \"$1\"; echo started >&2; wait");
    let pidfile = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let err = fake
        .runner
        .run(&Command::new(Program::Lvm).arg(pidfile.path().to_str().unwrap()).timeout(Duration::from_millis(300)))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let CmdError::TimedOut { stderr, .. } = &err else { panic!("{err:?}") };
    assert_eq!(stderr, "started\n");
    assert!(err.to_string().contains("did not finish within 300ms and was killed"), "{err}");
    let grandchild = std::fs::read_to_string(pidfile.path()).unwrap();
    let proc_dir = format!("/proc/{}", grandchild.trim());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&proc_dir).exists() && Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
        if stat.contains(") Z ") {
            break; // a zombie awaiting its reaper is dead
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stat = std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "grandchild still running: {stat}");
}

#[test]
fn fast_commands_are_not_delayed_by_the_deadline_machinery() {
    let fake = stand_in_lvm("exit 0");
    let started = Instant::now();
    fake.runner.run(&Command::new(Program::Lvm).timeout(Duration::from_secs(60))).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn secrets_are_redacted_in_display_output_and_errors() {
    let fake = stand_in_lvm("echo \"arg=$1\"; read line; echo \"stdin=$line\" >&2; exit 1");
    let command = Command::new(Program::Lvm).secret_arg("DHHC-1:00:c2VjcmV0:").secret_stdin("hunter2-secret\n");
    assert_eq!(command.to_string(), "lvm <redacted>");
    let err = fake.runner.run(&command).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("DHHC-1:00:c2VjcmV0:") && !text.contains("hunter2-secret"), "{text}");
    assert!(text.contains("stdin=<redacted>") && text.contains("arg=<redacted>"), "{text}");
}

#[test]
fn missing_program_names_the_directories_searched() {
    let runner = SystemRunner::with_search_dirs(vec!["/nonexistent/a".into(), "/nonexistent/b".into()]);
    let err = runner.run(&Command::new(Program::Nvme)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "nvme is not installed (looked in /nonexistent/a, /nonexistent/b); install the package that provides it"
    );
}

#[test]
fn fake_runner_records_and_replays_in_order() {
    let fake = FakeRunner::new().then_stdout("one").then_stdout("two").without(Program::Nvme);
    assert_eq!(fake.run(&Command::new(Program::Lvm).arg("a")).unwrap().stdout, "one");
    assert_eq!(fake.run(&Command::new(Program::Lvm).secret_stdin("s")).unwrap().stdout, "two");
    assert!(matches!(fake.run(&Command::new(Program::Lvm)), Err(CmdError::Failed { .. })), "nothing scripted");
    assert!(matches!(fake.run(&Command::new(Program::Nvme)), Err(CmdError::NotFound { .. })));
    let calls = fake.calls();
    assert_eq!(calls.len(), 3, "a missing program is never run");
    assert_eq!(calls[0].shown, "lvm a");
    assert!(calls[1].had_stdin);
}
