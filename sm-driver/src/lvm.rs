//! lvm2, driven through the runner with machine-readable reports.
//!
//! Every command runs as `lvm <command> --config <...>` with a device filter
//! that lets LVM see exactly one device — the SR's multipath head — so it can
//! never pick up the same PV through another path, a loop device behind a
//! test target, or a disk of another SR. The same override carries
//! `metadata_read_only`: only the pool master writes LVM metadata; every other
//! host reads it, as XCP-ng's own shared LVM SRs do.
//!
//! Reports are requested as JSON (`--reportformat json`, available since
//! lvm2 2.02.158, so on dom0's 2.02.180 and on 2.03) with explicit columns and
//! byte units without suffix, and decoded into typed records. No option that
//! only lvm2 2.03 has is used.

use std::path::Path;

use serde::Deserialize;

use crate::cmd::{CmdError, Command, Program, Runner};
use crate::ids::{BadId, LvName, VgName};

/// Why an LVM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LvmError {
    /// The command failed.
    #[error(transparent)]
    Command(#[from] CmdError),
    /// Its report could not be decoded.
    #[error("cannot read the report of '{command}': {detail}")]
    Report {
        /// The command.
        command: String,
        /// What was wrong.
        detail: String,
    },
    /// A VG or LV name that is not one.
    #[error(transparent)]
    Name(#[from] BadId),
    /// A tag or device name that LVM could not take safely.
    #[error("{what} {value:?} cannot be used with LVM")]
    BadName {
        /// What it is.
        what: &'static str,
        /// The value.
        value: String,
    },
}

/// A volume group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vg {
    /// Its name.
    pub name: VgName,
    /// Its LVM UUID.
    pub uuid: String,
    /// Size in bytes.
    pub size: u64,
    /// Free bytes.
    pub free: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// Its tags.
    pub tags: Vec<String>,
}

/// A logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lv {
    /// Its name.
    pub name: LvName,
    /// Its VG.
    pub vg: VgName,
    /// Size in bytes.
    pub size: u64,
    /// Its tags.
    pub tags: Vec<String>,
    /// Whether it is active on this host.
    pub active: bool,
}

/// A physical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pv {
    /// Its LVM UUID.
    pub uuid: String,
    /// Its VG; empty for an orphan PV.
    pub vg: String,
    /// Where its data area starts, in bytes: before it, the label and the
    /// metadata area.
    pub pe_start: u64,
}

/// The PV UUID nvmetcp gives the PV of SR `sr_uuid`: its 32 hex digits in
/// LVM's 6-4-4-4-4-4-6 grouping; `None` for a malformed SR uuid.
#[must_use]
pub fn pv_uuid_for(sr_uuid: &str) -> Option<String> {
    let digits: String = sr_uuid.chars().filter(char::is_ascii_hexdigit).collect();
    if digits.len() != 32 || sr_uuid.chars().any(|c| !c.is_ascii_hexdigit() && c != '-') {
        return None;
    }
    let mut groups = Vec::new();
    let mut at = 0;
    for width in [6, 4, 4, 4, 4, 4, 6] {
        groups.push(&digits[at..at + width]);
        at += width;
    }
    Some(groups.join("-"))
}

/// Metadata archives lvm2 keeps per VG in `/etc/lvm/archive`.
pub const ARCHIVES_KEPT: u32 = 10;

/// The metadata area of the SR's PV.
pub const PV_METADATA_SIZE: &str = "8m";

/// The columns of a VG report ([`VgRow`]).
const VG_COLUMNS: &str = "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_tags";

/// The columns of an LV report ([`LvRow`]).
const LV_COLUMNS: &str = "lv_name,vg_name,lv_size,lv_tags,lv_active";

/// The size `lvcreate` allocates for `bytes`: whole sectors, rounded up to
/// whole extents; `None` when the extent size is unknown (0).
#[must_use]
pub fn allocated_size(bytes: u64, extent_size: u64) -> Option<u64> {
    (extent_size > 0).then(|| (sectors_up(bytes) * 512).div_ceil(extent_size) * extent_size)
}

/// LVM confined to one device.
pub struct Lvm<'a> {
    runner: &'a dyn Runner,
    device: String,
    writable: bool,
    /// The device held open while this lives ([`Lvm::holding`]).
    pin: Option<std::fs::File>,
}

/// Characters LVM names and tags may hold (a subset of what lvm2 allows).
fn lvm_safe(text: &str, extra: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c) || extra.contains(c))
}

impl<'a> Lvm<'a> {
    /// LVM seeing only `device`; metadata writes allowed only when `writable`
    /// (the pool master).
    ///
    /// # Errors
    /// [`LvmError::BadName`] if the device path could not be put in a filter safely.
    pub fn new(runner: &'a dyn Runner, device: &Path, writable: bool) -> Result<Self, LvmError> {
        let device = device.to_string_lossy().into_owned();
        if !device.starts_with("/dev/") || !lvm_safe(&device, "/") {
            return Err(LvmError::BadName { what: "device", value: device });
        }
        Ok(Self { runner, device, writable, pin: None })
    }

