//! What a namespace holds, so `SR.create` never overwrites data and
//! `SR.probe` can say what is there.

use std::io::{Read, Seek, SeekFrom};

use crate::cmd::{CmdError, Command, Program};
use crate::context::Context;
use crate::error::CallError;

/// What the device holds, if anything: a signature blkid knows, or data
/// found by [`scan`] anywhere on it.
pub(super) fn existing_data(ctx: &Context, device: &str) -> Result<Option<String>, CallError> {
    match ctx.runner.run(&Command::new(Program::Blkid).args(["-p", "-o", "export", device])) {
        Ok(output) => {
            let found: Vec<&str> = output
                .stdout
                .lines()
                .filter(|l| l.starts_with("TYPE=") || l.starts_with("PTTYPE=") || l.starts_with("LABEL="))
                .collect();
            if !found.is_empty() {
                return Ok(Some(format!("it holds {}", found.join(" "))));
            }
        }
        // blkid exits 2 when it finds nothing.
        Err(CmdError::Failed { code: Some(2), .. }) => {}
        Err(error) => return Err(CallError::Tool(error)),
    }
    let inspect = |source| CallError::Inspect { device: device.to_owned(), source };
    let mut file = std::fs::File::open(ctx.host.path(device)).map_err(inspect)?;
    scan(&mut file).map_err(inspect)
}

/// Bytes read at the start and at the end of the namespace.
const EDGE: u64 = 1 << 20;
/// Samples spread evenly over the rest, and the bytes of each.
const SAMPLES: u64 = 256;
const SAMPLE: u64 = 64 << 10;

/// Looks for non-zero bytes where signatures and data live: the first MiB
/// (LVM, MBR, GPT, most file systems), the last MiB (the backup GPT header
/// and table, md 1.0 and ZFS labels), and [`SAMPLES`] evenly spread samples
/// of the rest (a namespace that held a file system whose start was wiped
/// still has data in its middle). At most about 18 MiB is read, whatever
/// the namespace's size.
fn scan(device: &mut (impl Read + Seek)) -> std::io::Result<Option<String>> {
    let size = device.seek(SeekFrom::End(0))?;
    let mut regions = vec![(0, EDGE.min(size), "its first MiB")];
    if size > EDGE {
        regions.push((size.saturating_sub(EDGE).max(EDGE), size, "its last MiB (where a backup GPT lives)"));
    }
    let middle = size.saturating_sub(2 * EDGE);
    if middle > 0 {
        let step = (middle / SAMPLES).max(SAMPLE);
        let mut at = EDGE;
        while at < size.saturating_sub(EDGE) {
            regions.push((at, (at + SAMPLE).min(size - EDGE), "a sampled scan"));
            at += step;
        }
    }
    let mut buffer = vec![0u8; usize::try_from(EDGE).unwrap_or(1 << 20)];
    for (start, end, what) in regions {
        let length = usize::try_from(end - start).unwrap_or(0).min(buffer.len());
        device.seek(SeekFrom::Start(start))?;
        device.read_exact(&mut buffer[..length])?;
        if let Some(offset) = buffer[..length].iter().position(|b| *b != 0) {
            return Ok(Some(format!("{what} found data at byte {}", start + offset as u64)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::existing_data;
    use crate::cmd::{CmdError, FakeRunner};
    use crate::context::Context;
    use crate::error::{to_error_record, CallError, Failure};
    use crate::host::HostRoot;

    #[test]
    fn data_past_the_first_mib_and_a_lone_backup_gpt_are_found() {
        use std::io::{Seek, SeekFrom, Write};
        let size: u64 = 256 << 20;
        let blank = || {
            let file = tempfile::tempfile().unwrap();
            file.set_len(size).unwrap();
            file
        };
        assert_eq!(super::scan(&mut blank()).unwrap(), None, "a blank namespace is accepted");
        // A file system's data in the middle, its start wiped: no signature anywhere.
        let mut middle = blank();
        middle.seek(SeekFrom::Start(100 << 20)).unwrap();
        middle.write_all(&[0xa5; 4096 * 64]).unwrap();
        let found = super::scan(&mut middle).unwrap().unwrap();
        assert!(found.starts_with("a sampled scan found data at byte "), "{found}");
        // Only the backup GPT at the end (the primary was overwritten with zeros).
        let mut gpt = blank();
        gpt.seek(SeekFrom::Start(size - 512)).unwrap();
        gpt.write_all(b"EFI PART").unwrap();
        let found = super::scan(&mut gpt).unwrap().unwrap();
        assert!(found.contains("last MiB") && found.ends_with(&(size - 512).to_string()), "{found}");
        // Small namespaces are read whole.
        let mut small = tempfile::tempfile().unwrap();
        small.set_len(4096).unwrap();
        assert_eq!(super::scan(&mut small).unwrap(), None);
    }

    #[test]
    fn a_failing_blkid_is_a_tool_failure_not_an_lvm_one() {
        let runner = FakeRunner::new().then(Err(CmdError::Failed {
            command: "blkid -p -o export /dev/nvme0n1".to_owned(),
            status: "exit status 4".to_owned(),
            code: Some(4),
            stdout: String::new(),
            stderr: "blkid: usage".to_owned(),
        }));
        let ctx = Context::fake(HostRoot::at("/nonexistent"), Box::new(runner));
        let error = existing_data(&ctx, "/dev/nvme0n1").unwrap_err();
        assert!(matches!(error, CallError::Tool(_)), "{error:?}");
        let failure: Failure = error.into();
        assert_eq!(to_error_record(&failure, "h1").code, "NVMETCP_TOOL_FAILED");
    }
}
