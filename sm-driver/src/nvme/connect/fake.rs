//! A stand-in for the kernel's fabrics device in unit tests: it creates the
//! controller in a [`SysfsTree`] (lowest free instance, like the kernel), or
//! answers with a scripted error.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::nvme::fabrics::{Created, Fabrics, FabricsError};
use crate::nvme::options::OptionString;
use crate::nvme::sysfs::fixture::SysfsTree;

pub(crate) struct FakeFabrics {
    tree: SysfsTree,
    scripted: Mutex<VecDeque<FabricsError>>,
    writes: Mutex<Vec<String>>,
}

impl FakeFabrics {
    pub(crate) fn new(tree: &SysfsTree) -> Self {
        Self { tree: tree.clone(), scripted: Mutex::default(), writes: Mutex::default() }
    }

    pub(crate) fn then_already_connected(self) -> Self {
        self.scripted.lock().unwrap().push_back(FabricsError::AlreadyConnected);
        self
    }

    pub(crate) fn then_errno(self, errno: i32) -> Self {
        let source = std::io::Error::from_raw_os_error(errno);
        self.scripted.lock().unwrap().push_back(FabricsError::Refused { errno, source });
        self
    }

    pub(crate) fn writes(&self) -> Vec<String> {
        self.writes.lock().unwrap().clone()
    }
}

impl Fabrics for FakeFabrics {
    fn create_controller(&self, options: &OptionString) -> Result<Created, FabricsError> {
        // Held to the end: calls connecting paths at once get distinct instances.
        let mut writes = self.writes.lock().unwrap();
        writes.push(options.expose().to_owned());
        if let Some(error) = self.scripted.lock().unwrap().pop_front() {
            return Err(error);
        }
        let field = |name: &str| {
            options.expose().split(',').find_map(|t| t.strip_prefix(&format!("{name}="))).unwrap_or_default().to_owned()
        };
        let instance = (0..).find(|i| !self.tree.host().exists(&format!("/sys/class/nvme/nvme{i}"))).unwrap_or(0);
        let address = format!("traddr={},trsvcid={},src_addr=127.0.0.1", field("traddr"), field("trsvcid"));
        self.tree.controller(
            &format!("nvme{instance}"),
            &field("transport"),
            &field("nqn"),
            &address,
            &field("hostnqn"),
            "live",
        );
        Ok(Created { instance })
    }

    fn supported_options(&self) -> Option<Vec<String>> {
        Some(vec!["transport".into(), "dhchap_secret".into()])
    }
}

/// The option tokens of v4.19's `opt_tokens` (`drivers/nvme/host/fabrics.c`).
const V4_19_TOKENS: [&str; 13] = [
    "transport",
    "traddr",
    "trsvcid",
    "nqn",
    "queue_size",
    "nr_io_queues",
    "reconnect_delay",
    "ctrl_loss_tmo",
    "keep_alive_tmo",
    "hostnqn",
    "host_traddr",
    "hostid",
    "duplicate_connect",
];

/// A fabrics device that behaves like Linux 4.19's: it does not list its
/// options (a read without a write is `EINVAL`) and fails the whole connect
/// with `EINVAL` on any token outside its table, as `nvmf_parse_options`
/// does. XCP-ng's 4.19 also carries the `fast_io_fail_tmo` backport.
pub(crate) struct Kernel419 {
    inner: FakeFabrics,
    extra: Vec<&'static str>,
}

impl Kernel419 {
    /// Mainline 4.19.
    pub(crate) fn plain(tree: &SysfsTree) -> Self {
        Self { inner: FakeFabrics::new(tree), extra: vec![] }
    }

    /// XCP-ng 8.x's 4.19, with `nvme-fabrics-reject-I-O-to-offline-device`.
    pub(crate) fn xcp_ng(tree: &SysfsTree) -> Self {
        Self { inner: FakeFabrics::new(tree), extra: vec!["fast_io_fail_tmo"] }
    }

    /// Every option string written, accepted or not.
    pub(crate) fn writes(&self) -> Vec<String> {
        self.inner.writes()
    }
}

impl Fabrics for Kernel419 {
    fn create_controller(&self, options: &OptionString) -> Result<Created, FabricsError> {
        let unknown = options
            .expose()
            .split(',')
            .map(|t| t.split('=').next().unwrap_or_default())
            .find(|name| !V4_19_TOKENS.contains(name) && !self.extra.contains(name));
        if unknown.is_some() {
            self.inner.writes.lock().unwrap().push(options.expose().to_owned());
            return Err(FabricsError::Refused { errno: 22, source: std::io::Error::from_raw_os_error(22) });
        }
        self.inner.create_controller(options)
    }

    fn supported_options(&self) -> Option<Vec<String>> {
        None
    }
}
