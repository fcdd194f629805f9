//! The fault matrix: the real daemon against the STS stand-in's injected
//! faults, one scenario per row of the README's table.
//!
//! Every scenario asserts what the daemon does, measures how long it takes
//! to recover, checks through a polling client that no answer is ever an
//! expired or empty credential (or one inside the 60 s serve margin), and
//! that the stand-in saw no code presented twice.
//!
//! Most scenarios spend wall-clock time waiting for TOTP steps (a new code
//! every 30 s) or budget windows, so they all run at once: this binary has
//! its own `main`, which runs every selected scenario concurrently on one
//! runtime, then prints the measured table. It understands the arguments
//! test runners pass: name filters, `--exact` and `--list`.

mod common;
#[path = "common/resilience.rs"]
mod resilience;

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use assumed::standin::{Fault, FaultKind};
use common::*;
use resilience::*;

/// Sessions this short are refreshed every 30 s, so a scenario sees several.
const SHORT_SESSION: Duration = Duration::from_secs(120);
/// Generous bounds on recovery: a few TOTP steps, or one budget window.
const FEW_STEPS: Duration = Duration::from_secs(150);
/// How often the polling client asks.
const POLL: Duration = Duration::from_millis(250);
const INVALID_CODE: &str = "MultiFactorAuthentication failed with invalid MFA one time pass code.";
const UNABLE_TO_VALIDATE: &str = "MultiFactorAuthentication failed, unable to validate MFA code. Please verify your MFA serial number is valid and associated with this user.";

/// A measured row of the table.
struct Row {
    fault: &'static str,
    behaviour: String,
    recovery: String,
}

type Scenario = fn() -> Pin<Box<dyn Future<Output = Row> + Send>>;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), || Box::pin($name()) as Pin<Box<dyn Future<Output = Row> + Send>>)),*]
    };
}

const SCENARIOS: &[(&str, Scenario)] = scenarios![
    bursts_of_500_and_503_are_backed_off_with_a_new_code_for_each_try,
    bursts_in_session_token_mode_are_retried_in_seconds_without_codes,
    throttling_is_backed_off_and_ridden_out,
    a_connect_hang_ends_at_the_connect_timeout_and_sts_is_used_once_reachable,
    a_read_hang_ends_at_the_read_timeout_and_the_next_try_succeeds,
    a_rejected_code_is_followed_by_the_next_steps_code,
    a_code_someone_else_used_first_is_refused_and_never_presented_again,
    a_spent_mfa_budget_waits_for_the_next_window_without_calling_sts,
    access_denied_is_retried_slowly_or_at_once_on_reload,
    an_invalid_base_key_is_reported_until_a_fixed_key_is_reloaded,
    an_expired_base_key_is_reported_until_a_new_key_is_reloaded,
    sessions_shorter_than_refresh_ahead_are_refreshed_at_half_life_without_a_gap,
    malformed_answers_are_backed_off_and_ridden_out,
    a_stand_in_clock_95_s_ahead_costs_one_rejected_code,
    a_stand_in_clock_95_s_behind_costs_one_rejected_code,
    a_stand_in_clock_4_min_ahead_with_signing_checks_keeps_refreshing,
    a_stand_in_clock_4_min_behind_with_signing_checks_keeps_refreshing,
    a_revoked_mfa_session_is_replaced_once_for_every_role,
    five_roles_are_served_on_one_code_in_session_token_mode,
    hundreds_of_first_requests_on_a_cold_daemon_wait_then_get_503_with_one_call_per_role,
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exact = args.iter().any(|a| a == "--exact");
    let filters = name_filters(&args);
    let selected: Vec<&(&str, Scenario)> = SCENARIOS
        .iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| if exact { name == f } else { name.contains(f) })
        })
        .collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            selected
                .iter()
                .for_each(|(name, _)| println!("{name}: test"));
        }
        return ExitCode::SUCCESS;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let results = runtime.block_on(async {
        let running: Vec<_> = selected
            .iter()
            .map(|(name, scenario)| (*name, tokio::spawn(scenario())))
            .collect();
        let mut results = Vec::new();
        for (name, task) in running {
            results.push((name, task.await));
        }
        results
    });

    let mut failed = 0;
    let mut table =
        String::from("| fault | behaviour | recovery (measured) |\n| --- | --- | --- |\n");
    for (name, result) in &results {
        match result {
            Ok(row) => {
                println!("test {name} ... ok");
                table.push_str(&format!(
                    "| {} | {} | {} |\n",
                    row.fault, row.behaviour, row.recovery
                ));
            }
            Err(error) => {
                failed += 1;
                println!("test {name} ... FAILED\n{}", panic_message(error));
            }
        }
    }
    println!("\n{table}");
    println!(
        "{} passed, {failed} failed in {:.0?}",
        results.len() - failed,
        started.elapsed()
    );
    std::io::stdout().flush().ok();
    runtime.shutdown_timeout(Duration::from_secs(5));
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn panic_message(error: &tokio::task::JoinError) -> String {
    error.to_string()
}