    /// Keeps `pin`, the device opened and verified after opening
    /// ([`crate::nvme::resolve::pin`]), open as long as this lives: the
    /// filter's device name then cannot pass to another namespace.
    #[must_use]
    pub fn holding(mut self, pin: std::fs::File) -> Self {
        self.pin = Some(pin);
        self
    }

    /// The device LVM is confined to.
    #[must_use]
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The `--config` override: the device filter, the metadata policy, the
    /// archive and discards.
    ///
    /// * lvm2 archives the old metadata before every commit into
    ///   `/etc/lvm/archive`, kept 30 days by default: 110 MB in 30 minutes of
    ///   volume calls on dom0's small root file system. The SR keeps the last
    ///   [`ARCHIVES_KEPT`] archives per VG and nothing older
    ///   (`retain_days = 0`), enough for `vgcfgrestore` after a bad change.
    /// * `issue_discards`: extents an `lvremove` frees are discarded on the
    ///   namespace (NVMe Deallocate) when it supports it, so a destroyed
    ///   volume's data does not reappear in the next volume on its extents.
    fn config(&self) -> String {
        let filter = format!("[ \"a|^{}$|\", \"r|.*|\" ]", self.device);
        format!(
            "devices {{ filter = {filter} global_filter = {filter} issue_discards = 1 }} global {{ \
             metadata_read_only = {} }} backup {{ backup = 1 archive = 1 retain_min = {ARCHIVES_KEPT} retain_days = 0 }}",
            u8::from(!self.writable)
        )
    }

    fn command(&self, subcommand: &str) -> Command {
        Command::new(Program::Lvm).arg(subcommand).arg("--config").arg(self.config())
    }

    /// [`Lvm::command`] whose override also lists `names` (`vg/lv`) in
    /// `activation/read_only_volume_list`: its device-mapper table is loaded
    /// read-only when activated or refreshed (a local choice of this host,
    /// no metadata write, so members may make it too).
    fn read_only_command(&self, subcommand: &str, names: &[String]) -> Command {
        let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        let config = format!("{} activation {{ read_only_volume_list = [ {} ] }}", self.config(), list.join(", "));
        Command::new(Program::Lvm).arg(subcommand).arg("--config").arg(config)
    }

    /// A JSON report of `columns` in bytes without suffixes (2.02.158+).
    fn report_command(&self, subcommand: &str, columns: &str) -> Command {
        self.command(subcommand).args(["--reportformat", "json", "--units", "b", "--nosuffix", "-o", columns])
    }

    fn report<T: for<'de> Deserialize<'de>>(&self, command: &Command, section: &str) -> Result<Vec<T>, LvmError> {
        let output = self.runner.run(command)?;
        parse_report(&output.stdout, section)
            .map_err(|detail| LvmError::Report { command: command.to_string(), detail })
    }

    /// Every VG visible on the device.
    ///
    /// # Errors
    /// [`LvmError`] if `vgs` fails or its report is unreadable.
    pub fn vgs(&self) -> Result<Vec<Vg>, LvmError> {
        let command = self.report_command("vgs", VG_COLUMNS);
        let rows: Vec<VgRow> = self.report(&command, "vg")?;
        rows.into_iter()
            .map(|r| r.decode().map_err(|detail| LvmError::Report { command: command.to_string(), detail }))
            .collect()
    }

    /// Every VG visible on the device and their LVs, in one process:
    /// `lvm fullreport` (lvm2 2.02.158+, like the JSON report), its VG and
    /// LV subreports with the columns of [`Self::vgs`] and [`Self::lvs`],
    /// the PV and segment subreports selected empty. What `SR.attach` reads:
    /// the VG proves the namespace is the SR's, the LVs say whether the
    /// snapshot journal needs a replay.
    ///
    /// # Errors
    /// [`LvmError`] if `lvm fullreport` fails or its report is unreadable.
    pub fn vgs_and_lvs(&self) -> Result<(Vec<Vg>, Vec<Lv>), LvmError> {
        let command = self.command("fullreport").args([
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "--configreport",
            "vg",
            "-o",
            VG_COLUMNS,
            "--configreport",
            "lv",
            "-o",
            LV_COLUMNS,
            "--configreport",
            "pv",
            "-S",
            "pv_name=\"\"",
            "--configreport",
            "pvseg",
            "-S",
            "pvseg_start<0",
            "--configreport",
            "seg",
            "-S",
            "seg_start<0",
        ]);
        let output = self.runner.run(&command)?;
        let bad = |detail| LvmError::Report { command: command.to_string(), detail };
        let (vgs, lvs): (Vec<VgRow>, Vec<LvRow>) = parse_full_report(&output.stdout).map_err(bad)?;
        let vgs = vgs.into_iter().map(VgRow::decode).collect::<Result<_, _>>().map_err(bad)?;
        let lvs = lvs.into_iter().map(LvRow::decode).collect::<Result<_, _>>().map_err(bad)?;
        Ok((vgs, lvs))
    }

