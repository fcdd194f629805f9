//! The load: `oha`, a public HTTP load generator, run as a child process
//! with keep-alive connections for a fixed time, its JSON summary parsed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// Where the load goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// Loopback TCP, with the `Authorization` token when there is one.
    Tcp {
        addr: SocketAddr,
        token: Option<String>,
    },
    /// A Unix socket.
    Unix { socket: PathBuf },
}

/// One load run's settings.
#[derive(Clone, Debug)]
pub struct Load {
    pub target: Target,
    /// The request paths: one, or several that oha spreads the requests
    /// over (`--urls-from-file`).
    pub paths: Vec<String>,
    pub connections: usize,
    pub duration: Duration,
    /// Requests per second for all connections together; `None` sends
    /// each request as soon as the last answer on its connection arrived.
    pub rate: Option<u32>,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Requests answered with 200 and everything else, including transport errors.
    pub ok: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub slowest: Duration,
    /// The server process's CPU time (user and system) per request answered.
    pub cpu_per_request: Duration,
    /// Non-200 statuses and transport errors, by kind, for the report.
    pub error_kinds: Vec<(String, u64)>,
}

impl Outcome {
    pub fn total(&self) -> u64 {
        self.ok + self.errors
    }

    /// Several runs of one load summed up: the median of each rate and
    /// percentile, the slowest of all, and every error.
    pub fn median(runs: &[Outcome]) -> Outcome {
        fn middle<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
            values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            values[values.len() / 2]
        }
        let figure = |pick: fn(&Outcome) -> Duration| middle(runs.iter().map(pick).collect());
        let mut error_kinds: Vec<(String, u64)> = Vec::new();
        for (kind, count) in runs.iter().flat_map(|run| run.error_kinds.iter()) {
            match error_kinds.iter_mut().find(|(known, _)| known == kind) {
                Some((_, total)) => *total += count,
                None => error_kinds.push((kind.clone(), *count)),
            }
        }
        Outcome {
            ok: runs.iter().map(|run| run.ok).sum(),
            errors: runs.iter().map(|run| run.errors).sum(),
            requests_per_second: middle(runs.iter().map(|run| run.requests_per_second).collect()),
            p50: figure(|run| run.p50),
            p99: figure(|run| run.p99),
            p999: figure(|run| run.p999),
            slowest: runs.iter().map(|run| run.slowest).max().unwrap_or_default(),
            cpu_per_request: figure(|run| run.cpu_per_request),
            error_kinds,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "cannot run the load generator {oha}: {source}; install it with: cargo install --locked oha"
    )]
    Spawn {
        oha: PathBuf,
        source: std::io::Error,
    },
    #[error("the load generator failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("cannot read the load generator's JSON summary: {0}")]
    Summary(String),
}

/// Runs `load` with `oha` and returns what it measured.
pub fn run(oha: &Path, load: &Load) -> Result<Outcome, LoadError> {
    let mut command = Command::new(oha);
    command
        .arg("--no-tui")
        .args(["--output-format", "json"])
        .args(["-c", &load.connections.to_string()])
        .args(["-z", &format!("{}ms", load.duration.as_millis())])
        // Requests still in flight at the deadline are waited for, not
        // counted as errors.
        .arg("-w");
    if let Some(rate) = load.rate {
        command.args(["-q", &rate.to_string()]);
    }
    let host = match &load.target {
        Target::Tcp { addr, token } => {
            if let Some(token) = token {
                command.args(["-H", &format!("Authorization: {token}")]);
            }
            addr.to_string()
        }
        Target::Unix { socket } => {
            command.arg("--unix-socket").arg(socket);
            "localhost".to_owned()
        }
    };
    let urls: Vec<String> = load
        .paths
        .iter()
        .map(|path| format!("http://{host}{path}"))
        .collect();
    // Kept until oha has run.
    let _urls_file;
    if let [url] = urls.as_slice() {
        command.arg(url);
    } else {
        let file = tempfile::NamedTempFile::new().map_err(|source| LoadError::Spawn {
            oha: oha.to_owned(),
            source,
        })?;
        std::fs::write(file.path(), urls.join("\n")).map_err(|source| LoadError::Spawn {
            oha: oha.to_owned(),
            source,
        })?;
        command.arg("--urls-from-file").arg(file.path());
        _urls_file = file;
    }
    let output = command.output().map_err(|source| LoadError::Spawn {
        oha: oha.to_owned(),
        source,
    })?;
    if !output.status.success() {
        return Err(LoadError::Failed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    parse(&output.stdout)
}

fn parse(json: &[u8]) -> Result<Outcome, LoadError> {
    let summary: Value =
        serde_json::from_slice(json).map_err(|error| LoadError::Summary(error.to_string()))?;
    let seconds = |pointer: &str| {
        summary
            .pointer(pointer)
            .and_then(Value::as_f64)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| LoadError::Summary(format!("no {pointer}")))
    };
    let mut outcome = Outcome {
        requests_per_second: summary
            .pointer("/summary/requestsPerSec")
            .and_then(Value::as_f64)
            .ok_or_else(|| LoadError::Summary("no /summary/requestsPerSec".into()))?,
        p50: seconds("/latencyPercentiles/p50")?,
        p99: seconds("/latencyPercentiles/p99")?,
        p999: seconds("/latencyPercentiles/p99.9")?,
        slowest: seconds("/summary/slowest")?,
        ..Outcome::default()
    };
    let counts = |pointer: &str| -> Vec<(String, u64)> {
        summary
            .pointer(pointer)
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .map(|(key, count)| (key.clone(), count.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    for (status, count) in counts("/statusCodeDistribution") {
        if status == "200" {
            outcome.ok += count;
        } else {
            outcome.errors += count;
            outcome
                .error_kinds
                .push((format!("status {status}"), count));
        }
    }
    for (kind, count) in counts("/errorDistribution") {
        outcome.errors += count;
        outcome.error_kinds.push((kind, count));
    }
    Ok(outcome)
}

/// The first line `oha --version` prints.
pub fn version(oha: &Path) -> String {
    Command::new(oha)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.lines().next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| "oha (version unknown)".to_owned())
}
