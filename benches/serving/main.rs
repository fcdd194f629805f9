//! The serving benchmark: the release `assumed` binary against an STS
//! stand-in, under load from `oha`, next to a bare hyper server that
//! returns the same bytes.
//!
//! Run it with `bench/run.sh`, which builds the release binary, installs
//! `oha` if it is missing and writes the figures into `docs/BENCHMARKS.md`
//! between its results markers. It takes about ten minutes and is not part
//! of `cargo test`.
//!
//! What one run measures, each load being keep-alive connections for a
//! fixed time after a warm-up that is not counted:
//! - the baseline and the daemon over TCP (with the token) and over the
//!   Unix socket, 64 connections: requests/s, p50/p99/p99.9, errors;
//! - the same over TCP with 1 and 1024 connections;
//! - the daemon's resident memory when ready and after every request above
//!   (well over a million), and its CPU time and context switches over an
//!   idle minute;
//! - readiness: from spawning the process to its first credential, next
//!   to the STS round trip the daemon itself logged;
//! - refresh under load: sessions so short that a refresh falls inside the
//!   measured window, with the stand-in's count of AssumeRole calls;
//! - 1, 10 and 100 roles, load spread over all of them (in session-token
//!   mode; a daemon without it is measured in direct mode with as many
//!   roles as the TOTP step lets start in a minute and a half).

mod baseline;
mod daemon;
mod load;
mod probe;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, Subcommand};

use daemon::{BenchError, Daemon, Setup, Sts, io, role_name};
use load::{Load, Outcome, Target};

/// Sessions for every run but the refresh run: nothing refreshes.
const LONG_SESSION: Duration = Duration::from_secs(3600);
/// Sessions for the refresh run: the daemon refreshes these 30 s after
/// issue (three quarters of the life ahead, which keeps the 60 s serve
/// margin and a TOTP step of slack), once per step, within STS's budget.
const SHORT_SESSION: Duration = Duration::from_secs(120);
/// Where in the measured window the refresh should fall.
const REFRESH_INTO_WINDOW: Duration = Duration::from_secs(4);
/// Role counts to measure in session-token mode, where roles cost no codes.
const SESSION_MODE_ROLES: [usize; 3] = [1, 10, 100];
/// Role counts in direct mode: each role needs its own code, one per 30 s
/// step, so four roles take a minute and a half to start.
const DIRECT_MODE_ROLES: [usize; 2] = [1, 4];
/// How long all roles may take to become usable, per role (a TOTP step
/// each in direct mode) and on top.
const PER_ROLE_START: Duration = Duration::from_secs(35);
const ROLES_START_BASE: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(about = "Benchmarks assumed's credential endpoint against a bare hyper server")]
struct Options {
    /// The daemon binary to measure.
    #[arg(long, default_value = env!("CARGO_BIN_EXE_assumed"))]
    daemon: PathBuf,
    /// The load generator.
    #[arg(long, default_value = "oha")]
    oha: PathBuf,
    /// The Markdown file whose results section is rewritten.
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    out: PathBuf,
    /// Each measured load's length.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The unmeasured load before each measured one.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Connections for the main comparison.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The request rate of the comparison below saturation.
    #[arg(long, default_value_t = 50_000)]
    rate: u32,
    /// Rounds of the main comparison; the report gives their medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How long the daemon is watched doing nothing.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Passed by `cargo bench` to every benchmark; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Serve as the baseline (the driver starts this itself).
    #[command(hide = true)]
    Baseline {
        #[arg(long)]
        body: PathBuf,
        #[arg(long)]
        unix: PathBuf,
    },
}

