//! `Plugin.diagnostics`: a plain-text report of everything that decides whether
//! nvmetcp can work on this host.
//!
//! `xe host-get-sm-diagnostics` shows it, and support asks for it first, so it
//! never fails: each item that cannot be read says why, in its own line. It
//! answers the questions behind most field problems: which kernel and whether
//! it has the fabrics module for the transport (XCP-ng 8.x's 4.19 has no
//! `nvme_tcp`), whether native multipath is on, whether the host has an
//! identity, which tools are installed, and what NVMe subsystems and paths the
//! kernel has right now.

use std::fmt::Write as _;

use crate::cmd::{Command, Program, Runner};
use crate::host::HostRoot;
use crate::nvme::checks::module_state;
use crate::nvme::sysfs::is_controller_name;
use crate::plugin::{SR_TYPE, VERSION};
use crate::smapi::method::PluginKind;

/// Kernel modules that matter, with their file names in `modules.dep`.
const MODULES: &[(&str, &str)] = &[
    ("nvme_core", "nvme-core.ko"),
    ("nvme_fabrics", "nvme-fabrics.ko"),
    ("nvme_tcp", "nvme-tcp.ko"),
    ("nvme_rdma", "nvme-rdma.ko"),
];

/// Builds the report for the plugin of `kind`.
#[must_use]
pub fn report(kind: PluginKind, host: &HostRoot, runner: &dyn Runner) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "nvmetcp {VERSION} — {kind} plugin for SR type {SR_TYPE}");
    let binary = std::env::current_exe().map_or_else(|e| format!("unknown ({e})"), |p| p.display().to_string());
    let _ = writeln!(out, "binary: {binary}");
    let release = host.read_trimmed("/proc/sys/kernel/osrelease");
    let _ = writeln!(out, "kernel: {}", show(&release));
    let _ =
        writeln!(out, "pool role (/etc/xensource/pool.conf): {}", show(&host.read_trimmed("/etc/xensource/pool.conf")));

    let _ = writeln!(out, "\nkernel modules:");
    for (module, file) in MODULES {
        let state = module_state(host, release.as_deref().ok(), module, file);
        let _ = writeln!(out, "  {module:<13} {state}");
    }
    let multipath = host.read_trimmed("/sys/module/nvme_core/parameters/multipath");
    let _ = writeln!(out, "  native multipath (nvme_core.multipath): {}", show(&multipath));
    let fabrics = if host.exists("/dev/nvme-fabrics") { "present" } else { "absent (load nvme_fabrics)" };
    let _ = writeln!(out, "  /dev/nvme-fabrics: {fabrics}");

    let _ = writeln!(out, "\nhost identity:");
    for file in ["/etc/nvme/hostnqn", "/etc/nvme/hostid"] {
        let _ = writeln!(out, "  {file}: {}", show(&host.read_trimmed(file)));
    }

    let _ = writeln!(out, "\ntools:");
    for program in [Program::Lvm, Program::Nvme] {
        let line = match runner.resolve(program) {
            Ok(path) => format!("{}", path.display()),
            Err(e) => e.to_string(),
        };
        let _ = writeln!(out, "  {:<5} {line}", program.name());
    }
    let lvm = runner.run(&Command::new(Program::Lvm).arg("version"));
    let lvm = lvm.map(|o| o.stdout.lines().next().unwrap_or_default().trim().to_owned());
    let _ = writeln!(out, "  lvm version: {}", show(&lvm));

    let _ = writeln!(out, "\nNVMe subsystems:");
    write_subsystems(&mut out, host);

    let _ = writeln!(out, "\nnvmetcp on this host:");
    let settings = host.read_trimmed(crate::host_config::HOST_CONF);
    let _ = writeln!(out, "  {}: {}", crate::host_config::HOST_CONF, show(&settings));
    write_attached_srs(&mut out, host);

    let _ = writeln!(out, "\nuserspace NVMe/TCP initiator (nvmetcp-initiator@<SR uuid>.service):");
    write_initiator(&mut out, host);
    out
}

