//! The multipath device against scripted fake targets: the data path
//! (in-capsule and R2T writes, split C2H data, digests, SUCCESS, reordered
//! completions), path failure with retry, ANA selection and fail-fast.

#![allow(clippy::cast_possible_truncation)] // test data: sizes here are small and known
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{AnaState, Multipath, PathStatus};
use crate::block::{BlockDevice, IoError, Outcome, Request, Ticket};
use crate::config::IoPolicy;
use crate::fake_target::{config, FakeTarget, Script};

fn run(dev: &Multipath, request: Request) -> Outcome {
    let (tx, rx) = mpsc::channel();
    dev.submit(request, Box::new(move |o| tx.send(o).unwrap()));
    rx.recv_timeout(Duration::from_secs(20)).expect("the request completed")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn data_round_trips_in_capsule_on_r2t_split_and_with_digests() {
    let scripts = [
        ("plain", Script::default(), false),
        ("r2t in pieces, c2h split", Script { r2t_piece: 16 * 1024, c2h_piece: 512, ..Script::default() }, false),
        ("digests", Script { c2h_piece: 4096, r2t_piece: 8192, ..Script::default() }, true),
        ("4k blocks", Script { lbads: 12, blocks: 256, ..Script::default() }, false),
    ];
    for (name, script, digests) in scripts {
        let target = FakeTarget::start(script);
        let mut cfg = config(&[&target]);
        cfg.transport.hdr_digest = digests;
        cfg.transport.data_digest = digests;
        let dev = Multipath::open(cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        let g = dev.geometry();
        assert_eq!(g.max_transfer, 128 * 1024, "{name}: MDTS 5 is 128 KiB");
        let bs = g.block_size as usize;
        // Small write: in the capsule. Large: R2T/H2CData, and split at MDTS.
        for (offset, len, seed) in [(0u64, bs, 1u8), (bs as u64 * 3, 64 * 1024, 2), (0, 300 * 1024, 3)] {
            let data = pattern(len, seed);
            run(&dev, Request::Write { offset, data: data.clone(), fua: false }).unwrap();
            let back = run(&dev, Request::Read { offset, len: u32::try_from(len).unwrap() }).unwrap();
            assert!(back == data, "{name}: {len} bytes at {offset} read back differently");
            assert!(
                target.disk.lock().unwrap()[offset as usize..offset as usize + len] == data[..],
                "{name}: on the target"
            );
        }
        run(&dev, Request::Flush).unwrap();
        run(&dev, Request::WriteZeroes { offset: 0, len: bs as u64 }).unwrap();
        run(&dev, Request::Discard { offset: bs as u64, len: bs as u64 }).unwrap();
        let back = run(&dev, Request::Read { offset: 0, len: u32::try_from(2 * bs).unwrap() }).unwrap();
        assert!(back.iter().all(|b| *b == 0), "{name}: zeroed and deallocated");
        assert_eq!(
            run(&dev, Request::Read { offset: 1, len: 512 }).unwrap_err(),
            IoError::Invalid(format!("1+512 is not aligned to {bs}-byte blocks"))
        );
        dev.close();
    }
}

#[test]
fn reordered_completions_reach_their_own_requests() {
    let target = FakeTarget::start(Script { reorder: true, ..Script::default() });
    let mut cfg = config(&[&target]);
    cfg.transport.nr_io_queues = Some(1);
    let dev = Multipath::open(cfg).unwrap();
    for (block, seed) in [(0u64, 10u8), (1, 20)] {
        target.disk.lock().unwrap()[block as usize * 512..(block as usize + 1) * 512]
            .copy_from_slice(&pattern(512, seed));
    }
    let (tx, rx) = mpsc::channel();
    for block in [0u64, 1] {
        let tx = tx.clone();
        dev.submit(Request::Read { offset: block * 512, len: 512 }, Box::new(move |o| tx.send((block, o)).unwrap()));
    }
    let mut got: Vec<(u64, Vec<u8>)> =
        (0..2).map(|_| rx.recv_timeout(Duration::from_secs(10)).map(|(b, o)| (b, o.unwrap())).unwrap()).collect();
    assert_eq!(got[0].0, 1, "the second read completed first");
    got.sort();
    assert_eq!(got[0].1, pattern(512, 10));
    assert_eq!(got[1].1, pattern(512, 20));
}

#[test]
fn a_bad_pdu_fails_the_path_and_the_command_is_retried_on_another() {
    let disk = Arc::new(Mutex::new(vec![0u8; 2048 * 512]));
    let bad = FakeTarget::start(Script { bad_pdu_after: Some(0), disk: Some(Arc::clone(&disk)), ..Script::default() });
    let good = FakeTarget::start(Script { disk: Some(Arc::clone(&disk)), ..Script::default() });
    let dev = Multipath::open(config(&[&bad, &good])).unwrap();
    let data = pattern(4096, 5);
    run(&dev, Request::Write { offset: 8192, data: data.clone(), fua: true }).expect("no error reaches the caller");
    assert_eq!(run(&dev, Request::Read { offset: 8192, len: 4096 }).unwrap(), data);
    let state = dev.state();
    assert_eq!(state.paths[0].status, PathStatus::Connecting, "{state:?}");
    assert!(state.paths[0].last_error.as_deref().unwrap_or("").contains("unknown PDU type 0x42"), "{state:?}");
    assert!(state.paths[0].errors >= 1);
    assert_eq!(state.paths[1].status, PathStatus::Live);
    assert!(good.io_commands.load(Ordering::SeqCst) >= 2);
}

#[test]
fn optimized_paths_are_preferred_and_round_robin_spreads_over_them() {
    let disk = Arc::new(Mutex::new(vec![0u8; 2048 * 512]));
    let non_optimized = FakeTarget::start(Script {
        ana_state: Arc::new(Mutex::new(2)),
        disk: Some(Arc::clone(&disk)),
        ..Script::default()
    });
    let optimized = FakeTarget::start(Script { disk: Some(Arc::clone(&disk)), ..Script::default() });
    let dev = Multipath::open(config(&[&non_optimized, &optimized])).unwrap();
    let state = dev.state();
    assert_eq!(state.paths[0].ana, Some(AnaState::NonOptimized));
    assert_eq!(state.paths[1].ana, Some(AnaState::Optimized));
    for _ in 0..10 {
        run(&dev, Request::Read { offset: 0, len: 512 }).unwrap();
    }
    assert_eq!(non_optimized.io_commands.load(Ordering::SeqCst), 0);
    assert_eq!(optimized.io_commands.load(Ordering::SeqCst), 10);
    drop(dev);

    let a = FakeTarget::start(Script { disk: Some(Arc::clone(&disk)), ..Script::default() });
    let b = FakeTarget::start(Script { disk: Some(Arc::clone(&disk)), ..Script::default() });
    let mut cfg = config(&[&a, &b]);
    cfg.iopolicy = IoPolicy::RoundRobin;
    let dev = Multipath::open(cfg).unwrap();
    for _ in 0..10 {
        run(&dev, Request::Read { offset: 0, len: 512 }).unwrap();
    }
    assert_eq!((a.io_commands.load(Ordering::SeqCst), b.io_commands.load(Ordering::SeqCst)), (5, 5));
}

#[test]
fn with_no_usable_path_io_waits_then_fails_after_fast_io_fail_tmo() {
    let target = FakeTarget::start(Script { ana_state: Arc::new(Mutex::new(3)), ..Script::default() });
    let mut cfg = config(&[&target]);
    cfg.transport.fast_io_fail_tmo = Some(Duration::from_secs(1));
    let dev = Multipath::open(cfg).unwrap();
    assert_eq!(dev.state().paths[0].ana, Some(AnaState::Inaccessible));
    let start = Instant::now();
    let err = run(&dev, Request::Read { offset: 0, len: 512 }).unwrap_err();
    let waited = start.elapsed();
    assert!(matches!(err, IoError::NoPath(_)), "{err}");
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(3), "waited {waited:?}");
    assert_eq!(target.io_commands.load(Ordering::SeqCst), 0, "never sent to an inaccessible path");
    assert_eq!(dev.state().failed_no_path, 1);
}

/// The kernel's NBD driver re-sends a held request at every `nbd_io_timeout`
/// (a few seconds): each copy must not start `fast_io_fail_tmo` afresh, or
/// an outage of every path would hold I/O for ever.
#[test]
fn a_copy_sent_again_fails_at_fast_io_fail_tmo_counted_from_its_first_copy() {
    let target = FakeTarget::start(Script { ana_state: Arc::new(Mutex::new(3)), ..Script::default() });
    let mut cfg = config(&[&target]);
    cfg.transport.fast_io_fail_tmo = Some(Duration::from_millis(1500));
    let dev = Multipath::open(cfg).unwrap();
    let (tx, rx) = mpsc::channel();
    let first = Arc::new(Ticket::default());
    let start = Instant::now();
    let sent = tx.clone();
    dev.submit_ticketed(Request::Read { offset: 0, len: 512 }, &first, Box::new(move |o| sent.send((1, o)).unwrap()));
    std::thread::sleep(Duration::from_millis(900));
    let again = Arc::new(first.next_copy());
    first.supersede(Box::new(|| {}));
    dev.submit_ticketed(Request::Read { offset: 0, len: 512 }, &again, Box::new(move |o| tx.send((2, o)).unwrap()));
    let mut outcomes = Vec::new();
    while outcomes.len() < 2 {
        outcomes.push(rx.recv_timeout(Duration::from_secs(5)).expect("both copies completed"));
    }
    let waited = start.elapsed();
    let second = outcomes.iter().find(|(copy, _)| *copy == 2).map(|(_, o)| o.as_ref().unwrap_err().to_string());
    assert!(second.as_deref().is_some_and(|e| e.contains("fast_io_fail_tmo")), "{second:?}");
    assert!(waited < Duration::from_millis(2200), "the re-sent copy waited {waited:?}: its clock restarted");
    assert!(waited >= Duration::from_millis(1400), "failed before fast_io_fail_tmo: {waited:?}");
    assert_eq!(target.io_commands.load(Ordering::SeqCst), 0);
}

#[test]
fn a_namespace_with_another_identity_is_refused() {
    let target = FakeTarget::start(Script { uuid: [9; 16], ..Script::default() });
    let err = Multipath::open(config(&[&target])).err().unwrap();
    assert!(err.to_string().contains("another namespace sits at this NSID"), "{err}");
}

#[test]
fn a_lost_path_is_reconnected_every_reconnect_delay() {
    // The first path answers I/O with garbage; its controller is lost, then reconnected.
    let target = FakeTarget::start(Script { bad_pdu_after: Some(0), ..Script::default() });
    let good = FakeTarget::start(Script { disk: Some(Arc::clone(&target.disk)), ..Script::default() });
    let dev = Multipath::open(config(&[&target, &good])).unwrap();
    run(&dev, Request::Read { offset: 0, len: 512 }).unwrap();
    assert_eq!(dev.state().paths[0].status, PathStatus::Connecting);
    let start = Instant::now();
    while dev.state().paths[0].status != PathStatus::Live {
        assert!(start.elapsed() < Duration::from_secs(5), "not reconnected: {:?}", dev.state());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(start.elapsed() >= Duration::from_millis(800), "reconnected before reconnect_delay");
    assert_eq!(dev.state().paths[0].losses, 1);
}

#[test]
fn a_path_that_stays_down_is_given_up_after_ctrl_loss_tmo() {
    let good = FakeTarget::start(Script::default());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let mut cfg = config(&[&good]);
    cfg.portals.push(gone);
    cfg.transport.ctrl_loss_tmo = Some(Duration::from_secs(2));
    let dev = Multipath::open(cfg).unwrap();
    let state = dev.state();
    assert_eq!(state.paths[1].status, PathStatus::Connecting);
    assert!(state.paths[1].last_error.as_deref().unwrap_or("").contains("unreachable"), "{state:?}");
    let start = Instant::now();
    while dev.state().paths[1].status != PathStatus::Deleted {
        assert!(start.elapsed() < Duration::from_secs(6), "not given up: {:?}", dev.state());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(start.elapsed() >= Duration::from_millis(1500), "given up before ctrl_loss_tmo");
    run(&dev, Request::Read { offset: 0, len: 512 }).expect("the live path still serves");
}

#[test]
fn many_commands_in_flight_on_one_queue_with_r2t_in_pieces_and_reordered_completions() {
    // One I/O queue of 7 slots, 48 writes of 64 KiB at once (each asked for
    // in four R2Ts, H2CData sent without copies while other capsules go
    // out), completions answered in swapped pairs; then 48 reads at once,
    // their data split over many C2HData PDUs. Every request gets its own data.
    let target = FakeTarget::start(Script {
        r2t_piece: 16 * 1024,
        c2h_piece: 4096,
        reorder: true,
        blocks: 8192,
        ..Script::default()
    });
    let mut cfg = config(&[&target]);
    cfg.transport.nr_io_queues = Some(1);
    let dev = Arc::new(Multipath::open(cfg).unwrap());
    let count = 48u64;
    let len = 64 * 1024;
    let (tx, rx) = mpsc::channel();
    for i in 0..count {
        let tx = tx.clone();
        let data = pattern(len, i as u8);
        dev.submit(
            Request::Write { offset: i * len as u64, data, fua: false },
            Box::new(move |o| tx.send((i, o)).unwrap()),
        );
    }
    let mut peak = 0;
    for _ in 0..count {
        peak = peak.max(dev.state().paths[0].in_flight);
        let (i, outcome) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        outcome.unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    assert!(peak <= 7, "at most the queue's slots in flight, saw {peak}");
    for i in 0..count {
        let tx = tx.clone();
        dev.submit(
            Request::Read { offset: i * len as u64, len: len as u32 },
            Box::new(move |o| tx.send((i, o)).unwrap()),
        );
    }
    for _ in 0..count {
        let (i, outcome) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(outcome.unwrap() == pattern(len, i as u8), "read {i} got another request's data");
    }
    let disk = target.disk.lock().unwrap();
    for i in 0..count as usize {
        assert!(disk[i * len..(i + 1) * len] == pattern(len, i as u8)[..], "write {i} on the target");
    }
}

#[test]
fn a_namespace_that_changes_identity_fails_its_path_and_is_never_served() {
    let script = Script::default();
    let swap = Arc::clone(&script.swapped_uuid);
    let target = FakeTarget::start(script);
    let mut cfg = config(&[&target]);
    cfg.transport.keep_alive_tmo = Duration::from_secs(1);
    cfg.transport.fast_io_fail_tmo = Some(Duration::from_secs(1));
    let dev = Multipath::open(cfg).unwrap();
    run(&dev, Request::Write { offset: 0, data: pattern(512, 1), fua: false }).unwrap();
    // Another namespace takes NSID 1; the target sends a namespace-change event.
    *swap.lock().unwrap() = Some([9; 16]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let path = dev.state().paths[0].clone();
        if path.status != PathStatus::Live {
            break path;
        }
        assert!(Instant::now() < deadline, "the path is still live on another namespace");
        std::thread::sleep(Duration::from_millis(20));
    };
    let why = failed.last_error.unwrap_or_default();
    assert!(why.contains("another namespace sits at this NSID") || why.contains("UUID"), "{why}");
    let served = target.io_commands.load(Ordering::SeqCst);
    assert!(run(&dev, Request::Read { offset: 0, len: 512 }).is_err(), "read from another namespace");
    // Reconnects (every second) check the identity too: still not served.
    std::thread::sleep(Duration::from_millis(2500));
    let path = dev.state().paths[0].clone();
    assert_ne!(path.status, PathStatus::Live);
    assert!(path.last_error.unwrap_or_default().contains("UUID"), "a reconnect must name the UUID");
    assert_eq!(target.io_commands.load(Ordering::SeqCst), served, "no I/O reached the other namespace");
    dev.close();
}

#[test]
fn an_idle_path_lost_and_back_is_told_at_once_without_polling() {
    // No I/O and a long keep-alive: only the queues' own death can tell the
    // path's thread (which blocks on its events, with no timer) of the loss.
    let disk = Arc::new(Mutex::new(vec![0u8; 2048 * 512]));
    let a = FakeTarget::start(Script { disk: Some(Arc::clone(&disk)), ..Script::default() });
    let b = FakeTarget::start(Script { disk: Some(Arc::clone(&disk)), ..Script::default() });
    let mut cfg = config(&[&a, &b]);
    cfg.transport.keep_alive_tmo = Duration::from_secs(120);
    let dev = Multipath::open(cfg).unwrap();
    let seen = dev.wait_for_change(0, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(dev.wait_for_change(seen, Duration::ZERO), seen, "nothing changed while idle");
    let start = Instant::now();
    a.cut();
    let lost = dev.wait_for_change(seen, Duration::from_secs(10));
    let noticed = start.elapsed();
    assert_ne!(lost, seen, "the loss is a change");
    assert_eq!(dev.state().paths[0].status, PathStatus::Connecting, "{:?}", dev.state());
    assert!(noticed < Duration::from_secs(2), "noticed after {noticed:?}");
    a.restore();
    let mut now = lost;
    while dev.state().paths[0].status != PathStatus::Live {
        assert!(start.elapsed() < Duration::from_secs(10), "not back: {:?}", dev.state());
        now = dev.wait_for_change(now, Duration::from_secs(10));
    }
    assert_ne!(now, lost, "the path coming back is a change");
    run(&dev, Request::Read { offset: 0, len: 512 }).unwrap();
    let closing = Instant::now();
    dev.close();
    assert!(closing.elapsed() < Duration::from_secs(2), "close wakes every sleeping thread");
}
