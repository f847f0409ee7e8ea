//! One VG held in memory, for tests of the snapshot room and of the handlers
//! that reach it: LVM and `qemu-img` answered as the argv `Lvm` and
//! `QemuImg` build asks them (`vgs`, `lvs`, `lvm fullreport`, `lvcreate`,
//! `lvchange`, `lvremove`, `lvreduce`/`lvextend`; `qemu-img measure`,
//! `create`, `check`, `info`, `resize`, `commit`, `rebase`), from its own state:
//! each qcow2 image's end, virtual size and backing file, and a commit
//! into a base smaller than its top fails, as it does on an LV. Which
//! active LVs are mapped read-only follows `activation/read_only_volume_list`
//! in each command's `--config`. Every command line is logged, so a test
//! counts what a call runs, and one command can be made to fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::cmd::{args_of, CmdError, Command, Output, Program, Runner};

/// Bytes in a MiB.
pub const MIB: u64 = 1 << 20;
/// The VG's extent size.
pub const EXTENT: u64 = 4 * MIB;
/// The VG's size.
pub const VG_SIZE: u64 = 1024 * MIB;
/// Where a fresh qcow2 header ends.
pub const HEADER_END: u64 = 320 << 10;

/// One LV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLv {
    /// Its size in bytes.
    pub size: u64,
    /// Its tags.
    pub tags: Vec<String>,
    /// Whether it is active.
    pub active: bool,
}

/// What the fake VG holds and what was asked of it.
#[derive(Default)]
pub struct State {
    /// The VG's name.
    pub vg: String,
    /// The VG's tags.
    pub vg_tags: Vec<String>,
    /// Its LVs by name.
    pub lvs: BTreeMap<String, FakeLv>,
    /// Where each qcow2 image ends, by LV.
    pub ends: BTreeMap<String, u64>,
    /// Each qcow2 image's virtual size, by LV.
    pub virtual_sizes: BTreeMap<String, u64>,
    /// Each qcow2 image's backing LV, by LV.
    pub backing: BTreeMap<String, String>,
    /// The active LVs whose mapping was last loaded read-only.
    pub read_only: BTreeSet<String>,
    /// Every command line, without LVM's `--config`.
    pub log: Vec<String>,
    /// The command (0-based, counted in `log`) that fails.
    pub fail_at: Option<usize>,
    /// Every LV whose mapping was loaded read-write (activated, refreshed or
    /// resized with no `read_only_volume_list` naming it), in order.
    pub loaded_read_write: Vec<String>,
}

/// LVM and `qemu-img` on one VG in memory.
#[derive(Default)]
pub struct FakeVg(Mutex<State>);

fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn bytes(size: &str) -> u64 {
    size.trim_end_matches('b').parse().unwrap_or_else(|_| panic!("{size:?} is no size"))
}

