//! The command line: parses, sets up logging, runs one command, and turns
//! its outcome into an exit code. Errors are printed with their whole
//! chain, one cause per line.
//!
//! Logs go to stderr, as text or JSON lines (`--log-format`). Under
//! journald (`JOURNAL_STREAM` names stderr) text lines carry no timestamp,
//! since the journal adds its own, and start with a `<N>` priority prefix,
//! so `journalctl -p warning` picks out warnings. Levels: info for
//! lifecycle and refreshes, warn for a degraded state (with a hint),
//! error only for what stops the daemon.
//!
//! The shell completions and the man page are generated from the same
//! definition (`completions SHELL`, `man`); the copies under `dist/` that
//! the Debian package installs are checked against it by a test.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
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

    /// How log lines are written to stderr.
    #[arg(long, global = true, env = "ASSUMED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
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
        /// The daemon's socket (default: listen.unix_socket of --config when
        /// it can be read, else /run/assumed/credentials.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The role to fetch (default: the default role).
        #[arg(long)]
        role: Option<String>,
    },
    /// Show every role's health; exit 0 usable, 1 degraded, 2 unreachable.
    Status {
        /// The daemon's socket (default: listen.unix_socket of --config when
        /// it can be read, else /run/assumed/credentials.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the daemon's health JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print a man page (roff): assumed(1), or a command's own.
    Man {
        /// The command whose page to print, e.g. serve.
        command: Option<String>,
    },
    /// Create and enable a virtual MFA device for an IAM user and store its seed.
    Enroll {
        /// The IAM user the device is for.
        #[arg(long)]
        user: String,
        /// The device's name (default: the user's); the policy from
        /// `assumed policy` requires it to start with the user's name.
        #[arg(long)]
        device_name: Option<String>,
        /// The device's IAM path.
        #[arg(long, default_value = "/")]
        path: String,
        /// Where to write the seed (a new file, mode 0600), or - for standard
        /// output, to pipe into `systemd-creds encrypt`.
        #[arg(long, value_name = "FILE|-")]
        seed_out: String,
        /// Also write the QR code PNG for a phone app (a new file, mode 0600);
        /// it is as secret as the seed.
        #[arg(long, value_name = "FILE.png")]
        qr_out: Option<PathBuf>,
        /// After enabling, wait for STS to see the device and assume this role once.
        #[arg(long, value_name = "ARN")]
        verify_role: Option<String>,
        /// How long to wait before --verify-role's AssumeRole.
        #[arg(long, hide = true, default_value = "15s", value_parser = humantime::parse_duration)]
        verify_after: std::time::Duration,
        #[command(flatten)]
        access: crate::enroll::AwsAccess,
    },
    /// Resynchronise an enabled MFA device with two consecutive codes from its seed.
    Resync {
        #[arg(long)]
        user: String,
        /// The device's serial number (its ARN).
        #[arg(long, value_name = "ARN")]
        serial: String,
        /// The device's seed: a file (mode 0600), or - for standard input.
        #[arg(long, value_name = "FILE|-")]
        seed_file: PathBuf,
        #[command(flatten)]
        access: crate::enroll::AwsAccess,
    },
    /// Deactivate and delete an MFA device (after the daemon has moved to another one).
    Disable {
        #[arg(long)]
        user: String,
        /// The device's serial number (its ARN).
        #[arg(long, value_name = "ARN")]
        serial: String,
        /// The device's seed, to prove MFA first (the policy from `assumed
        /// policy` lets only an MFA session deactivate a device); - reads
        /// standard input.
        #[arg(long, value_name = "FILE|-")]
        seed_file: Option<PathBuf>,
        /// Confirms that the device is to be removed for good.
        #[arg(long)]
        yes_really: bool,
        #[command(flatten)]
        access: crate::enroll::AwsAccess,
    },
    /// Print the IAM policies this setup needs, as JSON.
    Policy {
        /// The 12-digit AWS account id.
        #[arg(long)]
        account: String,
        /// The IAM user whose key the daemon holds.
        #[arg(long)]
        user: String,
        /// The name of the role the daemon assumes.
        #[arg(long)]
        role: String,
        /// Also require the MFA proof to be at most this many seconds old
        /// (at least mfa.session, when role sessions are chained).
        #[arg(long, value_name = "SECONDS")]
        max_mfa_age: Option<u64>,
        /// The AWS partition of the ARNs.
        #[arg(long, default_value = "aws")]
        partition: String,
        /// Print only this document: user-mfa, role-trust or user-assume-role.
        #[arg(long, value_name = "NAME")]
        document: Option<String>,
    },
}