/// The initiator this host would choose (without loading anything) and
/// every userspace initiator daemon's state, its NBD device verified.
fn write_initiator(out: &mut String, host: &HostRoot) {
    use nvmetcp_initiator::daemon::{config::SrId, door, Layout};
    let configured = crate::host_config::HostConfig::load(host).ok().and_then(|c| c.initiator);
    let choice = crate::initiator::predict(
        host,
        configured,
        &crate::sr_state::attached_on(host, crate::initiator::InitiatorKind::Userspace),
    );
    let _ = writeln!(out, "  NVMe/TCP initiator this host chooses: {choice}");
    let layout = Layout::under(&host.path("/"));
    let names = host.list_dir(nvmetcp_initiator::daemon::RUN_DIR).unwrap_or_default();
    let daemons: Vec<&String> = names.iter().filter(|n| n.ends_with(".json")).collect();
    if daemons.is_empty() {
        let _ = writeln!(out, "  no userspace initiator daemon");
    }
    for name in daemons {
        let Ok(sr) = SrId::parse(name.trim_end_matches(".json")) else { continue };
        let state = match door::read_state(&layout, &sr) {
            Ok(Some(state)) => state,
            Ok(None) => continue,
            Err(error) => {
                let _ = writeln!(out, "  SR {sr}: {error}");
                continue;
            }
        };
        let alive = if door::daemon_alive(&layout, &state) { "running" } else { "not running" };
        let device = match door::device(&layout, &sr) {
            Ok(device) => format!("{} (verified)", device.path),
            Err(error) => format!("no verified device ({error})"),
        };
        let _ = writeln!(out, "  SR {sr}: {:?}, daemon pid {} {alive}, {device}", state.phase, state.daemon_pid);
        if let Some(error) = &state.error {
            let _ = writeln!(out, "    error: {error}");
        }
        if let Some(export) = &state.export {
            let _ = writeln!(
                out,
                "    NBD: {} connection(s) live, {} replaced, {} request(s), {} in flight, {} error(s), buffers {}/{} bytes",
                export.live_connections,
                export.replaced_connections,
                export.requests,
                export.in_flight,
                export.errors,
                export.buffer_bytes,
                export.buffer_limit
            );
        }
        if let Some(device) = &state.device {
            let _ = writeln!(
                out,
                "    namespace {} of {}, iopolicy {}, {} waiting for a path, {} failed for want of one",
                device.nsid, device.nqn, device.iopolicy, device.queued, device.failed_no_path
            );
            for path in &device.paths {
                let _ = writeln!(
                    out,
                    "    path {}: {} ANA {} queues {} in flight {} errors {} losses {}{}",
                    path.portal,
                    path.status,
                    path.ana.as_deref().unwrap_or("-"),
                    path.io_queues,
                    path.in_flight,
                    path.errors,
                    path.losses,
                    path.last_error.as_deref().map(|e| format!(" (last: {e})")).unwrap_or_default()
                );
            }
        }
    }
}

fn show<E: std::fmt::Display>(value: &Result<String, E>) -> String {
    match value {
        Ok(text) if text.is_empty() => "(empty)".to_owned(),
        Ok(text) => text.replace('\n', " | "),
        Err(e) => format!("unavailable ({e})"),
    }
}

fn write_subsystems(out: &mut String, host: &HostRoot) {
    let subsystems = match host.list_dir("/sys/class/nvme-subsystem") {
        Ok(names) if names.is_empty() => {
            let _ = writeln!(out, "  none");
            return;
        }
        Ok(names) => names,
        Err(_) => {
            let _ = writeln!(out, "  none (no /sys/class/nvme-subsystem)");
            return;
        }
    };
    for subsystem in subsystems {
        let base = format!("/sys/class/nvme-subsystem/{subsystem}");
        let attr = |name: &str| host.read_trimmed(&format!("{base}/{name}")).unwrap_or_else(|_| "?".to_owned());
        let _ = writeln!(out, "  {subsystem}: {} iopolicy={}", attr("subsysnqn"), attr("iopolicy"));
        let controllers = host.list_dir(&base).unwrap_or_default();
        for controller in controllers.iter().filter(|n| is_controller_name(n)) {
            let ctrl = |name: &str| {
                host.read_trimmed(&format!("{base}/{controller}/{name}")).unwrap_or_else(|_| "?".to_owned())
            };
            let _ =
                writeln!(out, "    {controller}: {} {} state={}", ctrl("transport"), ctrl("address"), ctrl("state"));
        }
    }
}

