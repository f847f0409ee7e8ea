//! Builds sysfs trees like the kernel's in a temporary directory, for unit
//! tests: controllers under `devices/virtual/nvme-fabrics/ctl`, subsystems and
//! multipath heads under `devices/virtual/nvme-subsystem`, and the
//! `class/` and `block/` links that point at them, as a 6.x kernel lays them out.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::host::HostRoot;

/// A sysfs tree in a temporary directory; clones share the directory, which
/// is removed with the last of them.
#[derive(Clone)]
pub(crate) struct SysfsTree {
    root: PathBuf,
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl SysfsTree {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tree = Self { root: dir.path().to_owned(), _dir: Some(Arc::new(dir)) };
        for dir in ["sys/class/nvme", "sys/class/nvme-subsystem", "sys/block", "dev"] {
            std::fs::create_dir_all(tree.root.join(dir)).unwrap();
        }
        tree
    }

    /// Writes into the tree of an existing host root (a test's temporary
    /// directory), which it does not own.
    pub(crate) fn over(host: &HostRoot) -> Self {
        Self { root: host.path("/"), _dir: None }
    }

    pub(crate) fn host(&self) -> HostRoot {
        HostRoot::at(&self.root)
    }

    pub(crate) fn write(&self, path: &str, text: &str) {
        let path = self.root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub(crate) fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root.join(path.trim_start_matches('/'))).unwrap_or_default()
    }

    fn link(&self, link: &str, target: &str) {
        let link = self.root.join(link.trim_start_matches('/'));
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        if !link.exists() {
            symlink(Path::new(target), link).unwrap();
        }
    }

    /// A host ready for NVMe/TCP: `nvme_tcp` loaded, the fabrics device
    /// present, native multipath on, its NVMe identity written.
    pub(crate) fn fabric_ready(&self) {
        self.write("sys/module/nvme_tcp/refcnt", "0\n");
        self.write("dev/nvme-fabrics", "");
        self.write("sys/module/nvme_core/parameters/multipath", "Y\n");
        self.write("etc/nvme/hostnqn", "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427\n");
        self.write("etc/nvme/hostid", "1b4e28ba-2fa1-11d2-883f-0016d3cca427\n");
    }

    /// A fabrics controller.
    pub(crate) fn controller(&self, name: &str, transport: &str, nqn: &str, address: &str, hostnqn: &str, state: &str) {
        let base = format!("sys/devices/virtual/nvme-fabrics/ctl/{name}");
        for (attr, value) in [
            ("transport", transport),
            ("subsysnqn", nqn),
            ("address", address),
            ("hostnqn", hostnqn),
            ("state", state),
            ("delete_controller", ""),
            ("rescan_controller", ""),
        ] {
            self.write(&format!("{base}/{attr}"), &format!("{value}\n"));
        }
        self.link(&format!("sys/class/nvme/{name}"), &format!("../../devices/virtual/nvme-fabrics/ctl/{name}"));
    }

    /// A subsystem with a multipath head namespace.
    pub(crate) fn head(&self, subsys: &str, name: &str, nqn: &str, nsid: u32, wwid: &str, sectors: u64) {
        let base = format!("sys/devices/virtual/nvme-subsystem/{subsys}");
        self.write(&format!("{base}/subsysnqn"), &format!("{nqn}\n"));
        self.write(&format!("{base}/iopolicy"), "numa\n");
        self.link(
            &format!("sys/class/nvme-subsystem/{subsys}"),
            &format!("../../devices/virtual/nvme-subsystem/{subsys}"),
        );
        self.namespace(&format!("{base}/{name}"), name, nsid, wwid, sectors);
        self.link(&format!("sys/block/{name}"), &format!("../devices/virtual/nvme-subsystem/{subsys}/{name}"));
    }

    /// A hidden path device of a multipath namespace, under its controller.
    pub(crate) fn path_device(&self, controller: &str, name: &str) {
        let base = format!("sys/devices/virtual/nvme-fabrics/ctl/{controller}/{name}");
        self.write(&format!("{base}/ana_state"), "optimized\n");
        self.write(&format!("{base}/nsid"), "1\n");
        self.link(&format!("{base}/device"), "..");
        self.link(&format!("sys/block/{name}"), &format!("../devices/virtual/nvme-fabrics/ctl/{controller}/{name}"));
    }

    /// A namespace of a single controller (no head: multipath off, or no CMIC).
    pub(crate) fn single(&self, controller: &str, name: &str, nqn: &str, nsid: u32, wwid: &str) {
        self.controller(controller, "tcp", nqn, "traddr=10.0.0.1,trsvcid=4420", "nqn.h:h", "live");
        let base = format!("sys/devices/virtual/nvme-fabrics/ctl/{controller}/{name}");
        self.namespace(&base, name, nsid, wwid, 2048);
        self.link(&format!("sys/block/{name}"), &format!("../devices/virtual/nvme-fabrics/ctl/{controller}/{name}"));
    }

    fn namespace(&self, base: &str, name: &str, nsid: u32, wwid: &str, sectors: u64) {
        self.write(&format!("{base}/nsid"), &format!("{nsid}\n"));
        self.write(&format!("{base}/wwid"), &format!("{wwid}\n"));
        self.write(&format!("{base}/size"), &format!("{sectors}\n"));
        self.link(&format!("{base}/device"), "..");
        self.write(&format!("dev/{name}"), "");
    }
}
