//! The host-side checks of `nvmetcp doctor`: every step of the manual guide
//! that decides whether this host can use an nvmetcp SR, each with PASS, WARN
//! or FAIL and the fix. Read-only: nothing here loads a module or changes a
//! setting.
//!
//! The admin command runs them on the master directly and, with `--pool`, on
//! every host through the XAPI host plugin (`host.call_plugin(…, "doctor")`),
//! so the checks and their wording are the same everywhere.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cmd::{Command, Program, Runner};
use crate::host::HostRoot;
use crate::initiator::InitiatorKind;
use crate::nvme::checks::module_state;
use crate::nvme::fabrics::KernelFabrics;
use crate::nvme::kernel_options::KernelOptions;
use crate::nvme::names::{Portal, Transport};
use crate::plugin::{DATAPATH_SCHEME, HOST_PLUGINS_DIR, HOST_PLUGIN_NAME, VOLUME_PLUGIN_DIR};

/// Where the RPM installs the plugin directories.
pub const PLUGIN_ROOT: &str = "/usr/libexec/xapi-storage-script";
/// How long a portal may take to accept a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// As it should be.
    Pass,
    /// Works, but not as recommended.
    Warn,
    /// Stops nvmetcp from working.
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// A short stable name (`multipath`, `portal 10.0.0.1:4420`, …).
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do (empty on PASS).
    pub fix: String,
}

impl Check {
    /// A check that passed.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { name: name.into(), verdict: Verdict::Pass, detail: detail.into(), fix: String::new() }
    }

    /// A check that works, but not as recommended.
    pub fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { name: name.into(), verdict: Verdict::Warn, detail: detail.into(), fix: fix.into() }
    }

    /// A check that failed.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { name: name.into(), verdict: Verdict::Fail, detail: detail.into(), fix: fix.into() }
    }
}

/// What the checks need to know about the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorInput {
    /// The transport to check the kernel for.
    pub transport: Transport,
    /// Portals (discovery or I/O) to check reachability and MTU towards.
    pub portals: Vec<Portal>,
}

/// Runs every check on this host.
#[must_use]
pub fn run(host: &HostRoot, runner: &dyn Runner, input: &DoctorInput) -> Vec<Check> {
    let userspace = input.transport == Transport::Tcp && {
        let configured = crate::host_config::HostConfig::load(host).ok().and_then(|c| c.initiator);
        crate::initiator::predict(
            host,
            configured,
            &crate::sr_state::attached_on(host, crate::initiator::InitiatorKind::Userspace),
        )
        .kind
            == InitiatorKind::Userspace
    };
    let mut checks = vec![
        if userspace { userspace_initiator(host) } else { transport(host, input.transport) },
        connect_options(host),
        if userspace { userspace_multipath() } else { multipath(host) },
        identity(host),
        plugin_installed(host),
        storage_script_running(host),
        agent_running(host),
    ];
    let addresses = interface_addresses(runner);
    checks.push(arp(host, &addresses));
    for portal in &input.portals {
        if input.transport == Transport::Tcp {
            checks.push(reachable(portal));
        }
        checks.push(mtu(host, runner, portal));
    }
    checks.push(engine::datapath_engine(host, runner));
    checks.extend(journal::snapshot_journals(host, runner));
    checks
}

fn transport(host: &HostRoot, transport: Transport) -> Check {
    let (module, file) = match transport {
        Transport::Tcp => ("nvme_tcp", "nvme-tcp.ko"),
        Transport::Rdma => ("nvme_rdma", "nvme-rdma.ko"),
    };
    let release = host.read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
    let state = module_state(host, Some(&release), module, file);
    let name = format!("kernel module {module}");
    if state.starts_with("not in kernel") {
        let fix = match transport {
            Transport::Tcp => format!(
                "Linux {release} has no NVMe/TCP initiator (it arrived in Linux 5.0; XCP-ng 8.2 and 8.3 run 4.19). \
                 Options: XCP-ng 9 (Linux 6.12), or transport=rdma with an RDMA-capable array and NICs (nvme_rdma \
                 is in 4.19)"
            ),
            Transport::Rdma => format!("Linux {release} has no nvme_rdma module; use a kernel built with NVME_RDMA"),
        };
        Check::fail(name, state, fix)
    } else {
        Check::pass(name, format!("{state} (Linux {release})"))
    }
}

