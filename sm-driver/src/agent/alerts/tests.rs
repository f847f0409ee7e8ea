//! Alert deduplication and rate limiting on scripted sequences of path states.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{PathView, SrAlerts, BURST, REFILL};

const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
const A: &str = "10.0.0.1:4420";
const B: &str = "10.0.0.2:4420";

fn path(portal: &str, state: &str) -> PathView {
    PathView {
        portal: portal.into(),
        controller: (state != "absent").then(|| if portal == A { "nvme0".into() } else { "nvme1".into() }),
        state: state.into(),
        live: state == "live",
    }
}

fn both_expected() -> BTreeSet<String> {
    [A.to_owned(), B.to_owned()].into()
}

#[test]
fn a_cut_then_its_address_then_a_restore_is_one_loss_and_one_restore() {
    let t0 = Instant::now();
    let mut alerts = SrAlerts::new(SR, both_expected(), t0);
    let script: &[(u64, &[(&str, &str)])] = &[
        (0, &[(A, "live"), (B, "live")]),
        (1, &[(A, "live"), (B, "live")]),
        (2, &[(A, "live"), (B, "connecting")]), // port cut
        (3, &[(A, "live"), (B, "connecting")]),
        (4, &[(A, "live"), (B, "resetting")]), // address cut: still the same path down
        (5, &[(A, "live"), (B, "connecting")]),
        (9, &[(A, "live"), (B, "live")]), // restored
        (10, &[(A, "live"), (B, "live")]),
    ];
    let mut sent = Vec::new();
    for (at, states) in script {
        let paths: Vec<PathView> = states.iter().map(|(p, s)| path(p, s)).collect();
        if let Some(alert) = alerts.observe(t0 + Duration::from_secs(*at), "xcp-ng-1", &paths) {
            sent.push((*at, alert));
        }
    }
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let (at, lost) = &sent[0];
    assert_eq!(*at, 2);
    assert_eq!(lost.name, "NVMETCP_PATH_LOST");
    assert_eq!(lost.priority, 3);
    assert_eq!(lost.sr_uuid, SR);
    assert_eq!(
        lost.text(None),
        format!("Host xcp-ng-1 lost NVMe path {B} (controller nvme1: connecting) to SR {SR}; 1/2 paths live.")
    );
    let (at, back) = &sent[1];
    assert_eq!(*at, 9);
    assert_eq!(back.name, "NVMETCP_PATHS_RESTORED");
    assert_eq!(back.priority, 4);
    assert_eq!(back.text(None), format!("Host xcp-ng-1: all NVMe paths to SR {SR} are back (2/2 paths live)."));
    // Sent through XAPI, the host is named by its name_label, the hostname beside it.
    assert_eq!(
        lost.text(Some("rack 3, blade 2")),
        format!("Host rack 3, blade 2 (xcp-ng-1) lost NVMe path {B} (controller nvme1: connecting) to SR {SR}; 1/2 paths live.")
    );
    assert!(back.text(Some("xcp-ng-1")).starts_with("Host xcp-ng-1: all NVMe paths"), "same name, said once");
    assert!(back.text(Some(" ")).starts_with("Host xcp-ng-1: all"), "an empty label is no name");
}

#[test]
fn the_last_path_lost_is_more_urgent_and_a_partial_return_is_said_so() {
    let t0 = Instant::now();
    let mut alerts = SrAlerts::new(SR, both_expected(), t0);
    let first = alerts.observe(t0, "h", &[path(A, "connecting"), path(B, "absent")]).unwrap();
    assert_eq!(first.name, "NVMETCP_LAST_PATH_LOST");
    assert_eq!(first.priority, 2);
    assert!(first.text(None).contains("10.0.0.1:4420 (controller nvme0: connecting)"), "{}", first.text(None));
    assert!(first.text(None).contains("10.0.0.2:4420 (absent)"), "{}", first.text(None));
    let partial = alerts.observe(t0 + Duration::from_secs(1), "h", &[path(A, "live"), path(B, "absent")]).unwrap();
    assert_eq!(partial.name, "NVMETCP_PATH_RECOVERED");
    assert!(
        partial.text(None).contains("1/2 paths live, still down: 10.0.0.2:4420 (absent)"),
        "{}",
        partial.text(None)
    );
    assert!(alerts.observe(t0 + Duration::from_secs(2), "h", &[path(A, "live"), path(B, "absent")]).is_none());
}

#[test]
fn a_flapping_port_is_bounded_and_the_last_message_tells_the_truth() {
    let t0 = Instant::now();
    let mut alerts = SrAlerts::new(SR, both_expected(), t0);
    let mut sent = Vec::new();
    // 10 cuts in 20 s, observed every 250 ms: down 1 s, up 1 s.
    for tick in 0..80u64 {
        let now = t0 + Duration::from_millis(250 * tick);
        let b = if (tick / 4) % 2 == 0 { "connecting" } else { "live" };
        if let Some(a) = alerts.observe(now, "h", &[path(A, "live"), path(B, b)]) {
            sent.push(a);
        }
    }
    assert_eq!(sent.len(), BURST as usize, "{sent:#?}");
    // Still flapping within the minute: nothing more; the port is left up at 20 s.
    let up = [path(A, "live"), path(B, "live")];
    assert!(alerts.observe(t0 + Duration::from_secs(30), "h", &up).is_none());
    // The announced state after the burst was "restored" (4 = lost, back, lost, back):
    assert_eq!(sent[3].name, "NVMETCP_PATHS_RESTORED");
    // Leave it down: after a refill, exactly one message tells it, with the count.
    let down = [path(A, "live"), path(B, "connecting")];
    assert!(alerts.observe(t0 + Duration::from_secs(31), "h", &down).is_none(), "no token before a refill");
    let late = alerts.observe(t0 + REFILL + Duration::from_secs(1), "h", &down).unwrap();
    assert_eq!(late.name, "NVMETCP_PATH_LOST");
    assert!(
        late.text(None).contains("path changes since the last message; the path is flapping"),
        "{}",
        late.text(None)
    );
    assert!(alerts.observe(t0 + REFILL + Duration::from_secs(2), "h", &down).is_none());
}

#[test]
fn an_hour_of_flapping_sends_at_most_burst_plus_one_a_minute() {
    let t0 = Instant::now();
    let mut alerts = SrAlerts::new(SR, both_expected(), t0);
    let mut count = 0;
    for tick in 0..(4 * 3600u64) {
        let b = if tick % 8 < 4 { "connecting" } else { "live" };
        let now = t0 + Duration::from_millis(250 * tick);
        count += usize::from(alerts.observe(now, "h", &[path(A, "live"), path(B, b)]).is_some());
    }
    assert!(count <= BURST as usize + 60, "{count} messages");
    assert!(count >= 60, "the state is still reported about once a minute: {count}");
}

#[test]
fn a_degraded_sr_at_first_sight_is_announced_once() {
    let t0 = Instant::now();
    let mut alerts = SrAlerts::new(SR, both_expected(), t0);
    let down = [path(A, "live"), path(B, "absent")];
    assert_eq!(alerts.observe(t0, "h", &down).unwrap().name, "NVMETCP_PATH_LOST");
    assert!(alerts.observe(t0, "h", &down).is_none());
    // A restarted agent that kept what it announced says nothing again.
    let mut restarted = SrAlerts::new(SR, alerts.announced().clone(), t0);
    assert!(restarted.observe(t0, "h", &down).is_none());
}
