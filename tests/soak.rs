//! The soak test: three roles under steady client load for about two
//! minutes (`ASSUMED_SOAK_SECONDS` for longer) while random faults are
//! injected into the STS stand-in. It prints its figures and asserts:
//!
//! - no client saw a failure while the daemon held a credential it could
//!   serve (more than the 60 s serve margin left);
//! - no code was presented twice, and no 3-minute window saw more MFA
//!   verifications than the daemon's budget of six;
//! - no answer was ever an expired, empty or nearly expired credential.
//!
//! The daemon runs in session-token mode: GetSessionToken sessions of
//! 5 minutes, and roles chained from them with 150 s sessions. Role
//! sessions are not 60 s long because the daemon never serves a credential
//! with 60 s or less left, so a 60 s session could never be served at all.
//! 150 s is about the shortest that leaves room for the refresh itself:
//! sessions are refreshed with 100 s left (60 s margin, a 30 s TOTP step,
//! 10 s for the call), so each role is refreshed every 50 s and has 40 s
//! to ride out a fault. Codes are spent on the MFA session only, every
//! 150 s, plus once whenever a revoked session must be replaced.
//!
//! Faults are outages of 1–8 s (5xx, throttling, malformed answers, hung
//! calls, slow answers) starting every 5–15 s, and now and then the
//! revocation of the MFA session. `ASSUMED_SOAK_SEED` replays a run's
//! choice of faults.

mod common;
#[path = "common/resilience.rs"]
mod resilience;

use std::time::{Duration, Instant};

use assumed::standin::{Fault, FaultKind};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use resilience::*;

