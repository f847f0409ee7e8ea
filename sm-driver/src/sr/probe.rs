//! `SR.probe`: with endpoints only, every subsystem they list and its
//! namespaces (incomplete results); with `nqn`, that subsystem's namespaces,
//! what each holds, and every nvmetcp SR on them as a complete result with
//! `sr_uuid` and its `sr_stat`. Every namespace of a subsystem is listed, in
//! NSID order, once the kernel shows all of its active namespace list.
//! Connections probe made are released before it returns. On a host that
//! uses the userspace initiator (no `nvme_tcp`), the namespaces are listed
//! over its admin connection instead, and are not read.

use crate::context::Context;
use crate::error::{CallError, CallResult};
use crate::initiator::InitiatorKind;
use crate::lvm::{Lvm, Vg};
use crate::nvme::discovery::DISCOVERY_TIMEOUT;
use crate::nvme::health::health;
use crate::nvme::names::{Nqn, Portal, Transport};
use crate::nvme::options::{ConnectOptions, PathKey};
use crate::nvme::users::release;
use crate::request::SrProbe;
use crate::smapi::types::{Health, ProbeResult, StringMap};
use crate::sr_config::{without_inline_keys, ConfigError, ProbeConfig, SrConfig, SR_UUID_KEY};
use crate::sr_paths;
use crate::sr_state::{handle_of, SrState};

use super::inspect::existing_data;
use super::stat::stat_record;
use super::vg::{is_sr, tag_value, UUID_TAG};

