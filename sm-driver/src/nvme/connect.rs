//! Connecting and disconnecting one path, idempotently.
//!
//! A path is reconciled on its own: an existing controller for exactly this
//! path (see [`super::sysfs::Controller::matches`]) is reused whatever its
//! state, because the kernel keeps reconnecting it; otherwise a new one is
//! created through the fabrics device. For TCP the portal is first probed
//! with an NVMe/TCP ICReq/ICResp exchange bounded by a timeout (the
//! discovery client's, see [`probe_path`]), because the kernel's own connect
//! can block for minutes on an address that does not answer; the probe turns
//! that into a clear, prompt error naming the portal, and names a port that
//! answers but is not NVMe/TCP as such.

use std::time::Duration;

use crate::host::HostRoot;

use super::discovery::{Network, TcpNetwork};
use super::fabrics::{Created, Fabrics, FabricsError};
use super::kernel_options::KernelOptions;
use super::names::Transport;
use super::options::{ConnectOptions, OptionString, PathKey, Timers};
use super::sysfs::{controller, controllers, Controller};
use super::NvmeError;

/// How long the NVMe/TCP probe (ICReq/ICResp) waits for a portal.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a path came to be connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathOrigin {
    /// A matching controller existed already.
    Reused,
    /// This call created the controller.
    Created,
}

/// A connected path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedPath {
    /// The path's identity.
    pub key: PathKey,
    /// The controller's kernel name now (`nvme3`).
    pub controller: String,
    /// Its state now (`live`, `connecting`, …).
    pub state: String,
    /// Whether it was reused or created.
    pub origin: PathOrigin,
}

/// The alive controller for `key`, if any.
///
/// # Errors
/// [`NvmeError::Host`] if sysfs cannot be read.
pub fn find_controller(host: &HostRoot, key: &PathKey) -> Result<Option<Controller>, NvmeError> {
    Ok(controllers(host)?.into_iter().find(|c| c.is_alive() && c.matches(key)))
}

/// Probes a TCP path's portal (ICReq/ICResp within `timeout`); other
/// transports are not probed. Callers run this outside the host-wide fabric
/// lock: a portal that does not answer must not hold every other call up.
///
/// # Errors
/// [`NvmeError::Unreachable`] when nothing answers in time,
/// [`NvmeError::NotNvmeTcp`] when something other than NVMe/TCP does.
pub fn probe_path(network: &dyn Network, options: &ConnectOptions, timeout: Duration) -> Result<(), NvmeError> {
    if options.transport != Transport::Tcp {
        return Ok(());
    }
    let nqn = || options.subsystem.as_str().to_owned();
    match network.probe(options.portal, timeout) {
        Ok(()) => Ok(()),
        Err(crate::nvme::discovery::DiscoveryError::Unreachable { source, .. }) => {
            Err(NvmeError::Unreachable { portal: options.portal.to_string(), nqn: nqn(), timeout, source })
        }
        Err(other) => Err(NvmeError::NotNvmeTcp {
            portal: options.portal.to_string(),
            nqn: nqn(),
            why: crate::error_chain::chain(&other),
        }),
    }
}

/// Connects one path, or reuses its existing controller, probing a TCP
/// portal first (see [`probe_path`]).
///
/// # Errors
/// [`NvmeError::Unreachable`] when a TCP portal does not answer within
/// `probe_timeout`, [`NvmeError::Connect`] when the kernel refuses, naming the
/// portal and subsystem.
pub fn connect_path(
    host: &HostRoot,
    fabrics: &dyn Fabrics,
    options: &ConnectOptions,
    probe_timeout: Duration,
) -> Result<ConnectedPath, NvmeError> {
    connect_probed(host, fabrics, options, || probe_path(&TcpNetwork, options, probe_timeout))
}

