//! What a namespace holds, so `SR.create` never overwrites data and
//! `SR.probe` can say what is there.

use std::io::Read;

use crate::cmd::{CmdError, Command, Program};
use crate::context::Context;
use crate::error::CallError;

/// What the device holds, if anything: a signature blkid knows, or any
/// non-zero byte in its first MiB.
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
    let mut head = vec![0u8; 1 << 20];
    let mut file = std::fs::File::open(ctx.host.path(device))
        .map_err(|source| CallError::Inspect { device: device.to_owned(), source })?;
    let read = file.read(&mut head).map_err(|source| CallError::Inspect { device: device.to_owned(), source })?;
    if head[..read].iter().any(|b| *b != 0) {
        return Ok(Some("its first MiB holds data".to_owned()));
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
    fn a_failing_blkid_is_a_tool_failure_not_an_lvm_one() {
        let runner = FakeRunner::new().then(Err(CmdError::Failed {
            command: "blkid -p -o export /dev/nvme0n1".to_owned(),
            status: "exit status 4".to_owned(),
            code: Some(4),
            stdout: String::new(),
            stderr: "blkid: usage".to_owned(),
        }));
        let ctx = Context { host: HostRoot::at("/nonexistent"), runner: Box::new(runner) };
        let error = existing_data(&ctx, "/dev/nvme0n1").unwrap_err();
        assert!(matches!(error, CallError::Tool(_)), "{error:?}");
        let failure: Failure = error.into();
        assert_eq!(to_error_record(&failure, "h1").code, "NVMETCP_TOOL_FAILED");
    }
}
