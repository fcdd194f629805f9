//! The system under test: the real `assumed` binary, started with `serve`
//! on a configuration written for it, against an STS stand-in running in
//! this process. Its log goes to a file, as journald would receive it.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use assumed::standin::{MfaDevice, StandIn, StandInConfig, Stats};
use rand::Rng;

use crate::probe;

const ACCOUNT: &str = "123456789012";
const SERIAL: &str = "arn:aws:iam::123456789012:mfa/bench";
const ACCESS_KEY_ID: &str = "AKIABENCHSERVICEUSER";
/// How long the daemon may take to bind its listeners.
const LISTEN_WAIT: Duration = Duration::from_secs(30);
/// How long SIGTERM may take before the daemon is killed.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// Between readiness probes while the socket does not exist yet.
const PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// How long to wait for a line the daemon has logged but may still hold.
const LOG_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot {action}: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
    #[error("the daemon {0}; see its log at {1}")]
    Daemon(String, PathBuf),
}

pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let action = action.into();
    move |source| BenchError::Io { action, source }
}

/// An STS stand-in on its own one-thread runtime, so it answers while the
/// driver blocks on the load generator.
pub struct Sts {
    runtime: tokio::runtime::Runtime,
    standin: Option<StandIn>,
    seed: Vec<u8>,
}

impl Sts {
    /// A stand-in whose sessions all last `lifetime`.
    pub fn start(lifetime: Duration) -> Result<Sts, BenchError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(io("start the stand-in's runtime"))?;
        let seed: Vec<u8> = (0..20).map(|_| rand::rng().random()).collect();
        let standin = runtime
            .block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                StandIn::start(
                    listener,
                    StandInConfig {
                        access_key_id: ACCESS_KEY_ID.into(),
                        account_id: ACCOUNT.into(),
                        devices: vec![MfaDevice {
                            serial_number: SERIAL.into(),
                            seed: seed.clone(),
                        }],
                        session_lifetime: Some(lifetime),
                    },
                )
                .await
            })
            .map_err(io("start the STS stand-in"))?;
        Ok(Sts {
            runtime,
            standin: Some(standin),
            seed,
        })
    }

    pub fn stats(&self) -> Stats {
        self.standin().stats()
    }

    fn standin(&self) -> &StandIn {
        self.standin
            .as_ref()
            .expect("the stand-in runs until dropped")
    }
}

impl Drop for Sts {
    fn drop(&mut self) {
        if let Some(standin) = self.standin.take() {
            self.runtime.block_on(standin.shutdown());
        }
    }
}

/// How the daemon is configured for one run.
pub struct Setup {
    pub roles: usize,
    /// Adds `mfa.session`, so a daemon that supports session-token mode
    /// assumes every role from one MFA session.
    pub session_mode: bool,
}

/// The name of the `index`-th role: `r000`, `r001`, …
pub fn role_name(index: usize) -> String {
    format!("r{index:03}")
}