/// Connects one path, or reuses its existing controller; `probed` gives the
/// portal's probe outcome (run earlier, outside the lock), consulted only
/// when a controller must be created.
///
/// # Errors
/// As [`connect_path`].
pub fn connect_probed(
    host: &HostRoot,
    fabrics: &dyn Fabrics,
    options: &ConnectOptions,
    probed: impl FnOnce() -> Result<(), NvmeError>,
) -> Result<ConnectedPath, NvmeError> {
    let key = options.key();
    if let Some(existing) = find_controller(host, &key)? {
        tracing::debug!(path = %key, controller = %existing.name, state = %existing.state, "reusing controller");
        align_timers(host, &existing.name, &options.timers, &key);
        return Ok(ConnectedPath {
            key,
            controller: existing.name,
            state: existing.state.to_string(),
            origin: PathOrigin::Reused,
        });
    }
    probed()?;
    match create(host, fabrics, options) {
        Ok(created) => {
            let name = format!("nvme{}", created.instance);
            let found = controller(host, &name).map_err(|_| NvmeError::ControllerVanished {
                portal: options.portal.to_string(),
                nqn: key.subsysnqn.to_string(),
                controller: name.clone(),
            })?;
            tracing::info!(path = %key, controller = %name, state = %found.state, "connected");
            Ok(ConnectedPath { key, controller: name, state: found.state.to_string(), origin: PathOrigin::Created })
        }
        Err(FabricsError::AlreadyConnected) => {
            // Another call connected it meanwhile (or it is being torn down).
            let existing = find_controller(host, &key)?.ok_or_else(|| NvmeError::Connect {
                portal: options.portal.to_string(),
                nqn: key.subsysnqn.to_string(),
                source: FabricsError::AlreadyConnected,
            })?;
            Ok(ConnectedPath {
                key,
                controller: existing.name,
                state: existing.state.to_string(),
                origin: PathOrigin::Reused,
            })
        }
        Err(source) => {
            Err(NvmeError::Connect { portal: options.portal.to_string(), nqn: key.subsysnqn.to_string(), source })
        }
    }
}

/// Gives a reused controller our timers. A controller made by hand (or by an
/// older nvmetcp) keeps its own: nvme-cli's `ctrl_loss_tmo=600` removes the
/// namespace under running VMs after a 10-minute outage, and a missing
/// `fast_io_fail_tmo` hangs I/O for as long as an outage lasts. Kernels since
/// 5.10 let `reconnect_delay`, `ctrl_loss_tmo` and (5.13) `fast_io_fail_tmo`
/// be rewritten in sysfs; what cannot be checked or changed is logged.
/// Returns what was changed, as `name: old -> new`.
pub fn align_timers(host: &HostRoot, controller: &str, timers: &Timers, key: &PathKey) -> Vec<String> {
    let shown = |n: i32| if n < 0 { "off".to_owned() } else { n.to_string() };
    // reconnect_delay first: the kernel derives the reconnect count from
    // ctrl_loss_tmo / reconnect_delay when ctrl_loss_tmo is written.
    let wanted = [
        ("reconnect_delay", timers.reconnect_delay.to_string(), i64::from(timers.reconnect_delay).to_string()),
        ("ctrl_loss_tmo", shown(timers.ctrl_loss_tmo), timers.ctrl_loss_tmo.to_string()),
        ("fast_io_fail_tmo", shown(timers.fast_io_fail_tmo), timers.fast_io_fail_tmo.to_string()),
    ];
    let mut changed = Vec::new();
    for (name, expected, to_write) in wanted {
        let attribute = format!("/sys/class/nvme/{controller}/{name}");
        let Ok(current) = host.read_trimmed(&attribute) else {
            tracing::warn!(path = %key, controller, timer = name, "reused controller: this kernel does not show its {name}; it keeps what it was created with");
            continue;
        };
        if current == expected {
            continue;
        }
        match std::fs::write(host.path(&attribute), &to_write) {
            Ok(()) => {
                tracing::warn!(path = %key, controller, "reused controller had {name}={current}; set to {expected}");
                changed.push(format!("{name}: {current} -> {expected}"));
            }
            Err(error) => tracing::warn!(
                path = %key, controller, %error,
                "reused controller has {name}={current}, not {expected}, and it cannot be changed; reconnect it \
                 (nvme disconnect, then re-attach the SR) to get nvmetcp's timers"
            ),
        }
    }
    if let Ok(kato) = host.read_trimmed(&format!("/sys/class/nvme/{controller}/kato")) {
        if kato != timers.keep_alive_tmo.to_string() {
            tracing::warn!(path = %key, controller, "reused controller has keep_alive_tmo={kato}, not {} (fixed at creation)", timers.keep_alive_tmo);
        }
    }
    changed
}

/// errno `EINVAL`: the kernel rejected the option string.
const EINVAL: i32 = 22;