/// libtest options whose value is a separate argument.
const OPTIONS_WITH_VALUE: &[&str] = &[
    "--format",
    "--color",
    "--test-threads",
    "--skip",
    "--logfile",
    "--shuffle-seed",
    "-Z",
];

/// The positional arguments, which select scenarios by name.
fn name_filters(args: &[String]) -> Vec<&str> {
    let mut filters = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if OPTIONS_WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            filters.push(arg.as_str());
        }
    }
    filters
}

fn seconds(duration: Duration) -> String {
    match duration.as_secs_f64() {
        short if short < 10.0 => format!("{short:.1} s"),
        long => format!("{long:.0} s"),
    }
}

fn error_fault(action: &str, status: u16, code: &str, message: &str) -> Fault {
    Fault::new(FaultKind::error(status, code, message)).on_action(action)
}

/// A daemon and a client polling its only role, started together.
struct Watched {
    setup: Setup,
    daemon: Daemon,
    poller: Poller,
    started: Instant,
}

impl Watched {
    async fn start(setup: Setup) -> Watched {
        let started = Instant::now();
        let daemon = start_daemon(&setup.config_path).await;
        let poller = Poller::start(daemon.tcp, "/v1/credentials", &setup.token(), POLL);
        Watched {
            setup,
            daemon,
            poller,
            started,
        }
    }

    /// Time from start to the first credential served.
    async fn first_credential(&self, limit: Duration) -> Duration {
        self.poller.success_since(self.started, limit).await - self.started
    }

    /// Stops polling and checks what every scenario must hold.
    async fn finish(self) -> (Setup, Daemon, Vec<Observation>) {
        let observations = self.poller.finish().await;
        let stats = self.setup.standin.stats();
        assert_eq!(
            stats.codes_reused, 0,
            "a code was presented twice: {stats:?}"
        );
        assert!(
            stats.max_verifications_in_window <= 6,
            "over the daemon's own budget: {stats:?}"
        );
        (self.setup, self.daemon, observations)
    }
}

/// The last failure the daemon logged for a refresh, by class name.
fn failure_classes(daemon: &Daemon) -> Vec<String> {
    log_lines(daemon, &["refresh failed"])
        .iter()
        .filter_map(|line| {
            let start = line.find("class=")? + "class=".len();
            let value = line[start..].split_whitespace().next()?;
            Some(value.trim_matches('"').to_owned())
        })
        .collect()
}

async fn bursts_of_500_and_503_are_backed_off_with_a_new_code_for_each_try() -> Row {
    let setup = Setup::new(&[role("duper")], None).await;
    for (status, code) in [
        (500, "InternalFailure"),
        (503, "ServiceUnavailable"),
        (500, "InternalFailure"),
    ] {
        setup
            .standin
            .inject(error_fault("AssumeRole", status, code, "injected"));
    }
    let watched = Watched::start(setup).await;
    let recovery = watched.first_credential(FEW_STEPS).await;
    let (setup, daemon, observations) = watched.finish().await;

    assert_eq!(failure_classes(&daemon), ["unavailable"; 3]);
    let stats = setup.standin.stats();
    assert_eq!(stats.assume_role_calls, 4, "{stats:?}");
    assert_eq!(stats.codes_accepted, 1, "{stats:?}");
    assert!(
        observations
            .iter()
            .all(|o| o.latency < Duration::from_secs(12)),
        "a request waited longer than the first-credential bound"
    );
    Row {
        fault: "STS answers 500, 503, 500 (no credential held yet)",
        behaviour: "503 with the cause; retries after 2 s doubling to 60 s (jittered), each try with a new code, so at most one try per 30 s step".into(),
        recovery: format!("{} (3 failures)", seconds(recovery)),
    }
}