/// `SR.probe`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn probe(ctx: &Context, request: &SrProbe) -> CallResult<Vec<ProbeResult>> {
    let configuration = &request.configuration;
    {
        let ProbeConfig { endpoints: config, nqn: given } = ProbeConfig::parse(configuration)?;
        let userspace = sr_paths::initiator(ctx, &config)?.kind == InitiatorKind::Userspace;
        let nqns: Vec<Nqn> = match &given {
            Some(nqn) => vec![nqn.clone()],
            None => {
                if config.transport == Transport::Rdma {
                    return Err(ConfigError::Missing {
                        key: "nqn",
                        why: "with transport=rdma probe needs the subsystem NQN (discovery is over TCP only)",
                    }
                    .into());
                }
                if !userspace {
                    ensure_fabric(ctx, &config)?;
                }
                let identity = crate::nvme::identity::load_or_create(&ctx.host)?;
                let mut nqns: Vec<Nqn> = Vec::new();
                let mut failures = Vec::new();
                for candidates in discovery_plan(&config) {
                    for endpoint in candidates {
                        let found = ctx.network.discover(&[endpoint], &identity, DISCOVERY_TIMEOUT);
                        for nqn in found.subsystems.iter().filter_map(|s| s.nqn.parse::<Nqn>().ok()) {
                            if !nqns.contains(&nqn) {
                                nqns.push(nqn);
                            }
                        }
                        let answered = found.failures.is_empty();
                        failures.extend(found.failures.iter().map(|f| crate::error::chain(f)));
                        if answered {
                            break;
                        }
                    }
                }
                if nqns.is_empty() && !failures.is_empty() {
                    return Err(CallError::Discovery { nqn: "(any)".to_owned(), why: failures.join("; ") }.into());
                }
                nqns
            }
        };
        let user = format!("probe-{}", std::process::id());
        let mut results = Vec::new();
        let mut outcome = Ok(());
        for nqn in &nqns {
            let probed = if userspace {
                listed_over_userspace(ctx, &config, configuration, nqn, given.is_some())
            } else {
                probe_subsystem(ctx, &config, configuration, nqn, &user, given.is_some())
            };
            match probed {
                Ok(found) => results.extend(found),
                // Listing several subsystems: one failing is reported, not fatal.
                Err(error) if given.is_none() => {
                    tracing::warn!(%nqn, error = %error.error, "subsystem not probed")
                }
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        release(&ctx.host, &user)?;
        outcome.map(|()| results)
    }
}

/// Where to ask for the subsystems, each entry a list of alternatives tried
/// in order until one answers: every discovery endpoint given; or, with only
/// I/O portals (as an administrator who knows the array's addresses types
/// them), each portal's own port and then the well-known discovery port, as
/// `nvme discover -a <portal> -s 4420` does in the manual recipe.
fn discovery_plan(config: &SrConfig) -> Vec<Vec<Portal>> {
    if !config.discovery.is_empty() {
        return config.discovery.iter().map(|e| vec![*e]).collect();
    }
    config
        .portals
        .iter()
        .map(|p| {
            let mut candidates = vec![*p];
            if p.port != Portal::DISCOVERY_PORT {
                candidates.push(Portal { port: Portal::DISCOVERY_PORT, ..*p });
            }
            candidates
        })
        .collect()
}

fn ensure_fabric(ctx: &Context, config: &SrConfig) -> Result<(), CallError> {
    crate::nvme::checks::ensure_transport(&ctx.host, ctx.runner.as_ref(), config.transport)?;
    Ok(crate::nvme::checks::ensure_multipath(&ctx.host)?)
}

fn probe_subsystem(
    ctx: &Context,
    config: &SrConfig,
    given: &StringMap,
    nqn: &Nqn,
    user: &str,
    subsystem_given: bool,
) -> CallResult<Vec<ProbeResult>> {
    let paths = sr_paths::connect_options(ctx, config, nqn, user)?;
    let expected: Vec<PathKey> = paths.iter().map(ConnectOptions::key).collect();
    let path_health = health(&ctx.host, &expected)?;
    let heads = sr_paths::scanned_namespaces(ctx, &paths, nqn, sr_paths::SCAN_TIMEOUT)?;
    let mut results = Vec::new();
    for head in heads {
        let Some(identity) = head.identity.clone() else { continue };
        let mut configuration = without_inline_keys(given);
        configuration.insert("nqn".to_owned(), nqn.to_string());
        configuration.insert("namespace".to_owned(), identity.canonical());
        let mut extra_info = StringMap::new();
        extra_info.insert("nsid".to_owned(), head.nsid.to_string());
        extra_info.insert("size".to_owned(), head.size_bytes.to_string());
        extra_info.insert("paths".to_owned(), path_health.summary());
        let device = std::path::PathBuf::from(format!("/dev/{}", head.name));
        let vgs = if subsystem_given { Lvm::new(ctx.runner.as_ref(), &device, false)?.vgs()? } else { Vec::new() };
        let found = sr_results(
            &vgs,
            nqn,
            &identity,
            &expected,
            &configuration,
            &extra_info,
            InitiatorKind::Kernel,
            &path_health.summary(),
        );
        if found.is_empty() {
            // What is on a namespace that is not an SR, so a tool can refuse
            // it before SR.create does.
            if subsystem_given {
                match existing_data(ctx, &device.display().to_string()) {
                    Ok(Some(holds)) => {
                        extra_info.insert("holds".to_owned(), holds);
                    }
                    Ok(None) => {
                        extra_info.insert("holds".to_owned(), "nothing: empty".to_owned());
                    }
                    Err(error) => tracing::warn!(%error, "could not inspect the namespace"),
                }
            }
            results.push(ProbeResult {
                configuration: configuration.clone(),
                complete: subsystem_given,
                sr: None,
                extra_info: extra_info.clone(),
            });
        }
        results.extend(found);
    }
    Ok(results)
}

/// A complete result, with `sr_uuid` and its `sr_stat` (uuid, name and
/// sizes from the VG), for every nvmetcp SR among `vgs` on one namespace.
#[allow(clippy::too_many_arguments)] // one namespace's facts, each its own
fn sr_results(
    vgs: &[Vg],
    nqn: &Nqn,
    identity: &crate::nvme::sysfs::NamespaceIdentity,
    paths: &[PathKey],
    configuration: &StringMap,
    extra_info: &StringMap,
    initiator: InitiatorKind,
    health: &str,
) -> Vec<ProbeResult> {
    let mut results = Vec::new();
    for vg in vgs.iter().filter(|vg| is_sr(vg)) {
        // A VG whose uuid tag is not a uuid is not one of ours to list.
        let Some((uuid, sr_uuid)) = tag_value(vg, UUID_TAG).and_then(|u| Some((u, u.parse().ok()?))) else {
            continue;
        };
        let mut configuration = configuration.clone();
        configuration.insert(SR_UUID_KEY.to_owned(), uuid.to_owned());
        let state = SrState {
            sr_uuid,
            vg: vg.name.clone(),
            nqn: nqn.clone(),
            namespace: identity.clone(),
            paths: paths.to_vec(),
            configuration: configuration.clone(),
            total_space: vg.size,
            free_space: vg.free,
            extent_size: vg.extent_size,
            initiator,
        };
        let stat = stat_record(&handle_of(uuid), &state, Some(vg), Health::Healthy(health.to_owned()));
        results.push(ProbeResult { configuration, complete: true, sr: Some(stat), extra_info: extra_info.clone() });
    }
    results
}

/// The subsystem's namespaces as the userspace initiator lists them: each
/// with its NSID, size and paths. With the subsystem given, each namespace
/// is served for the while by this process and its VGs read, so an existing
/// SR is reported as over the kernel initiator (uuid, name, sizes); a
/// namespace that cannot be read is listed with why.
fn listed_over_userspace(
    ctx: &Context,
    config: &SrConfig,
    given: &StringMap,
    nqn: &Nqn,
    subsystem_given: bool,
) -> CallResult<Vec<ProbeResult>> {
    let (listed, paths) = sr_paths::listed_namespaces(ctx, config, nqn)?;
    let health = format!("{} (listed by the userspace initiator)", paths.len());
    let mut results = Vec::new();
    for namespace in listed {
        let Some(identity) = namespace.identity else { continue };
        let mut configuration = without_inline_keys(given);
        configuration.insert("nqn".to_owned(), nqn.to_string());
        configuration.insert("namespace".to_owned(), identity.canonical());
        let mut extra_info = StringMap::new();
        extra_info.insert("nsid".to_owned(), namespace.nsid.to_string());
        extra_info.insert("size".to_owned(), namespace.size_bytes.to_string());
        extra_info.insert("initiator".to_owned(), InitiatorKind::Userspace.to_string());
        extra_info.insert("paths".to_owned(), health.clone());
        if !subsystem_given {
            results.push(ProbeResult { configuration, complete: false, sr: None, extra_info });
            continue;
        }
        let runner = ctx.runner.as_ref();
        let read = sr_paths::read_over_userspace(ctx, config, nqn, namespace.nsid, |device| {
            let vgs = Lvm::new(runner, device, false).and_then(|lvm| lvm.vgs())?;
            // What is on a namespace that is not an SR, as over the kernel.
            let holds = if vgs.iter().any(is_sr) {
                None
            } else {
                match existing_data(ctx, &device.display().to_string()) {
                    Ok(holds) => Some(holds.unwrap_or_else(|| "nothing: empty".to_owned())),
                    Err(error) => Some(format!("not read: {error}")),
                }
            };
            Ok::<_, crate::lvm::LvmError>((vgs, holds))
        });
        let vgs = match read {
            Ok(Ok((vgs, holds))) => {
                if let Some(holds) = holds {
                    extra_info.insert("holds".to_owned(), holds);
                }
                vgs
            }
            Ok(Err(error)) => {
                extra_info.insert("holds".to_owned(), format!("not read: {error}"));
                Vec::new()
            }
            Err(error) => {
                extra_info.insert("holds".to_owned(), format!("not read: {error}"));
                Vec::new()
            }
        };
        let found =
            sr_results(&vgs, nqn, &identity, &paths, &configuration, &extra_info, InitiatorKind::Userspace, &health);
        if found.is_empty() {
            results.push(ProbeResult { configuration, complete: true, sr: None, extra_info });
        }
        results.extend(found);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{discovery_plan, sr_results};
    use crate::initiator::InitiatorKind;
    use crate::lvm::Vg;
    use crate::nvme::names::Portal;
    use crate::nvme::sysfs::NamespaceIdentity;
    use crate::smapi::types::StringMap;
    use crate::sr::vg::{label_tag, NAME_TAG, SR_TAG, UUID_TAG};
    use crate::sr_config::{ProbeConfig, SrConfig};

    #[test]
    fn an_sr_read_over_the_userspace_initiator_is_reported_with_its_uuid_and_name() {
        let uuid = "7d1e6a20-3c4b-4f5e-8a9b-0c1d2e3f4a5b";
        let sr = Vg {
            name: "nvmetcp_7d1e6a203c4b4f5e8a9b0c1d2e3f4a5b".into(),
            uuid: "lvm-uuid".into(),
            size: 128 << 20,
            free: 96 << 20,
            extent_size: 4 << 20,
            tags: vec![SR_TAG.into(), format!("{UUID_TAG}{uuid}"), label_tag(NAME_TAG, "name", "on 8.3").unwrap()],
        };
        let other = Vg { name: "data".into(), tags: Vec::new(), ..sr.clone() };
        let identity = NamespaceIdentity::parse("uuid.8a6f2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f").unwrap();
        let configuration: StringMap = [("nqn".to_owned(), "nqn.2014-08.org.example:a".to_owned())].into();
        let extra: StringMap = [("initiator".to_owned(), "userspace".to_owned())].into();
        let nqn = "nqn.2014-08.org.example:a".parse().unwrap();
        let found =
            sr_results(&[other, sr], &nqn, &identity, &[], &configuration, &extra, InitiatorKind::Userspace, "2 paths");
        assert_eq!(found.len(), 1, "only the nvmetcp VG is an SR: {found:?}");
        let result = &found[0];
        assert!(result.complete);
        assert_eq!(result.configuration.get("sr_uuid").map(String::as_str), Some(uuid));
        let stat = result.sr.as_ref().unwrap();
        assert_eq!((stat.name.as_str(), stat.uuid.as_deref()), ("on 8.3", Some(uuid)));
        assert_eq!((stat.total_space, stat.free_space), (128 << 20, 96 << 20));
        assert_eq!(result.extra_info.get("initiator").map(String::as_str), Some("userspace"));
    }

    fn config(pairs: &[(&str, &str)]) -> SrConfig {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        ProbeConfig::parse(&map).unwrap().endpoints
    }

    #[test]
    fn with_only_portals_probe_asks_each_portal_then_the_discovery_port() {
        let plan = discovery_plan(&config(&[("portals", "10.0.1.10,10.0.2.10:8009")]));
        let shown: Vec<Vec<String>> = plan.iter().map(|c| c.iter().map(Portal::to_string).collect()).collect();
        assert_eq!(shown, [vec!["10.0.1.10:4420", "10.0.1.10:8009"], vec!["10.0.2.10:8009"]]);
        let plan = discovery_plan(&config(&[("discovery", "10.0.9.9"), ("portals", "10.0.1.10")]));
        assert_eq!(plan, [vec![Portal::parse("10.0.9.9:8009", 1).unwrap()]], "discovery endpoints win");
    }

    /// Probe in process: a host ready for NVMe/TCP, the fabrics device
    /// creating controllers in the tree, the network listing one subsystem
    /// at the portal with namespaces 1 and 2.
    mod in_process {
        use std::time::Duration;

        use crate::cmd::FakeRunner;
        use crate::context::Context;
        use crate::nvme::connect::fake::FakeFabrics;
        use crate::nvme::discovery::fake::FakeNetwork;
        use crate::nvme::sysfs::fixture::SysfsTree;
        use crate::request::SrProbe;
        use crate::smapi::types::ProbeResult;

        const NQN: &str = "nqn.2024-01.io.example:array";
        const WWID1: &str = "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc";
        const WWID2: &str = "uuid.9e41bef0-11d6-4af7-8acd-cf3da35aaded";

        fn context(tree: &SysfsTree, active: &[u32]) -> Context {
            tree.fabric_ready();
            Context {
                host: tree.host(),
                runner: Box::new(FakeRunner::new()),
                fabrics: Box::new(FakeFabrics::new(tree)),
                network: Box::new(FakeNetwork::new().listing("10.0.1.10", NQN, &["10.0.1.10"]).namespaces(NQN, active)),
            }
        }

        fn probe(ctx: &Context) -> Vec<ProbeResult> {
            let configuration = [("portals".to_owned(), "10.0.1.10".to_owned())].into_iter().collect();
            super::super::probe(ctx, &SrProbe { configuration }).unwrap()
        }

        #[test]
        fn every_namespace_is_listed_in_nsid_order_even_when_the_scan_adds_them_late() {
            let tree = SysfsTree::new();
            let ctx = context(&tree, &[1, 2]);
            // The scan shows namespace 2 first; namespace 1 only later.
            tree.head("nvme-subsys0", "nvme0n2", NQN, 2, WWID2, 4096);
            let late = tree.clone();
            let scan = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(400));
                late.head("nvme-subsys0", "nvme0n1", NQN, 1, WWID1, 2048);
            });
            let results = probe(&ctx);
            scan.join().unwrap();
            let nsids: Vec<&str> = results.iter().map(|r| r.extra_info["nsid"].as_str()).collect();
            assert_eq!(nsids, ["1", "2"], "{results:?}");
            let first = crate::nvme::sysfs::NamespaceIdentity::parse(WWID1).unwrap().canonical();
            assert_eq!(results[0].configuration["namespace"], first);
            assert!(results.iter().all(|r| r.configuration["nqn"] == NQN && !r.complete));
            assert!(!tree.read("/run/nvmetcp/fabric-users.json").contains("probe-"), "probe released its paths");
        }

        /// Connects the subsystem's path and waits for its scan.
        fn scan(
            ctx: &Context,
            timeout: Duration,
        ) -> Result<Vec<crate::nvme::sysfs::NamespaceDevice>, crate::error::CallError> {
            let nqn = NQN.parse().unwrap();
            let config = super::config(&[("portals", "10.0.1.10"), ("nqn", NQN)]);
            let paths = crate::sr_paths::connect_options(ctx, &config, &nqn, "probe-test").unwrap();
            crate::sr_paths::scanned_namespaces(ctx, &paths, &nqn, timeout)
        }

        #[test]
        fn a_namespace_the_scan_never_shows_is_named_at_the_deadline() {
            let tree = SysfsTree::new();
            let ctx = context(&tree, &[1, 2, 3]);
            tree.head("nvme-subsys0", "nvme0n1", NQN, 1, WWID1, 2048);
            tree.head("nvme-subsys0", "nvme0n2", NQN, 2, WWID2, 4096);
            let started = std::time::Instant::now();
            let error = scan(&ctx, Duration::from_millis(300)).unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(3), "bounded by its deadline");
            let crate::error::CallError::ScanIncomplete { missing, .. } = &error else { panic!("{error:?}") };
            assert_eq!(missing, "3");
        }

        #[test]
        fn without_the_active_list_the_heads_are_taken_once_they_settle() {
            let tree = SysfsTree::new();
            let ctx = context(&tree, &[]);
            let ctx = Context { network: Box::new(FakeNetwork::new()), ..ctx };
            tree.head("nvme-subsys0", "nvme0n2", NQN, 2, WWID2, 4096);
            let late = tree.clone();
            let scanner = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                late.head("nvme-subsys0", "nvme0n1", NQN, 1, WWID1, 2048);
            });
            let heads = scan(&ctx, Duration::from_secs(5)).unwrap();
            scanner.join().unwrap();
            assert_eq!(heads.iter().map(|h| h.nsid).collect::<Vec<_>>(), [1, 2]);
        }
    }

    #[test]
    fn probe_with_only_portals_is_not_refused() {
        let ctx = crate::context::Context::fake(
            crate::host::HostRoot::at("/nonexistent"),
            Box::new(crate::cmd::FakeRunner::new()),
        );
        let configuration = [("portals".to_owned(), "10.0.1.10".to_owned())].into_iter().collect();
        let failure = super::probe(&ctx, &crate::request::SrProbe { configuration }).unwrap_err();
        let record = crate::error::to_error_record(&failure.into(), "h1");
        // It goes on to the host's fabric (absent in this empty root).
        assert_eq!(record.code, "NVMETCP_HOST_NOT_READY", "{:?}", record.params);
    }
}