/// Writes the options the kernel takes. A kernel that does not list its
/// options and answers `EINVAL` is asked once more without the options its
/// release predates; if that works, they are remembered for this boot (see
/// [`super::kernel_options`]).
fn create(host: &HostRoot, fabrics: &dyn Fabrics, options: &ConnectOptions) -> Result<Created, FabricsError> {
    let key = options.key();
    let mut kernel = KernelOptions::detect(host, fabrics);
    let rendered = options.render(&kernel);
    report_left_out(&key, &rendered);
    tracing::info!(path = %key, options = %rendered, "connecting");
    let first = fabrics.create_controller(&rendered);
    let suspects: Vec<String> =
        rendered.sent_optional().iter().filter(|o| kernel.predates(o)).map(|o| (*o).to_owned()).collect();
    match first {
        Err(FabricsError::Refused { errno: EINVAL, .. }) if kernel.listed.is_none() && !suspects.is_empty() => {
            tracing::warn!(
                path = %key,
                kernel = %kernel.release,
                options = %suspects.join(","),
                "the kernel rejected the connect options; retrying without the ones its release predates"
            );
            let mut trial = kernel.clone();
            trial.rejected.extend(suspects.iter().cloned());
            let reduced = options.render(&trial);
            let second = fabrics.create_controller(&reduced);
            if second.is_ok() || matches!(second, Err(FabricsError::AlreadyConnected)) {
                kernel.learn(host, &suspects);
                report_left_out(&key, &reduced);
            }
            second
        }
        other => other,
    }
}

/// Says in SMlog what was left out of a connect and what that changes.
fn report_left_out(key: &PathKey, rendered: &OptionString) {
    for left in rendered.left_out() {
        tracing::warn!(path = %key, option = left.option, "connect option left out: {}", left.why);
    }
}

/// Deletes every alive controller for exactly `key` (normally one). Returns
/// the names deleted.
///
/// # Errors
/// [`NvmeError::Disconnect`] naming the controller the kernel refused to delete.
pub fn disconnect_path(host: &HostRoot, key: &PathKey) -> Result<Vec<String>, NvmeError> {
    let mut deleted = Vec::new();
    for ctrl in controllers(host)?.into_iter().filter(|c| c.is_alive() && c.matches(key)) {
        let path = host.path(&format!("/sys/class/nvme/{}/delete_controller", ctrl.name));
        match std::fs::write(&path, "1") {
            Ok(()) => {}
            // It went away by itself meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(NvmeError::Disconnect { controller: ctrl.name, path: key.to_string(), source }),
        }
        tracing::info!(path = %key, controller = %ctrl.name, "disconnected");
        deleted.push(ctrl.name);
    }
    Ok(deleted)
}

#[cfg(test)]
pub(crate) mod fake;

/// A local port that answers each connection's ICReq with an ICResp, as an
/// NVMe/TCP port does (enough for the probe; no queue behind it).
#[cfg(test)]
pub(crate) fn nvme_tcp_port() -> crate::nvme::names::Portal {
    nvme_tcp_listen(std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}")))
}

