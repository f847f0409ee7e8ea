use std::net::TcpListener;

use super::{run, DoctorInput, Verdict};
use crate::cmd::{CmdError, FakeRunner, Output};
use crate::host::HostRoot;
use crate::nvme::names::{Portal, Transport};

fn write(host: &HostRoot, path: &str, text: &str) {
    let full = host.path(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, text).unwrap();
}

fn ok(stdout: &str) -> Result<Output, CmdError> {
    Ok(Output { stdout: stdout.to_owned(), stderr: String::new() })
}

fn failed(what: &str) -> Result<Output, CmdError> {
    Err(CmdError::Failed {
        command: what.to_owned(),
        status: "exit status 1".into(),
        code: Some(1),
        stdout: String::new(),
        stderr: "ping: local error: message too long, mtu=1500".into(),
    })
}

/// A healthy XCP-ng 9 host with the RPM installed.
fn healthy_host() -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::at(dir.path());
    write(&host, "/proc/sys/kernel/osrelease", "6.12.0-xcpng\n");
    write(&host, "/lib/modules/6.12.0-xcpng/modules.dep", "kernel/drivers/nvme/host/nvme-tcp.ko.xz: nvme-fabrics.ko\n");
    write(&host, "/sys/module/nvme_core/parameters/multipath", "Y\n");
    write(&host, "/etc/nvme/hostnqn", "nqn.2014-08.org.nvmexpress:uuid:5c1e5c1e-0000-4000-8000-00000000a11e\n");
    write(&host, "/etc/nvme/hostid", "5c1e5c1e-0000-4000-8000-00000000a11e\n");
    for link in [
        "/usr/libexec/xapi-storage-script/volume/org.xen.xapi.storage.nvmetcp/Plugin.Query",
        "/usr/libexec/xapi-storage-script/datapath/nvmetcp/Plugin.Query",
        "/etc/xapi.d/plugins/nvmetcp",
    ] {
        write(&host, link, "");
    }
    write(&host, "/proc/812/comm", "xapi-storage-sc\n");
    let agent = crate::agent::status::AgentStatus {
        pid: 913,
        updated: crate::agent::status::unix_seconds(std::time::SystemTime::now()),
        ..Default::default()
    };
    crate::agent::status::save(&host, &agent).unwrap();
    write(&host, "/proc/913/comm", "nvmetcp-agent\n");
    write(&host, "/sys/class/net/eth1/mtu", "9000\n");
    write(&host, "/proc/sys/net/ipv4/conf/all/arp_ignore", "2\n");
    write(&host, "/proc/sys/net/ipv4/conf/all/arp_announce", "2\n");
    write(&host, "/usr/sbin/tap-ctl", "");
    (dir, host)
}

const TWO_NICS_ONE_SUBNET: &str = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
    3: eth1    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth1\\       valid_lft forever\n\
    4: eth2    inet 10.0.0.6/24 brd 10.0.0.255 scope global eth2\\       valid_lft forever\n";

#[test]
fn a_healthy_host_passes_every_check_and_says_why() {
    let (_dir, host) = healthy_host();
    let portal = crate::nvme::connect::nvme_tcp_port();
    let runner = FakeRunner::new()
        .then(ok(TWO_NICS_ONE_SUBNET))
        .then(ok("127.0.0.1 dev eth1 src 10.0.0.5 uid 0\n    cache\n"))
        .then(ok("2 packets transmitted, 2 received\n"))
        .then(ok(TAP_CTL_HELP_QCOW2));
    let checks = run(&host, &runner, &DoctorInput { transport: Transport::Tcp, portals: vec![portal] });
    for check in &checks {
        assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
        assert!(!check.detail.is_empty(), "{check:?}");
    }
    assert_eq!(checks.len(), 11);
    let calls: Vec<String> = runner.calls().into_iter().map(|c| c.shown).collect();
    assert!(calls[2].contains("ping -M do -c 2 -W 1 -s 8972 127.0.0.1"), "{calls:?}");
}

