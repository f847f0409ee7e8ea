//! `xapi-emulator`: serves an emulated pool until killed, for driving real
//! XAPI clients by hand. Prints its URL on the first line of stdout.
//!
//! Usage: `xapi-emulator [HOSTS]` (default 2 hosts).

use xapi_emulator::{AcceptAll, Config, Emulator};

fn main() -> std::io::Result<()> {
    let hosts: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2);
    let config = Config { hosts: (1..=hosts).map(|i| format!("xcp-ng-{i}")).collect(), ..Config::default() };
    let emulator = Emulator::new(config, AcceptAll);
    let url = emulator.listen_http()?;
    #[allow(clippy::print_stdout)] // the one line a caller reads
    {
        println!("{url}");
    }
    loop {
        std::thread::park();
    }
}
