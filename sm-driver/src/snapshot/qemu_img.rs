//! `qemu-img`, the one tool that writes qcow2 layers from the master (never
//! on an image open elsewhere: an open chain is changed only through its
//! [`crate::engine`]).
//!
//! Every call asks for JSON where the tool can give it (`--output=json` of
//! `measure`, `check` and `info`) and follows XCP-ng's own qcow2 code on LVM
//! (`xcp-ng/sm` `drivers/qcow2util.py`: `create -b parent -F raw|qcow2`,
//! `commit -d`, `rebase -u`), with 64 KiB clusters as there.

use serde::Deserialize;

use crate::cmd::{CmdError, Command, Program, Runner};
use crate::engine::Image;

/// qcow2 cluster size of every layer (XCP-ng's default).
pub const CLUSTER_SIZE: u64 = 64 * 1024;

/// Why a `qemu-img` step failed.
#[derive(Debug, thiserror::Error)]
pub enum QemuImgError {
    /// The tool failed.
    #[error("qemu-img: {doing} failed: {source}")]
    Failed {
        /// What it was doing.
        doing: String,
        /// The command's failure.
        #[source]
        source: Box<CmdError>,
    },
    /// Its JSON was not what it documents.
    #[error("qemu-img: {doing}: unreadable answer {answer:?}")]
    Unreadable {
        /// What it was doing.
        doing: String,
        /// The answer (shortened).
        answer: String,
    },
}

/// Runs `qemu-img` with `runner`.
pub struct QemuImg<'a> {
    runner: &'a dyn Runner,
}

#[derive(Deserialize)]
struct Measure {
    #[serde(rename = "fully-allocated")]
    fully_allocated: u64,
}

#[derive(Deserialize)]
struct Check {
    #[serde(rename = "image-end-offset")]
    image_end_offset: u64,
}

#[derive(Deserialize)]
struct Info {
    #[serde(rename = "backing-filename")]
    backing_filename: Option<String>,
}

#[derive(Deserialize)]
struct Size {
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
}

impl<'a> QemuImg<'a> {
    /// `qemu-img` through `runner`.
    #[must_use]
    pub fn new(runner: &'a dyn Runner) -> Self {
        Self { runner }
    }

    fn run(&self, doing: &str, args: &[&str]) -> Result<String, QemuImgError> {
        let command = Command::new(Program::QemuImg).args(args.iter().copied());
        self.runner
            .run(&command)
            .map(|o| o.stdout)
            .map_err(|source| QemuImgError::Failed { doing: doing.to_owned(), source: Box::new(source) })
    }

    fn json<T: for<'de> Deserialize<'de>>(doing: &str, text: &str) -> Result<T, QemuImgError> {
        serde_json::from_str(text)
            .map_err(|_| QemuImgError::Unreadable { doing: doing.to_owned(), answer: text.chars().take(200).collect() })
    }

    /// Bytes a fully allocated qcow2 of `virtual_size` needs: what a leaf's
    /// LV is sized for, so writes can never run out of room.
    ///
    /// # Errors
    /// [`QemuImgError`].
    pub fn leaf_bytes(&self, virtual_size: u64) -> Result<u64, QemuImgError> {
        let doing = "measuring a qcow2 leaf";
        let size = virtual_size.to_string();
        let cluster = format!("cluster_size={CLUSTER_SIZE}");
        let out = self.run(doing, &["measure", "-O", "qcow2", "--size", &size, "-o", &cluster, "--output=json"])?;
        Ok(Self::json::<Measure>(doing, &out)?.fully_allocated)
    }

