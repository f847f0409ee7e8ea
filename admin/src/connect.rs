//! Opening a session: the local dom0 socket by default (root, no password,
//! forwarded to the master by a pool member), or a remote XAPI over HTTPS
//! with the password from a file or a terminal prompt — never from argv.

use std::time::Duration;

use sm_driver::host::HostRoot;
use xapi_client::transport::DOM0_SOCKET;
use xapi_client::{Client, Credentials, Endpoint, Fingerprint, Secret, Session, Timeouts, TlsVerify};

use crate::cli::ConnectionArgs;
use crate::error::AdminError;

/// The originator XAPI accounts this tool's sessions to.
pub const ORIGINATOR: &str = "nvmetcp-admin";

fn endpoint(args: &ConnectionArgs, host: &HostRoot) -> Result<Endpoint, AdminError> {
    let verify = match (&args.fingerprint, args.insecure) {
        (Some(_), true) => return Err(AdminError::Usage("give --fingerprint or --insecure, not both".into())),
        (Some(pin), false) => {
            TlsVerify::Fingerprint(pin.parse::<Fingerprint>().map_err(|e| AdminError::Usage(e.to_string()))?)
        }
        (None, true) => TlsVerify::Insecure,
        (None, false) => TlsVerify::SystemRoots,
    };
    match &args.host {
        None => Ok(Endpoint::Unix(host.path(DOM0_SOCKET))),
        Some(url) => Endpoint::parse(url, verify).map_err(|e| AdminError::Usage(e.to_string())),
    }
}

fn password(args: &ConnectionArgs, endpoint: &Endpoint, interactive: bool) -> Result<Secret, AdminError> {
    if let Some(file) = &args.password_file {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file)
            .map_err(|e| AdminError::Usage(format!("cannot read the password file {}: {e}", file.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(AdminError::Usage(format!(
                "the password file {} can be read by others (mode {:o}): run chmod 600 {0}",
                file.display(),
                mode & 0o777
            )));
        }
        let text = std::fs::read_to_string(file)
            .map_err(|e| AdminError::Usage(format!("cannot read the password file {}: {e}", file.display())))?;
        return Ok(Secret::new(text.lines().next().unwrap_or_default()));
    }
    if !interactive {
        return Err(AdminError::Usage(format!(
            "a password is needed for {endpoint} and there is no terminal to ask on: give --password-file"
        )));
    }
    rpassword::prompt_password(format!("Password for {}@{endpoint}: ", args.user))
        .map(Secret::new)
        .map_err(|e| AdminError::Usage(format!("cannot read the password from the terminal: {e}")))
}

/// Logs in as `args` say.
///
/// # Errors
/// [`AdminError::Usage`] for bad options, [`AdminError::Connect`] when XAPI
/// cannot be reached or refuses the login.
pub fn open(args: &ConnectionArgs, host: &HostRoot, interactive: bool) -> Result<Session, AdminError> {
    let endpoint = endpoint(args, host)?;
    let credentials = if endpoint.is_network() {
        Credentials { user: args.user.clone(), password: password(args, &endpoint, interactive)? }
    } else {
        Credentials::local_root()
    };
    let timeouts = Timeouts { connect: Duration::from_secs(10), call: Duration::from_secs(600) };
    Client::new(endpoint, timeouts).login(&credentials, ORIGINATOR).map_err(AdminError::Connect)
}
