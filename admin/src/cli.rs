//! The command line: subcommands, options, and `--help` with examples.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The `nvmetcp` command line.
#[derive(Debug, Parser)]
#[command(
    name = "nvmetcp",
    version,
    about = "Shared NVMe over TCP (and RDMA) storage for XCP-ng pools: check hosts, find namespaces, create the SR on \
             every host, watch its paths.",
    after_help = "EXAMPLES
  nvmetcp doctor --pool --portals 10.0.1.10,10.0.2.10
  nvmetcp probe --discovery 10.0.1.10
  nvmetcp probe --portals 10.0.1.10,10.0.2.10 --nqn nqn.2010-06.com.example:array1
  nvmetcp sr-create --name 'NVMe array' --portals 10.0.1.10,10.0.2.10 --nqn nqn.2010-06.com.example:array1
  nvmetcp status
  nvmetcp --host https://pool-master.example --user root --password-file /root/.xapi-pw \\
          --fingerprint AB:CD:… status --json
  nvmetcp host-setup            # show what would change; --apply to write it

EXIT STATUS
  0 done, all healthy   1 failed (nothing was changed), or a check failed
  2 bad command line    3 done on some hosts only, or paths degraded
  4 XAPI cannot be reached or refused the login

Runs on the pool master (or any host: calls on the local XAPI socket are forwarded to
the master). Colour only on a terminal (NO_COLOR turns it off); --json for scripts."
)]
pub struct Cli {
    /// How to reach XAPI.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where XAPI is and how to log in.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// XAPI address: https://host, or unix:/path (default: this host's socket, root without a password).
    #[arg(long, global = true, value_name = "URL")]
    pub host: Option<String>,
    /// User name for a remote XAPI.
    #[arg(long, global = true, default_value = "root")]
    pub user: String,
    /// Read the password from this file (first line); without it a remote login prompts on the terminal.
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<std::path::PathBuf>,
    /// Pin the server certificate's SHA-256 fingerprint (as `openssl x509 -fingerprint -sha256` prints it).
    #[arg(long, global = true, value_name = "SHA256")]
    pub fingerprint: Option<String>,
    /// Do not check the server certificate at all (labs only).
    #[arg(long, global = true)]
    pub insecure: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that this host (or every host with --pool) can use nvmetcp, with a fix for each problem.
    Doctor(DoctorArgs),
    /// Show the subsystems and namespaces the storage offers, and what each holds.
    Probe(TargetArgs),
    /// Create a shared nvmetcp SR: every host of the pool gets a PBD and connects all paths.
    SrCreate(CreateArgs),
    /// Every nvmetcp SR, on every host, with every path's state.
    Status(StatusArgs),
    /// The persistent host settings of the NVMe/TCP guide that the RPM does not install (shown as a diff).
    HostSetup(HostSetupArgs),
}

/// The transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// NVMe/TCP.
    Tcp,
    /// NVMe/RDMA.
    Rdma,
}

impl TransportArg {
    /// The device-config spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Rdma => "rdma",
        }
    }
}

/// Where the storage is.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// I/O ports, ADDR or ADDR:PORT separated by commas (port 4420 by default).
    #[arg(long, value_name = "ADDR,…")]
    pub portals: Option<String>,
    /// Discovery controllers, ADDR or ADDR:PORT separated by commas (port 8009 by default).
    #[arg(long, value_name = "ADDR,…")]
    pub discovery: Option<String>,
    /// The subsystem NQN.
    #[arg(long)]
    pub nqn: Option<String>,
    /// The transport.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: TransportArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check every host of the pool (through the nvmetcp XAPI host plugin).
    #[arg(long)]
    pub pool: bool,
    /// Portals to check reachability and MTU towards (default: those of the existing nvmetcp SRs).
    #[arg(long, value_name = "ADDR,…")]
    pub portals: Option<String>,
    /// The transport to check the kernel for.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: TransportArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `sr-create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Where the storage is.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The SR's name.
    #[arg(long)]
    pub name: String,
    /// The SR's description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// The namespace: its UUID, NGUID or EUI-64 as probe shows it, or its NSID (default: the only one).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Create even though the namespace holds data (which is destroyed).
    #[arg(long)]
    pub force: bool,
    /// More device-config settings, key=value (see the README's device-config reference).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `host-setup`.
#[derive(Debug, Args)]
pub struct HostSetupArgs {
    /// Write the settings (otherwise only show what would change).
    #[arg(long)]
    pub apply: bool,
}
