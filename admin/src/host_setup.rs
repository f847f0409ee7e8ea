//! `nvmetcp host-setup`: the persistent host settings of the NVMe/TCP guide
//! that the RPM does not install, because they depend on the site: ARP
//! behaviour for several storage NICs on one subnet, and TCP buffer sizes
//! for storage traffic. Shown as a diff; written only with `--apply`;
//! idempotent (a second run finds nothing to change).
//!
//! Left out on purpose: `vm.*` settings (they change dom0's memory
//! behaviour for everything, not only storage) and NIC ring/coalescing
//! tuning (hardware-specific).

use sm_driver::cmd::{Command, Program};

use crate::cli::HostSetupArgs;
use crate::console::Console;
use crate::error::{AdminError, Exit};
use crate::Local;

/// The sysctl file this command owns.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-nvmetcp.conf";

/// Its content.
pub const SYSCTL: &str = "# Written by nvmetcp host-setup; run it again after editing to compare.
# Several storage NICs on one subnet: answer ARP only on the NIC that owns the
# address, and announce the best local address, so each path keeps its NIC.
net.ipv4.conf.all.arp_ignore = 2
net.ipv4.conf.default.arp_ignore = 2
net.ipv4.conf.all.arp_announce = 2
net.ipv4.conf.default.arp_announce = 2
# Room for NVMe/TCP's large transfers.
net.core.rmem_max = 134217728
net.core.wmem_max = 134217728
net.ipv4.tcp_rmem = 4096 87380 67108864
net.ipv4.tcp_wmem = 4096 65536 67108864
net.core.netdev_max_backlog = 5000
";

/// Lines of `current` and `wanted` as a minimal diff (`-` removed, `+` added).
fn diff(current: &str, wanted: &str) -> Vec<String> {
    let old: Vec<&str> = current.lines().collect();
    let new: Vec<&str> = wanted.lines().collect();
    let mut out: Vec<String> = old.iter().filter(|l| !new.contains(l)).map(|l| format!("- {l}")).collect();
    out.extend(new.iter().filter(|l| !old.contains(l)).map(|l| format!("+ {l}")));
    out
}

/// Runs `host-setup`.
///
/// # Errors
/// When the file cannot be written or the settings not loaded.
pub fn run(args: &HostSetupArgs, local: &Local, console: &mut Console) -> Result<Exit, AdminError> {
    let current = std::fs::read_to_string(local.host.path(SYSCTL_FILE)).unwrap_or_default();
    if current == SYSCTL {
        console.line(&format!("{SYSCTL_FILE}: up to date, nothing to change"));
        return Ok(Exit::Ok);
    }
    console.line(&format!("{SYSCTL_FILE}:"));
    for line in diff(&current, SYSCTL) {
        console.line(&format!("  {line}"));
    }
    if !args.apply {
        console.line("nothing was written; run nvmetcp host-setup --apply to write it and load it");
        return Ok(Exit::Ok);
    }
    if let Some(parent) = local.host.path(SYSCTL_FILE).parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| AdminError::Failed(format!("cannot create {}: {e}", parent.display())))?;
    }
    local
        .host
        .write_atomically(SYSCTL_FILE, SYSCTL.as_bytes(), 0o644)
        .map_err(|e| AdminError::Failed(format!("cannot write {SYSCTL_FILE}: {e}")))?;
    local
        .runner
        .run(&Command::new(Program::Sysctl).args(["-p", SYSCTL_FILE]))
        .map_err(|e| AdminError::Failed(format!("{SYSCTL_FILE} was written but not loaded: {e}")))?;
    console.line(&format!("{SYSCTL_FILE}: written and loaded (sysctl -p)"));
    Ok(Exit::Ok)
}
