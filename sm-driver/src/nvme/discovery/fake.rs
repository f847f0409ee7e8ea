//! A stand-in for the storage network in unit tests: endpoints answer with
//! the subsystems scripted for them (any other endpoint is unreachable),
//! every portal answers the pre-connect probe, and a subsystem reports the
//! active namespace list scripted for it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{DiscoveredSubsystem, Discovery, DiscoveryError, Network};
use crate::nvme::names::{Portal, Transport};
use crate::nvme::options::HostIdentity;

#[derive(Default)]
pub(crate) struct FakeNetwork {
    listings: BTreeMap<String, Vec<DiscoveredSubsystem>>,
    active: BTreeMap<String, Vec<u32>>,
}

fn unreachable(portal: Portal) -> DiscoveryError {
    let source = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    DiscoveryError::Unreachable { portal: portal.socket_addr(), source }
}

impl FakeNetwork {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The discovery endpoint `endpoint` lists `nqn` at `ports`.
    pub(crate) fn listing(mut self, endpoint: &str, nqn: &str, ports: &[&str]) -> Self {
        let ports = ports.iter().map(|p| (Transport::Tcp, Portal::parse(p, 4420).unwrap())).collect();
        let endpoint = Portal::parse(endpoint, 4420).unwrap().to_string();
        self.listings.entry(endpoint).or_default().push(DiscoveredSubsystem { nqn: nqn.to_owned(), ports });
        self
    }

    /// Subsystem `nqn` reports `nsids` as its active namespaces.
    pub(crate) fn namespaces(mut self, nqn: &str, nsids: &[u32]) -> Self {
        self.active.insert(nqn.to_owned(), nsids.to_vec());
        self
    }
}

impl Network for FakeNetwork {
    fn discover(&self, endpoints: &[Portal], _host: &HostIdentity, _timeout: Duration) -> Discovery {
        let mut found = Discovery::default();
        for endpoint in endpoints {
            match self.listings.get(&endpoint.to_string()) {
                Some(listed) => found.subsystems.extend(listed.iter().cloned()),
                None => found.failures.push(unreachable(*endpoint)),
            }
        }
        found
    }

    fn probe(&self, _portal: Portal, _timeout: Duration) -> Result<(), DiscoveryError> {
        Ok(())
    }

    fn active_namespaces(
        &self,
        portal: Portal,
        nqn: &str,
        _host: &HostIdentity,
        _timeout: Duration,
    ) -> Result<Vec<u32>, DiscoveryError> {
        self.active.get(nqn).cloned().ok_or_else(|| unreachable(portal))
    }
}