async fn bursts_in_session_token_mode_are_retried_in_seconds_without_codes() -> Row {
    let setup = Setup::new(&[role("alpha"), role("beta")], None).await;
    use_mfa_session(&setup, "1h");
    setup.standin.set_role_session_lifetime(Some(SHORT_SESSION));
    let daemon = start_daemon(&setup.config_path).await;
    wait_until_healthy(&daemon, Duration::from_secs(20)).await;
    let poller = Poller::start(daemon.tcp, "/v1/credentials/alpha", &setup.token(), POLL);
    for _ in 0..3 {
        setup.standin.inject(error_fault(
            "AssumeRole",
            503,
            "ServiceUnavailable",
            "injected",
        ));
    }
    // Both roles refresh 30 s into their 120 s sessions; three failures between them.
    wait_for_log(&daemon, &["refresh failed"], 3, Duration::from_secs(60)).await;
    wait_for_log(
        &daemon,
        &["refreshed role session"],
        4,
        Duration::from_secs(60),
    )
    .await;
    let failed = log_times(&daemon, &["refresh failed"]);
    let refreshed = log_times(&daemon, &["refreshed role session"]);
    let recovery = refreshed[3].duration_since(failed[0]).unwrap_or_default();
    let observations = poller.finish().await;

    assert!(
        observations.iter().all(|o| o.status == 200),
        "the held credentials were served throughout"
    );
    let stats = setup.standin.stats();
    assert_eq!(
        stats.codes_accepted, 1,
        "no code spent on the retries: {stats:?}"
    );
    assert_eq!(stats.get_session_token_calls, 1, "{stats:?}");
    assert_eq!(stats.codes_reused, 0);
    Row {
        fault: "STS answers 503 three times to chained AssumeRole (session-token mode)",
        behaviour: "keeps serving the held credentials; retries with backoff and no code".into(),
        recovery: format!("{} from the first failure", seconds(recovery)),
    }
}

async fn throttling_is_backed_off_and_ridden_out() -> Row {
    let setup = Setup::new(&[role("duper")], None).await;
    setup.standin.inject(
        Fault::new(FaultKind::throttling())
            .on_action("AssumeRole")
            .repeated(2),
    );
    let watched = Watched::start(setup).await;
    let recovery = watched.first_credential(FEW_STEPS).await;
    let (setup, daemon, _) = watched.finish().await;

    assert_eq!(failure_classes(&daemon), ["throttled"; 2]);
    assert_eq!(setup.standin.stats().assume_role_calls, 3);
    Row {
        fault: "`Throttling` (Rate exceeded) twice",
        behaviour: "backs off like an outage (2 s doubling to 60 s, jittered), a new code each try"
            .into(),
        recovery: format!("{} (2 failures)", seconds(recovery)),
    }
}

/// A loopback port that accepts no connection until opened: its listen
/// backlog is full, so connection attempts hang (the kernel drops their
/// SYNs) instead of being refused. Opened, it relays to `upstream`.
struct Gate {
    listener: std::net::TcpListener,
    _filler: std::net::TcpStream,
}