/// What starting the daemon took.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// From spawning the process to the first 200 for a credential.
    pub first_credential: Duration,
    /// The first AssumeRole as the daemon saw it, from its own log.
    pub sts_round_trip: Option<Duration>,
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    pub pid: u32,
    pub tcp: SocketAddr,
    pub socket: PathBuf,
    pub token: String,
    pub log: PathBuf,
    pub readiness: Readiness,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Writes the configuration, starts `binary serve` and returns once the
    /// first credential has been served over the Unix socket.
    pub fn start(binary: &Path, sts: &Sts, setup: &Setup) -> Result<Daemon, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("assumed-bench-")
            .tempdir()
            .map_err(io("create a temporary directory"))?;
        let config = write_config(dir.path(), sts, setup)?;
        let socket = dir.path().join("run/credentials.sock");
        let log = dir.path().join("daemon.log");
        let log_file = std::fs::File::create(&log).map_err(io("create the daemon's log"))?;

        let spawned = Instant::now();
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            // Info as in production, plus the refresher's debug line that
            // marks the start of each STS call, to time the round trip.
            .env("RUST_LOG", "info,assumed::session=debug")
            .env("NO_COLOR", "1")
            .env_remove("ASSUMED_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(io(format!("start {}", binary.display())))?;
        let pid = child.id();
        let mut daemon = Daemon {
            child,
            pid,
            tcp: SocketAddr::from(([127, 0, 0, 1], 0)),
            socket,
            token: String::new(),
            log,
            readiness: Readiness {
                first_credential: Duration::ZERO,
                sts_round_trip: None,
            },
            _dir: dir,
        };
        daemon.readiness.first_credential = daemon.first_credential(spawned)?;
        daemon.tcp = daemon.listening_address()?;
        daemon.token = std::fs::read_to_string(daemon._dir.path().join("run/token"))
            .map_err(io("read the daemon's token"))?;
        daemon.readiness.sts_round_trip = daemon.first_sts_round_trip();
        Ok(daemon)
    }

    fn fail(&self, what: impl Into<String>) -> BenchError {
        BenchError::Daemon(what.into(), self.log.clone())
    }

    /// Asks for the default credential until the socket answers; a request
    /// on a cold role is held until the first session arrives.
    fn first_credential(&mut self, spawned: Instant) -> Result<Duration, BenchError> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.fail(format!("exited while starting ({status})")));
            }
            if spawned.elapsed() > LISTEN_WAIT {
                return Err(self.fail("served no credential in time"));
            }
            match probe::get_unix(&self.socket, "/v1/credentials") {
                Ok(answer) if answer.status == 200 => return Ok(spawned.elapsed()),
                Ok(answer) => {
                    return Err(self.fail(format!(
                        "answered its first credential request with {}: {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    )));
                }
                Err(_) => std::thread::sleep(PROBE_INTERVAL),
            }
        }
    }

    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn listening_address(&self) -> Result<SocketAddr, BenchError> {
        self.log_lines()
            .iter()
            .find(|line| line.contains(" listening"))
            .and_then(|line| field(line, "tcp"))
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| self.fail("logged no listening line with a tcp= address"))
    }

    /// From the log: the daemon's workers write their lines when they go
    /// idle, which may be just after the first credential was answered, so
    /// the log is read again for a moment.
    fn first_sts_round_trip(&self) -> Option<Duration> {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let lines = self.log_lines();
            let at = |needle: &str| {
                lines
                    .iter()
                    .find(|line| line.contains(needle))
                    .and_then(|line| line.split_whitespace().next())
                    .and_then(|stamp| humantime::parse_rfc3339(stamp).ok())
            };
            if let (Some(called), Some(refreshed)) =
                (at("calling AssumeRole"), at("refreshed role session"))
            {
                let called: SystemTime = called;
                return refreshed.duration_since(called).ok();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    /// The credential body the daemon serves for the default role.
    pub fn credential_body(&self) -> Result<Vec<u8>, BenchError> {
        let answer = probe::get_unix(&self.socket, "/v1/credentials")
            .map_err(io("ask the daemon for a credential"))?;
        Ok(answer.body)
    }

    /// The daemon's `/healthz` JSON.
    pub fn health(&self) -> Result<serde_json::Value, BenchError> {
        let answer =
            probe::get_unix(&self.socket, "/healthz").map_err(io("ask the daemon's health"))?;
        serde_json::from_slice(&answer.body).map_err(|error| self.fail(format!("health: {error}")))
    }

    /// Waits until every role holds a usable credential, or `limit` passes.
    pub fn wait_all_usable(&self, limit: Duration) -> Result<bool, BenchError> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.health()?["status"] == "ok" {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(false)
    }

    /// The size of the daemon's log file, in bytes.
    pub fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |meta| meta.len())
    }

    /// SIGTERM, then waits for the exit (killing it after [`STOP_WAIT`]).
    pub fn stop(mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of `name=value` in a plain-text log line.
fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    Some(
        line[start..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_owned(),
    )
}

fn write_config(dir: &Path, sts: &Sts, setup: &Setup) -> Result<PathBuf, BenchError> {
    let seed_path = write_private(dir, "totp-seed", &data_encoding::BASE32.encode(&sts.seed))?;
    let key_path = write_private(
        dir,
        "aws-credentials",
        &format!(
            "[default]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = benchmarkSecretAccessKey0000000000000000\n"
        ),
    )?;
    let session = if setup.session_mode {
        "session = \"12h\"\n"
    } else {
        ""
    };
    let mut text = format!(
        "[aws]\nregion = \"us-east-1\"\nsts_endpoint = \"{}\"\ncredentials_file = \"{}\"\n\n\
         [mfa]\nserial_number = \"{SERIAL}\"\nseed_file = \"{}\"\n{session}\n\
         [listen]\nunix_socket = \"{}\"\ntcp = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\n",
        sts.standin().endpoint(),
        key_path.display(),
        seed_path.display(),
        dir.join("run/credentials.sock").display(),
        dir.join("run/token").display(),
    );
    for index in 0..setup.roles {
        let default = if index == 0 { "default = true\n" } else { "" };
        text.push_str(&format!(
            "[[role]]\nname = \"{0}\"\narn = \"arn:aws:iam::{ACCOUNT}:role/Bench{0}\"\nsession_name = \"bench-host\"\n{default}\n",
            role_name(index)
        ));
    }
    write_private(dir, "assumed.toml", &text)
}

pub fn write_private(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, BenchError> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(io(format!("write {}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("restrict {}", path.display())))?;
    Ok(path)
}