/// On a host that uses nvmetcp's own NVMe/TCP initiator (XCP-ng 8.x: no
/// `nvme_tcp`): the reason, and the kernel's NBD driver it serves SRs through.
fn userspace_initiator(host: &HostRoot) -> Check {
    const NAME: &str = "NVMe/TCP initiator";
    let configured = crate::host_config::HostConfig::load(host).ok().and_then(|c| c.initiator);
    let choice = crate::initiator::predict(
        host,
        configured,
        &crate::sr_state::attached_on(host, crate::initiator::InitiatorKind::Userspace),
    );
    let release = host.read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nbd = module_state(host, Some(&release), "nbd", "nbd.ko");
    if nbd.starts_with("not in kernel") {
        return Check::fail(
            NAME,
            format!("{choice}, but Linux {release} has no NBD driver (nbd) to serve SRs through"),
            "use a kernel with CONFIG_BLK_DEV_NBD (every XCP-ng kernel has it), or one with nvme_tcp",
        );
    }
    Check::pass(
        NAME,
        format!("{choice}: each SR is served by nvmetcp-initiator@<SR uuid> as /dev/nbdN (NBD driver {nbd})"),
    )
}

/// Native multipath is the kernel initiator's; the userspace one has its own.
fn userspace_multipath() -> Check {
    Check::pass(
        "native multipath",
        "not used: the userspace initiator does multipath itself (ANA, every portal, path retry)",
    )
}

/// Which connect options this kernel does not take, and what that changes
/// (the plugin leaves them out and logs the same in SMlog).
fn connect_options(host: &HostRoot) -> Check {
    const NAME: &str = "connect options";
    let kernel = KernelOptions::detect(host, &KernelFabrics::new(host.clone()));
    let how = if kernel.listed.is_some() { "it lists them" } else { "judged by its release" };
    let missing = kernel.missing();
    if missing.is_empty() {
        return Check::pass(NAME, format!("Linux {} takes every connect option nvmetcp sends ({how})", kernel.release));
    }
    let lines: Vec<String> = missing
        .iter()
        .map(|(option, sure)| {
            let certainty = if *sure { "not taken" } else { "expected missing (tried first: backports exist)" };
            format!("{} (Linux {}.{}) {certainty}: {}", option.name, option.since.0, option.since.1, option.without)
        })
        .collect();
    Check::warn(
        NAME,
        format!("Linux {}: {}", kernel.release, lines.join("; ")),
        "connections still work: nvmetcp leaves out what this kernel does not take and says so in SMlog. For \
         every option, use a kernel that has them (XCP-ng 9, Linux 6.12)",
    )
}

fn multipath(host: &HostRoot) -> Check {
    const NAME: &str = "native multipath";
    match host.read_trimmed("/sys/module/nvme_core/parameters/multipath").as_deref() {
        Ok("Y") => Check::pass(NAME, "nvme_core.multipath=Y"),
        Ok(other) => Check::fail(
            NAME,
            format!("nvme_core.multipath={other}: each path would be its own disk"),
            "the nvmetcp RPM installs /etc/modprobe.d/nvmetcp.conf (options nvme_core multipath=Y); reboot the host \
             (or reload nvme_core with no NVMe device in use)",
        ),
        Err(_) => {
            let configured = host
                .read_trimmed("/etc/modprobe.d/nvmetcp.conf")
                .is_ok_and(|t| t.lines().any(|l| l.trim() == "options nvme_core multipath=Y"));
            if configured {
                Check::pass(NAME, "nvme_core is not loaded yet; /etc/modprobe.d/nvmetcp.conf turns multipath on")
            } else {
                Check::fail(
                    NAME,
                    "nvme_core is not loaded and nothing sets multipath=Y",
                    "install the nvmetcp RPM (it installs /etc/modprobe.d/nvmetcp.conf)",
                )
            }
        }
    }
}