    /// Writes a qcow2 header on `child` (an LV just created) backed by `parent`.
    ///
    /// # Errors
    /// [`QemuImgError`].
    pub fn create_layer(&self, child: &Image, parent: &Image, virtual_size: u64) -> Result<(), QemuImgError> {
        let cluster = format!("cluster_size={CLUSTER_SIZE}");
        let size = virtual_size.to_string();
        self.run(
            "writing a qcow2 layer",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &cluster,
                "-b",
                parent.path_str(),
                "-F",
                parent.format().qemu_name(),
                child.path_str(),
                &size,
            ],
        )?;
        Ok(())
    }

    /// Where the image's data ends: a read-only layer's LV can shrink to it.
    ///
    /// # Errors
    /// [`QemuImgError`].
    pub fn image_end(&self, image: &Image) -> Result<u64, QemuImgError> {
        let doing = "checking a qcow2 layer";
        let out = self.run(doing, &["check", "-f", "qcow2", "--output=json", image.path_str()])?;
        Ok(Self::json::<Check>(doing, &out)?.image_end_offset)
    }

    /// The backing file named in a layer's header, read with `-U` (the
    /// image may be open in an engine: only its header is read).
    ///
    /// # Errors
    /// [`QemuImgError`].
    pub fn backing_of(&self, image: &Image) -> Result<Option<String>, QemuImgError> {
        let doing = "reading a qcow2 header";
        let out = self.run(doing, &["info", "-U", "-f", "qcow2", "--output=json", image.path_str()])?;
        Ok(Self::json::<Info>(doing, &out)?.backing_filename)
    }

    /// The virtual size in a layer's header.
    ///
    /// # Errors
    /// [`QemuImgError`].
    pub fn virtual_size(&self, image: &Image) -> Result<u64, QemuImgError> {
        let doing = "reading a qcow2 header";
        let out = self.run(doing, &["info", "-f", "qcow2", "--output=json", image.path_str()])?;
        Ok(Self::json::<Size>(doing, &out)?.virtual_size)
    }

    /// Writes `top`'s data into its backing file (no host has the chain
    /// open): idempotent, so a killed merge is simply run again.
    ///
    /// # Errors
    /// [`QemuImgError`].
    pub fn commit(&self, top: &Image) -> Result<(), QemuImgError> {
        self.run("merging a layer into its parent", &["commit", "-q", "-f", "qcow2", "-d", top.path_str()])?;
        Ok(())
    }

    /// Sets the virtual size of `image`, a qcow2 layer nobody has open, to
    /// `virtual_size` bytes (a grow: its LV holds a fully allocated image
    /// of that size first). Idempotent.
    ///
    /// # Errors
    /// [`QemuImgError`].
    pub fn resize(&self, image: &Image, virtual_size: u64) -> Result<(), QemuImgError> {
        let size = virtual_size.to_string();
        self.run("growing a qcow2 layer", &["resize", "-q", "-f", "qcow2", image.path_str(), &size])?;
        Ok(())
    }

    /// Points `image`'s header at `backing` without copying anything: only
    /// right when `backing` holds what the old backing file showed.
    ///
    /// # Errors
    /// [`QemuImgError`].
    pub fn rebase_unsafe(&self, image: &Image, backing: &Image) -> Result<(), QemuImgError> {
        self.run(
            "relinking a layer to its new parent",
            &[
                "rebase",
                "-u",
                "-f",
                "qcow2",
                "-b",
                backing.path_str(),
                "-F",
                backing.format().qemu_name(),
                image.path_str(),
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::FakeRunner;
    use crate::engine::ImageFormat;

    fn shown(fake: &FakeRunner) -> Vec<String> {
        fake.calls().into_iter().map(|c| c.shown).collect()
    }

    fn raw() -> Image {
        Image::new(ImageFormat::Raw, "/dev/vg/vol-a").unwrap()
    }

    fn layer(n: u32) -> Image {
        Image::new(ImageFormat::Qcow2, format!("/dev/vg/node-{n}")).unwrap()
    }

    #[test]
    fn a_leaf_is_measured_fully_allocated() {
        let fake =
            FakeRunner::new().then_stdout("{\n    \"required\": 393216,\n    \"fully-allocated\": 1074135040\n}\n");
        assert_eq!(QemuImg::new(&fake).leaf_bytes(1 << 30).unwrap(), 1_074_135_040);
        assert_eq!(shown(&fake), ["qemu-img measure -O qcow2 --size 1073741824 -o cluster_size=65536 --output=json"]);
        let fake = FakeRunner::new().then_stdout("not json");
        assert!(matches!(QemuImg::new(&fake).leaf_bytes(1), Err(QemuImgError::Unreadable { .. })));
    }

    #[test]
    fn a_layer_names_its_parent_and_the_parent_format() {
        let fake = FakeRunner::new().then_stdout("").then_stdout("");
        let tool = QemuImg::new(&fake);
        tool.create_layer(&layer(1), &raw(), 1 << 30).unwrap();
        tool.create_layer(&layer(2), &layer(1), 1 << 30).unwrap();
        assert_eq!(
            shown(&fake),
            [
                "qemu-img create -q -f qcow2 -o cluster_size=65536 -b /dev/vg/vol-a -F raw /dev/vg/node-1 1073741824",
                "qemu-img create -q -f qcow2 -o cluster_size=65536 -b /dev/vg/node-1 -F qcow2 /dev/vg/node-2 1073741824",
            ]
        );
    }

    #[test]
    fn image_end_and_backing_come_from_json() {
        let fake = FakeRunner::new()
            .then_stdout("{\"image-end-offset\": 2818048, \"total-clusters\": 16384, \"check-errors\": 0}")
            .then_stdout(
                "{\"virtual-size\": 1073741824, \"backing-filename\": \"/dev/vg/vol-a\", \"format\": \"qcow2\"}",
            )
            .then_stdout("{\"virtual-size\": 1073741824, \"format\": \"qcow2\"}");
        let tool = QemuImg::new(&fake);
        assert_eq!(tool.image_end(&layer(1)).unwrap(), 2_818_048);
        assert_eq!(tool.backing_of(&layer(1)).unwrap().as_deref(), Some("/dev/vg/vol-a"));
        assert_eq!(tool.backing_of(&layer(1)).unwrap(), None);
        assert_eq!(shown(&fake)[0], "qemu-img check -f qcow2 --output=json /dev/vg/node-1");
        assert_eq!(shown(&fake)[1], "qemu-img info -U -f qcow2 --output=json /dev/vg/node-1");
    }

    #[test]
    fn a_layers_virtual_size_is_read_from_its_header() {
        let fake = FakeRunner::new().then_stdout("{\"virtual-size\": 1073741824, \"format\": \"qcow2\"}");
        assert_eq!(QemuImg::new(&fake).virtual_size(&layer(1)).unwrap(), 1 << 30);
        assert_eq!(shown(&fake), ["qemu-img info -f qcow2 --output=json /dev/vg/node-1"]);
    }

    #[test]
    fn a_layer_is_grown_to_a_size_in_bytes() {
        let fake = FakeRunner::new().then_stdout("");
        QemuImg::new(&fake).resize(&layer(1), 1 << 31).unwrap();
        assert_eq!(shown(&fake), ["qemu-img resize -q -f qcow2 /dev/vg/node-1 2147483648"]);
    }

    #[test]
    fn an_offline_merge_commits_then_relinks_the_child_without_copying() {
        let fake = FakeRunner::new().then_stdout("").then_stdout("");
        let tool = QemuImg::new(&fake);
        tool.commit(&layer(1)).unwrap();
        tool.rebase_unsafe(&layer(2), &raw()).unwrap();
        assert_eq!(
            shown(&fake),
            [
                "qemu-img commit -q -f qcow2 -d /dev/vg/node-1",
                "qemu-img rebase -u -f qcow2 -b /dev/vg/vol-a -F raw /dev/vg/node-2",
            ]
        );
    }
}
