//! The recording runner for unit tests: records every command and replays
//! scripted responses. Built only for tests and with the `testing` feature,
//! so it is no part of the dom0 binary.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::{CmdError, Command, Output, Program, Runner};

/// A call recorded by [`FakeRunner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    /// The program.
    pub program: Program,
    /// The command line as it would be logged (secrets redacted).
    pub shown: String,
    /// Whether secret data was fed on stdin.
    pub had_stdin: bool,
}

/// The pid [`FakeRunner::start_detached`] reports; its calls show as `<command> &`.
pub const FAKE_DETACHED_PID: u32 = 4242;

/// A scripted response of [`FakeRunner`].
pub type FakeResponse = Result<Output, CmdError>;

/// Records every command and replays scripted responses, in order.
#[derive(Debug, Default)]
pub struct FakeRunner {
    responses: Mutex<VecDeque<FakeResponse>>,
    calls: Mutex<Vec<RecordedCall>>,
    missing: Vec<Program>,
}

impl FakeRunner {
    /// A fake with no scripted responses and every program "installed".
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Scripts the response to the next unanswered command.
    #[must_use]
    pub fn then(self, response: FakeResponse) -> Self {
        self.responses.lock().unwrap_or_else(PoisonError::into_inner).push_back(response);
        self
    }

    /// Scripts a successful response printing `stdout`.
    #[must_use]
    pub fn then_stdout(self, stdout: &str) -> Self {
        self.then(Ok(Output { stdout: stdout.to_owned(), stderr: String::new() }))
    }

    /// Makes `program` look uninstalled.
    #[must_use]
    pub fn without(mut self, program: Program) -> Self {
        self.missing.push(program);
        self
    }

    /// Every command run so far.
    #[must_use]
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Runner for FakeRunner {
    fn resolve(&self, program: Program) -> Result<PathBuf, CmdError> {
        if self.missing.contains(&program) {
            Err(CmdError::NotFound { program, searched: "(fake)".to_owned() })
        } else {
            Ok(Path::new("/usr/sbin").join(program.name()))
        }
    }

    fn start_detached(&self, command: &Command) -> Result<u32, CmdError> {
        self.resolve(command.program)?;
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(RecordedCall {
            program: command.program,
            shown: format!("{command} &"),
            had_stdin: false,
        });
        Ok(FAKE_DETACHED_PID)
    }

    fn run(&self, command: &Command) -> Result<Output, CmdError> {
        self.resolve(command.program)?;
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(RecordedCall {
            program: command.program,
            shown: command.to_string(),
            had_stdin: command.stdin.is_some(),
        });
        self.responses.lock().unwrap_or_else(PoisonError::into_inner).pop_front().unwrap_or_else(|| {
            Err(CmdError::Failed {
                command: command.to_string(),
                status: "exit status 127".to_owned(),
                code: Some(127),
                stdout: String::new(),
                stderr: "FakeRunner: no scripted response".to_owned(),
            })
        })
    }
}

/// Shared, so a test can read the calls of the runner it handed to a
/// `Context`.
impl Runner for std::sync::Arc<FakeRunner> {
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

/// The real runner with one device path replaced in every argument: handlers
/// run in process against real lvm2 on a loop device while their sysfs tree
/// names an NVMe head (`/dev/nvme0n1` in the tree, `/dev/loopN` for LVM).
/// LVM's `global/activation` is turned off too: a build machine may have no
/// device-mapper, and volume calls never activate an LV.
#[cfg(test)]
pub(crate) struct DeviceSubstitute {
    inner: super::SystemRunner,
    from: String,
    to: String,
}

#[cfg(test)]
impl DeviceSubstitute {
    pub(crate) fn new(from: &str, to: &str) -> Self {
        Self { inner: super::SystemRunner::new(), from: from.to_owned(), to: to.to_owned() }
    }
}

#[cfg(test)]
impl Runner for DeviceSubstitute {
    fn resolve(&self, program: Program) -> Result<PathBuf, CmdError> {
        self.inner.resolve(program)
    }

    fn run(&self, command: &Command) -> Result<Output, CmdError> {
        let mut command = command.clone();
        for arg in &mut command.args {
            let (super::Arg::Plain(text) | super::Arg::Secret(text)) = arg;
            *text = text.replace(&self.from, &self.to).replace("global { ", "global { activation = 0 ");
        }
        self.inner.run(&command)
    }

    fn start_detached(&self, command: &Command) -> Result<u32, CmdError> {
        self.inner.start_detached(command)
    }
}

/// The arguments of `command` as given (a secret as the redaction mark),
/// for fakes that act on what they are asked rather than replay a script.
#[cfg(test)]
pub(crate) fn args_of(command: &Command) -> Vec<String> {
    command
        .args
        .iter()
        .map(|arg| match arg {
            super::Arg::Plain(text) => text.clone(),
            super::Arg::Secret(_) => super::REDACTED.to_owned(),
        })
        .collect()
}
