//! The command line: parses, sets up logging, runs one command, and turns
//! its outcome into an exit code. Errors are printed with their whole
//! chain, one cause per line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::client;
use crate::config::DEFAULT_CONFIG_PATH;
use crate::daemon::{self, Daemon};

#[derive(Debug, Parser)]
#[command(
    name = "assumed",
    version,
    about = "Keeps MFA-protected AWS role sessions fresh and serves them to local processes"
)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "ASSUMED_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Load and check everything `serve` would (configuration, seed,
    /// credentials file) without touching the network.
    CheckConfig,
    /// Run the daemon against a built-in local STS stand-in, with a
    /// generated seed and two-minute sessions; no AWS account needed.
    Demo {
        /// The loopback TCP port to serve on (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Stop after this long (e.g. "5m"); default: until Ctrl-C.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        run_for: Option<std::time::Duration>,
    },
    /// Print the environment a client needs to use the TCP endpoint.
    Env {
        /// The role to point at (default: the default role).
        #[arg(long)]
        role: Option<String>,
    },
    /// Print credential_process JSON for an AWS config profile.
    CredentialProcess {
        #[arg(long, default_value = client::DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        role: Option<String>,
    },
    /// Show every role's health; exit 0 usable, 1 degraded, 2 unreachable.
    Status {
        #[arg(long, default_value = client::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the daemon's health JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: Cli) -> ExitCode {
    init_logging();
    // Sockets from systemd are taken while the process has one thread,
    // so the LISTEN_* variables can be removed safely.
    let inherited = match cli.command {
        Command::Serve => match crate::systemd::listen_fds() {
            Ok(fds) => fds,
            Err(error) => return fail(&error),
        },
        _ => crate::systemd::ListenFds::default(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::logging::flush)
        .on_thread_stop(crate::logging::flush)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    runtime.block_on(dispatch(cli, inherited))
}

async fn dispatch(cli: Cli, inherited: crate::systemd::ListenFds) -> ExitCode {
    match cli.command {
        Command::Serve => serve(&cli.config, inherited).await,
        Command::CheckConfig => check_config(&cli.config),
        Command::Demo { port, run_for } => demo(port, run_for).await,
        Command::Env { role } => env(&cli.config, role.as_deref()),
        Command::CredentialProcess { socket, role } => {
            match client::credential_process(&socket, role.as_deref()).await {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("assumed credential-process: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status { socket, json } => {
            let (health, text) = client::status(&socket, json).await;
            if health == client::Health::Unreachable {
                eprintln!("{text}")
            } else {
                println!("{text}")
            }
            ExitCode::from(health as u8)
        }
    }
}

async fn serve(config_path: &std::path::Path, inherited: crate::systemd::ListenFds) -> ExitCode {
    // Files and sockets are created private and opened up explicitly.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    if let Err(error) = crate::secret::harden_process() {
        tracing::warn!(%error, "could not disable core dumps; secrets could end up in a core file");
    }
    let loaded = match daemon::preflight(config_path) {
        Ok(loaded) => loaded,
        Err(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            return ExitCode::FAILURE;
        }
    };
    let stop = CancellationToken::new();
    if let Err(error) = daemon::stop_on_signals(stop.clone()) {
        return fail(&error);
    }
    match Daemon::start(loaded, inherited, stop).await {
        Ok(daemon) => {
            daemon.wait().await;
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

async fn demo(port: u16, run_for: Option<std::time::Duration>) -> ExitCode {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let stop = CancellationToken::new();
    if let Err(error) = daemon::stop_on_signals(stop.clone()) {
        return fail(&error);
    }
    match crate::demo::run(crate::demo::DemoOptions { port, run_for }, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn check_config(config_path: &std::path::Path) -> ExitCode {
    match daemon::preflight(config_path) {
        Ok(loaded) => {
            let config = &loaded.config;
            println!(
                "{}: OK ({} role(s), MFA device {})",
                config_path.display(),
                config.roles.len(),
                config.mfa.serial_number
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            ExitCode::FAILURE
        }
    }
}

fn env(config_path: &std::path::Path, role: Option<&str>) -> ExitCode {
    let config = match crate::config::Config::load(config_path) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    let Some(addr) = config.listen.tcp else {
        eprintln!(
            "listen.tcp is not set: SDK clients can only use the TCP endpoint; set it, or use credential-process over the socket"
        );
        return ExitCode::FAILURE;
    };
    let path = match role {
        Some(role) => format!("/v1/credentials/{role}"),
        None => "/v1/credentials".to_owned(),
    };
    let token_file = role
        .and_then(|name| config.roles.iter().find(|r| r.name.as_str() == name))
        .and_then(|r| r.token_file.clone())
        .unwrap_or(config.listen.token_file);
    println!("export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://{addr}{path}");
    println!(
        "export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}",
        token_file.display()
    );
    println!("unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_AUTHORIZATION_TOKEN");
    ExitCode::SUCCESS
}

/// Logs to stderr; `RUST_LOG` picks the level (default info). Runtime
/// workers gather their lines into few writes: see [`crate::logging`].
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::logging::Stderr)
        .init();
}

/// Prints an error with its causes and returns a failing exit code.
pub fn fail(error: &dyn std::error::Error) -> ExitCode {
    let mut text = format!("assumed: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!("\n  caused by: {cause}"));
        source = cause.source();
    }
    eprintln!("{text}");
    ExitCode::FAILURE
}
