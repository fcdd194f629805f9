//! Role sessions: what is held for each role, and the refresher that keeps it fresh.
//!
//! Each role has a [`RoleSlot`]. Its refresher task is the only writer: it
//! fetches a new session when [`refresh.ahead`](crate::config::RefreshSettings)
//! remains (or half the lifetime, for sessions too short for that) and
//! publishes it with an atomic pointer swap. Readers never lock and never
//! wait on a refresh; only a request that arrives before the role's first
//! attempt has finished waits, for at most [`FIRST_CREDENTIAL_WAIT`].
//!
//! The rules a reader can rely on:
//! - a credential with [`SERVE_MARGIN`] or less left is never served;
//! - a failed refresh never removes the credential still held;
//! - one refresh is in flight per role at any time (one task per role).
//!
//! Failures are retried according to their [`FailureClass`]: a rejected
//! code at the next TOTP step, a spent MFA budget at the next window
//! (both waits happen inside the [`TotpLedger`]), throttling and outages
//! with capped exponential backoff and full jitter, and failures an
//! operator must fix (access denied, a bad key) every few minutes.
//!
//! Refresh times are kept on the wall clock and re-checked at least every
//! [`MAX_SLEEP`], so a suspended host or a stepped clock is noticed within
//! that time rather than after a long monotonic sleep.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use rand::Rng;
use secrecy::SecretString;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::StsClock;
use crate::config::{RoleName, RoleSpec};
use crate::credential::Credential;
use crate::metrics::Metrics;
use crate::sts::{FailureClass, Sts, StsError};
use crate::totp::TotpLedger;

/// Never serve a credential this close to expiry: clients need time to use it.
pub const SERVE_MARGIN: Duration = Duration::from_secs(60);
/// The least lead a refresh may have is the serve margin, a TOTP step of
/// waiting for a code for every role sharing the device, and this much
/// more for the call itself.
const CALL_ALLOWANCE: Duration = Duration::from_secs(10);
/// How long a request on a cold daemon waits for the role's first credential.
pub const FIRST_CREDENTIAL_WAIT: Duration = Duration::from_secs(10);
/// Backoff for throttling and outages: doubling from the base, capped.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Failures a retry cannot fix soon are retried this often, each try
/// costing one MFA verification.
const SLOW_RETRY: Duration = Duration::from_secs(300);
/// Longest uninterrupted sleep, so wall-clock jumps and suspends are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The last failure of a role's refresh, as shown in health output.
#[derive(Clone, Debug)]
pub struct RefreshFailure {
    pub class: FailureClass,
    pub message: String,
    pub at: SystemTime,
}

/// What a role's refresher has done, for health and metrics.
#[derive(Clone, Debug, Default)]
pub struct RoleStatus {
    pub last_refresh: Option<SystemTime>,
    pub last_error: Option<RefreshFailure>,
    pub next_attempt: Option<SystemTime>,
    /// The first attempt has finished, successfully or not.
    pub attempted: bool,
    pub refreshes: u64,
    pub failures_by_class: BTreeMap<&'static str, u64>,
}

/// One role: its settings, its current credential and its refresher's status.
pub struct RoleSlot {
    pub spec: RoleSpec,
    /// The role's own TCP token, from its `token_file`.
    pub token: Option<SecretString>,
    current: ArcSwapOption<Credential>,
    status: Mutex<RoleStatus>,
    /// Bumped whenever an attempt finishes, for requests waiting on a cold role.
    attempts: watch::Sender<u64>,
    /// Wakes the refresher to re-evaluate at once.
    wake: Notify,
}

impl std::fmt::Debug for RoleSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleSlot")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

impl RoleSlot {
    pub fn new(spec: RoleSpec) -> RoleSlot {
        RoleSlot {
            spec,
            token: None,
            current: ArcSwapOption::empty(),
            status: Mutex::new(RoleStatus::default()),
            attempts: watch::channel(0).0,
            wake: Notify::new(),
        }
    }

    /// The credential, if it has more than [`SERVE_MARGIN`] left at `now`.
    pub fn usable(&self, now: SystemTime) -> Option<Arc<Credential>> {
        let current = self.current.load_full()?;
        (current.remaining(now) > SERVE_MARGIN).then_some(current)
    }

    /// The credential held, usable or not.
    pub fn held(&self) -> Option<Arc<Credential>> {
        self.current.load_full()
    }

    /// Like [`RoleSlot::usable`], but on a role whose first attempt is still
    /// running, waits up to `limit` for it.
    pub async fn usable_or_wait(
        &self,
        now: impl Fn() -> SystemTime,
        limit: Duration,
    ) -> Option<Arc<Credential>> {
        if let Some(credential) = self.usable(now()) {
            return Some(credential);
        }
        // Subscribe before looking again, so an attempt finishing in
        // between is either seen here or wakes the wait below.
        let mut attempts = self.attempts.subscribe();
        if self.status().attempted {
            return self.usable(now());
        }
        let _ = tokio::time::timeout(limit, attempts.changed()).await;
        self.usable(now())
    }