fn lv_of(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

impl State {
    /// The virtual size of image `lv`: its qcow2 header's, or a raw LV's size.
    pub fn virtual_size(&self, lv: &str) -> u64 {
        self.virtual_sizes.get(lv).copied().unwrap_or_else(|| self.lvs.get(lv).map_or(0, |l| l.size))
    }

    fn used(&self) -> u64 {
        self.lvs.values().map(|l| l.size).sum()
    }

    fn operands(&self, args: &[String]) -> Vec<String> {
        let prefix = format!("{}/", self.vg);
        args.iter().filter_map(|a| a.strip_prefix(&prefix).map(str::to_owned)).collect()
    }

    fn vg_row(&self) -> String {
        format!(
            r#"{{"vg_name":"{}", "vg_uuid":"u", "vg_size":"{VG_SIZE}", "vg_free":"{}", "vg_extent_size":"{EXTENT}", "vg_tags":"{}"}}"#,
            self.vg,
            VG_SIZE - self.used(),
            self.vg_tags.join(",")
        )
    }

    fn lv_rows(&self, only: Option<&str>) -> String {
        let rows: Vec<String> = self
            .lvs
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
            .map(|(name, lv)| {
                format!(
                    r#"{{"lv_name":"{name}", "vg_name":"{}", "lv_size":"{}", "lv_tags":"{}", "lv_active":"{}"}}"#,
                    self.vg,
                    lv.size,
                    lv.tags.join(","),
                    if lv.active { "active" } else { "" }
                )
            })
            .collect();
        rows.join(",")
    }

    /// Whether `config` (a command's `--config`) lists `lv` of this VG in
    /// `activation/read_only_volume_list`.
    fn listed_read_only(&self, config: Option<&str>, lv: &str) -> bool {
        config.and_then(|c| c.split("read_only_volume_list").nth(1)).is_some_and(|list| {
            let list = list.split(']').next().unwrap_or_default();
            list.contains(&format!("\"{}/{lv}\"", self.vg))
        })
    }

    /// `lv`'s mapping loaded (activated or refreshed) under `config`.
    fn loaded(&mut self, config: Option<&str>, lv: &str) {
        if self.listed_read_only(config, lv) {
            self.read_only.insert(lv.to_owned());
        } else {
            self.read_only.remove(lv);
            self.loaded_read_write.push(lv.to_owned());
        }
    }

    fn lvm(&mut self, args: &[String], config: Option<&str>) -> Result<String, String> {
        let up = |b: u64| b.div_ceil(EXTENT) * EXTENT;
        match args[0].as_str() {
            "vgs" => Ok(format!(r#"{{"report": [{{"vg": [{}]}}]}}"#, self.vg_row())),
            "fullreport" => Ok(format!(
                r#"{{"report": [{{"vg": [{}], "pv": [], "lv": [{}], "pvseg": [], "seg": []}}]}}"#,
                self.vg_row(),
                self.lv_rows(None)
            )),
            "lvs" => {
                let only =
                    value(args, "--select").map(|s| s.trim_start_matches("lv_name=").trim_matches('"').to_owned());
                Ok(format!(r#"{{"report": [{{"lv": [{}]}}]}}"#, self.lv_rows(only.as_deref())))
            }
            "lvcreate" => {
                let name = value(args, "-n").ok_or("lvcreate without -n")?.to_owned();
                if self.lvs.contains_key(&name) {
                    return Err(format!("{name} exists"));
                }
                let tags = args.windows(2).filter(|w| w[0] == "--addtag").map(|w| w[1].clone()).collect();
                let size = up(bytes(value(args, "-L").ok_or("lvcreate without -L")?));
                self.lvs.insert(name, FakeLv { size, tags, active: false });
                Ok(String::new())
            }
            "lvchange" => {
                for name in self.operands(args) {
                    let lv = self.lvs.get_mut(&name).ok_or(format!("no LV {name}"))?;
                    let was_active = lv.active;
                    if args.iter().any(|a| a == "-ay") {
                        lv.active = true;
                    }
                    if args.iter().any(|a| a == "-an") {
                        lv.active = false;
                    }
                    for pair in args.windows(2) {
                        match pair[0].as_str() {
                            "--deltag" => lv.tags.retain(|t| *t != pair[1]),
                            "--addtag" if !lv.tags.contains(&pair[1]) => lv.tags.push(pair[1].clone()),
                            _ => {}
                        }
                    }
                    let active = lv.active;
                    // `-ay` loads an inactive LV's mapping, `--refresh` reloads an active one's.
                    let loads = args.iter().any(|a| if was_active { a == "--refresh" } else { a == "-ay" });
                    if !active {
                        self.read_only.remove(&name);
                    } else if loads {
                        self.loaded(config, &name);
                    }
                }
                Ok(String::new())
            }
            "lvremove" => {
                for name in self.operands(args) {
                    self.lvs.remove(&name).ok_or(format!("no LV {name}"))?;
                    self.read_only.remove(&name);
                    self.ends.remove(&name);
                    self.virtual_sizes.remove(&name);
                    self.backing.remove(&name);
                }
                Ok(String::new())
            }
            "lvreduce" | "lvextend" => {
                let size = up(bytes(value(args, "-L").ok_or("no -L")?));
                for name in self.operands(args) {
                    let lv = self.lvs.get_mut(&name).ok_or(format!("no LV {name}"))?;
                    let grows = size > lv.size;
                    if grows != (args[0] == "lvextend") {
                        return Err(format!("{} of {name} from {} to {size}", args[0], lv.size));
                    }
                    lv.size = size;
                    let active = lv.active;
                    if active {
                        // A resize reloads the mapping, under this command's list.
                        self.loaded(config, &name);
                    }
                }
                Ok(String::new())
            }
            other => Err(format!("lvm {other} is not faked")),
        }
    }

    fn qemu_img(&mut self, args: &[String]) -> Result<String, String> {
        let image = args.last().cloned().unwrap_or_default();
        match args[0].as_str() {
            "measure" => {
                let size = bytes(value(args, "--size").ok_or("measure without --size")?);
                Ok(format!(r#"{{"required": 327680, "fully-allocated": {}}}"#, size + size / 64 + MIB))
            }
            "create" => {
                let child = lv_of(&args[args.len() - 2]);
                let parent = lv_of(value(args, "-b").ok_or("create without -b")?);
                self.ends.insert(child.clone(), HEADER_END);
                self.virtual_sizes.insert(child.clone(), bytes(&image));
                self.backing.insert(child, parent);
                Ok(String::new())
            }
            "check" => {
                let end = self.ends.get(&lv_of(&image)).ok_or(format!("{image} is no qcow2"))?;
                Ok(format!(r#"{{"image-end-offset": {end}, "check-errors": 0}}"#))
            }
            "info" => {
                let lv = lv_of(&image);
                let size = self.virtual_size(&lv);
                Ok(self.backing.get(&lv).map_or_else(
                    || format!(r#"{{"format": "qcow2", "virtual-size": {size}}}"#),
                    |b| {
                        format!(
                            r#"{{"format": "qcow2", "virtual-size": {size}, "backing-filename": "/dev/{}/{b}"}}"#,
                            self.vg
                        )
                    },
                ))
            }
            "resize" => {
                let lv = lv_of(&args[args.len() - 2]);
                let size = self.virtual_sizes.get_mut(&lv).ok_or(format!("{lv} is no qcow2"))?;
                *size = bytes(&image);
                Ok(String::new())
            }
            "commit" => {
                let top = lv_of(&image);
                let base = self.backing.get(&top).ok_or(format!("{top} has no backing file"))?;
                let base_size = self.virtual_size(base);
                let top_size = self.virtual_size(&top);
                if top_size > base_size {
                    return Err(format!("cannot grow the base {base} ({base_size} bytes) to {top_size}"));
                }
                Ok(String::new())
            }
            "rebase" => {
                let parent = lv_of(value(args, "-b").ok_or("rebase without -b")?);
                self.backing.insert(lv_of(&image), parent);
                Ok(String::new())
            }
            other => Err(format!("qemu-img {other} is not faked")),
        }
    }
}

impl FakeVg {
    /// An empty VG `vg` tagged `vg_tags`.
    #[must_use]
    pub fn named(vg: &str, vg_tags: &[&str]) -> Self {
        let fake = Self::default();
        {
            let mut state = fake.state();
            state.vg = vg.to_owned();
            state.vg_tags = vg_tags.iter().map(|t| (*t).to_owned()).collect();
        }
        fake
    }

    /// Adds `names`, plain volumes of 64 MiB from before snapshots, marked
    /// with `volume_tag`.
    #[must_use]
    pub fn with_volumes(self, volume_tag: &str, names: &[&str]) -> Self {
        for name in names {
            let tags = vec![volume_tag.to_owned(), format!("u={name}")];
            self.state().lvs.insert((*name).to_owned(), FakeLv { size: 64 * MIB, tags, active: false });
        }
        self
    }

    /// Its state, to read or change.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every LV and its tags (sorted): what replay must restore or finish.
    #[must_use]
    pub fn shape(&self) -> BTreeMap<String, Vec<String>> {
        let state = self.state();
        let sorted = |tags: &[String]| {
            let mut tags = tags.to_vec();
            tags.sort();
            tags
        };
        state.lvs.iter().map(|(name, lv)| (name.clone(), sorted(&lv.tags))).collect()
    }

    /// The size of `lv`.
    #[must_use]
    pub fn size(&self, lv: &str) -> u64 {
        self.state().lvs[lv].size
    }

    /// The bytes the LVs use.
    #[must_use]
    pub fn used(&self) -> u64 {
        self.state().used()
    }

    /// Whether any LV carries a journal entry.
    #[must_use]
    pub fn journalled(&self) -> bool {
        self.state().lvs.values().any(|lv| lv.tags.iter().any(|t| t.starts_with("nj=")))
    }

    /// How many commands ran so far.
    #[must_use]
    pub fn commands(&self) -> usize {
        self.state().log.len()
    }

    /// The command lines from the `from`th on that start with `start`.
    #[must_use]
    pub fn ran(&self, from: usize, start: &str) -> Vec<String> {
        self.state().log[from..].iter().filter(|l| l.starts_with(start)).cloned().collect()
    }

    /// The LVM subcommands (`lvs`, `lvchange -ay`, …: the subcommand and,
    /// for `lvchange`, its first option) run from the `from`th command on.
    #[must_use]
    pub fn lvm_calls(&self, from: usize) -> Vec<String> {
        self.ran(from, "lvm ")
            .iter()
            .map(|line| {
                let words: Vec<&str> = line.split_whitespace().skip(1).take(2).collect();
                match words.as_slice() {
                    ["lvchange", option] if option.starts_with('-') => format!("lvchange {option}"),
                    [subcommand, ..] => (*subcommand).to_owned(),
                    [] => String::new(),
                }
            })
            .collect()
    }
}

impl Runner for FakeVg {
    fn resolve(&self, program: Program) -> Result<PathBuf, CmdError> {
        Ok(Path::new("/usr/sbin").join(program.name()))
    }

    fn start_detached(&self, command: &Command) -> Result<u32, CmdError> {
        panic!("nothing is started in the background here: {command}")
    }

    fn run(&self, command: &Command) -> Result<Output, CmdError> {
        let mut args = args_of(command);
        let config = args.iter().position(|a| a == "--config").and_then(|at| args.drain(at..=at + 1).nth(1));
        let line = format!("{} {}", command.program().name(), args.join(" "));
        let mut state = self.state();
        state.log.push(line.clone());
        let failed = |why: String| CmdError::Failed {
            command: line.clone(),
            status: "exit status 5".to_owned(),
            code: Some(5),
            stdout: String::new(),
            stderr: why,
        };
        if state.fail_at == Some(state.log.len() - 1) {
            return Err(failed("injected failure".to_owned()));
        }
        let answer = match command.program() {
            Program::Lvm => state.lvm(&args, config.as_deref()),
            Program::QemuImg => state.qemu_img(&args),
            other => Err(format!("{} is not faked", other.name())),
        };
        answer.map(|stdout| Output { stdout, stderr: String::new() }).map_err(failed)
    }
}

/// Shared, so a test can read the log of the VG it handed to a `Context`.
impl Runner for Arc<FakeVg> {
    fn resolve(&self, program: Program) -> Result<PathBuf, CmdError> {
        self.as_ref().resolve(program)
    }

    fn run(&self, command: &Command) -> Result<Output, CmdError> {
        self.as_ref().run(command)
    }

    fn start_detached(&self, command: &Command) -> Result<u32, CmdError> {
        self.as_ref().start_detached(command)
    }
}