/// Answers ICReqs on `listener` from now on (see [`nvme_tcp_port`]).
#[cfg(test)]
pub(crate) fn nvme_tcp_listen(listener: std::net::TcpListener) -> crate::nvme::names::Portal {
    use std::io::{Read, Write};
    let address = listener.local_addr().unwrap_or_else(|e| panic!("address: {e}"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 128];
            if stream.read_exact(&mut request).is_ok() && request[0] == 0x00 {
                let mut response = [0u8; 128];
                response[0] = 0x01;
                response[2] = 128;
                response[4..8].copy_from_slice(&128u32.to_le_bytes());
                response[12..16].copy_from_slice(&0x4_0000u32.to_le_bytes()); // MAXH2CDATA, as nvmet
                let _ = stream.write_all(&response);
            }
        }
    });
    crate::nvme::names::Portal { addr: address.ip(), port: address.port() }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use super::fake::FakeFabrics;
    use super::{connect_path, disconnect_path, nvme_tcp_port, PathOrigin};
    use crate::nvme::fabrics::FabricsError;
    use crate::nvme::names::Portal;
    use crate::nvme::options::tests::options;
    use crate::nvme::sysfs::fixture::SysfsTree;
    use crate::nvme::NvmeError;

    /// Options whose portal answers as an NVMe/TCP port, so the probe succeeds.
    fn reachable() -> ((), crate::nvme::options::ConnectOptions) {
        let mut opts = options();
        opts.portal = nvme_tcp_port();
        ((), opts)
    }

    #[test]
    fn a_port_that_is_not_nvme_tcp_is_named_as_such() {
        let tree = SysfsTree::new();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                use std::io::Write;
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            }
        });
        let mut opts = options();
        opts.portal = Portal { addr: address.ip(), port: address.port() };
        let err = connect_path(&tree.host(), &FakeFabrics::new(&tree), &opts, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, NvmeError::NotNvmeTcp { .. }), "{err}");
        assert!(err.to_string().contains("does not answer as an NVMe/TCP port"), "{err}");
    }

    #[test]
    fn creates_a_controller_then_reuses_it() {
        let tree = SysfsTree::new();
        let (_listener, opts) = reachable();
        let fabrics = FakeFabrics::new(&tree);
        let first = connect_path(&tree.host(), &fabrics, &opts, Duration::from_secs(1)).unwrap();
        assert_eq!(
            (first.origin, first.controller.as_str(), first.state.as_str()),
            (PathOrigin::Created, "nvme0", "live")
        );
        let again = connect_path(&tree.host(), &fabrics, &opts, Duration::from_secs(1)).unwrap();
        assert_eq!((again.origin, again.controller.as_str()), (PathOrigin::Reused, "nvme0"));
        assert_eq!(fabrics.writes().len(), 1, "the second call never reaches the kernel");
        assert!(fabrics.writes()[0].contains(&format!("trsvcid={}", opts.portal.port)));
    }

    #[test]
    fn a_4_19_kernel_is_sent_only_what_it_takes_and_that_is_remembered() {
        let tree = SysfsTree::new();
        tree.write("/proc/sys/kernel/osrelease", "4.19.0+1\n");
        let (_listener, mut opts) = reachable();
        opts.host_iface = Some("eth1".parse().unwrap());
        let fabrics = super::fake::Kernel419::plain(&tree);
        let path = connect_path(&tree.host(), &fabrics, &opts, Duration::from_secs(1)).unwrap();
        assert_eq!(path.origin, PathOrigin::Created);
        let writes = fabrics.writes();
        assert_eq!(writes.len(), 2, "tried once with everything, once without what 4.19 predates: {writes:?}");
        assert!(writes[0].contains("fast_io_fail_tmo=90") && writes[0].contains("host_iface=eth1"));
        assert!(!writes[1].contains("fast_io_fail_tmo") && !writes[1].contains("host_iface"), "{}", writes[1]);
        assert!(writes[1].contains("ctrl_loss_tmo=-1,") || writes[1].ends_with("ctrl_loss_tmo=-1"));
        // The next connect on this boot sends the accepted string at once.
        std::fs::remove_dir_all(tree.host().path("/sys/class/nvme/nvme0")).unwrap();
        connect_path(&tree.host(), &fabrics, &opts, Duration::from_secs(1)).unwrap();
        assert_eq!(fabrics.writes().len(), 3);
        assert_eq!(fabrics.writes()[2], writes[1]);
    }

    #[test]
    fn xcp_ng_s_4_19_keeps_its_backported_fast_io_fail_tmo() {
        let tree = SysfsTree::new();
        tree.write("/proc/sys/kernel/osrelease", "4.19.0+1\n");
        let (_listener, opts) = reachable();
        let fabrics = super::fake::Kernel419::xcp_ng(&tree);
        connect_path(&tree.host(), &fabrics, &opts, Duration::from_secs(1)).unwrap();
        assert_eq!(fabrics.writes().len(), 1);
        assert!(fabrics.writes()[0].contains("fast_io_fail_tmo=90"));
    }

    #[test]
    fn an_einval_that_is_not_about_options_is_not_retried() {
        let tree = SysfsTree::new();
        tree.write("/proc/sys/kernel/osrelease", "6.12.0\n");
        let (_listener, opts) = reachable();
        let fabrics = FakeFabrics::new(&tree).then_errno(22);
        assert!(connect_path(&tree.host(), &fabrics, &opts, Duration::from_secs(1)).is_err());
        assert_eq!(fabrics.writes().len(), 1);
        assert!(!tree.host().exists(crate::nvme::kernel_options::LEARNED));
    }

    #[test]
    fn a_reused_controller_made_by_hand_gets_our_timers() {
        let tree = SysfsTree::new();
        let (_listener, opts) = reachable();
        let fabrics = FakeFabrics::new(&tree);
        connect_path(&tree.host(), &fabrics, &opts, Duration::from_secs(1)).unwrap();
        // As nvme-cli leaves it: ctrl_loss_tmo=600, reconnect_delay=10, no failfast.
        for (name, value) in [("ctrl_loss_tmo", "600"), ("reconnect_delay", "10"), ("fast_io_fail_tmo", "off")] {
            tree.write(&format!("/sys/class/nvme/nvme0/{name}"), &format!("{value}\n"));
        }
        let again = connect_path(&tree.host(), &fabrics, &opts, Duration::from_secs(1)).unwrap();
        assert_eq!(again.origin, PathOrigin::Reused);
        assert_eq!(tree.read("/sys/class/nvme/nvme0/ctrl_loss_tmo").trim(), "-1");
        assert_eq!(tree.read("/sys/class/nvme/nvme0/reconnect_delay").trim(), "5");
        assert_eq!(tree.read("/sys/class/nvme/nvme0/fast_io_fail_tmo").trim(), "90");
        // Already right (the kernel shows -1 as "off"): nothing is written.
        tree.write("/sys/class/nvme/nvme0/ctrl_loss_tmo", "off\n");
        tree.write("/sys/class/nvme/nvme0/fast_io_fail_tmo", "90\n");
        let changed = super::align_timers(&tree.host(), "nvme0", &opts.timers, &opts.key());
        assert!(changed.is_empty(), "{changed:?}");
    }

    #[test]
    fn a_connecting_controller_is_reused_not_duplicated() {
        let tree = SysfsTree::new();
        let (_listener, opts) = reachable();
        let address = format!("traddr={},trsvcid={},src_addr=127.0.0.1", opts.portal.addr, opts.portal.port);
        tree.controller("nvme4", "tcp", opts.subsystem.as_str(), &address, opts.host.nqn.as_str(), "connecting");
        let fabrics = FakeFabrics::new(&tree);
        let path = connect_path(&tree.host(), &fabrics, &opts, Duration::from_secs(1)).unwrap();
        assert_eq!(
            (path.origin, path.controller.as_str(), path.state.as_str()),
            (PathOrigin::Reused, "nvme4", "connecting")
        );
        assert!(fabrics.writes().is_empty());
    }

    #[test]
    fn a_deleting_controller_does_not_count_and_ealready_races_resolve() {
        let tree = SysfsTree::new();
        let (_listener, opts) = reachable();
        let address = format!("traddr={},trsvcid={}", opts.portal.addr, opts.portal.port);
        tree.controller("nvme0", "tcp", opts.subsystem.as_str(), &address, opts.host.nqn.as_str(), "deleting");
        let fabrics = FakeFabrics::new(&tree).then_already_connected();
        let err = connect_path(&tree.host(), &fabrics, &opts, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, NvmeError::Connect { source: FabricsError::AlreadyConnected, .. }), "{err}");
        assert_eq!(fabrics.writes().len(), 1, "a controller being deleted is not reused");
    }

    #[test]
    fn an_unreachable_portal_fails_within_the_probe_timeout() {
        let tree = SysfsTree::new();
        let mut opts = options();
        // Bound and closed again: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        opts.portal = Portal::parse(&format!("127.0.0.1:{port}"), 4420).unwrap();
        let started = Instant::now();
        let err = connect_path(&tree.host(), &FakeFabrics::new(&tree), &opts, Duration::from_secs(2)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        let text = crate::error_chain::chain(&err);
        assert!(text.contains(&format!("127.0.0.1:{port}")) && text.contains("nqn.2024-01.io.example:array"), "{text}");
        assert!(text.contains("refused"), "{text}");
    }

    #[test]
    fn kernel_refusals_name_portal_and_subsystem() {
        let tree = SysfsTree::new();
        let (_listener, opts) = reachable();
        let fabrics = FakeFabrics::new(&tree).then_errno(5);
        let err = connect_path(&tree.host(), &fabrics, &opts, Duration::from_secs(1)).unwrap_err();
        let text = crate::error_chain::chain(&err);
        assert!(text.contains(&opts.portal.to_string()) && text.contains("this host's NQN is allowed"), "{text}");
    }

    #[test]
    fn disconnect_deletes_exactly_the_matching_controllers() {
        let tree = SysfsTree::new();
        let opts = options();
        let nqn = opts.subsystem.as_str();
        tree.controller("nvme0", "tcp", nqn, "traddr=10.0.0.1,trsvcid=4420", opts.host.nqn.as_str(), "live");
        tree.controller("nvme1", "tcp", nqn, "traddr=10.0.0.2,trsvcid=4420", opts.host.nqn.as_str(), "live");
        tree.controller(
            "nvme2",
            "tcp",
            &format!("{nqn}2"),
            "traddr=10.0.0.1,trsvcid=4420",
            opts.host.nqn.as_str(),
            "live",
        );
        assert_eq!(disconnect_path(&tree.host(), &opts.key()).unwrap(), ["nvme0"]);
        assert_eq!(tree.read("/sys/class/nvme/nvme0/delete_controller"), "1");
        assert_eq!(tree.read("/sys/class/nvme/nvme1/delete_controller"), "\n");
        assert_eq!(tree.read("/sys/class/nvme/nvme2/delete_controller"), "\n");
    }
}
