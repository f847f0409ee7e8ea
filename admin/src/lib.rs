//! The `nvmetcp` admin command: what an administrator types on the pool
//! master instead of the manual NVMe/TCP recipe.
//!
//! * `doctor` runs the guide's checks on this host, or on every host through
//!   the nvmetcp XAPI host plugin, each with PASS/WARN/FAIL and the fix;
//! * `probe` asks the plugin, through XAPI on the master, what the storage
//!   offers and what each namespace holds;
//! * `sr-create` picks the namespace, refuses one holding data unless forced,
//!   creates the shared SR so every host gets a PBD, follows the plugs host by
//!   host and ends with a per-host summary;
//! * `status` shows every nvmetcp SR on every host with every path;
//! * `host-setup` writes the site-dependent settings of the guide (as a diff
//!   first).
//!
//! Everything pool-wide goes through XAPI (`xapi-client`); everything about
//! this host goes through `sm-driver`'s host root and runner, so tests point
//! both at an emulator and a temp directory.

pub mod cli;
pub mod connect;
pub mod console;
pub mod create;
pub mod doctor;
pub mod error;
pub mod host_setup;
pub mod pool;
pub mod probe;
pub mod status;

use clap::Parser;
use sm_driver::cmd::Runner;
use sm_driver::host::HostRoot;

use crate::cli::{Cli, Command};
use crate::console::Console;
use crate::error::Exit;

/// This host, as the local checks and `host-setup` see it.
pub struct Local {
    /// The root that every path goes through.
    pub host: HostRoot,
    /// Runs external programs.
    pub runner: Box<dyn Runner>,
}

/// Runs the command line `argv` (with the program name first) and returns
/// the exit status.
pub fn run(argv: &[String], local: &Local, console: &mut Console, interactive: bool) -> i32 {
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            return if e.use_stderr() {
                console.note(text.trim_end());
                Exit::Usage as i32
            } else {
                console.line(text.trim_end());
                Exit::Ok as i32
            };
        }
    };
    let open = || connect::open(&cli.connection, &local.host, interactive);
    let result = match &cli.command {
        Command::Doctor(args) => doctor::run(args, open(), local, console),
        Command::Probe(args) => open().and_then(|s| probe::run(args, &s, console)),
        Command::SrCreate(args) => open().and_then(|s| create::run(args, &s, console, interactive)),
        Command::Status(args) => open().and_then(|s| status::run(args, &s, console)),
        Command::HostSetup(args) => host_setup::run(args, local, console),
    };
    match result {
        Ok(exit) => exit as i32,
        Err(error) => {
            console.note(&format!("nvmetcp: {}", sm_driver::error_chain::chain(&error)));
            error.exit() as i32
        }
    }
}