#[test]
fn linux_4_19_gets_the_userspace_initiator_and_is_told_why() {
    let (_dir, host) = healthy_host();
    write(&host, "/proc/sys/kernel/osrelease", "4.19.0+1\n");
    write(&host, "/lib/modules/4.19.0+1/modules.dep", "kernel/drivers/nvme/host/nvme-rdma.ko: nvme-fabrics.ko\n");
    let checks =
        run(&host, &FakeRunner::new().then(ok("")), &DoctorInput { transport: Transport::Tcp, portals: vec![] });
    let tcp = checks.iter().find(|c| c.name == "NVMe/TCP initiator").unwrap();
    assert_eq!(tcp.verdict, Verdict::Fail, "no nbd either: {tcp:?}");
    assert!(tcp.detail.contains("Linux 4.19.0+1 has no nvme_tcp") && tcp.detail.contains("no NBD driver"), "{tcp:?}");
    write(
        &host,
        "/lib/modules/4.19.0+1/modules.dep",
        "kernel/drivers/nvme/host/nvme-rdma.ko: nvme-fabrics.ko\nkernel/drivers/block/nbd.ko:\n",
    );
    let checks =
        run(&host, &FakeRunner::new().then(ok("")), &DoctorInput { transport: Transport::Tcp, portals: vec![] });
    let tcp = checks.iter().find(|c| c.name == "NVMe/TCP initiator").unwrap();
    assert_eq!(tcp.verdict, Verdict::Pass, "{tcp:?}");
    assert!(
        tcp.detail.starts_with("userspace initiator (Linux 4.19.0+1 has no nvme_tcp")
            && tcp.detail.contains("/dev/nbdN"),
        "{tcp:?}"
    );
    let multipath = checks.iter().find(|c| c.name == "native multipath").unwrap();
    assert_eq!(multipath.verdict, Verdict::Pass, "{multipath:?}");
    assert!(!checks.iter().any(|c| c.name == "kernel module nvme_tcp"));
    let rdma =
        run(&host, &FakeRunner::new().then(ok("")), &DoctorInput { transport: Transport::Rdma, portals: vec![] });
    assert_eq!(rdma[0].verdict, Verdict::Pass, "{:?}", rdma[0]);
    // What 4.19 may not take is said, with what it changes.
    let options = rdma.iter().find(|c| c.name == "connect options").unwrap();
    assert_eq!(options.verdict, Verdict::Warn, "{options:?}");
    assert!(options.detail.contains("fast_io_fail_tmo (Linux 5.10) expected missing"), "{options:?}");
    assert!(options.detail.contains("host_iface (Linux 5.14)") && options.fix.contains("SMlog"), "{options:?}");
    // Once a connect learned that the kernel rejects it, doctor says so for sure.
    write(&host, crate::nvme::kernel_options::LEARNED, "4.19.0+1\nfast_io_fail_tmo\n");
    let learned =
        run(&host, &FakeRunner::new().then(ok("")), &DoctorInput { transport: Transport::Rdma, portals: vec![] });
    let options = learned.iter().find(|c| c.name == "connect options").unwrap();
    assert!(options.detail.contains("fast_io_fail_tmo (Linux 5.10) not taken: I/O is not failed"), "{options:?}");
}

#[test]
fn each_problem_fails_its_own_check_with_a_fix() {
    let (_dir, host) = healthy_host();
    write(&host, "/sys/module/nvme_core/parameters/multipath", "N\n");
    write(&host, "/etc/nvme/hostnqn", "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000\n");
    std::fs::remove_file(host.path("/proc/812/comm")).unwrap();
    std::fs::remove_file(host.path("/etc/xapi.d/plugins/nvmetcp")).unwrap();
    write(&host, "/proc/sys/net/ipv4/conf/all/arp_ignore", "0\n");
    let closed =
        Portal::parse(&TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string(), 4420).unwrap();
    let runner = FakeRunner::new()
        .then(ok(TWO_NICS_ONE_SUBNET))
        .then(ok("127.0.0.1 dev eth1 src 10.0.0.5\n"))
        .then(failed("ping"));
    let checks = run(&host, &runner, &DoctorInput { transport: Transport::Tcp, portals: vec![closed] });
    let failing: Vec<&str> = checks.iter().filter(|c| c.verdict == Verdict::Fail).map(|c| c.name.as_str()).collect();
    assert_eq!(failing.len(), 7, "{checks:#?}");
    for check in checks.iter().filter(|c| c.verdict == Verdict::Fail) {
        assert!(!check.fix.is_empty(), "{check:?}");
    }
    let arp = checks.iter().find(|c| c.name == "ARP on shared subnets").unwrap();
    assert!(arp.detail.contains("eth1 and eth2") && arp.fix.contains("host-setup"), "{arp:?}");
    assert!(arp.detail.contains("eth1: arp_ignore=0, arp_announce=2"), "{arp:?}");
    let mtu = checks.iter().find(|c| c.name.starts_with("MTU")).unwrap();
    assert!(mtu.detail.contains("MTU 9000") && mtu.detail.contains("message too long"), "{mtu:?}");
}

#[test]
fn per_interface_arp_settings_count_as_the_kernel_counts_them() {
    let (_dir, host) = healthy_host();
    write(&host, "/proc/sys/net/ipv4/conf/all/arp_ignore", "0\n");
    write(&host, "/proc/sys/net/ipv4/conf/eth1/arp_ignore", "2\n");
    write(&host, "/proc/sys/net/ipv4/conf/eth2/arp_ignore", "1\n");
    let checks = run(
        &host,
        &FakeRunner::new().then(ok(TWO_NICS_ONE_SUBNET)),
        &DoctorInput { transport: Transport::Tcp, portals: vec![] },
    );
    let arp = checks.iter().find(|c| c.name == "ARP on shared subnets").unwrap();
    assert_eq!(arp.verdict, Verdict::Pass, "{arp:?}");
}