fn identity(host: &HostRoot) -> Check {
    const NAME: &str = "host NQN and ID";
    let nqn = host.read_trimmed("/etc/nvme/hostnqn");
    let id = host.read_trimmed("/etc/nvme/hostid");
    let fix = "run /usr/libexec/nvmetcp/nvmetcp-plugin --post-install (it creates a stable identity once)";
    match (nqn, id) {
        (Ok(nqn), Ok(id))
            if nqn.starts_with("nqn.") && !id.is_empty() && !nqn.ends_with("00000000-0000-0000-0000-000000000000") =>
        {
            Check::pass(NAME, format!("{nqn} (host ID {id})"))
        }
        (Ok(nqn), Ok(_)) => Check::fail(NAME, format!("/etc/nvme/hostnqn holds {nqn:?}, not a usable host NQN"), fix),
        _ => Check::fail(NAME, "/etc/nvme/hostnqn or /etc/nvme/hostid is missing", fix),
    }
}

fn plugin_installed(host: &HostRoot) -> Check {
    const NAME: &str = "plugin installed";
    let volume = format!("{PLUGIN_ROOT}/volume/{VOLUME_PLUGIN_DIR}/Plugin.Query");
    let datapath = format!("{PLUGIN_ROOT}/datapath/{DATAPATH_SCHEME}/Plugin.Query");
    let host_plugin = format!("{HOST_PLUGINS_DIR}/{HOST_PLUGIN_NAME}");
    let missing: Vec<&String> = [&volume, &datapath, &host_plugin].into_iter().filter(|p| !host.exists(p)).collect();
    if missing.is_empty() {
        Check::pass(NAME, "volume, datapath and XAPI host plugins are in place")
    } else {
        let missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        Check::fail(NAME, format!("missing: {}", missing.join(", ")), "install the nvmetcp RPM on this host")
    }
}

fn agent_running(host: &HostRoot) -> Check {
    const NAME: &str = "host agent";
    let report = crate::agent::status::report(host, std::time::SystemTime::now());
    if report.running {
        Check::pass(NAME, report.summary)
    } else {
        Check::warn(
            NAME,
            format!("{}: XO shows no path counts, alerts or SR graphs for this host", report.summary),
            "systemctl enable --now nvmetcp-agent (journalctl -u nvmetcp-agent says why it stopped)",
        )
    }
}

fn storage_script_running(host: &HostRoot) -> Check {
    const NAME: &str = "xapi-storage-script";
    // The kernel keeps 15 characters of a process name.
    let running = host.list_dir("/proc").unwrap_or_default().iter().any(|pid| {
        pid.bytes().all(|b| b.is_ascii_digit())
            && host
                .read_trimmed(&format!("/proc/{pid}/comm"))
                .is_ok_and(|c| "xapi-storage-script".starts_with(&c) && c.len() >= 12)
    });
    if running {
        Check::pass(NAME, "running")
    } else {
        Check::fail(NAME, "not running: xapi cannot reach any SMAPIv3 plugin", "systemctl start xapi-storage-script")
    }
}

/// IPv4 addresses per interface, from `ip -o -4 addr show`.
fn interface_addresses(runner: &dyn Runner) -> Vec<(String, std::net::Ipv4Addr, u8)> {
    let Ok(output) = runner.run(&Command::new(Program::Ip).args(["-o", "-4", "addr", "show"])) else { return vec![] };
    output
        .stdout
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let iface = words.get(1)?.trim_end_matches(':').to_owned();
            let cidr = words.iter().position(|w| *w == "inet").and_then(|i| words.get(i + 1))?;
            let (addr, prefix) = cidr.split_once('/')?;
            Some((iface, addr.parse().ok()?, prefix.parse().ok()?))
        })
        .filter(|(iface, _, _)| iface != "lo")
        .collect()
}

fn subnet(addr: std::net::Ipv4Addr, prefix: u8) -> (u32, u8) {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
    (u32::from(addr) & mask, prefix)
}