const DEFAULT_SECONDS: u64 = 120;
const MFA_SESSION_LIFETIME: Duration = Duration::from_secs(300);
const ROLE_SESSION_LIFETIME: Duration = Duration::from_secs(150);
const ROLES: [&str; 3] = ["alpha", "beta", "gamma"];
/// Two clients per role, each asking ten times a second.
const CLIENTS_PER_ROLE: usize = 2;
const CLIENT_INTERVAL: Duration = Duration::from_millis(100);
/// Faults start this often and last this long, at random within the ranges.
const FAULT_INTERVAL_SECS: std::ops::Range<u64> = 5..15;
const OUTAGE_SECS: std::ops::RangeInclusive<u64> = 1..=8;
/// The daemon serves a credential while more than this is left.
const SERVE_MARGIN: Duration = assumed::session::SERVE_MARGIN;
/// Slack for the time an answer spends between the daemon and the client.
const SLACK: Duration = Duration::from_secs(2);

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// Starts one random fault: an outage of some kind for a few seconds, or
/// the revocation of the MFA session. Returns what it was and how long it
/// lasts (zero for a revocation).
fn inject_random_fault(setup: &Setup, rng: &mut StdRng) -> (&'static str, Duration) {
    let standin = &setup.standin;
    let error = |status, code: &str| FaultKind::error(status, code, "injected by the soak test");
    let (name, fault) = match rng.random_range(0..12) {
        0..=2 => ("503s", Fault::new(error(503, "ServiceUnavailable"))),
        3 | 4 => ("throttling", Fault::new(FaultKind::throttling())),
        5 => (
            "malformed AssumeRole answers",
            Fault::new(FaultKind::Malformed).on_action("AssumeRole"),
        ),
        6 => ("hung calls", Fault::new(FaultKind::Hang)),
        7 | 8 => (
            "2 s delays",
            Fault::new(FaultKind::Delay(Duration::from_secs(2))),
        ),
        9 | 10 => (
            "500s on GetSessionToken",
            Fault::new(error(500, "InternalFailure")).on_action("GetSessionToken"),
        ),
        _ => {
            standin.revoke_session_tokens();
            return ("MFA session revoked", Duration::ZERO);
        }
    };
    standin.inject(fault.until_cleared());
    (name, Duration::from_secs(rng.random_range(OUTAGE_SECS)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_roles_stay_served_under_client_load_and_random_sts_faults() {
    let seconds = env_number("ASSUMED_SOAK_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let seed = env_number("ASSUMED_SOAK_SEED").unwrap_or_else(|| rand::rng().random());
    let roles: Vec<RoleDef> = ROLES.iter().map(|name| role(name)).collect();
    let setup = Setup::new(&roles, Some(MFA_SESSION_LIFETIME)).await;
    use_mfa_session(&setup, "1h");
    setup
        .standin
        .set_role_session_lifetime(Some(ROLE_SESSION_LIFETIME));
    let daemon = start_daemon(&setup.config_path).await;
    wait_until_healthy(&daemon, Duration::from_secs(20)).await;

    let token = setup.token();
    let pollers: Vec<(&str, Poller)> = ROLES
        .iter()
        .flat_map(|name| std::iter::repeat_n(*name, CLIENTS_PER_ROLE))
        .map(|name| {
            let path = format!("/v1/credentials/{name}");
            (
                name,
                Poller::start(daemon.tcp, &path, &token, CLIENT_INTERVAL),
            )
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults: Vec<String> = Vec::new();
    loop {
        let pause = Duration::from_secs(rng.random_range(FAULT_INTERVAL_SECS));
        if Instant::now() + pause >= deadline {
            break;
        }
        tokio::time::sleep(pause).await;
        let (fault, lasting) = inject_random_fault(&setup, &mut rng);
        faults.push(format!("{fault} ({} s)", lasting.as_secs()));
        tokio::time::sleep(lasting).await;
        setup.standin.clear_faults();
    }
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
    setup.standin.clear_faults();

    let mut requests = 0;
    let mut failures = 0;
    let mut failures_while_valid = Vec::new();
    let mut sessions =
        std::collections::BTreeMap::<&str, std::collections::BTreeSet<String>>::new();
    for (name, poller) in pollers {
        let observations = poller.finish().await;
        requests += observations.len();
        let mut servable_until = None;
        for observation in &observations {
            if let Some(key) = &observation.access_key_id {
                sessions.entry(name).or_default().insert(key.clone());
            }
            if observation.status == 200 {
                servable_until = observation.expiration.map(|at| at - SERVE_MARGIN);
                continue;
            }
            failures += 1;
            if servable_until.is_some_and(|until| observation.sent_at + SLACK < until) {
                failures_while_valid.push(format!("{name}: {observation:?}"));
            }
        }
    }
    let stats = setup.standin.stats();
    println!(
        "soak: {seconds} s, seed {seed}, {} faults injected: {faults:?}",
        faults.len()
    );
    println!("soak: {requests} client requests, {failures} not answered with a credential");
    println!(
        "soak: client-visible failures while a valid credential existed: {}",
        failures_while_valid.len()
    );
    println!("soak: codes reused: {}", stats.codes_reused);
    println!(
        "soak: most MFA verifications in one 3-minute window: {}",
        stats.max_verifications_in_window
    );
    println!(
        "soak: STS calls: {} AssumeRole, {} GetSessionToken ({} codes accepted, {} rejected)",
        stats.assume_role_calls,
        stats.get_session_token_calls,
        stats.codes_accepted,
        stats.codes_rejected
    );
    for (name, keys) in &sessions {
        println!("soak: role {name}: {} sessions served", keys.len());
    }

    let warnings: Vec<String> = daemon
        .logs()
        .iter()
        .map(|line| strip_ansi(line))
        .filter(|line| line.contains("WARN"))
        .collect();
    println!("soak: {} warnings logged by the daemon", warnings.len());
    assert!(
        failures_while_valid.is_empty(),
        "{failures_while_valid:#?}\n{}",
        warnings.join("\n")
    );
    assert_eq!(stats.codes_reused, 0, "{stats:?}");
    assert!(stats.max_verifications_in_window <= 6, "{stats:?}");
    for name in ROLES {
        assert!(
            sessions.get(name).is_some_and(|keys| keys.len() >= 2),
            "role {name} was never refreshed"
        );
    }
}