    /// The LVs of `vg`.
    ///
    /// # Errors
    /// [`LvmError`] if `lvs` fails or its report is unreadable.
    pub fn lvs(&self, vg: &VgName) -> Result<Vec<Lv>, LvmError> {
        self.lv_report(vg, None)
    }

    /// LV `vg/lv`, if it exists: one row selected by LVM, however many
    /// volumes the VG holds.
    ///
    /// # Errors
    /// [`LvmError`] if `lvs` fails or its report is unreadable.
    pub fn lv(&self, vg: &VgName, lv: &LvName) -> Result<Option<Lv>, LvmError> {
        Ok(self.lv_report(vg, Some(lv))?.into_iter().find(|found| found.name == lv))
    }

    fn lv_report(&self, vg: &VgName, only: Option<&LvName>) -> Result<Vec<Lv>, LvmError> {
        let mut command = self.report_command("lvs", LV_COLUMNS);
        if let Some(lv) = only {
            command = command.arg("--select").arg(format!("lv_name=\"{lv}\""));
        }
        let command = command.arg(vg.as_str());
        let rows: Vec<LvRow> = self.report(&command, "lv")?;
        rows.into_iter()
            .map(|r| r.decode().map_err(|detail| LvmError::Report { command: command.to_string(), detail }))
            .collect()
    }

    /// Initialises the device as a PV; `force` overrides existing signatures.
    ///
    /// # Errors
    /// [`LvmError`] if `pvcreate` fails.
    pub fn pvcreate(&self, force: bool, uuid: &str) -> Result<(), LvmError> {
        // Every volume's metadata lives in its LV's tags, and LVM keeps the
        // whole VG description (twice, while committing) in this area: the
        // 2.02 default of about 128 KiB fills up after a few hundred volumes.
        // 8 MiB holds several thousand. The PV's UUID is derived from the
        // SR's ([`pv_uuid_for`]), so a retry of a create killed between
        // pvcreate and vgcreate recognises the PV it left.
        check_tag(uuid)?;
        let mut command =
            self.command("pvcreate").args(["--metadatasize", PV_METADATA_SIZE, "--uuid", uuid, "--norestorefile"]);
        if force {
            command = command.args(["-ff", "-y"]);
        }
        self.runner.run(&command.arg(&self.device))?;
        Ok(())
    }

    /// The device's PV, if it is one: its UUID, VG (empty when none) and
    /// where its data area starts.
    ///
    /// # Errors
    /// [`LvmError`] if `pvs` fails or its report is unreadable.
    pub fn pv(&self) -> Result<Option<Pv>, LvmError> {
        let command = self.report_command("pvs", "pv_uuid,vg_name,pe_start");
        let rows: Vec<PvRow> = self.report(&command, "pv")?;
        rows.into_iter()
            .next()
            .map(|r| r.decode().map_err(|detail| LvmError::Report { command: command.to_string(), detail }))
            .transpose()
    }

    /// Creates `vg` on the device with `tags`.
    ///
    /// # Errors
    /// [`LvmError`] if a name or tag is unsafe or `vgcreate` fails.
    pub fn vgcreate(&self, vg: &VgName, tags: &[String]) -> Result<(), LvmError> {
        let mut command = self.command("vgcreate");
        for tag in tags {
            check_tag(tag)?;
            command = command.arg("--addtag").arg(tag);
        }
        self.runner.run(&command.arg(vg.as_str()).arg(&self.device))?;
        Ok(())
    }

    /// Replaces tags of `vg`.
    ///
    /// # Errors
    /// [`LvmError`] if a tag is unsafe or `vgchange` fails.
    pub fn retag(&self, vg: &VgName, remove: &[String], add: &[String]) -> Result<(), LvmError> {
        self.runner.run(&with_tag_changes(self.command("vgchange"), remove, add)?.arg(vg.as_str()))?;
        Ok(())
    }

    /// Deactivates every LV of `vg` on this host.
    ///
    /// # Errors
    /// [`LvmError`] if `vgchange -an` fails.
    pub fn deactivate(&self, vg: &VgName) -> Result<(), LvmError> {
        self.runner.run(&self.command("vgchange").arg("-an").arg(vg.as_str()))?;
        Ok(())
    }

    /// Creates LV `vg/lv` of at least `bytes` (LVM rounds up to whole
    /// extents), inactive, with `tags` — one metadata commit, so a killed call
    /// leaves either no LV or the complete one.
    ///
    /// # Errors
    /// [`LvmError`] if a name or tag is unsafe or `lvcreate` fails.
    pub fn lvcreate(&self, vg: &VgName, lv: &LvName, bytes: u64, tags: &[String]) -> Result<(), LvmError> {
        let size = format!("{}b", sectors_up(bytes) * 512);
        let mut command = self.command("lvcreate").args(["-y", "-an", "-Zn", "-n", lv.as_str(), "-L", &size]);
        for tag in tags {
            check_tag(tag)?;
            command = command.arg("--addtag").arg(tag);
        }
        self.runner.run(&command.arg(vg.as_str()))?;
        Ok(())
    }

