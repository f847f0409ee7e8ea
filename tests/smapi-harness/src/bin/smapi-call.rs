//! `smapi-call <plugin dir> <Method> '<json params>'`: calls an installed
//! plugin executable exactly as xapi-storage-script does and prints the
//! outcome, for shell checks of a package (`rpm/check`).
//!
//! Exit status: 0 with the result on stdout, 1 with the error record, 2 when
//! the plugin broke the protocol (more than one JSON value, a crash, …) or the
//! command line is wrong.

use std::path::Path;
use std::process::ExitCode;

use smapi_harness::{Caller, Outcome};

#[allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, method, params] = args.as_slice() else {
        eprintln!("usage: smapi-call <plugin dir> <Method> '<json params>'");
        return ExitCode::from(2);
    };
    let params: serde_json::Value = match serde_json::from_str(params) {
        Ok(params) => params,
        Err(e) => {
            eprintln!("smapi-call: the parameters are not JSON: {e}");
            return ExitCode::from(2);
        }
    };
    match Caller::new().call(Path::new(dir), method, &params) {
        Ok(reply) => match reply.outcome {
            Outcome::Success(value) => {
                println!("{value}");
                ExitCode::SUCCESS
            }
            Outcome::Failure { code, params, .. } => {
                println!("{code} {}", serde_json::Value::from(params));
                ExitCode::from(1)
            }
        },
        Err(violation) => {
            eprintln!("smapi-call: protocol violation: {violation}");
            ExitCode::from(2)
        }
    }
}