fn write_attached_srs(out: &mut String, host: &HostRoot) {
    let attached = crate::sr_state::attached_uuids(host);
    if attached.is_empty() {
        let _ = writeln!(out, "  no SR attached");
    }
    for uuid in &attached {
        match crate::sr_state::load(host, uuid) {
            Ok(state) => {
                let _ = writeln!(
                    out,
                    "  SR {uuid}: VG {}, subsystem {}, namespace {}, {} path(s) expected",
                    state.vg,
                    state.nqn,
                    state.namespace,
                    state.paths.len()
                );
            }
            Err(error) => {
                let _ = writeln!(out, "  SR {uuid}: {error}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn userspace_initiator_daemons_are_shown_with_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        write(&host, "/proc/sys/kernel/osrelease", "6.12.0\n");
        write(&host, "/etc/nvmetcp/host.conf", "initiator = userspace\n");
        let sr = "5b0e3c57-1d2f-4a66-9d0e-7c3f1b2a4d10";
        let state = format!(
            r#"{{"sr":"{sr}","phase":"serving","daemon_pid":4242,"error":null,
            "nbd":{{"index":1,"kernel_pid":4242,"backend":"nvmetcp:{sr}","connections":2,"size_bytes":1048576,"block_size":4096}},
            "export":{{"live_connections":2,"replaced_connections":1,"requests":10,"errors":0,"in_flight":3,"buffer_bytes":4096,"buffer_limit":33554432}},
            "device":{{"nqn":"nqn.2014-08.org.example:a","nsid":1,"iopolicy":"round-robin","queued":0,"failed_no_path":0,
            "paths":[{{"portal":"10.0.0.1:4420","status":"live","ana":"optimized","cntlid":1,"io_queues":2,"in_flight":3,
            "errors":0,"losses":1,"last_error":null,"since_secs":5}}]}},"updated_unix":1}}"#
        );
        write(&host, &format!("/run/nvmetcp/initiator/{sr}.json"), &state);
        write(&host, "/sys/block/nbd1/pid", "4242\n");
        write(&host, "/sys/block/nbd1/size", "2048\n");
        let text = report(PluginKind::Volume, &host, &FakeRunner::new());
        assert!(
            text.contains("chooses: userspace initiator (initiator = userspace in /etc/nvmetcp/host.conf)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("SR {sr}: Serving, daemon pid 4242 not running, /dev/nbd1 (verified)")),
            "{text}"
        );
        assert!(
            text.contains("NBD: 2 connection(s) live, 1 replaced, 10 request(s), 3 in flight, 0 error(s)"),
            "{text}"
        );
        assert!(
            text.contains("path 10.0.0.1:4420: live ANA optimized queues 2 in flight 3 errors 0 losses 1"),
            "{text}"
        );
    }
    use crate::cmd::{FakeRunner, Program};
    use crate::host::HostRoot;
    use crate::smapi::method::PluginKind;

    fn write(host: &HostRoot, path: &str, text: &str) {
        let path = host.path(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn dom0_4_19_without_nvme_tcp_is_reported_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        write(&host, "/proc/sys/kernel/osrelease", "4.19.0+1\n");
        write(&host, "/etc/xensource/pool.conf", "master");
        write(&host, "/sys/module/nvme_core/parameters/multipath", "Y\n");
        write(&host, "/lib/modules/4.19.0+1/modules.dep", "kernel/drivers/nvme/host/nvme-rdma.ko: a.ko\n");
        write(&host, "/lib/modules/4.19.0+1/modules.builtin", "kernel/drivers/nvme/host/nvme-fabrics.ko\n");
        write(&host, "/etc/nvme/hostnqn", "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427\n");
        let runner =
            FakeRunner::new().then_stdout("  LVM version:     2.02.180(2)-RHEL7 (2018-07-30)\n").without(Program::Nvme);
        let text = report(PluginKind::Volume, &host, &runner);
        assert!(text.contains("kernel: 4.19.0+1"), "{text}");
        assert!(text.contains("pool role (/etc/xensource/pool.conf): master"), "{text}");
        assert!(text.contains("nvme_core     loaded"), "{text}");
        assert!(text.contains("nvme_fabrics  built into the kernel"), "{text}");
        assert!(text.contains("nvme_tcp      not in kernel 4.19.0+1"), "{text}");
        assert!(text.contains("nvme_rdma     not loaded (available)"), "{text}");
        assert!(text.contains("native multipath (nvme_core.multipath): Y"), "{text}");
        assert!(text.contains("/dev/nvme-fabrics: absent"), "{text}");
        assert!(text.contains("/etc/nvme/hostid: unavailable (cannot read"), "{text}");
        assert!(
            text.contains("NVMe/TCP initiator this host chooses: userspace initiator (Linux 4.19.0+1 has no nvme_tcp; XCP-ng 8.x kernels have none)"),
            "{text}"
        );
        assert!(text.contains("no userspace initiator daemon"), "{text}");
        assert!(text.contains("lvm version: LVM version:     2.02.180(2)-RHEL7"), "{text}");
        assert!(text.contains("nvme  nvme is not installed"), "{text}");
        assert!(text.contains("NVMe subsystems:\n  none"), "{text}");
        assert!(text.contains("nvmetcp on this host:\n  /etc/nvmetcp/host.conf: unavailable"), "{text}");
        assert!(text.contains("  no SR attached"), "{text}");
    }

    #[test]
    fn subsystems_and_their_paths_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        let base = "/sys/class/nvme-subsystem/nvme-subsys0";
        write(&host, &format!("{base}/subsysnqn"), "nqn.2024-01.io.example:array1\n");
        write(&host, &format!("{base}/iopolicy"), "round-robin\n");
        for (ctrl, addr, state) in
            [("nvme0", "traddr=10.0.0.1,trsvcid=4420", "live"), ("nvme1", "traddr=10.0.0.2,trsvcid=4420", "connecting")]
        {
            write(&host, &format!("{base}/{ctrl}/transport"), "tcp\n");
            write(&host, &format!("{base}/{ctrl}/address"), addr);
            write(&host, &format!("{base}/{ctrl}/state"), state);
        }
        write(&host, &format!("{base}/nvme0n1/size"), "8");
        let text = report(PluginKind::Datapath, &host, &FakeRunner::new());
        assert!(text.contains("datapath plugin"), "{text}");
        assert!(text.contains("nvme-subsys0: nqn.2024-01.io.example:array1 iopolicy=round-robin"), "{text}");
        assert!(text.contains("nvme1: tcp traddr=10.0.0.2,trsvcid=4420 state=connecting"), "{text}");
        assert!(!text.contains("nvme0n1:"), "{text}");
        assert!(text.contains("lvm version: unavailable"), "a failing tool is reported, not fatal: {text}");
    }
}