pub fn run(cli: Cli) -> ExitCode {
    init_logging(cli.log_format);
    // Sockets from systemd are taken while the process has one thread,
    // so the LISTEN_* variables can be removed safely.
    let inherited = match cli.command {
        Command::Serve => match crate::systemd::listen_fds() {
            Ok(fds) => fds,
            Err(error) => return fatal(&error),
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
            let socket = socket_path(socket, &cli.config);
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
            let socket = socket_path(socket, &cli.config);
            let (health, text) = client::status(&socket, json).await;
            if health == client::Health::Unreachable {
                eprintln!("{text}")
            } else {
                println!("{text}")
            }
            ExitCode::from(health as u8)
        }
        Command::Completions { shell } => print(&completions(shell)),
        Command::Man { command } => match man_pages()
            .into_iter()
            .find(|page| page.command.as_deref() == command.as_deref())
        {
            Some(page) => print(&page.roff),
            None => {
                eprintln!(
                    "man {}: there is no such command; see assumed --help",
                    command.unwrap_or_default()
                );
                ExitCode::FAILURE
            }
        },
        Command::Enroll {
            user,
            device_name,
            path,
            seed_out,
            qr_out,
            verify_role,
            verify_after,
            access,
        } => {
            let request = crate::enroll::EnrollRequest {
                device_name: device_name.unwrap_or_else(|| user.clone()),
                user,
                path,
                seed_out: crate::enroll::SeedOut::parse(&seed_out),
                qr_out,
                verify_role,
                verify_after,
            };
            enroll(&cli.config, &access, request).await
        }
        Command::Resync {
            user,
            serial,
            seed_file,
            access,
        } => resync(&cli.config, &access, &user, &serial, &seed_file).await,
        Command::Disable {
            user,
            serial,
            seed_file,
            yes_really,
            access,
        } => {
            disable(
                &cli.config,
                &access,
                &user,
                &serial,
                seed_file.as_deref(),
                yes_really,
            )
            .await
        }
        Command::Policy {
            account,
            user,
            role,
            max_mfa_age,
            partition,
            document,
        } => {
            let request = crate::policy::PolicyRequest {
                partition,
                account_id: account,
                user_name: user,
                role_name: role,
                max_mfa_age_secs: max_mfa_age,
            };
            policy(&request, document.as_deref())
        }
    }
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "assumed", &mut script);
    script
}

/// A man page in section 1, in roff.
pub struct ManPage {
    /// The subcommand it documents; `None` for assumed(1) itself.
    pub command: Option<String>,
    /// Its file name: `assumed.1`, `assumed-serve.1`, …
    pub file_name: String,
    pub roff: Vec<u8>,
}

/// assumed(1) and a page for each command, which assumed(1) refers to as
/// assumed-COMMAND(1).
pub fn man_pages() -> Vec<ManPage> {
    let render = |command: clap::Command| {
        let mut roff = Vec::new();
        // Rendering into a Vec cannot fail.
        let _ = clap_mangen::Man::new(command).render(&mut roff);
        roff
    };
    let mut cli = Cli::command();
    // Building adds the help command and copies global options down.
    cli.build();
    let mut pages = vec![ManPage {
        command: None,
        file_name: "assumed.1".to_owned(),
        roff: render(cli.clone()),
    }];
    for sub in cli.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("assumed-{}", sub.get_name());
        pages.push(ManPage {
            command: Some(sub.get_name().to_owned()),
            file_name: format!("{name}.1"),
            roff: render(
                sub.clone()
                    .name(name.clone())
                    .bin_name(name.replace('-', " "))
                    .version(env!("CARGO_PKG_VERSION")),
            ),
        });
    }
    pages
}

