//! `nvmetcp doctor`'s snapshot journal report: for each SR attached on this
//! host, the snapshot, clone and merge operations journalled on its LVs and
//! not finished yet ([`crate::snapshot::journal`]). The errors that refuse a
//! call because of such an entry send the administrator here; this says
//! which entries there are, how far each got, and what finishes it. One
//! read-only `lvs` per SR.

use std::time::Duration;

use crate::cmd::Runner;
use crate::host::HostRoot;
use crate::lvm::Lvm;
use crate::snapshot::journal::Entry;
use crate::sr_state::SrState;

use super::Check;

/// How long to wait for an SR's namespace to be found.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(2);

/// One check per SR attached here.
pub(super) fn snapshot_journals(host: &HostRoot, runner: &dyn Runner) -> Vec<Check> {
    crate::sr_state::attached_uuids(host)
        .iter()
        .map(|uuid| match crate::sr_state::load(host, uuid) {
            Ok(state) => of_sr(host, runner, &state),
            Err(error) => Check::warn(name(uuid), format!("its attachment record cannot be read: {error}"), FIX_READ),
        })
        .collect()
}

const FIX_READ: &str = "detach and attach the SR again (xe pbd-unplug, xe pbd-plug)";

fn name(uuid: &str) -> String {
    format!("snapshot journal {uuid}")
}

fn of_sr(host: &HostRoot, runner: &dyn Runner, state: &SrState) -> Check {
    let uuid = state.sr_uuid.as_str();
    let lvs = crate::sr_paths::device_of(host, state, DEVICE_TIMEOUT).map_err(|error| error.to_string()).and_then(
        |(device, file)| {
            let lvm = Lvm::new(runner, &device, false).map_err(|error| error.to_string())?.holding(file);
            lvm.lvs(&state.vg).map_err(|error| error.to_string())
        },
    );
    let lvs = match lvs {
        Ok(lvs) => lvs,
        Err(why) => {
            return Check::warn(
                name(uuid),
                format!("its LVs cannot be read: {why}"),
                "check the SR's paths (nvmetcp status)",
            )
        }
    };
    let pending: Vec<String> = lvs
        .iter()
        .flat_map(|lv| lv.tags.iter().filter_map(|tag| Entry::from_tag(tag)).map(move |entry| (lv, entry)))
        .map(|(lv, entry)| format!("on LV {}: {}", lv.name, entry.describe()))
        .collect();
    if pending.is_empty() {
        return Check::pass(name(uuid), "no unfinished snapshot, clone or merge");
    }
    Check::warn(
        name(uuid),
        format!("{} unfinished: {}", pending.len(), pending.join("; ")),
        "SR.attach on the pool master replays these, and the collector does after each Volume.destroy; an online \
         merge finishes when the engine serving the disk ends its job, or at the disk's Datapath.detach. If one \
         stays for more than a few minutes, keep SMlog of the master and of the host serving the disk and report it",
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::snapshot_journals;
    use crate::cmd::FakeRunner;
    use crate::doctor::Verdict;
    use crate::nvme::sysfs::fixture::SysfsTree;
    use crate::snapshot::journal::{Entry, Operation, Step};
    use crate::sr_state;

    const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
    const NQN: &str = "nqn.2024-01.io.example:array";
    const WWID: &str = "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc";
    const VG: &str = "nvmetcp_3f1c6d0e8a8f4e0a9b5e2d7c1f0a9e11";

    /// A host with the SR attached over one live path.
    fn attached() -> SysfsTree {
        let tree = SysfsTree::new();
        tree.controller("nvme0", "tcp", NQN, "traddr=10.0.0.1,trsvcid=4420", "nqn.h:h", "live");
        tree.head("nvme-subsys0", "nvme0n1", NQN, 1, WWID, 2048);
        tree.path_device("nvme0", "nvme0c0n1");
        sr_state::save(&tree.host(), &sr_state::one_tcp_path(SR, VG, NQN, WWID, 1 << 30, 1 << 29)).unwrap();
        tree
    }

    fn report(tags: &str) -> String {
        format!(
            r#"{{"report": [{{"lv": [{{"lv_name":"vol-a", "vg_name":"{VG}", "lv_size":"4194304", "lv_tags":"{tags}",
            "lv_active":""}}]}}]}}"#
        )
    }

    #[test]
    fn an_unfinished_merge_is_named_with_its_step_and_what_finishes_it() {
        let tree = attached();
        let merge = Entry {
            operation: Operation::Merge { child: "n-1".into(), into: "vol-a".into(), online: Some("vol-b".into()) },
            step: Step::EngineCommitting,
        };
        let runner = Arc::new(FakeRunner::new().then_stdout(&report(&merge.to_tag())));
        let checks = snapshot_journals(&tree.host(), runner.as_ref());
        assert_eq!(checks.len(), 1);
        let check = &checks[0];
        assert_eq!(check.verdict, Verdict::Warn, "{check:?}");
        assert_eq!(check.name, format!("snapshot journal {SR}"));
        assert!(
            check.detail.contains("on LV vol-a: a merge of node n-1 into vol-a by the engine serving volume vol-b")
                && check.detail.contains("(the engine asked to merge)"),
            "{}",
            check.detail
        );
        assert!(check.fix.contains("SR.attach on the pool master replays"), "{}", check.fix);
        let shown = &runner.calls()[0].shown;
        assert!(shown.contains(" lvs ") && shown.contains("metadata_read_only = 1"), "read-only lvs: {shown}");
    }

    #[test]
    fn an_sr_with_no_entry_passes() {
        let tree = attached();
        let runner = Arc::new(FakeRunner::new().then_stdout(&report("nvmetcp_vol")));
        let checks = snapshot_journals(&tree.host(), runner.as_ref());
        assert_eq!(checks[0].verdict, Verdict::Pass, "{:?}", checks[0]);
    }
}