    /// Removes LV `vg/lv`.
    ///
    /// # Errors
    /// [`LvmError`] if `lvremove` fails.
    pub fn lvremove(&self, vg: &VgName, lv: &LvName) -> Result<(), LvmError> {
        self.runner.run(&self.command("lvremove").args(["-f", &qualified_name(vg, lv)]))?;
        Ok(())
    }

    /// Grows LV `vg/lv` to at least `bytes`.
    ///
    /// # Errors
    /// [`LvmError`] if `lvextend` fails.
    pub fn lvextend(&self, vg: &VgName, lv: &LvName, bytes: u64) -> Result<(), LvmError> {
        let size = format!("{}b", sectors_up(bytes) * 512);
        self.runner.run(&self.command("lvextend").args(["-L", &size, &qualified_name(vg, lv)]))?;
        Ok(())
    }

    /// Shrinks LV `vg/lv`, a read-only node, to at least `bytes` (LVM
    /// rounds up to whole extents); if it is active here its mapping is
    /// reloaded read-only (`activation/read_only_volume_list`), as before.
    ///
    /// # Errors
    /// [`LvmError`] if `lvreduce` fails.
    pub fn lv_shrink_read_only(&self, vg: &VgName, lv: &LvName, bytes: u64) -> Result<(), LvmError> {
        let name = format!("{vg}/{lv}");
        let size = format!("{}b", sectors_up(bytes) * 512);
        let command = self.read_only_command("lvreduce", std::slice::from_ref(&name)).args(["-f", "-L", &size, &name]);
        self.runner.run(&command)?;
        Ok(())
    }

    /// Replaces tags of LV `vg/lv` in one metadata commit.
    ///
    /// # Errors
    /// [`LvmError`] if a tag is unsafe or `lvchange` fails.
    pub fn lv_retag(&self, vg: &VgName, lv: &LvName, remove: &[String], add: &[String]) -> Result<(), LvmError> {
        self.runner.run(&with_tag_changes(self.command("lvchange"), remove, add)?.arg(qualified_name(vg, lv)))?;
        Ok(())
    }

    /// Activates (`true`) or deactivates LV `vg/lv` on this host. Activation
    /// also refreshes the mapping, so a member host picks up what the master
    /// changed (a resize) since.
    ///
    /// # Errors
    /// [`LvmError`] if `lvchange` fails.
    pub fn lv_activate(&self, vg: &VgName, lv: &LvName, active: bool) -> Result<(), LvmError> {
        let name = qualified_name(vg, lv);
        self.runner.run(&self.command("lvchange").args([if active { "-ay" } else { "-an" }, &name]))?;
        if active {
            self.runner.run(&self.command("lvchange").args(["--refresh", &name]))?;
        }
        Ok(())
    }

    /// Activates every LV of `lvs` in `vg` on this host, as `now` (a
    /// report of the VG just read) has them: one `lvchange -ay` for those
    /// not active here, which loads their current metadata, and one
    /// `--refresh` for those active already, whose mapping may predate a
    /// change the master made since (a resize, a shrink, a merge). An LV
    /// `now` lacks (created since, inactive) is activated. A snapshot
    /// chain's nodes at once, not one command per node; nothing to do for
    /// an empty list.
    ///
    /// # Errors
    /// [`LvmError`] if a name is unsafe or `lvchange` fails.
    pub fn lvs_activate(&self, vg: &VgName, lvs: &[LvName], now: &[Lv]) -> Result<(), LvmError> {
        let (active, inactive): (Vec<LvName>, Vec<LvName>) =
            lvs.iter().cloned().partition(|lv| now.iter().any(|l| l.name == *lv && l.vg == *vg && l.active));
        if !inactive.is_empty() {
            self.runner.run(&self.command("lvchange").arg("-ay").args(qualified(vg, &inactive)))?;
        }
        if !active.is_empty() {
            self.runner.run(&self.command("lvchange").arg("--refresh").args(qualified(vg, &active)))?;
        }
        Ok(())
    }

    /// Activates `read` read-only and `written` read-write in `vg` on this
    /// host with one `lvchange -ay` (the override lists only `read`), then
    /// refreshes, read-write, what of `written` `now` reports active: the
    /// LVs `qemu-img` opens to edit `written` on a backing chain `read`.
    /// `read` must be inactive (an active LV is not reloaded by `-ay`).
    ///
    /// # Errors
    /// [`LvmError`] if a name is unsafe or `lvchange` fails.
    pub fn lvs_activate_reading(
        &self,
        vg: &VgName,
        read: &[LvName],
        written: &[LvName],
        now: &[Lv],
    ) -> Result<(), LvmError> {
        let (active, inactive): (Vec<LvName>, Vec<LvName>) =
            written.iter().cloned().partition(|lv| now.iter().any(|l| l.name == *lv && l.vg == *vg && l.active));
        if !read.is_empty() || !inactive.is_empty() {
            let read_names = qualified(vg, read);
            let mut all = read_names.clone();
            all.extend(qualified(vg, &inactive));
            let command = if read.is_empty() {
                self.command("lvchange")
            } else {
                self.read_only_command("lvchange", &read_names)
            };
            self.runner.run(&command.arg("-ay").args(all))?;
        }
        if !active.is_empty() {
            self.runner.run(&self.command("lvchange").arg("--refresh").args(qualified(vg, &active)))?;
        }
        Ok(())
    }