fn print(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

async fn enroll(
    config_path: &std::path::Path,
    access: &crate::enroll::AwsAccess,
    request: crate::enroll::EnrollRequest,
) -> ExitCode {
    // The seed and QR files are created private whatever the caller's umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    if let Err(error) = crate::secret::harden_process() {
        tracing::warn!(%error, "could not disable core dumps; the seed could end up in a core file");
    }
    if request.qr_out.is_some() {
        eprintln!(
            "warning: the QR code holds the seed: whoever sees it can produce this device's codes; store it like the seed, and delete it once scanned"
        );
    }
    let clients = match crate::enroll::AwsClients::connect(access, config_path).await {
        Ok(clients) => clients,
        Err(error) => return fail(&error),
    };
    let enrolled = match crate::enroll::enroll(&clients, &request).await {
        Ok(enrolled) => enrolled,
        Err(error) => return fail(&error),
    };
    let mut report = format!(
        "Enrolled virtual MFA device {} for IAM user {}.\n",
        enrolled.serial_number, request.user
    );
    if let crate::enroll::SeedOut::File(path) = &enrolled.seed_out {
        report.push_str(&format!("The seed is in {} (mode 0600).\n", path.display()));
    }
    match &enrolled.verified_role {
        Some(role) => report.push_str(&format!("STS accepted the device: assumed {role}.\n")),
        None => report.push_str("STS accepts the device's codes about 15 s after enabling.\n"),
    }
    report.push_str(&format!(
        "Put these lines in the daemon's configuration:\n\n{}",
        enrolled.config_lines()
    ));
    // With --seed-out -, standard output carries the seed alone.
    if enrolled.seed_out == crate::enroll::SeedOut::Stdout {
        eprint!("{report}");
    } else {
        print!("{report}");
    }
    ExitCode::SUCCESS
}

