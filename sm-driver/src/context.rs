//! What handlers reach the host through: the one value every call is given.
//!
//! The binary builds it from the real host; unit tests build it from a
//! temporary tree, a recording runner, a fabrics device that creates
//! controllers in that tree and a scripted network, so a handler never
//! touches the host except through these fields.

use crate::cmd::Runner;
use crate::host::HostRoot;
use crate::nvme::discovery::{Network, TcpNetwork};
use crate::nvme::fabrics::{Fabrics, KernelFabrics};

/// What handlers reach the host through.
pub struct Context {
    /// The host filesystem (sysfs, /dev, /etc).
    pub host: HostRoot,
    /// The runner of external programs.
    pub runner: Box<dyn Runner>,
    /// The kernel's fabrics device, which creates controllers.
    pub fabrics: Box<dyn Fabrics>,
    /// The storage network: discovery, the pre-connect probe, a subsystem's
    /// active namespace list.
    pub network: Box<dyn Network>,
}

impl Context {
    /// The real host's kernel and network, with `host` and `runner`.
    #[must_use]
    pub fn system(host: HostRoot, runner: Box<dyn Runner>) -> Self {
        let fabrics = Box::new(KernelFabrics::new(host.clone()));
        Self { host, runner, fabrics, network: Box::new(TcpNetwork) }
    }

    /// Fakes for unit tests: controllers are created in `host`'s tree, and
    /// the network answers nothing but the pre-connect probe.
    #[cfg(test)]
    pub(crate) fn fake(host: HostRoot, runner: Box<dyn Runner>) -> Self {
        let tree = crate::nvme::sysfs::fixture::SysfsTree::over(&host);
        let fabrics = Box::new(crate::nvme::connect::fake::FakeFabrics::new(&tree));
        Self { host, runner, fabrics, network: Box::new(crate::nvme::discovery::fake::FakeNetwork::new()) }
    }
}