fn main() -> ExitCode {
    let options = Options::parse();
    if let Some(Role::Baseline { body, unix }) = &options.role {
        return match baseline::run(body, unix) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("baseline: {error}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&options) {
        Ok(results) => {
            let section = report::render(&results);
            println!("{section}");
            match report::write(&options.out, &section) {
                Ok(()) => {
                    eprintln!("results written to {}", options.out.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("cannot write {}: {error}", options.out.display());
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("benchmark failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// One measured load, named for the report.
pub struct Measured {
    pub label: String,
    /// The median of the rounds, figure by figure.
    pub outcome: Outcome,
    pub rounds: Vec<Outcome>,
}

pub struct Results {
    pub machine: report::Machine,
    pub settings: report::Settings,
    pub readiness: daemon::Readiness,
    pub steady: Vec<Measured>,
    /// Baseline and daemon over TCP at `--rate` requests/s.
    pub fixed_rate: (Outcome, Outcome),
    pub clients: Vec<(usize, Outcome, Outcome)>,
    pub rss_ready_kib: u64,
    /// After the 64-connection rounds, and the requests they made.
    pub rss_steady_kib: u64,
    pub served_steady: u64,
    /// After everything, 1024 connections included.
    pub rss_after_kib: u64,
    pub requests_served: u64,
    pub audit_lines: u64,
    pub log_bytes: u64,
    pub idle: Idle,
    pub refresh: RefreshRun,
    pub roles: RolesRuns,
}

pub struct Idle {
    pub watched: Duration,
    pub cpu: Duration,
    pub context_switches: u64,
}

pub struct RefreshRun {
    pub outcome: Outcome,
    pub refreshes: u64,
    pub assume_role_calls: u64,
    pub codes_rejected: u64,
}

pub struct RolesRuns {
    pub session_mode: bool,
    pub runs: Vec<RolesRun>,
}

pub struct RolesRun {
    pub roles: usize,
    pub all_usable: bool,
    pub outcome: Outcome,
    pub rss_ready_kib: u64,
    pub rss_after_kib: u64,
}

struct Driver<'a> {
    options: &'a Options,
}

impl Driver<'_> {
    /// A warm-up, then the measured load.
    /// `server` is the process answering, whose CPU time is read.
    fn measure(&self, load: Load, server: u32) -> Result<(Outcome, u64), BenchError> {
        let warmup = Load {
            duration: self.options.warmup,
            ..load.clone()
        };
        let warm = load::run(&self.options.oha, &warmup).map_err(load_error)?;
        let cpu_before = probe::cpu_time(server);
        let mut measured = load::run(&self.options.oha, &load).map_err(load_error)?;
        let cpu = probe::cpu_time(server).saturating_sub(cpu_before);
        measured.cpu_per_request = cpu / u32::try_from(measured.total().max(1)).unwrap_or(u32::MAX);
        eprintln!(
            "  {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  CPU {:>5.1} µs/req  errors {}",
            measured.requests_per_second,
            ms(measured.p50),
            ms(measured.p99),
            ms(measured.p999),
            micros(measured.cpu_per_request),
            measured.errors
        );
        let sent = warm.total() + measured.total();
        Ok((measured, sent))
    }

    fn load(&self, target: Target, connections: usize) -> Load {
        Load {
            target,
            paths: vec!["/v1/credentials".into()],
            connections,
            duration: self.options.duration,
            rate: None,
        }
    }
}

fn load_error(error: load::LoadError) -> BenchError {
    BenchError::Io {
        action: "run the load".into(),
        source: std::io::Error::other(error.to_string()),
    }
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn run(options: &Options) -> Result<Results, BenchError> {
    let driver = Driver { options };
    let settings = report::Settings {
        oha: load::version(&options.oha),
        duration: options.duration,
        warmup: options.warmup,
        connections: options.connections,
        rounds: options.rounds,
        rate: options.rate,
    };

    eprintln!("starting the daemon (1 role, direct mode) and the baseline");
    let sts = Sts::start(LONG_SESSION)?;
    let daemon = Daemon::start(
        &options.daemon,
        &sts,
        &Setup {
            roles: 1,
            session_mode: false,
        },
    )?;
    let readiness = daemon.readiness.clone();
    let rss_ready_kib = probe::rss_kib(daemon.pid);
    let baseline = Baseline::start(&daemon.credential_body()?)?;

    let daemon_tcp = Target::Tcp {
        addr: daemon.tcp,
        token: Some(daemon.token.clone()),
    };
    // The baseline gets the same headers, though it reads none.
    let baseline_tcp = Target::Tcp {
        addr: baseline.tcp,
        token: Some(daemon.token.clone()),
    };
    let daemon_unix = Target::Unix {
        socket: daemon.socket.clone(),
    };
    let baseline_unix = Target::Unix {
        socket: baseline.socket.clone(),
    };

    let mut served = 0;
    let runs = [
        ("baseline, TCP", &baseline_tcp, false),
        ("assumed, TCP", &daemon_tcp, true),
        ("baseline, Unix socket", &baseline_unix, false),
        ("assumed, Unix socket", &daemon_unix, true),
    ];
    let pid = |is_daemon: bool| {
        if is_daemon {
            daemon.pid
        } else {
            baseline.pid()
        }
    };
    // Rounds alternate baseline and daemon, so a neighbour's burst of work
    // on the shared cores lands on both rather than on one.
    let mut rounds: Vec<Vec<Outcome>> = vec![Vec::new(); runs.len()];
    for round in 1..=options.rounds {
        for (index, (label, target, is_daemon)) in runs.iter().enumerate() {
            eprintln!(
                "{label}, {} connections, round {round}/{}",
                options.connections, options.rounds
            );
            let (outcome, sent) = driver.measure(
                driver.load((*target).clone(), options.connections),
                pid(*is_daemon),
            )?;
            if *is_daemon {
                served += sent;
            }
            rounds[index].push(outcome);
        }
    }
    let steady = runs
        .iter()
        .zip(rounds)
        .map(|((label, _, _), outcomes)| Measured {
            label: (*label).into(),
            outcome: Outcome::median(&outcomes),
            rounds: outcomes,
        })
        .collect();

    let rss_steady_kib = probe::rss_kib(daemon.pid);
    let served_steady = served;

    // The same comparison below saturation: at a fixed rate neither server
    // competes with the load generator for every cycle of the two cores.
    let mut at_rate: Vec<Vec<Outcome>> = vec![Vec::new(); 2];
    for round in 1..=options.rounds {
        for (index, (target, is_daemon)) in [(&baseline_tcp, false), (&daemon_tcp, true)]
            .into_iter()
            .enumerate()
        {
            eprintln!(
                "{}, TCP, {} requests/s, round {round}/{}",
                if is_daemon { "assumed" } else { "baseline" },
                options.rate,
                options.rounds
            );
            let load = Load {
                rate: Some(options.rate),
                ..driver.load(target.clone(), options.connections)
            };
            let (outcome, sent) = driver.measure(load, pid(is_daemon))?;
            if is_daemon {
                served += sent;
            }
            at_rate[index].push(outcome);
        }
    }
    let fixed_rate = (Outcome::median(&at_rate[0]), Outcome::median(&at_rate[1]));

    let mut clients = Vec::new();
    for connections in [1, 1024] {
        eprintln!("baseline, TCP, {connections} connections");
        let (base, _) = driver.measure(
            driver.load(baseline_tcp.clone(), connections),
            baseline.pid(),
        )?;
        eprintln!("assumed, TCP, {connections} connections");
        let (ours, sent) =
            driver.measure(driver.load(daemon_tcp.clone(), connections), daemon.pid)?;
        served += sent;
        clients.push((connections, base, ours));
    }
    let rss_after_kib = probe::rss_kib(daemon.pid);
    drop(baseline);

    eprintln!("watching the idle daemon for {} s", options.idle.as_secs());
    let idle = watch_idle(daemon.pid, options.idle);
    let audit_lines = count_audit_lines(&daemon.log)?;
    let log_bytes = daemon.log_bytes();
    daemon.stop();
    drop(sts);

    let refresh = refresh_under_load(&driver)?;
    let roles = cost_of_roles(&driver)?;

    Ok(Results {
        machine: report::Machine::describe(),
        settings,
        readiness,
        steady,
        fixed_rate,
        clients,
        rss_ready_kib,
        rss_steady_kib,
        served_steady,
        rss_after_kib,
        requests_served: served,
        audit_lines,
        log_bytes,
        idle,
        refresh,
        roles,
    })
}

fn watch_idle(pid: u32, watched: Duration) -> Idle {
    let cpu = probe::cpu_time(pid);
    let switches = probe::context_switches(pid);
    std::thread::sleep(watched);
    Idle {
        watched,
        cpu: probe::cpu_time(pid).saturating_sub(cpu),
        context_switches: probe::context_switches(pid).saturating_sub(switches),
    }
}

fn count_audit_lines(log: &Path) -> Result<u64, BenchError> {
    use std::io::BufRead;
    let file = std::fs::File::open(log).map_err(io("read the daemon's log"))?;
    let mut count = 0;
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.map_err(io("read the daemon's log"))?;
        if line.windows(14).any(|window| window == b"assumed::audit") {
            count += 1;
        }
    }
    Ok(count)
}

/// The daemon's view of role `r000`: refreshes so far and the next one.
fn refresh_state(daemon: &Daemon) -> Result<(u64, Option<SystemTime>), BenchError> {
    let health = daemon.health()?;
    let role = &health["roles"][role_name(0)];
    let refreshes = role["refreshes"].as_u64().unwrap_or(0);
    let next = role["next_refresh"]
        .as_str()
        .and_then(|text| humantime::parse_rfc3339(text).ok());
    Ok((refreshes, next))
}

fn refresh_under_load(driver: &Driver) -> Result<RefreshRun, BenchError> {
    eprintln!("refresh under load: {} s sessions", SHORT_SESSION.as_secs());
    let sts = Sts::start(SHORT_SESSION)?;
    let daemon = Daemon::start(
        &driver.options.daemon,
        &sts,
        &Setup {
            roles: 1,
            session_mode: false,
        },
    )?;
    let (_, next) = refresh_state(&daemon)?;
    let next = next
        .ok_or_else(|| BenchError::Daemon("reported no next refresh".into(), daemon.log.clone()))?;
    // Start the warm-up so that the refresh falls a few seconds into the
    // measured window.
    let lead = driver.options.warmup + REFRESH_INTO_WINDOW;
    if let Ok(wait) = next.duration_since(SystemTime::now() + lead) {
        std::thread::sleep(wait);
    }
    let (refreshes_before, _) = refresh_state(&daemon)?;
    let calls_before = sts.stats();
    let target = Target::Tcp {
        addr: daemon.tcp,
        token: Some(daemon.token.clone()),
    };
    let (outcome, _) =
        driver.measure(driver.load(target, driver.options.connections), daemon.pid)?;
    let (refreshes_after, _) = refresh_state(&daemon)?;
    let calls_after = sts.stats();
    daemon.stop();
    Ok(RefreshRun {
        outcome,
        refreshes: refreshes_after - refreshes_before,
        assume_role_calls: calls_after.assume_role_calls - calls_before.assume_role_calls,
        codes_rejected: calls_after.codes_rejected - calls_before.codes_rejected,
    })
}

/// The credential path of each of the first `roles` roles.
fn role_paths(roles: usize) -> Vec<String> {
    (0..roles)
        .map(|index| format!("/v1/credentials/{}", role_name(index)))
        .collect()
}

fn cost_of_roles(driver: &Driver) -> Result<RolesRuns, BenchError> {
    let mut runs = Vec::new();
    let mut session_mode = false;
    let mut counts: Vec<usize> = vec![1];
    let mut index = 0;
    while index < counts.len() {
        let roles = counts[index];
        eprintln!("{roles} role(s)");
        let sts = Sts::start(LONG_SESSION)?;
        let daemon = Daemon::start(
            &driver.options.daemon,
            &sts,
            &Setup {
                roles,
                session_mode: true,
            },
        )?;
        if index == 0 {
            session_mode = sts.stats().get_session_token_calls > 0;
            let more = if session_mode {
                &SESSION_MODE_ROLES[1..]
            } else {
                &DIRECT_MODE_ROLES[1..]
            };
            counts.extend_from_slice(more);
        }
        let limit = ROLES_START_BASE + PER_ROLE_START * roles as u32;
        let started = Instant::now();
        let all_usable = daemon.wait_all_usable(limit)?;
        eprintln!(
            "  {} after {:.0} s",
            if all_usable {
                "all usable"
            } else {
                "NOT all usable"
            },
            started.elapsed().as_secs_f64()
        );
        let rss_ready_kib = probe::rss_kib(daemon.pid);
        let load = Load {
            target: Target::Tcp {
                addr: daemon.tcp,
                token: Some(daemon.token.clone()),
            },
            paths: role_paths(roles),
            connections: driver.options.connections,
            duration: driver.options.duration,
            rate: None,
        };
        let (outcome, _) = driver.measure(load, daemon.pid)?;
        runs.push(RolesRun {
            roles,
            all_usable,
            outcome,
            rss_ready_kib,
            rss_after_kib: probe::rss_kib(daemon.pid),
        });
        daemon.stop();
        index += 1;
    }
    Ok(RolesRuns { session_mode, runs })
}

/// The baseline server: this same executable, re-run as `baseline`.
struct Baseline {
    child: Child,
    tcp: std::net::SocketAddr,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Baseline {
    fn start(body: &[u8]) -> Result<Baseline, BenchError> {
        use std::io::BufRead;
        let dir = tempfile::Builder::new()
            .prefix("assumed-baseline-")
            .tempdir()
            .map_err(io("create a temporary directory"))?;
        let body_path =
            daemon::write_private(dir.path(), "body.json", &String::from_utf8_lossy(body))?;
        let socket = dir.path().join("baseline.sock");
        let executable = std::env::current_exe().map_err(io("find this executable"))?;
        let mut child = Command::new(executable)
            .arg("baseline")
            .arg("--body")
            .arg(&body_path)
            .arg("--unix")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(io("start the baseline"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(io("read the baseline's address"))?;
        let tcp = line
            .trim()
            .strip_prefix("listening tcp=")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| BenchError::Io {
                action: "start the baseline".into(),
                source: std::io::Error::other(format!("it said {line:?}")),
            })?;
        Ok(Baseline {
            child,
            tcp,
            socket,
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