    /// Deactivates every LV of `lvs` in `vg` on this host with one
    /// `lvchange -an`; nothing to do for an empty list.
    ///
    /// # Errors
    /// [`LvmError`] if a name is unsafe or `lvchange` fails.
    pub fn lvs_deactivate(&self, vg: &VgName, lvs: &[LvName]) -> Result<(), LvmError> {
        if lvs.is_empty() {
            return Ok(());
        }
        self.runner.run(&self.command("lvchange").arg("-an").args(qualified(vg, lvs)))?;
        Ok(())
    }

    /// Activates every LV of `lvs` in `vg` read-only on this host with one
    /// `lvchange` (and one refresh), or reloads them read-only if they are
    /// active already: a chain's parents, a snapshot's frozen node, which
    /// nothing may write while a child is open on them. Nothing to do for
    /// an empty list.
    ///
    /// # Errors
    /// [`LvmError`] if a name is unsafe or `lvchange` fails.
    pub fn lvs_activate_read_only(&self, vg: &VgName, lvs: &[LvName]) -> Result<(), LvmError> {
        if lvs.is_empty() {
            return Ok(());
        }
        let names = qualified(vg, lvs);
        self.runner.run(&self.read_only_command("lvchange", &names).arg("-ay").args(names.clone()))?;
        self.runner.run(&self.read_only_command("lvchange", &names).arg("--refresh").args(names))?;
        Ok(())
    }

    /// Removes `vg` and the PV label, leaving the device clean.
    ///
    /// # Errors
    /// [`LvmError`] if `vgremove` or `pvremove` fails.
    pub fn remove_vg_and_pv(&self, vg: &VgName) -> Result<(), LvmError> {
        self.runner.run(&self.command("vgremove").args(["-f", vg.as_str()]))?;
        self.pvremove()
    }

    /// Removes the PV label from the device (no VG on it any more).
    ///
    /// # Errors
    /// [`LvmError`] if `pvremove` fails.
    pub fn pvremove(&self) -> Result<(), LvmError> {
        self.runner.run(&self.command("pvremove").args(["-y", &self.device]))?;
        Ok(())
    }
}

/// How lvm2 names LV `lv` of `vg` on its command line: `vg/lv`.
fn qualified_name(vg: &VgName, lv: &LvName) -> String {
    format!("{vg}/{lv}")
}

/// [`qualified_name`] of every LV of `lvs`: the arguments of one `lvchange`
/// over several LVs.
fn qualified(vg: &VgName, lvs: &[LvName]) -> Vec<String> {
    lvs.iter().map(|lv| qualified_name(vg, lv)).collect()
}

/// Adds `--deltag`/`--addtag` arguments, checking every tag.
fn with_tag_changes(mut command: Command, remove: &[String], add: &[String]) -> Result<Command, LvmError> {
    for (option, tags) in [("--deltag", remove), ("--addtag", add)] {
        for tag in tags {
            check_tag(tag)?;
            command = command.arg(option).arg(tag);
        }
    }
    Ok(command)
}

/// Whole 512-byte sectors holding `bytes` (lvm2 takes byte sizes only in
/// sectors; it then rounds up to whole extents itself).
fn sectors_up(bytes: u64) -> u64 {
    bytes.div_ceil(512)
}

fn check_tag(tag: &str) -> Result<(), LvmError> {
    if lvm_safe(tag, "/=!:&#") && !tag.starts_with('-') && tag.len() <= 1024 {
        Ok(())
    } else {
        Err(LvmError::BadName { what: "tag", value: tag.to_owned() })
    }
}

/// `{"report": [{"<section>": [rows]}]}`, as lvm2 2.02 and 2.03 print it.
fn parse_report<T: for<'de> Deserialize<'de>>(text: &str, section: &str) -> Result<Vec<T>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let rows = value
        .get("report")
        .and_then(|r| r.as_array())
        .and_then(|r| r.iter().find_map(|part| part.get(section)))
        .ok_or_else(|| format!("no \"{section}\" section"))?;
    serde_json::from_value(rows.clone()).map_err(|e| format!("unexpected {section} row: {e}"))
}

/// `{"report": [{"vg": [rows], "lv": [rows], …}, …]}`, one element per VG
/// (none when the device holds no VG), as `lvm fullreport` prints it.
fn parse_full_report<V: for<'de> Deserialize<'de>, L: for<'de> Deserialize<'de>>(
    text: &str,
) -> Result<(Vec<V>, Vec<L>), String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let parts = value.get("report").and_then(|r| r.as_array()).ok_or("no \"report\" list")?;
    let (mut vgs, mut lvs) = (Vec::new(), Vec::new());
    for part in parts {
        let section = |name: &str| part.get(name).cloned().ok_or_else(|| format!("a VG's report has no \"{name}\""));
        vgs.extend(serde_json::from_value::<Vec<V>>(section("vg")?).map_err(|e| format!("unexpected vg row: {e}"))?);
        lvs.extend(serde_json::from_value::<Vec<L>>(section("lv")?).map_err(|e| format!("unexpected lv row: {e}"))?);
    }
    Ok((vgs, lvs))
}

