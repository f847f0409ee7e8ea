//! A stand-in for the kernel's fabrics device in unit tests: it creates the
//! controller in a [`SysfsTree`] (lowest free instance, like the kernel), or
//! answers with a scripted error.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::nvme::fabrics::{Created, Fabrics, FabricsError};
use crate::nvme::options::OptionString;
use crate::nvme::sysfs::fixture::SysfsTree;

pub(crate) struct FakeFabrics<'a> {
    tree: &'a SysfsTree,
    scripted: RefCell<VecDeque<FabricsError>>,
    writes: RefCell<Vec<String>>,
}

impl<'a> FakeFabrics<'a> {
    pub(crate) fn new(tree: &'a SysfsTree) -> Self {
        Self { tree, scripted: RefCell::default(), writes: RefCell::default() }
    }

    pub(crate) fn then_already_connected(self) -> Self {
        self.scripted.borrow_mut().push_back(FabricsError::AlreadyConnected);
        self
    }

    pub(crate) fn then_errno(self, errno: i32) -> Self {
        let source = std::io::Error::from_raw_os_error(errno);
        self.scripted.borrow_mut().push_back(FabricsError::Refused { errno, source });
        self
    }

    pub(crate) fn writes(&self) -> Vec<String> {
        self.writes.borrow().clone()
    }
}

impl Fabrics for FakeFabrics<'_> {
    fn create_controller(&self, options: &OptionString) -> Result<Created, FabricsError> {
        self.writes.borrow_mut().push(options.expose().to_owned());
        if let Some(error) = self.scripted.borrow_mut().pop_front() {
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
