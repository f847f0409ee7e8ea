//! The test bed itself, in CI: the demo scenario passes on the real kernel
//! target and initiator, and failures are reported as failures, with logs.
//! All scenarios share one boot.

use std::sync::OnceLock;

use nvmetcp_testbed::{run, Run, Scenario};

fn suite() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        run(
            "harness",
            &[
                Scenario::named("demo"),
                Scenario::named("access-control"),
                Scenario::named("target-outage"),
                Scenario::named("selftest-fails"),
                Scenario::script("selftest-timeout", "tb_log 'hanging on purpose'\nsleep 600\n").timeout_secs(5),
                Scenario::script("inline-target", &format!("{}\n", include_str!("../scenarios/smoke.sh"))),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

#[test]
fn demo_scenario_passes_on_the_real_kernel() {
    let run = suite();
    run.assert_passed("demo");
    let log = &run.scenario("demo").log;
    for step in [
        "one head /dev/nvme",
        "I/O continues on 1/2 paths",
        "2/2 paths live again",
        "data intact after both cuts",
        "head gone",
    ] {
        assert!(log.contains(step), "demo log lacks {step:?}:\n{log}");
    }
    assert!(run.scenario("demo").file("io-times").is_some_and(|t| t.lines().count() > 10));
}

#[test]
fn host_allow_lists_and_dh_hmac_chap_keys_are_enforced() {
    let run = suite();
    run.assert_passed("access-control");
    let log = &run.scenario("access-control").log;
    for line in [
        "a host not on the allow-list: refused",
        "the listed host without a key: refused",
        "the listed host with a wrong key: refused",
        "the listed host with the right keys: connected",
    ] {
        assert!(log.contains(line), "missing {line:?}:\n{log}");
    }
}

#[test]
fn the_whole_target_goes_down_and_comes_back() {
    let run = suite();
    run.assert_passed("target-outage");
    assert!(run.scenario("target-outage").log.contains("target down (2 port links removed)"));
}

#[test]
fn inline_scenarios_run_like_named_ones() {
    suite().assert_passed("inline-target");
}

#[test]
fn a_failing_scenario_is_reported_with_its_logs() {
    let run = suite();
    let failed = run.scenario("selftest-fails");
    assert_eq!(failed.status, Some(3));
    assert!(!failed.passed());
    assert!(failed.log.contains("this scenario fails on purpose"), "{}", failed.log);
    assert_eq!(failed.file("evidence").as_deref(), Some("marker: deliberate failure\n"));
    assert_eq!(run.exit_code, 1, "the runner's verdict is failure:\n{}", run.summary);
    assert!(run.summary.contains("selftest-fails               FAILED with status 3"), "{}", run.summary);
    assert!(run.serial_log().contains("TESTBED: scenario selftest-fails: exit status 3"));
    let panic = std::panic::catch_unwind(|| run.assert_passed("selftest-fails")).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("guest console (tail)") && message.contains("fails on purpose"), "{message}");
}

#[test]
fn a_hanging_scenario_is_cut_off_at_its_limit() {
    let hung = suite().scenario("selftest-timeout");
    assert_eq!(hung.status, Some(124));
    assert!(hung.log.contains("hanging on purpose") && hung.log.contains("timed out after 5s"), "{}", hung.log);
    assert!(hung.seconds.is_some_and(|s| s < 30.0));
}

#[test]
fn an_unprepared_test_bed_fails_loudly() {
    let empty = std::env::temp_dir().join(format!("nvmetcp-no-testbed-{}", std::process::id()));
    #[allow(clippy::disallowed_methods)] // runs the test-bed script with a cache that does not exist
    let output = std::process::Command::new(nvmetcp_testbed::scripts_dir().join("run"))
        .arg("smoke")
        .env("NVMETCP_TESTBED_CACHE", &empty)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not prepared") && stderr.contains("tests/testbed/prepare"), "{stderr}");
}
