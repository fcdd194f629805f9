//! Helpers for the resilience tests: starting the daemon from async code,
//! editing its configuration, signalling it, reading its log, and a
//! background client that checks every answer it gets.

#![allow(dead_code)]
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::common::*;

/// Every 200 must leave clients at least this long (the daemon's 60 s
/// serve margin, less what the answer may have spent in transit).
pub const LEAST_LEFT_ON_SERVED: Duration = Duration::from_secs(55);

/// Starts the daemon without blocking the runtime (the stand-in runs on it).
pub async fn start_daemon(config: &Path) -> Daemon {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || Daemon::start(&config))
        .await
        .unwrap()
}

/// Like [`start_daemon`] with extra environment variables for the child.
pub async fn start_daemon_with_env(config: &Path, env: Vec<(String, String)>) -> Daemon {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(binary());
        command
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env_remove("ASSUMED_CONFIG")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Daemon::spawn(command)
    })
    .await
    .unwrap()
}

/// Turns on session-token mode with MFA sessions of `duration`.
pub fn use_mfa_session(setup: &Setup, duration: &str) {
    edit_config(setup, |text| {
        text.replacen("[mfa]\n", &format!("[mfa]\nsession = \"{duration}\"\n"), 1)
    });
}

/// Sends SIGHUP: reload.
pub fn hangup(daemon: &Daemon) {
    let pid = rustix::process::Pid::from_raw(daemon.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
}

/// Log lines (without colour codes) that contain every one of `needles`.
pub fn log_lines(daemon: &Daemon, needles: &[&str]) -> Vec<String> {
    daemon
        .logs()
        .iter()
        .map(|line| strip_ansi(line))
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .collect()
}

/// When the daemon wrote each line containing every one of `needles`.
pub fn log_times(daemon: &Daemon, needles: &[&str]) -> Vec<SystemTime> {
    log_lines(daemon, needles)
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|stamp| humantime::parse_rfc3339_weak(stamp).ok())
        .collect()
}

/// Waits until `count` log lines contain every one of `needles`.
pub async fn wait_for_log(daemon: &Daemon, needles: &[&str], count: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while log_lines(daemon, needles).len() < count {
        assert!(
            Instant::now() < deadline,
            "no {count} log line(s) with {needles:?} within {limit:?}:\n{}",
            daemon.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/healthz`: status and JSON.
pub async fn health(daemon: &Daemon) -> (u16, serde_json::Value) {
    let host = daemon.tcp.to_string();
    let (status, body) = get_tcp(daemon.tcp, "/healthz", &[("host", &host)]).await;
    (status, json(&body))
}

/// Waits until every role is usable; returns how long that took.
pub async fn wait_until_healthy(daemon: &Daemon, limit: Duration) -> Duration {
    let started = Instant::now();
    while health(daemon).await.0 != 200 {
        assert!(
            started.elapsed() < limit,
            "not every role became usable within {limit:?}: {}",
            health(daemon).await.1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// One answer a [`Poller`] got.
#[derive(Clone, Debug)]
pub struct Observation {
    /// When the request was sent, on the monotonic and on the wall clock.
    pub sent: Instant,
    pub sent_at: SystemTime,
    pub latency: Duration,
    pub status: u16,
    pub access_key_id: Option<String>,
    pub expiration: Option<SystemTime>,
    /// What was wrong with the answer, if anything.
    pub problem: Option<String>,
}

/// A client asking for one role's credential over and over, checking that
/// a 200 is never empty, expired or inside the serve margin, and that any
/// other answer is a JSON error.
pub struct Poller {
    observations: Arc<Mutex<Vec<Observation>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    pub fn start(addr: SocketAddr, path: &str, token: &str, every: Duration) -> Poller {
        let observations = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (observations, stop) = (observations.clone(), stop.clone());
            let (path, token) = (path.to_owned(), token.to_owned());
            async move {
                while !stop.is_cancelled() {
                    let observation = ask(addr, &path, &token).await;
                    observations.lock().unwrap().push(observation);
                    tokio::select! {
                        () = tokio::time::sleep(every) => {}
                        () = stop.cancelled() => {}
                    }
                }
            }
        });
        Poller {
            observations,
            stop,
            task,
        }
    }

    pub fn observations(&self) -> Vec<Observation> {
        self.observations.lock().unwrap().clone()
    }

    /// Waits for a 200 sent at or after `since`; returns when it was sent.
    pub async fn success_since(&self, since: Instant, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            let found = self
                .observations()
                .iter()
                .find(|o| o.sent >= since && o.status == 200)
                .map(|o| o.sent);
            if let Some(at) = found {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "no credential served within {limit:?}; last answers: {:?}",
                self.observations().iter().rev().take(3).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops asking; returns everything seen, after asserting no answer was wrong.
    pub async fn finish(self) -> Vec<Observation> {
        self.stop.cancel();
        self.task.await.expect("the polling client failed");
        let observations = self.observations.lock().unwrap().clone();
        let problems: Vec<&String> = observations
            .iter()
            .filter_map(|o| o.problem.as_ref())
            .collect();
        assert!(problems.is_empty(), "wrong answers: {problems:#?}");
        observations
    }
}

/// One request, checked.
pub async fn ask(addr: SocketAddr, path: &str, token: &str) -> Observation {
    let (sent, sent_at) = (Instant::now(), SystemTime::now());
    let (status, body) = get_with_token(addr, path, token).await;
    let received = SystemTime::now();
    let mut observation = Observation {
        sent,
        sent_at,
        latency: sent.elapsed(),
        status,
        access_key_id: None,
        expiration: None,
        problem: None,
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        observation.problem = Some(format!("{status} with a body that is not JSON"));
        return observation;
    };
    if status != 200 {
        if body["code"].as_str().is_none_or(str::is_empty) {
            observation.problem = Some(format!("{status} without an error code: {body}"));
        }
        return observation;
    }
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
    let expiration = humantime::parse_rfc3339(&field("Expiration")).ok();
    observation.access_key_id = Some(field("AccessKeyId"));
    observation.expiration = expiration;
    observation.problem = if ["AccessKeyId", "SecretAccessKey", "Token"]
        .iter()
        .any(|name| field(name).is_empty())
    {
        Some("a 200 with an empty field".to_owned())
    } else {
        match expiration {
            None => Some(format!(
                "a 200 without a valid Expiration: {}",
                field("Expiration")
            )),
            Some(at) if at <= received => Some("an expired credential was served".to_owned()),
            Some(at) if at.duration_since(received).unwrap() < LEAST_LEFT_ON_SERVED => {
                Some(format!(
                    "a credential with {:?} left was served",
                    at.duration_since(received).unwrap()
                ))
            }
            Some(_) => None,
        }
    };
    observation
}

/// The distinct access key ids served, in the order first seen.
pub fn keys_served(observations: &[Observation]) -> Vec<String> {
    let mut seen = Vec::new();
    for key in observations.iter().filter_map(|o| o.access_key_id.clone()) {
        if !seen.contains(&key) {
            seen.push(key);
        }
    }
    seen
}

/// AssumeRole calls per role name (the stand-in counts them by ARN).
pub fn calls_by_role(setup: &Setup) -> BTreeMap<String, u64> {
    setup
        .standin
        .stats()
        .calls_by_role
        .into_iter()
        .map(|(arn, calls)| {
            let name = arn.rsplit('/').next().unwrap().trim_end_matches("Role");
            (name.to_owned(), calls)
        })
        .collect()
}