impl Gate {
    fn closed() -> Gate {
        use rustix::net::{AddressFamily, SocketType, bind, listen, socket};
        let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        bind(&fd, &std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        listen(&fd, 0).unwrap();
        let listener = std::net::TcpListener::from(fd);
        // With a backlog of 0 the queue holds one connection: fill it.
        let filler = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        Gate {
            listener,
            _filler: filler,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.listener.local_addr().unwrap())
    }

    fn open(self, upstream: std::net::SocketAddr) {
        self.listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(self.listener).unwrap();
        tokio::spawn(async move {
            let _filler = self._filler;
            while let Ok((mut client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
    }
}

async fn a_connect_hang_ends_at_the_connect_timeout_and_sts_is_used_once_reachable() -> Row {
    let setup = Setup::new(&[role("duper")], None).await;
    let gate = Gate::closed();
    let sts = setup.standin.endpoint();
    edit_config(&setup, |text| {
        text.replace(&sts, &gate.endpoint())
            .replace("connect_timeout = \"2s\"", "connect_timeout = \"1s\"")
    });
    let watched = Watched::start(setup).await;
    let daemon = &watched.daemon;
    wait_for_log(
        daemon,
        &["refresh failed", "unavailable"],
        2,
        Duration::from_secs(90),
    )
    .await;
    let first_failure = log_times(daemon, &["refresh failed"])[0];
    let until_first_failure = first_failure
        .duration_since(log_times(daemon, &["listening"])[0])
        .unwrap_or_default();
    assert!(
        until_first_failure < Duration::from_secs(4),
        "the first attempt ended after {until_first_failure:?}, not at the 1 s connect timeout"
    );
    let (status, body) =
        get_with_token(daemon.tcp, "/v1/credentials", &watched.setup.token()).await;
    assert_eq!(status, 503);
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{body:?}"
    );

    let opened = Instant::now();
    let upstream = sts.trim_start_matches("http://").parse().unwrap();
    gate.open(upstream);
    let recovery = watched.poller.success_since(opened, FEW_STEPS).await - opened;
    let (setup, _daemon, observations) = watched.finish().await;
    assert!(
        observations
            .iter()
            .all(|o| o.latency < Duration::from_secs(12))
    );
    assert_eq!(setup.standin.stats().codes_accepted, 1);
    Row {
        fault: "connect hang (STS's port accepts nothing), `connect_timeout = 1s`",
        behaviour: format!(
            "each try ends at the connect timeout (first after {}) as `unavailable`; backoff as for an outage",
            seconds(until_first_failure)
        ),
        recovery: format!("{} after STS became reachable", seconds(recovery)),
    }
}

async fn a_read_hang_ends_at_the_read_timeout_and_the_next_try_succeeds() -> Row {
    let setup = Setup::new(&[role("duper")], None).await;
    setup.standin.inject(
        Fault::new(FaultKind::Hang)
            .on_action("AssumeRole")
            .repeated(2),
    );
    let watched = Watched::start(setup).await;
    let recovery = watched.first_credential(FEW_STEPS).await;
    let daemon = &watched.daemon;
    let hang_ended = log_times(daemon, &["refresh failed"])[0]
        .duration_since(log_times(daemon, &["listening"])[0])
        .unwrap_or_default();
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(8)).contains(&hang_ended),
        "the hung call ended after {hang_ended:?}, not at the 3 s read timeout"
    );
    let (setup, daemon, _) = watched.finish().await;
    assert_eq!(failure_classes(&daemon), ["unavailable"; 2]);
    assert_eq!(setup.standin.stats().assume_role_calls, 3);
    Row {
        fault: "read hang (STS accepts, never answers), `read_timeout = 3s`",
        behaviour: format!(
            "the call ends at the read timeout (after {}) as `unavailable`; backoff as for an outage",
            seconds(hang_ended)
        ),
        recovery: format!("{} (2 hangs)", seconds(recovery)),
    }
}

async fn a_rejected_code_is_followed_by_the_next_steps_code() -> Row {
    let setup = Setup::new(&[role("duper")], None).await;
    setup
        .standin
        .inject(error_fault("AssumeRole", 403, "AccessDenied", INVALID_CODE));
    let watched = Watched::start(setup).await;
    let recovery = watched.first_credential(Duration::from_secs(60)).await;
    let (setup, daemon, _) = watched.finish().await;
    assert_eq!(failure_classes(&daemon), ["code_rejected"]);
    assert_eq!(setup.standin.stats().assume_role_calls, 2);
    assert!(recovery <= Duration::from_secs(40), "{recovery:?}");
    Row {
        fault: "rejected code (\"invalid MFA one time pass code\")",
        behaviour: "retries with the next 30 s step's code".into(),
        recovery: seconds(recovery),
    }
}

async fn a_code_someone_else_used_first_is_refused_and_never_presented_again() -> Row {
    let setup = Setup::new(&[role("duper")], None).await;
    // Well inside a step, so the daemon starts in the step whose code is used.
    while SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 30
        > 20
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    use_current_code(&setup).await;
    let watched = Watched::start(setup).await;
    let recovery = watched.first_credential(Duration::from_secs(60)).await;
    let daemon = &watched.daemon;
    assert_eq!(failure_classes(daemon), ["code_rejected"]);
    let stats = watched.setup.standin.stats();
    assert_eq!(
        stats.codes_reused, 1,
        "the daemon presented the code used elsewhere exactly once: {stats:?}"
    );
    assert_eq!(
        stats.codes_accepted, 2,
        "the other party's and the daemon's next: {stats:?}"
    );
    watched.poller.finish().await;
    Row {
        fault: "reused code (another client used the current code first)",
        behaviour: "STS refuses it as an invalid code; the daemon retries with the next step's code and never presents a counter twice itself".into(),
        recovery: seconds(recovery),
    }
}

/// Uses the current step's code at the stand-in, as a person or another tool would.
async fn use_current_code(setup: &Setup) {
    use assumed::clock::{StsClock, SystemClock};
    let clock = std::sync::Arc::new(StsClock::new(std::sync::Arc::new(SystemClock)));
    let seed = secrecy::SecretSlice::from(MARKER_SEED_BYTES.to_vec());
    let ledger = assumed::totp::TotpLedger::new(SERIAL.into(), &seed, clock.clone());
    let code = ledger.next_code().await;
    let settings = assumed::config::AwsSettings {
        region: "us-east-1".into(),
        sts_endpoint: Some(setup.standin.endpoint()),
        credentials: assumed::config::SecretSource::File {
            key: "aws.credentials_file",
            path: setup.dir.path().join("aws-credentials"),
        },
        profile: "default".into(),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(3),
    };
    let key = assumed::secret::LongTermKey {
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: MARKER_SECRET_KEY.to_owned().into(),
        session_token: None,
    };
    let sts = assumed::sts::Sts::new(&settings, &key, clock);
    sts.get_session_token(Duration::from_secs(900), SERIAL, &code, ACCOUNT)
        .await
        .expect("the other party's call succeeds");
}

/// The stand-in clock offset (within ±90 s) that puts its time `before_end`
/// before the end of a 3-minute budget window.
fn offset_near_window_end(before_end: u64) -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let wanted = (180 - before_end as i64 - now.rem_euclid(180)).rem_euclid(180);
    if wanted >= 90 { wanted - 180 } else { wanted }
}

async fn a_spent_mfa_budget_waits_for_the_next_window_without_calling_sts() -> Row {
    let setup = Setup::new(&[role("duper")], None).await;
    // The stand-in's window ends 25 s after start, so the wait is short
    // enough to measure yet clearly longer than a step.
    setup.standin.set_clock_offset(offset_near_window_end(25));
    setup.standin.inject(error_fault(
        "AssumeRole",
        403,
        "AccessDenied",
        UNABLE_TO_VALIDATE,
    ));
    let watched = Watched::start(setup).await;
    let recovery = watched.first_credential(Duration::from_secs(90)).await;
    let (setup, daemon, _) = watched.finish().await;
    assert_eq!(failure_classes(&daemon), ["mfa_budget"]);
    let stats = setup.standin.stats();
    assert_eq!(
        stats.assume_role_calls, 2,
        "no call before the next window: {stats:?}"
    );
    assert!(
        recovery >= Duration::from_secs(15),
        "retried after {recovery:?}, before the next window"
    );
    Row {
        fault: "MFA budget spent (\"unable to validate MFA code\")",
        behaviour: "no code at all until the next 3-minute window (on STS's clock), then one try"
            .into(),
        recovery: format!(
            "{} (window ended ~25 s after the failure; up to 180 s)",
            seconds(recovery)
        ),
    }
}

async fn access_denied_is_retried_slowly_or_at_once_on_reload() -> Row {
    let setup = Setup::new(&[role("duper")], None).await;
    setup.standin.inject(error_fault(
        "AssumeRole",
        403,
        "AccessDenied",
        "User: arn:aws:iam::123456789012:user/svc is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role/duperRole",
    ));
    let watched = Watched::start(setup).await;
    let daemon = &watched.daemon;
    wait_for_log(daemon, &["refresh failed"], 1, Duration::from_secs(10)).await;
    let (status, body) = health(daemon).await;
    assert_eq!(status, 503);
    assert_eq!(
        body["roles"]["duper"]["last_error"]["class"],
        "access_denied"
    );
    assert!(
        body["roles"]["duper"]["last_error"]["hint"]
            .as_str()
            .unwrap()
            .contains("trust policy")
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        watched.setup.standin.stats().assume_role_calls,
        1,
        "no quick retries of a failure an operator must fix"
    );

    let reloaded = Instant::now();
    hangup(daemon);
    let recovery = watched
        .poller
        .success_since(reloaded, Duration::from_secs(45))
        .await
        - reloaded;
    let (setup, _, _) = watched.finish().await;
    assert_eq!(setup.standin.stats().assume_role_calls, 2);
    Row {
        fault: "AccessDenied (not authorized to assume the role)",
        behaviour: "503 and `/healthz` name the cause and the policy to check; retried every 5 min, or at once on reload (SIGHUP)".into(),
        recovery: format!("{} after the reload (next step's code)", seconds(recovery)),
    }
}

async fn an_invalid_base_key_is_reported_until_a_fixed_key_is_reloaded() -> Row {
    let setup = Setup::new(&[role("duper")], None).await;
    let key_file = setup.dir.path().join("aws-credentials");
    let good = std::fs::read_to_string(&key_file).unwrap();
    std::fs::write(
        &key_file,
        good.replace(ACCESS_KEY_ID, "AKIAUNKNOWNKEY000000"),
    )
    .unwrap();
    let watched = Watched::start(setup).await;
    let daemon = &watched.daemon;
    wait_for_log(daemon, &["refresh failed"], 1, Duration::from_secs(10)).await;
    assert_eq!(failure_classes(daemon), ["invalid_key"]);

    std::fs::write(&key_file, good).unwrap();
    let reloaded = Instant::now();
    hangup(daemon);
    let recovery = watched
        .poller
        .success_since(reloaded, Duration::from_secs(45))
        .await
        - reloaded;
    watched.finish().await;
    Row {
        fault: "invalid base key (InvalidClientTokenId)",
        behaviour: "503 with a hint to check the key file; retried every 5 min, or at once when a reload brings a new key".into(),
        recovery: format!("{} after the fixed file was reloaded", seconds(recovery)),
    }
}

async fn an_expired_base_key_is_reported_until_a_new_key_is_reloaded() -> Row {
    let setup = Setup::new(&[role("duper")], None).await;
    setup.standin.inject(
        error_fault(
            "AssumeRole",
            403,
            "ExpiredToken",
            "The security token included in the request is expired",
        )
        .until_cleared(),
    );
    let watched = Watched::start(setup).await;
    let daemon = &watched.daemon;
    wait_for_log(daemon, &["refresh failed"], 1, Duration::from_secs(10)).await;
    assert_eq!(failure_classes(daemon), ["expired_key"]);
    let (_, body) = health(daemon).await;
    assert!(
        body["roles"]["duper"]["last_error"]["hint"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    watched.setup.standin.clear_faults();
    let reloaded = Instant::now();
    hangup(daemon);
    let recovery = watched
        .poller
        .success_since(reloaded, Duration::from_secs(45))
        .await
        - reloaded;
    watched.finish().await;
    Row {
        fault: "expired base key (ExpiredToken)",
        behaviour: "as for an invalid key: 503 with a hint, slow retries, at once on reload".into(),
        recovery: format!("{} after the reload", seconds(recovery)),
    }
}

async fn sessions_shorter_than_refresh_ahead_are_refreshed_at_half_life_without_a_gap() -> Row {
    let setup = Setup::new(&[role("duper")], Some(SHORT_SESSION)).await;
    let watched = Watched::start(setup).await;
    watched.first_credential(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(100)).await;
    let (_, daemon, observations) = watched.finish().await;

    assert!(
        observations.iter().all(|o| o.status == 200),
        "no gap between sessions"
    );
    let keys = keys_served(&observations);
    assert!(keys.len() >= 3, "only {} sessions in 100 s", keys.len());
    assert_eq!(
        log_lines(&daemon, &["shorter than refresh.ahead"]).len(),
        1,
        "warned once"
    );
    let refreshed = log_times(&daemon, &["refreshed role session"]);
    let interval = refreshed[2]
        .duration_since(refreshed[1])
        .unwrap_or_default();
    Row {
        fault: "sessions (120 s) shorter than `refresh.ahead` (30 min)",
        behaviour: "warns once; refreshes at half the lifetime, never inside the 60 s margin plus a code's wait".into(),
        recovery: format!("no gap; a new session every {}", seconds(interval)),
    }
}

async fn malformed_answers_are_backed_off_and_ridden_out() -> Row {
    let setup = Setup::new(&[role("duper")], None).await;
    setup.standin.inject(
        Fault::new(FaultKind::Malformed)
            .on_action("AssumeRole")
            .repeated(2),
    );
    let watched = Watched::start(setup).await;
    let recovery = watched.first_credential(FEW_STEPS).await;
    let (setup, daemon, _) = watched.finish().await;
    assert_eq!(failure_classes(&daemon), ["malformed"; 2]);
    assert_eq!(setup.standin.stats().assume_role_calls, 3);
    Row {
        fault: "malformed STS answers (200 with a broken body) twice",
        behaviour:
            "`malformed` with a hint to check the endpoint and proxies; backoff as for an outage"
                .into(),
        recovery: format!("{} (2 failures)", seconds(recovery)),
    }
}

/// The stand-in's clock `offset` seconds off the host's: the first code,
/// computed before any answer taught the daemon the offset, may be
/// refused; every later refresh must succeed.
async fn skewed_clock(offset: i64, check_signing_time: bool) -> (Duration, u64, usize) {
    let setup = Setup::new(&[role("duper")], Some(SHORT_SESSION)).await;
    setup.standin.set_clock_offset(offset);
    setup.standin.set_signing_time_check(check_signing_time);
    let watched = Watched::start(setup).await;
    let recovery = watched.first_credential(Duration::from_secs(45)).await;
    // Two refreshes after the first session (one every 30 s).
    wait_for_log(
        &watched.daemon,
        &["refreshed role session"],
        3,
        Duration::from_secs(90),
    )
    .await;
    let (_, body) = health(&watched.daemon).await;
    let learned = body["clock_offset_seconds"].as_f64().unwrap();
    assert!(
        (learned - offset as f64).abs() < 2.0,
        "learned {learned} s for a {offset} s offset"
    );
    let (setup, daemon, observations) = watched.finish().await;
    let stats = setup.standin.stats();
    assert!(stats.codes_rejected <= 1, "{stats:?}");
    assert!(
        stats.codes_accepted >= 3,
        "every refresh succeeded: {stats:?}"
    );
    assert!(
        !log_lines(&daemon, &["host clock differs from STS"]).is_empty(),
        "the offset was warned about"
    );
    (
        recovery,
        stats.codes_rejected,
        keys_served(&observations).len(),
    )
}

async fn a_stand_in_clock_95_s_ahead_costs_one_rejected_code() -> Row {
    let (recovery, rejected, _) = skewed_clock(95, false).await;
    Row {
        fault: "STS clock 95 s ahead",
        behaviour: format!(
            "learns the offset from the first answer's Date ({rejected} code refused before that), warns, computes codes on STS time"
        ),
        recovery: seconds(recovery),
    }
}

async fn a_stand_in_clock_95_s_behind_costs_one_rejected_code() -> Row {
    let (recovery, rejected, _) = skewed_clock(-95, false).await;
    Row {
        fault: "STS clock 95 s behind",
        behaviour: format!("as for ahead ({rejected} code refused)"),
        recovery: seconds(recovery),
    }
}

async fn a_stand_in_clock_4_min_ahead_with_signing_checks_keeps_refreshing() -> Row {
    let (recovery, rejected, sessions) = skewed_clock(240, true).await;
    Row {
        fault: "STS clock 4 min ahead, signing time checked",
        behaviour: format!(
            "requests are signed on STS time too; {rejected} code refused before the offset was known; {sessions} sessions served"
        ),
        recovery: seconds(recovery),
    }
}

async fn a_stand_in_clock_4_min_behind_with_signing_checks_keeps_refreshing() -> Row {
    let (recovery, rejected, sessions) = skewed_clock(-240, true).await;
    Row {
        fault: "STS clock 4 min behind, signing time checked",
        behaviour: format!("as for ahead ({rejected} code refused; {sessions} sessions served)"),
        recovery: seconds(recovery),
    }
}

async fn a_revoked_mfa_session_is_replaced_once_for_every_role() -> Row {
    let setup = Setup::new(&[role("alpha"), role("beta"), role("gamma")], None).await;
    use_mfa_session(&setup, "1h");
    setup.standin.set_role_session_lifetime(Some(SHORT_SESSION));
    let daemon = start_daemon(&setup.config_path).await;
    wait_until_healthy(&daemon, Duration::from_secs(20)).await;
    let poller = Poller::start(daemon.tcp, "/v1/credentials/beta", &setup.token(), POLL);
    // The MFA session stops working: every role's next refresh is refused.
    setup.standin.revoke_session_tokens();
    wait_for_log(
        &daemon,
        &["refreshed MFA session"],
        2,
        Duration::from_secs(90),
    )
    .await;
    wait_for_log(
        &daemon,
        &["refreshed role session"],
        6,
        Duration::from_secs(60),
    )
    .await;
    let refused = log_times(&daemon, &["refused the MFA session"]);
    let refreshed = log_times(&daemon, &["refreshed role session"]);
    let recovery = refreshed[5].duration_since(refused[0]).unwrap_or_default();
    let observations = poller.finish().await;

    assert!(
        observations.iter().all(|o| o.status == 200),
        "held credentials served meanwhile"
    );
    assert_eq!(refused.len(), 1, "one replacement for three refusals");
    let stats = setup.standin.stats();
    assert_eq!(stats.get_session_token_calls, 2, "{stats:?}");
    assert_eq!(stats.codes_accepted, 2, "{stats:?}");
    assert_eq!(stats.codes_reused, 0);
    Row {
        fault: "MFA session revoked before its expiry (chained AssumeRole refused)",
        behaviour: "one new GetSessionToken (one code) however many roles hit it; roles wait for it and keep serving what they hold".into(),
        recovery: format!("{} until every role had a new session", seconds(recovery)),
    }
}

async fn five_roles_are_served_on_one_code_in_session_token_mode() -> Row {
    let names = ["one", "two", "three", "four", "five"];
    let roles: Vec<RoleDef> = names.iter().map(|name| role(name)).collect();
    let setup = Setup::new(&roles, None).await;
    use_mfa_session(&setup, "12h");
    let started = Instant::now();
    let daemon = start_daemon(&setup.config_path).await;
    wait_until_healthy(&daemon, Duration::from_secs(20)).await;
    let ready = started.elapsed();
    for name in names {
        let observation = ask(
            daemon.tcp,
            &format!("/v1/credentials/{name}"),
            &setup.token(),
        )
        .await;
        assert_eq!(observation.status, 200, "{name}");
        assert!(observation.problem.is_none(), "{observation:?}");
    }
    let stats = setup.standin.stats();
    assert_eq!(stats.codes_accepted, 1, "{stats:?}");
    assert_eq!(stats.get_session_token_calls, 1, "{stats:?}");
    assert_eq!(stats.assume_role_calls, 5, "{stats:?}");
    let record = setup.standin.last_assume_role().unwrap();
    assert!(record.role_chaining && record.serial_number.is_none());
    let (_, body) = health(&daemon).await;
    assert_eq!(body["mfa_session"]["usable"], true);
    assert_eq!(body["mfa_session"]["duration_seconds"], 43_200);
    Row {
        fault: "none: five roles in session-token mode (`mfa.session = \"12h\"`)",
        behaviour: "one GetSessionToken with one code; five chained AssumeRoles without codes"
            .into(),
        recovery: format!("all five usable {} after start", seconds(ready)),
    }
}

async fn hundreds_of_first_requests_on_a_cold_daemon_wait_then_get_503_with_one_call_per_role()
-> Row {
    const REQUESTS: usize = 300;
    let names = ["alpha", "beta", "gamma"];
    let roles: Vec<RoleDef> = names.iter().map(|name| role(name)).collect();
    let setup = Setup::new(&roles, None).await;
    use_mfa_session(&setup, "1h");
    // Slow, not broken: the call stays inside the read timeout.
    edit_config(&setup, |text| {
        text.replace("read_timeout = \"3s\"", "read_timeout = \"20s\"")
    });
    setup
        .standin
        .inject(Fault::new(FaultKind::Delay(Duration::from_secs(12))).on_action("GetSessionToken"));
    let daemon = start_daemon(&setup.config_path).await;
    let token = setup.token();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let path = format!("/v1/credentials/{}", names[i % names.len()]);
            let (addr, token) = (daemon.tcp, token.clone());
            tokio::spawn(async move { ask(addr, &path, &token).await })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    let slowest = answers.iter().map(|o| o.latency).max().unwrap();
    let quickest = answers.iter().map(|o| o.latency).min().unwrap();
    assert!(
        answers
            .iter()
            .all(|o| o.status == 503 && o.problem.is_none())
    );
    assert!(
        slowest < Duration::from_secs(12),
        "a request hung for {slowest:?}"
    );
    assert!(
        quickest >= Duration::from_secs(8),
        "a request gave up after {quickest:?}"
    );

    wait_until_healthy(&daemon, Duration::from_secs(20)).await;
    let stats = setup.standin.stats();
    assert_eq!(stats.get_session_token_calls, 1, "{stats:?}");
    assert_eq!(
        calls_by_role(&setup).values().copied().collect::<Vec<_>>(),
        [1, 1, 1],
        "{stats:?}"
    );
    Row {
        fault: "cold start: 300 concurrent first requests, STS 12 s slow",
        behaviour:
            "requests wait for the first credential up to 10 s, then 503; one STS call per role"
                .into(),
        recovery: format!(
            "answers after {}–{}; served once STS answered",
            seconds(quickest),
            seconds(slowest)
        ),
    }
}