fn bytes(field: &str, text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| format!("{field} is {text:?}, not a number of bytes"))
}

fn tags(text: &str) -> Vec<String> {
    text.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

#[derive(Debug, Deserialize)]
struct VgRow {
    vg_name: String,
    vg_uuid: String,
    vg_size: String,
    vg_free: String,
    vg_extent_size: String,
    vg_tags: String,
}

impl VgRow {
    fn decode(self) -> Result<Vg, String> {
        Ok(Vg {
            size: bytes("vg_size", &self.vg_size)?,
            free: bytes("vg_free", &self.vg_free)?,
            extent_size: bytes("vg_extent_size", &self.vg_extent_size)?,
            tags: tags(&self.vg_tags),
            name: self.vg_name.parse().map_err(|e: BadId| e.to_string())?,
            uuid: self.vg_uuid,
        })
    }
}

#[derive(Debug, Deserialize)]
struct PvRow {
    pv_uuid: String,
    vg_name: String,
    pe_start: String,
}

impl PvRow {
    fn decode(self) -> Result<Pv, String> {
        Ok(Pv { pe_start: bytes("pe_start", &self.pe_start)?, uuid: self.pv_uuid, vg: self.vg_name })
    }
}

#[derive(Debug, Deserialize)]
struct LvRow {
    lv_name: String,
    vg_name: String,
    lv_size: String,
    lv_tags: String,
    lv_active: String,
}

impl LvRow {
    fn decode(self) -> Result<Lv, String> {
        Ok(Lv {
            size: bytes("lv_size", &self.lv_size)?,
            tags: tags(&self.lv_tags),
            active: self.lv_active == "active",
            name: self.lv_name.parse().map_err(|e: BadId| e.to_string())?,
            vg: self.vg_name.parse().map_err(|e: BadId| e.to_string())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{parse_report, Lv, LvName, Lvm, LvmError, VgRow};
    use crate::cmd::FakeRunner;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/lvm/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn one_full_report_gives_the_vgs_and_their_lvs() {
        // Captured from lvm2 2.03.16 with the command `vgs_and_lvs` runs (an SR's VG, no LV yet).
        let runner = FakeRunner::new()
            .then_stdout(&fixture("2.03.16/fullreport-empty-vg.json"))
            .then_stdout(r#"  {"report": [  ]  }"#);
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme0n1"), false).unwrap();
        let (vgs, lvs) = lvm.vgs_and_lvs().unwrap();
        assert_eq!(vgs.len(), 1);
        assert_eq!((vgs[0].size, vgs[0].free, vgs[0].extent_size), (62_914_560, 62_914_560, 4_194_304));
        assert!(lvs.is_empty());
        let shown = &runner.calls()[0].shown;
        assert!(shown.starts_with("lvm fullreport --config ") && shown.contains("--configreport lv -o"), "{shown}");
        // A device that holds no VG: nothing, not an error.
        assert_eq!(lvm.vgs_and_lvs().unwrap(), (Vec::new(), Vec::new()));
        let (vgs, lvs) = super::parse_full_report::<serde_json::Value, serde_json::Value>(
            r#"{"report": [{"vg": [{"a": 1}], "lv": [{"b": 1}, {"b": 2}]}, {"vg": [{"a": 2}], "lv": []}]}"#,
        )
        .unwrap();
        assert_eq!((vgs.len(), lvs.len()), (2, 2), "every VG's part is read");
        assert!(
            super::parse_full_report::<serde_json::Value, serde_json::Value>(r#"{"report": [{"vg": []}]}"#).is_err()
        );
    }

    #[test]
    fn reports_of_lvm2_2_03_decode() {
        let runner =
            FakeRunner::new().then_stdout(&fixture("2.03.16/vgs.json")).then_stdout(&fixture("2.03.16/lvs.json"));
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme0n1"), true).unwrap();
        let vgs = lvm.vgs().unwrap();
        assert_eq!(vgs.len(), 1);
        assert_eq!((vgs[0].size, vgs[0].free, vgs[0].extent_size), (62_914_560, 41_943_040, 4_194_304));
        assert_eq!(vgs[0].tags, ["nvmetcp.uuid.3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11", "nvmetcp_sr"]);
        let lvs = lvm.lvs(&"nvmetcp_3f1c6d0e".into()).unwrap();
        assert_eq!(
            lvs.iter().map(|l| (l.name.as_str(), l.size, l.active)).collect::<Vec<_>>(),
            [("vol-1", 8_388_608, true), ("vol-2", 12_582_912, false)]
        );
        let calls = runner.calls();
        assert!(
            calls[0].shown.starts_with("lvm vgs --config \"devices { filter = [ \\\"a|^/dev/nvme0n1$|\\\""),
            "{}",
            calls[0].shown
        );
        assert!(calls[0].shown.contains("metadata_read_only = 0"));
        assert!(calls[0].shown.contains(
            "--reportformat json --units b --nosuffix -o vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_tags"
        ));
    }

    #[test]
    fn reports_of_lvm2_2_02_180_decode() {
        let runner = FakeRunner::new()
            .then_stdout(&fixture("2.02.180/vgs.json"))
            .then_stdout(&fixture("2.02.180/lvs.json"))
            .then_stdout(&fixture("2.02.180/vgs-none.json"));
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme0n1"), false).unwrap();
        let vgs = lvm.vgs().unwrap();
        assert_eq!((vgs[0].size, vgs[0].free, vgs[0].extent_size), (62_914_560, 54_525_952, 4_194_304));
        assert!(vgs[0].tags.contains(&"nvmetcp.name=66617374".to_owned()), "'=' in tags survives 2.02");
        let lvs = lvm.lvs(&"nvmetcp_3f1c6d0e8a8f4e0a9b5e2d7c1f0a9e11".into()).unwrap();
        assert_eq!((lvs[0].name.as_str(), lvs[0].size, lvs[0].active), ("vol-1", 8_388_608, true));
        assert!(lvm.vgs().unwrap().is_empty());
        assert!(fixture("2.02.180/readonly-write.txt").contains("prohibited while global/metadata_read_only is set"));
    }

    #[test]
    fn a_chain_is_activated_with_one_lvchange_and_only_what_was_active_is_refreshed() {
        let runner = FakeRunner::new().then_stdout("").then_stdout("").then_stdout("").then_stdout("");
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme0n1"), true).unwrap();
        let chain: [LvName; 3] = ["node-b".into(), "node-c".into(), "vol-a".into()];
        let vg = "vg1".into();
        let lv = |name: &str, active: bool| Lv {
            name: name.into(),
            vg: "vg1".into(),
            size: 4 << 20,
            tags: Vec::new(),
            active,
        };
        // node-b is not in the report (just created): inactive.
        lvm.lvs_activate(&vg, &chain, &[lv("node-c", false), lv("vol-a", false)]).unwrap();
        lvm.lvs_activate(&vg, &chain[1..], &[lv("node-c", true), lv("vol-a", false)]).unwrap();
        lvm.lvs_deactivate(&vg, &chain).unwrap();
        lvm.lvs_activate(&vg, &[], &[]).unwrap();
        lvm.lvs_deactivate(&vg, &[]).unwrap();
        let shown: Vec<String> = runner.calls().into_iter().map(|c| c.shown).collect();
        assert_eq!(shown.len(), 4, "{shown:?}");
        assert!(
            shown[0].starts_with("lvm lvchange") && shown[0].ends_with(" -ay vg1/node-b vg1/node-c vg1/vol-a"),
            "{}",
            shown[0]
        );
        assert!(shown[1].ends_with(" -ay vg1/vol-a"), "{}", shown[1]);
        assert!(shown[2].ends_with(" --refresh vg1/node-c"), "{}", shown[2]);
        assert!(shown[3].ends_with(" -an vg1/node-b vg1/node-c vg1/vol-a"), "{}", shown[3]);
        assert!("a b".parse::<LvName>().is_err(), "names are checked by their one parser");
    }

    #[test]
    fn one_volume_is_looked_up_by_selection() {
        let runner = FakeRunner::new()
            .then_stdout(&fixture("2.02.180/lvs.json"))
            .then_stdout(&fixture("2.02.180/vgs-none.json").replace("\"vg\"", "\"lv\""));
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme0n1"), false).unwrap();
        let vg = "nvmetcp_3f1c6d0e8a8f4e0a9b5e2d7c1f0a9e11";
        assert_eq!(lvm.lv(&vg.into(), &"vol-1".into()).unwrap().map(|lv| lv.size), Some(8_388_608));
        assert_eq!(lvm.lv(&vg.into(), &"vol-2".into()).unwrap(), None);
        assert!(
            runner.calls()[0].shown.ends_with(&format!("--select lv_name=\"vol-1\" {vg}")),
            "{}",
            runner.calls()[0].shown
        );
    }

    #[test]
    fn slaves_never_write_metadata_and_names_are_checked() {
        let runner = FakeRunner::new().then_stdout("");
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme1n2"), false).unwrap();
        lvm.deactivate(&"nvmetcp_x".into()).unwrap();
        assert!(runner.calls()[0].shown.contains("metadata_read_only = 1"));
        assert!("bad name".parse::<crate::ids::VgName>().is_err(), "the one name parser refuses it");
        assert!(matches!(lvm.vgcreate(&"vg".into(), &["tag,other".into()]), Err(LvmError::BadName { .. })));
        assert!(Lvm::new(&runner, Path::new("/dev/nvme0n1$|\", \"a|.*"), true).is_err(), "no filter injection");
        let err = parse_report::<VgRow>("{\"report\":[{\"vg\":[{\"vg_name\":1}]}]}", "vg").unwrap_err();
        assert!(err.contains("unexpected vg row"), "{err}");
    }

    #[test]
    fn parents_are_activated_and_refreshed_read_only_without_writing_metadata() {
        let runner = FakeRunner::new().then_stdout("").then_stdout("");
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme1n2"), false).unwrap();
        lvm.lvs_activate_read_only(&"nvmetcp_x".parse().unwrap(), &["node-1".parse().unwrap()]).unwrap();
        let calls = runner.calls();
        assert_eq!(calls.len(), 2);
        for (call, action) in calls.iter().zip(["-ay", "--refresh"]) {
            assert!(call.shown.contains("metadata_read_only = 1"), "{}", call.shown);
            assert!(
                call.shown.contains("activation { read_only_volume_list = [ \\\"nvmetcp_x/node-1\\\" ] }"),
                "{}",
                call.shown
            );
            assert!(call.shown.ends_with(&format!("{action} nvmetcp_x/node-1")), "{}", call.shown);
        }
        lvm.lvs_activate_read_only(&"vg".parse().unwrap(), &[]).unwrap();
        assert_eq!(runner.calls().len(), 2, "an empty list runs nothing");
    }

    /// Issue 18: the chain `qemu-img` only reads is activated read-only in
    /// the same `lvchange -ay` as the image it writes, which is not listed.
    #[test]
    fn a_backing_chain_is_activated_read_only_with_the_written_image_in_one_call() {
        let runner = FakeRunner::new().then_stdout("").then_stdout("").then_stdout("");
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme0n1"), true).unwrap();
        let vg: crate::ids::VgName = "vg1".into();
        let lv = |name: &str| Lv { name: name.into(), vg: "vg1".into(), size: 4 << 20, tags: Vec::new(), active: true };
        let (read, written): ([LvName; 2], [LvName; 2]) =
            (["vol-a".into(), "node-b".into()], ["node-c".into(), "node-d".into()]);
        lvm.lvs_activate_reading(&vg, &read, &written, &[lv("node-d")]).unwrap();
        lvm.lvs_activate_reading(&vg, &[], &written[..1], &[]).unwrap();
        lvm.lvs_activate_reading(&vg, &[], &[], &[]).unwrap();
        let shown: Vec<String> = runner.calls().into_iter().map(|c| c.shown).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(
            shown[0].contains("read_only_volume_list = [ \\\"vg1/vol-a\\\", \\\"vg1/node-b\\\" ]")
                && shown[0].ends_with(" -ay vg1/vol-a vg1/node-b vg1/node-c"),
            "{}",
            shown[0]
        );
        assert!(
            shown[1].ends_with(" --refresh vg1/node-d") && !shown[1].contains("read_only_volume_list"),
            "{}",
            shown[1]
        );
        assert!(shown[2].ends_with(" -ay vg1/node-c") && !shown[2].contains("read_only_volume_list"), "{}", shown[2]);
    }

    #[test]
    fn every_command_bounds_the_archive_and_discards_what_it_frees() {
        let runner = FakeRunner::new().then_stdout("");
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme1n2"), true).unwrap();
        lvm.lvremove(&"nvmetcp_x".into(), &"vol-1".into()).unwrap();
        let shown = &runner.calls()[0].shown;
        assert!(shown.contains("issue_discards = 1"), "{shown}");
        assert!(shown.contains("backup { backup = 1 archive = 1 retain_min = 10 retain_days = 0 }"), "{shown}");
    }

    #[test]
    fn the_pv_of_an_sr_has_a_uuid_derived_from_the_sr() {
        use super::pv_uuid_for;
        assert_eq!(
            pv_uuid_for("3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11").as_deref(),
            Some("3f1c6d-0e8a-8f4e-0a9b-5e2d-7c1f-0a9e11")
        );
        assert_eq!(pv_uuid_for("not-a-uuid"), None);
        let runner = FakeRunner::new()
            .then_stdout("")
            .then_stdout(r#"{"report":[{"pv":[{"pv_uuid":"3f1c6d-0e8a-8f4e-0a9b-5e2d-7c1f-0a9e11", "vg_name":"", "pe_start":"9437184"}]}]}"#);
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme0n1"), true).unwrap();
        lvm.pvcreate(false, "3f1c6d-0e8a-8f4e-0a9b-5e2d-7c1f-0a9e11").unwrap();
        assert!(runner.calls()[0].shown.contains("--uuid 3f1c6d-0e8a-8f4e-0a9b-5e2d-7c1f-0a9e11 --norestorefile"));
        let pv = lvm.pv().unwrap().unwrap();
        assert_eq!((pv.vg.as_str(), pv.pe_start), ("", 9_437_184));
    }

    #[test]
    fn allocated_sizes_round_to_sectors_then_extents() {
        use super::allocated_size;
        let extent = 4 << 20;
        assert_eq!(allocated_size(1, extent), Some(extent));
        assert_eq!(allocated_size(extent, extent), Some(extent));
        assert_eq!(allocated_size(extent + 1, extent), Some(2 * extent));
        assert_eq!(allocated_size(10 << 30, extent), Some(10 << 30));
        assert_eq!(allocated_size(1, 0), None);
    }
}
