//! `nvmetcp`: the admin command. All logic is in the `nvmetcp_admin`
//! library; this wires the real host, the terminal and the exit status.

use std::io::IsTerminal;

use nvmetcp_admin::console::Console;
use nvmetcp_admin::{run, Local};
use sm_driver::cmd::SystemRunner;
use sm_driver::host::HostRoot;

fn main() {
    let argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let interactive = std::io::stdin().is_terminal();
    let mut console = Console::new(Box::new(std::io::stdout()), Box::new(std::io::stderr()), color);
    let local = Local { host: HostRoot::system(), runner: Box::new(SystemRunner::new()) };
    let status = run(&argv, &local, &mut console, interactive);
    drop(console);
    std::process::exit(status);
}
