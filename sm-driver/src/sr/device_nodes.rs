//! The `/dev/<vg>` directory a killed LVM command can leave behind.
//!
//! Where udev does not manage device nodes, LVM makes and removes
//! `/dev/mapper/<vg>-<lv>` and the link `/dev/<vg>/<lv>` to it itself, at the
//! end of each command; killed between removing a mapping and its nodes, it
//! leaves both behind. `vgcreate` refuses a name that exists under `/dev`
//! ("already exists in filesystem"), so a later `SR.create` of the same SR
//! failed. `SR.destroy` and `SR.create` clear such leftovers: the link of an
//! LV that has no device-mapper mapping (sysfs is the truth), and the mapper
//! node it points to; never anything of a mapped LV.

use std::path::Path;

use crate::host::HostRoot;
use crate::ids::VgName;
use crate::pool_mappings::{dm_name, mapping_active};

/// Removes the dead links of `/dev/<vg>` (and their dead mapper nodes), then
/// the directory if that empties it; returns the entries left (mapped LVs,
/// or what could not be removed), empty when `/dev/<vg>` is gone.
pub fn clear_dead(host: &HostRoot, vg: &VgName) -> Vec<String> {
    let dir = format!("/dev/{vg}");
    let Ok(entries) = host.list_dir(&dir) else { return Vec::new() };
    let mut left = Vec::new();
    for entry in entries {
        let mapping = dm_name(vg.as_str(), &entry);
        let link = host.path(&format!("{dir}/{entry}"));
        let is_link = link.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
        if !is_link || mapping_active(host, &mapping) || !remove(&link) {
            left.push(entry);
            continue;
        }
        let node = host.path(&format!("/dev/mapper/{mapping}"));
        if node.symlink_metadata().is_ok() && !remove(&node) {
            tracing::warn!(node = %node.display(), "cannot remove the dead mapper node of a removed LV");
        }
    }
    if left.is_empty() {
        if let Err(error) = std::fs::remove_dir(host.path(&dir)) {
            tracing::warn!(%dir, %error, "cannot remove the empty directory of a removed volume group");
            left.push(".".to_owned());
        }
    }
    left
}

fn remove(path: &Path) -> bool {
    let removed = std::fs::remove_file(path).is_ok();
    if removed {
        tracing::info!(node = %path.display(), "removed a dead device node an interrupted LVM command left");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::clear_dead;
    use crate::host::HostRoot;
    use crate::ids::VgName;

    fn vg() -> VgName {
        "nvmetcp_ab".parse().unwrap()
    }

    const MAPPER: &str = "/dev/mapper/nvmetcp_ab-vol--1";

    #[test]
    fn the_link_and_mapper_node_of_an_unmapped_lv_go_and_then_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let host = HostRoot::at(root.path());
        std::fs::create_dir_all(host.path("/dev/nvmetcp_ab")).unwrap();
        std::fs::create_dir_all(host.path("/dev/mapper")).unwrap();
        // The node outlives its device: a link to it is dead all the same.
        std::fs::write(host.path(MAPPER), "").unwrap();
        std::os::unix::fs::symlink(MAPPER, host.path("/dev/nvmetcp_ab/vol-1")).unwrap();
        std::os::unix::fs::symlink("../nothing", host.path("/dev/nvmetcp_ab/vol-2")).unwrap();
        assert!(clear_dead(&host, &vg()).is_empty());
        assert!(!host.path("/dev/nvmetcp_ab").exists());
        assert!(!host.path(MAPPER).exists());
    }

    #[test]
    fn a_mapped_lv_and_anything_not_a_link_stay() {
        let root = tempfile::tempdir().unwrap();
        let host = HostRoot::at(root.path());
        std::fs::create_dir_all(host.path("/dev/nvmetcp_ab/sub")).unwrap();
        std::fs::create_dir_all(host.path("/dev/mapper")).unwrap();
        std::fs::write(host.path(MAPPER), "").unwrap();
        std::os::unix::fs::symlink(MAPPER, host.path("/dev/nvmetcp_ab/vol-1")).unwrap();
        std::fs::create_dir_all(host.path("/sys/block/dm-9/dm")).unwrap();
        std::fs::write(host.path("/sys/block/dm-9/dm/name"), "nvmetcp_ab-vol--1\n").unwrap();
        std::os::unix::fs::symlink("../dm-8", host.path("/dev/nvmetcp_ab/vol-dead")).unwrap();
        assert_eq!(clear_dead(&host, &vg()), ["sub", "vol-1"]);
        assert!(host.path("/dev/nvmetcp_ab/vol-dead").symlink_metadata().is_err());
        assert!(host.path(MAPPER).exists(), "the mapped LV's node");
    }

    #[test]
    fn no_directory_is_nothing_to_do() {
        let root = tempfile::tempdir().unwrap();
        assert!(clear_dead(&HostRoot::at(root.path()), &vg()).is_empty());
    }
}
