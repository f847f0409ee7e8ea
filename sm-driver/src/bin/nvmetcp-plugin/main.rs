//! `nvmetcp-plugin`: the multi-call binary behind every SMAPIv3 method link.
//!
//! All logic is in the `sm_driver` library; this file only wires the real
//! host (the system runner, `/` as the host root), configures logging, and is
//! the single writer of stdout, which carries the protocol and nothing else.

mod logging;

use std::io::Write;
use std::process::ExitCode;

use sm_driver::cmd::SystemRunner;
use sm_driver::context::Context;
use sm_driver::entry::{execute, links, parse_args, usage, Invocation, BINARY_NAME};
use sm_driver::host::HostRoot;
use sm_driver::plugin::VERSION;

fn main() -> ExitCode {
    let mut argv = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let argv0 = argv.next().unwrap_or_else(|| BINARY_NAME.to_owned());
    let args: Vec<String> = argv.collect();
    let request = match parse_args(&argv0, &args) {
        Ok(Invocation::Call(request)) => request,
        Ok(Invocation::Help) => return print(&usage(), ExitCode::SUCCESS),
        Ok(Invocation::Version) => return print(&format!("{BINARY_NAME} {VERSION}\n"), ExitCode::SUCCESS),
        Ok(Invocation::ListLinks) => return print(&links(), ExitCode::SUCCESS),
        Ok(Invocation::PostInstall) => {
            logging::init(false);
            // Never fails the package transaction: it reports what is left to do.
            let (report, _ready) = sm_driver::install::post_install(&HostRoot::system());
            return print(&report, ExitCode::SUCCESS);
        }
        Ok(Invocation::InitiatorDaemon(sr)) => {
            // Its lines go to SMlog and to stderr: the journal under systemd,
            // the SR's initiator log under the detached supervisor.
            logging::init(true);
            return initiator_daemon(&sr);
        }
        Ok(Invocation::InitiatorSupervise(sr)) => {
            let logged = stderr_to_initiator_log(&sr);
            logging::init(true);
            if let Err(error) = logged {
                tracing::warn!(%sr, %error, "the initiator's log file cannot be written; its lines go to SMlog only");
            }
            return initiator_supervise(&sr);
        }
        Ok(Invocation::HostPlugin(request)) => {
            logging::init(false);
            let ctx = sm_driver::context::Context::system(HostRoot::system(), Box::new(SystemRunner::new()));
            let reply = sm_driver::host_plugin::run(&ctx, &request);
            return print(&reply, ExitCode::SUCCESS);
        }
        Ok(Invocation::Agent) => {
            logging::init(false);
            // Runs until killed; returns only when it cannot run at all.
            let Err(error) = sm_driver::agent::run(&HostRoot::system());
            tracing::error!(%error, "nvmetcp agent stopped");
            #[allow(clippy::print_stderr)] // for systemd's journal and the person who started it
            {
                eprintln!("{}: {error}", sm_driver::agent::LINK_NAME);
            }
            return ExitCode::FAILURE;
        }
        Err(error) => {
            #[allow(clippy::print_stderr)] // a command-line mistake, for the person who typed it
            {
                eprintln!("{BINARY_NAME}: {error}");
            }
            return ExitCode::from(2);
        }
    };
    logging::init(request.verbose);
    let context = Context::system(HostRoot::system(), Box::new(SystemRunner::new()));
    let reply = execute(&context, &request, &mut std::io::stdin().lock());
    let status = if reply.exit_code == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    print(&reply.stdout, status)
}

/// The userspace initiator of one SR until its NBD device is disconnected;
/// a failure is logged (SMlog, and the journal through stderr) and recorded
/// in its state file, and its supervisor restarts it.
fn initiator_daemon(sr: &str) -> ExitCode {
    use nvmetcp_initiator::daemon::{config::SrId, open_namespace, run::run, Layout};
    let result = SrId::parse(sr)
        .map_err(|e| e.to_string())
        .and_then(|sr| run(&sr, &Layout::system(), 0, open_namespace).map_err(|e| e.to_string()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            #[allow(clippy::print_stderr)] // the journal's copy; stdout is never written
            {
                eprintln!("{BINARY_NAME} --initiator-daemon {sr}: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Where systemd does not run: keeps one SR's daemon running until its
/// device is disconnected (started detached by SR.attach).
fn initiator_supervise(sr: &str) -> ExitCode {
    use nvmetcp_initiator::daemon::config::SrId;
    let result = SrId::parse(sr)
        .map_err(|e| e.to_string())
        .and_then(|sr| sm_driver::initiator::service::supervise(&HostRoot::system(), &sr));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%sr, %error, "the initiator's supervisor stops");
            ExitCode::FAILURE
        }
    }
}

/// Started detached, the supervisor has no stderr: it (and the daemon,
/// which inherits it) writes to the SR's root-only initiator log instead.
fn stderr_to_initiator_log(sr: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let sr = nvmetcp_initiator::daemon::config::SrId::parse(sr).map_err(|e| e.to_string())?;
    let log = sm_driver::initiator::service::open_log(&HostRoot::system(), &sr).map_err(|e| e.to_string())?;
    nix::unistd::dup2(log.as_raw_fd(), 2).map_err(|e| e.to_string())?;
    Ok(())
}

/// The one place that writes stdout.
fn print(text: &str, status: ExitCode) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => status,
        Err(_) => ExitCode::FAILURE,
    }
}