    pub fn status(&self) -> RoleStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks the refresher to re-evaluate its schedule now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn publish(&self, credential: Credential, at: SystemTime) {
        self.current.store(Some(Arc::new(credential)));
        self.update_status(|status| {
            status.last_refresh = Some(at);
            status.last_error = None;
            status.refreshes += 1;
        });
    }

    fn record_failure(&self, error: &StsError, at: SystemTime) {
        self.update_status(|status| {
            status.last_error = Some(RefreshFailure {
                class: error.class,
                message: error.to_string(),
                at,
            });
            *status
                .failures_by_class
                .entry(error.class.name())
                .or_default() += 1;
        });
    }

    fn update_status(&self, change: impl FnOnce(&mut RoleStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn finish_attempt(&self) {
        self.update_status(|status| status.attempted = true);
        self.attempts.send_modify(|count| *count += 1);
    }
}

/// The roles being served, swapped whole on reload.
#[derive(Debug, Default)]
pub struct RoleTable {
    pub roles: BTreeMap<RoleName, Arc<RoleSlot>>,
    pub default: Option<RoleName>,
}

/// The published role table; readers load it without locking.
#[derive(Debug, Default)]
pub struct Store {
    table: ArcSwap<RoleTable>,
}

impl Store {
    pub fn new(table: RoleTable) -> Store {
        Store {
            table: ArcSwap::from_pointee(table),
        }
    }

    pub fn table(&self) -> arc_swap::Guard<Arc<RoleTable>> {
        self.table.load()
    }

    pub fn replace(&self, table: RoleTable) {
        self.table.store(Arc::new(table));
    }
}

/// Where a role's sessions come from.
pub struct Refresher {
    pub sts: Sts,
    pub ledger: Arc<TotpLedger>,
    pub clock: Arc<StsClock>,
    pub ahead: Duration,
    /// How many roles queue for codes from the same ledger.
    pub sharing: usize,
    pub metrics: Arc<Metrics>,
}

impl Refresher {
    /// Keeps `slot` fresh until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, slot: Arc<RoleSlot>, stop: CancellationToken) {
        let mut next_attempt = self.clock.host_now();
        let mut failures = 0u32;
        loop {
            slot.update_status(|status| status.next_attempt = Some(next_attempt));
            if !self.sleep_until(&slot, next_attempt, &stop).await {
                return;
            }
            let result = tokio::select! {
                result = self.refresh_once(&slot.spec) => result,
                () = stop.cancelled() => return,
            };
            let now = self.clock.host_now();
            match result {
                Ok(credential) => {
                    failures = 0;
                    let lifetime = credential.remaining(now);
                    next_attempt = now
                        + lifetime.saturating_sub(refresh_lead(lifetime, self.ahead, self.sharing));
                    tracing::info!(
                        role = %slot.spec.name,
                        expires = %crate::credential::rfc3339(credential.expiration),
                        next_refresh = %crate::credential::rfc3339(next_attempt),
                        "refreshed role session"
                    );
                    slot.publish(credential, now);
                    self.metrics.record_refresh(&slot.spec.name, None);
                }
                Err(error) => {
                    failures += 1;
                    next_attempt = now + retry_delay(error.class, failures);
                    if error.class == FailureClass::MfaBudget {
                        self.ledger.budget_exhausted();
                        next_attempt = next_attempt.max(self.ledger.next_window_start());
                    }
                    let held = slot
                        .usable(now)
                        .map(|c| crate::credential::rfc3339(c.expiration));
                    tracing::warn!(
                        role = %slot.spec.name,
                        class = error.class.name(),
                        error = %error,
                        next_attempt = %crate::credential::rfc3339(next_attempt),
                        serving_until = held.as_deref().unwrap_or("nothing usable held"),
                        hint = error.class.hint(),
                        "role session refresh failed"
                    );
                    slot.record_failure(&error, now);
                    self.metrics
                        .record_refresh(&slot.spec.name, Some(error.class));
                }
            }
            slot.finish_attempt();
        }
    }

    async fn refresh_once(&self, role: &RoleSpec) -> Result<Credential, StsError> {
        let code = self.ledger.next_code().await;
        tracing::debug!(role = %role.name, counter = code.counter, "calling AssumeRole");
        self.sts
            .assume_role(role, self.ledger.serial_number(), &code)
            .await
    }

    /// Sleeps until the wall-clock time `at`, re-checking the clock at
    /// least every [`MAX_SLEEP`]. Returns false when stopped.
    async fn sleep_until(&self, slot: &RoleSlot, at: SystemTime, stop: &CancellationToken) -> bool {
        loop {
            let left = at.duration_since(self.clock.host_now()).unwrap_or_default();
            if left.is_zero() {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep(left.min(MAX_SLEEP)) => {}
                () = slot.wake.notified() => return true,
                () = stop.cancelled() => return false,
            }
        }
    }
}

/// How long before expiry to refresh a session that lasts `lifetime`,
/// when `sharing` roles take codes from the same device.
pub fn refresh_lead(lifetime: Duration, ahead: Duration, sharing: usize) -> Duration {
    let wanted = ahead.min(lifetime / 2);
    let step = Duration::from_secs(crate::totp::STEP_SECONDS);
    let floor = SERVE_MARGIN + step * sharing.max(1) as u32 + CALL_ALLOWANCE;
    wanted.max(floor.min(lifetime * 3 / 4))
}

/// How long to wait before retrying after the `failures`-th failure in a row.
pub fn retry_delay(class: FailureClass, failures: u32) -> Duration {
    match class {
        // The ledger itself waits for the next step or window.
        FailureClass::CodeRejected | FailureClass::MfaBudget => Duration::ZERO,
        FailureClass::Throttled | FailureClass::Unavailable | FailureClass::Malformed => {
            let exponent = failures.saturating_sub(1).min(16);
            let ceiling = BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_CAP);
            let jittered = rand::rng().random_range(0..=ceiling.as_millis() as u64);
            Duration::from_millis(jittered).max(Duration::from_millis(500))
        }
        FailureClass::AccessDenied
        | FailureClass::InvalidKey
        | FailureClass::ExpiredKey
        | FailureClass::RegionDisabled
        | FailureClass::InvalidRequest => SLOW_RETRY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(expiration: SystemTime) -> Credential {
        Credential::new(
            "ASIAEXAMPLE".into(),
            SecretString::from("s".to_owned()),
            SecretString::from("t".to_owned()),
            expiration,
            "123456789012".into(),
        )
    }

    fn slot() -> RoleSlot {
        RoleSlot::new(RoleSpec {
            name: RoleName::parse("r").unwrap(),
            arn: "arn:aws:iam::123456789012:role/R".into(),
            account_id: "123456789012".into(),
            session_name: "s1".into(),
            duration: Duration::from_secs(3600),
            external_id: None,
            policy_arns: vec![],
            tags: vec![],
            source_identity: None,
            allowed_uids: vec![],
            allowed_gids: vec![],
            token_file: None,
        })
    }

    #[test]
    fn an_hour_long_session_is_refreshed_with_thirty_minutes_left() {
        let ahead = Duration::from_secs(1800);
        let lead = |secs, sharing| refresh_lead(Duration::from_secs(secs), ahead, sharing);
        assert_eq!(lead(3600, 1), Duration::from_secs(1800));
        assert_eq!(lead(12 * 3600, 3), Duration::from_secs(1800));
    }

    #[test]
    fn short_sessions_are_refreshed_at_half_life_but_never_inside_the_serve_margin() {
        let ahead = Duration::from_secs(1800);
        let lead = |secs, sharing| refresh_lead(Duration::from_secs(secs), ahead, sharing);
        assert_eq!(lead(900, 1), Duration::from_secs(450));
        // Two minutes: half would leave 60 s, the serve margin; keep a code's wait on top.
        assert_eq!(lead(120, 1), Duration::from_secs(90));
        assert_eq!(lead(300, 1), Duration::from_secs(150));
        // Three roles may each wait behind the other two for a step.
        assert_eq!(lead(240, 3), Duration::from_secs(160));
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter_and_slow_failures_wait_minutes() {
        for failures in 1..30 {
            let delay = retry_delay(FailureClass::Unavailable, failures);
            assert!(delay <= BACKOFF_CAP, "{delay:?}");
        }
        assert_eq!(retry_delay(FailureClass::AccessDenied, 1), SLOW_RETRY);
        assert_eq!(retry_delay(FailureClass::CodeRejected, 3), Duration::ZERO);
    }

    #[test]
    fn a_credential_inside_the_serve_margin_is_not_usable() {
        let slot = slot();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(slot.usable(now).is_none());
        slot.publish(credential(now + Duration::from_secs(61)), now);
        assert!(slot.usable(now).is_some());
        assert!(slot.usable(now + Duration::from_secs(1)).is_none());
        assert!(
            slot.held().is_some(),
            "the credential is still held, only not served"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_on_a_cold_role_waits_for_the_first_attempt_then_gives_up() {
        let slot = Arc::new(slot());
        let now = SystemTime::now;
        let waiting = tokio::spawn({
            let slot = slot.clone();
            async move {
                slot.usable_or_wait(now, FIRST_CREDENTIAL_WAIT)
                    .await
                    .is_some()
            }
        });
        tokio::task::yield_now().await;
        slot.publish(
            credential(SystemTime::now() + Duration::from_secs(3600)),
            SystemTime::now(),
        );
        slot.finish_attempt();
        assert!(waiting.await.unwrap());

        let cold = Arc::new(self::slot());
        let started = tokio::time::Instant::now();
        assert!(
            cold.usable_or_wait(now, FIRST_CREDENTIAL_WAIT)
                .await
                .is_none()
        );
        assert_eq!(started.elapsed(), FIRST_CREDENTIAL_WAIT);
        cold.finish_attempt();
        let started = tokio::time::Instant::now();
        assert!(
            cold.usable_or_wait(now, FIRST_CREDENTIAL_WAIT)
                .await
                .is_none()
        );
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "after a failed first attempt, 503 at once"
        );
    }
}