fn arp(host: &HostRoot, addresses: &[(String, std::net::Ipv4Addr, u8)]) -> Check {
    const NAME: &str = "ARP on shared subnets";
    let mut pairs: Vec<String> = Vec::new();
    let mut nics: Vec<&str> = Vec::new();
    for (i, (a, addr_a, pa)) in addresses.iter().enumerate() {
        for (b, addr_b, pb) in &addresses[i + 1..] {
            if a != b && subnet(*addr_a, *pa) == subnet(*addr_b, *pb) {
                pairs.push(format!("{a} and {b}"));
                for nic in [a.as_str(), b.as_str()] {
                    if !nics.contains(&nic) {
                        nics.push(nic);
                    }
                }
            }
        }
    }
    if pairs.is_empty() {
        return Check::pass(NAME, "no two interfaces share a subnet");
    }
    // The kernel applies the larger of the `all` and the interface's value.
    let value = |scope: &str, key: &str| {
        host.read_trimmed(&format!("/proc/sys/net/ipv4/conf/{scope}/{key}")).ok().and_then(|v| v.parse::<u8>().ok())
    };
    let effective = |nic: &str, key: &str| value("all", key).unwrap_or(0).max(value(nic, key).unwrap_or(0));
    let wrong: Vec<String> = nics
        .iter()
        .filter_map(|nic| {
            let (ignore, announce) = (effective(nic, "arp_ignore"), effective(nic, "arp_announce"));
            (ignore < 1 || announce != 2).then(|| format!("{nic}: arp_ignore={ignore}, arp_announce={announce}"))
        })
        .collect();
    if wrong.is_empty() {
        Check::pass(NAME, format!("{} share a subnet; ARP answers stay on each NIC", pairs.join(", ")))
    } else {
        Check::fail(
            NAME,
            format!(
                "{} share a subnet but {}: replies may leave by the wrong NIC and one path carries both",
                pairs.join(", "),
                wrong.join("; ")
            ),
            "nvmetcp host-setup --apply (sets net.ipv4.conf.all.arp_ignore=2 and arp_announce=2 in \
             /etc/sysctl.d/90-nvmetcp.conf)",
        )
    }
}

fn reachable(portal: &Portal) -> Check {
    let name = format!("portal {portal} reachable");
    let started = Instant::now();
    // The same ICReq/ICResp exchange the plugin makes before each connect.
    match crate::nvme::discovery::probe(*portal, CONNECT_TIMEOUT) {
        Ok(()) => Check::pass(name, format!("answers as NVMe/TCP in {} ms", started.elapsed().as_millis())),
        Err(crate::nvme::discovery::DiscoveryError::Unreachable { source, .. }) => Check::fail(
            name,
            format!("no TCP connection within {CONNECT_TIMEOUT:?}: {source}"),
            "check the storage network, the portal address and port, and the array's firewall",
        ),
        Err(other) => Check::fail(
            name,
            format!("accepts TCP but does not answer as NVMe/TCP: {other}"),
            "check the port number (I/O ports are usually 4420, discovery 8009)",
        ),
    }
}

fn mtu(host: &HostRoot, runner: &dyn Runner, portal: &Portal) -> Check {
    let name = format!("MTU towards {}", portal.addr);
    let address = portal.addr.to_string();
    let route = runner.run(&Command::new(Program::Ip).args(["route", "get", address.as_str()]));
    let device = route.ok().and_then(|o| {
        let words: Vec<String> = o.stdout.split_whitespace().map(str::to_owned).collect();
        words.iter().position(|w| w == "dev").and_then(|i| words.get(i + 1).cloned())
    });
    let Some(device) = device else {
        return Check::fail(name, "no route to the portal", "add a route or an address on the storage network");
    };
    let Some(mtu) = host.read_trimmed(&format!("/sys/class/net/{device}/mtu")).ok().and_then(|m| m.parse::<u32>().ok())
    else {
        return Check::warn(name, format!("the MTU of {device} is unknown"), "check ip link show");
    };
    // 20 bytes of IPv4 header and 8 of ICMP header ride on the payload, and
    // an IPv4 packet is at most 65535 bytes (loopback's MTU is 65536).
    let packet = mtu.min(65_535);
    let payload = packet.saturating_sub(28).to_string();
    let ping = runner.run(&Command::new(Program::Ping).args([
        "-M",
        "do",
        "-c",
        "2",
        "-W",
        "1",
        "-s",
        payload.as_str(),
        address.as_str(),
    ]));
    match ping {
        Ok(_) => Check::pass(
            name,
            format!("{device} MTU {mtu}: a {packet}-byte packet with don't-fragment reached the portal"),
        ),
        Err(e) => Check::fail(
            name,
            format!(
                "{device} has MTU {mtu} but a {packet}-byte don't-fragment ping to {address} failed ({})",
                e.to_string().trim().replace('\n', "; ")
            ),
            "make the MTU the same end to end (NIC, switch ports, array), or lower this NIC's MTU to what the path \
             carries",
        ),
    }
}

mod engine;
mod journal;

#[cfg(test)]
mod tests;