async fn resync(
    config_path: &std::path::Path,
    access: &crate::enroll::AwsAccess,
    user: &str,
    serial: &str,
    seed_file: &std::path::Path,
) -> ExitCode {
    if let Err(error) = crate::enroll::check_device(user, serial) {
        return fail(&error);
    }
    let seed = match crate::enroll::read_seed(seed_file) {
        Ok(seed) => seed,
        Err(error) => return fail(&error),
    };
    let outcome = match crate::enroll::AwsClients::connect(access, config_path).await {
        Ok(clients) => crate::enroll::resync(&clients, user, serial, &seed).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => {
            println!("Resynchronised MFA device {serial} for IAM user {user}.");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

async fn disable(
    config_path: &std::path::Path,
    access: &crate::enroll::AwsAccess,
    user: &str,
    serial: &str,
    seed_file: Option<&std::path::Path>,
    yes_really: bool,
) -> ExitCode {
    if let Err(error) = crate::enroll::check_device(user, serial) {
        return fail(&error);
    }
    if !yes_really {
        // Refused before any credential, seed or network is touched.
        return fail(&crate::enroll::EnrollError::NotConfirmed {
            serial_number: serial.to_owned(),
        });
    }
    let seed = match seed_file.map(crate::enroll::read_seed).transpose() {
        Ok(seed) => seed,
        Err(error) => return fail(&error),
    };
    let request = crate::enroll::DisableRequest {
        user,
        serial_number: serial,
        seed,
        confirmed: yes_really,
    };
    let outcome = match crate::enroll::AwsClients::connect(access, config_path).await {
        Ok(clients) => crate::enroll::disable(&clients, request).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => {
            println!("Deactivated and deleted MFA device {serial} of IAM user {user}.");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

fn policy(request: &crate::policy::PolicyRequest, document: Option<&str>) -> ExitCode {
    let set = match crate::policy::PolicySet::new(request) {
        Ok(set) => set,
        Err(error) => return fail(&error),
    };
    let json = match document {
        Some(name) => match set.document(name) {
            Ok(document) => serde_json::to_string_pretty(document),
            Err(error) => return fail(&error),
        },
        None => serde_json::to_string_pretty(&set),
    };
    match json {
        // A reader that stops early (`| head`) ends the output, not the process.
        Ok(json) => print(format!("{json}\n").as_bytes()),
        Err(error) => fail(&error),
    }
}

/// The socket to ask: the one given, else the configuration's (clients
/// often cannot read it, which is fine), else the packaged path.
fn socket_path(given: Option<PathBuf>, config_path: &std::path::Path) -> PathBuf {
    given
        .or_else(|| {
            crate::config::Config::load(config_path)
                .ok()?
                .listen
                .unix_socket
        })
        .unwrap_or_else(|| PathBuf::from(client::DEFAULT_SOCKET))
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
                tracing::error!(%problem, "the daemon cannot run");
            }
            return ExitCode::FAILURE;
        }
    };
    let stop = CancellationToken::new();
    if let Err(error) = daemon::stop_on_signals(stop.clone()) {
        return fatal(&error);
    }
    match Daemon::start(loaded, inherited, stop).await {
        Ok(daemon) => {
            daemon.wait().await;
            ExitCode::SUCCESS
        }
        Err(error) => fatal(&error),
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
            if let Some(note) = config.default_role_note() {
                println!("note: {note}");
            }
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
    if let Some(addr) = config.listen.tcp.filter(|addr| addr.port() == 0) {
        eprintln!(
            "listen.tcp {addr}: port 0 lets the daemon pick a free port at each start, so clients cannot be told one; set a fixed port"
        );
        return ExitCode::FAILURE;
    }
    let Some(addr) = config.listen.tcp else {
        eprintln!(
            "listen.tcp is not set: SDK clients can only use the TCP endpoint; set it, or use credential-process over the socket"
        );
        return ExitCode::FAILURE;
    };
    let chosen = match role {
        Some(name) => match crate::config::RoleName::parse(name).and_then(|n| config.role(&n)) {
            Some(chosen) => Some(chosen),
            None => {
                let known: Vec<&str> = config.roles.iter().map(|r| r.name.as_str()).collect();
                eprintln!(
                    "--role {name}: {} has no such role; choose one of: {}",
                    config_path.display(),
                    known.join(", ")
                );
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let path = match chosen {
        Some(chosen) => format!("/v1/credentials/{}", chosen.name.as_str()),
        None => "/v1/credentials".to_owned(),
    };
    let token_file = chosen
        .and_then(|r| r.token_file.clone())
        .unwrap_or(config.listen.token_file);
    print(
        format!(
            "export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://{addr}{path}\n\
             export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}\n\
             unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_AUTHORIZATION_TOKEN\n",
            token_file.display()
        )
        .as_bytes(),
    )
}

/// Logs to stderr in `format`; `RUST_LOG` picks the level (default info).
/// Runtime workers gather their lines into few writes: see [`crate::logging`].
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::logging::Stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
        LogFormat::Text if stderr_is_journal() => builder
            .with_ansi(false)
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Whether stderr is connected to journald: systemd sets `JOURNAL_STREAM`
/// to the device and inode of the stream it connected, which a child
/// that redirected stderr no longer has.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", stat.st_dev, stat.st_ino))
}

/// Prefixes each line with its syslog priority (`<4>` for a warning),
/// which journald strips and records as the entry's priority.
struct JournalPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(context, writer, event)
    }
}

/// Prints an error with its causes and returns a failing exit code.
pub fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("assumed: {}", chain(error, "\n  caused by: "));
    ExitCode::FAILURE
}

/// Logs what stopped the daemon, with its causes, at error level (the
/// only use of that level), and returns a failing exit code.
fn fatal(error: &dyn std::error::Error) -> ExitCode {
    tracing::error!(error = %chain(error, ": "), "the daemon cannot run");
    ExitCode::FAILURE
}

/// An error and its causes. Many messages already end with their cause's
/// text (`cannot listen: Address already in use`); such a cause is not
/// repeated.
fn chain(error: &dyn std::error::Error, separator: &str) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(separator);
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("listen.tcp 127.0.0.1:1: cannot listen: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let error = Outer(std::io::Error::other("Address already in use"));
        assert_eq!(
            chain(&error, "; "),
            "listen.tcp 127.0.0.1:1: cannot listen: Address already in use"
        );
        let wrapped = std::io::Error::other(Outer(std::io::Error::other("gone")));
        assert_eq!(
            chain(&wrapped, "; "),
            "listen.tcp 127.0.0.1:1: cannot listen: gone",
            "a wrapper whose text is its cause's adds nothing either"
        );
    }
}