/// `tap-ctl`'s command list on XCP-ng 8.3 with the qcow2 update.
const TAP_CTL_HELP_QCOW2: &str = "usage: tap-ctl COMMAND [OPTIONS]\nCOMMAND := { list | allocate | free | create | destroy | spawn | attach | detach | open | close | pause | unpause | stats | major | check | commit | query | cancel }\n";

#[test]
fn the_engine_report_says_what_serves_snapshots_and_plain_volumes() {
    let engine = |host: &HostRoot, runner: &FakeRunner| {
        let checks = run(host, runner, &DoctorInput { transport: Transport::Tcp, portals: vec![] });
        checks.into_iter().find(|c| c.name == "datapath engine").unwrap()
    };
    let (_dir, host) = healthy_host();
    let check = engine(&host, &FakeRunner::new().then(ok("")).then(ok(TAP_CTL_HELP_QCOW2)));
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
    // The default (datapath = auto): tapdisk with qcow2 serves plain volumes too.
    assert!(check.detail.contains("tapdisk with qcow2"), "{check:?}");
    assert!(check.detail.contains("plain volumes through it too (tapdisk opens qcow2"), "{check:?}");
    write(&host, "/etc/nvmetcp/host.conf", "datapath = blkback\n");
    let check = engine(&host, &FakeRunner::new().then(ok("")).then(ok(TAP_CTL_HELP_QCOW2)));
    assert!(check.detail.contains("plain volumes through blkback (datapath = blkback"), "{check:?}");
    write(&host, "/etc/nvmetcp/host.conf", "datapath = engine\n");
    let check = engine(&host, &FakeRunner::new().then(ok("")).then(ok(TAP_CTL_HELP_QCOW2)));
    assert!(check.detail.contains("datapath = engine"), "{check:?}");
    // Issue 18: a pool member reports its own choice, as the master does.
    std::fs::remove_file(host.path("/etc/nvmetcp/host.conf")).unwrap();
    write(&host, "/etc/xensource/pool.conf", "slave:10.0.0.1");
    let check = engine(&host, &FakeRunner::new().then(ok("")).then(ok(TAP_CTL_HELP_QCOW2)));
    assert!(check.detail.contains("plain volumes through it too (tapdisk opens qcow2"), "{check:?}");
    write(&host, "/etc/nvmetcp/host.conf", "datapath = engine\n");
    let check = engine(&host, &FakeRunner::new().then(ok("")).then(ok(TAP_CTL_HELP_QCOW2)));
    assert!(check.detail.contains("plain volumes through it too (datapath = engine"), "{check:?}");
    std::fs::remove_file(host.path("/etc/xensource/pool.conf")).unwrap();
    // Upstream blktap: no commit/query, no qcow2; the default keeps blkback and says why.
    std::fs::remove_file(host.path("/etc/nvmetcp/host.conf")).unwrap();
    let upstream = TAP_CTL_HELP_QCOW2.replace(" | commit | query | cancel", "");
    let check = engine(&host, &FakeRunner::new().then(ok("")).then(ok(&upstream)));
    assert_eq!(check.verdict, Verdict::Warn, "{check:?}");
    assert!(check.fix.contains("2026-05-05"), "{check:?}");
    assert!(check.detail.contains("plain volumes through blkback (this host's blktap has no qcow2"), "{check:?}");
    // Neither engine.
    std::fs::remove_file(host.path("/usr/sbin/tap-ctl")).unwrap();
    let check = engine(&host, &FakeRunner::new().then(ok("")));
    assert_eq!(check.verdict, Verdict::Warn, "{check:?}");
    assert!(check.detail.contains("cannot be attached"), "{check:?}");
}

#[test]
fn a_stopped_agent_is_a_warning_that_says_how_to_start_it() {
    let (_dir, host) = healthy_host();
    std::fs::remove_dir_all(host.path("/proc/913")).unwrap();
    let runner = FakeRunner::new().then(ok(""));
    let checks = run(&host, &runner, &DoctorInput { transport: Transport::Tcp, portals: vec![] });
    let agent = checks.iter().find(|c| c.name == "host agent").unwrap();
    assert_eq!(agent.verdict, Verdict::Warn, "{agent:?}");
    assert!(agent.detail.starts_with("not running (last seen"), "{agent:?}");
    assert!(agent.fix.contains("systemctl enable --now nvmetcp-agent"), "{agent:?}");
}
