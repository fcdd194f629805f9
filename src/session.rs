//! Role sessions: what is held for each role, and the refreshers that keep it fresh.
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
//! Sessions come from one of two sources, chosen by `mfa.session`:
//! - **a code per role**: each refresh is an AssumeRole with the long-term
//!   key and a fresh code from the [`TotpLedger`];
//! - **session-token mode**: one [`MfaSession`] (GetSessionToken with a
//!   code) is kept fresh by its own refresher, and every role is assumed
//!   with it by role chaining, without a code. A role that finds no usable
//!   MFA session waits for the next one; a role call refused because the MFA
//!   session expired or was revoked asks the MFA session's refresher for a
//!   new one, once per refused session (sessions refused again and again
//!   before any role used them are fetched with backoff), rather than
//!   spending codes itself.
//!
//! Failures are retried according to their [`FailureClass`]: a rejected
//! code at the next TOTP step, a spent MFA budget at the next window
//! (both waits happen inside the [`TotpLedger`]), throttling and outages
//! with capped exponential backoff and full jitter, and failures an
//! operator must fix (access denied, a bad key) every few minutes, or at
//! once when the daemon is reloaded ([`RoleSlot::retry_now`]).
//!
//! Refresh times are wall-clock targets (sessions expire on the wall
//! clock), slept toward on the monotonic clock in chunks of at most
//! [`MAX_SLEEP`]. The daemon wakes every refresher with [`RoleSlot::wake`]
//! the moment the wall clock is set or the host resumes from suspend (see
//! [`crate::clock::ClockJumps`]); a woken refresher re-reads the wall clock
//! and refreshes at once if its target has passed. The chunking is the
//! fallback where that notification is unavailable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use rand::Rng;
use secrecy::SecretString;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::StsClock;
use crate::config::{RoleName, RoleSpec};
use crate::credential::{Credential, rfc3339};
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
/// Longest uninterrupted sleep, so wall-clock jumps and suspends are
/// noticed even without a notification from the kernel.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// An MFA session with this little left is not used to assume a role: the
/// call could outlast it.
const MFA_SESSION_MARGIN: Duration = Duration::from_secs(30);
/// The operation named in errors of the MFA session, as STS names it.
const GET_SESSION_TOKEN: &str = "GetSessionToken";

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

/// Ways to cut a refresher's sleep short.
#[derive(Debug, Default)]
struct Nudges {
    /// Re-read the wall clock and re-evaluate the schedule.
    wake: Notify,
    /// Set together with a wake: refresh now, whatever the schedule says.
    retry: AtomicBool,
}

impl Nudges {
    fn wake(&self) {
        self.wake.notify_one();
    }

    fn retry_now(&self) {
        self.retry.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
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
    nudges: Nudges,
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
            nudges: Nudges::default(),
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

    /// Asks the refresher to re-read the wall clock and re-evaluate its
    /// schedule now (after the clock was set, or a suspend).
    pub fn wake(&self) {
        self.nudges.wake();
    }

    /// Asks the refresher to refresh now, whatever its schedule says
    /// (after a reload, when an operator may have fixed the cause of a failure).
    pub fn retry_now(&self) {
        self.nudges.retry_now();
    }

    /// Whether the last attempt failed in a way only an operator can fix.
    pub fn needs_operator(&self) -> bool {
        self.status()
            .last_error
            .is_some_and(|failure| !failure.class.is_transient())
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
    /// The MFA session every role is chained from, in session-token mode.
    pub mfa_session: Option<Arc<MfaSession>>,
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

/// What the MFA session's refresher has done, for roles, health and metrics.
#[derive(Clone, Debug, Default)]
pub struct MfaSessionState {
    /// The session from the last successful GetSessionToken.
    pub session: Option<Arc<Credential>>,
    /// STS refused the session before its expiry (expired or revoked).
    pub rejected: bool,
    /// A GetSessionToken call is due or running; roles wait for it.
    pub fetching: bool,
    pub last_refresh: Option<SystemTime>,
    pub last_error: Option<RefreshFailure>,
    pub next_attempt: Option<SystemTime>,
    pub refreshes: u64,
}

impl MfaSessionState {
    /// The session, if a role may be assumed with it at `now`.
    pub fn usable(&self, now: SystemTime) -> Option<Arc<Credential>> {
        let session = self.session.as_ref().filter(|_| !self.rejected)?;
        (session.remaining(now) > MFA_SESSION_MARGIN).then(|| session.clone())
    }
}

/// Session-token mode's MFA session: one GetSessionToken with a code, shared
/// by every role. Its refresher ([`Refresher::run_mfa_session`]) is the only
/// writer.
#[derive(Debug)]
pub struct MfaSession {
    /// The `DurationSeconds` asked of GetSessionToken (`mfa.session`).
    pub duration: Duration,
    /// The IAM user's account, from the device's serial number.
    account_id: String,
    state: watch::Sender<MfaSessionState>,
    nudges: Nudges,
    /// Refusals of the MFA session by STS since a role last used one successfully.
    rejections_in_a_row: AtomicU32,
}

impl MfaSession {
    pub fn new(duration: Duration, account_id: String) -> MfaSession {
        let starting = MfaSessionState {
            fetching: true,
            ..MfaSessionState::default()
        };
        MfaSession {
            duration,
            account_id,
            state: watch::channel(starting).0,
            nudges: Nudges::default(),
            rejections_in_a_row: AtomicU32::new(0),
        }
    }

    pub fn state(&self) -> MfaSessionState {
        self.state.borrow().clone()
    }

    /// See [`RoleSlot::wake`].
    pub fn wake(&self) {
        self.nudges.wake();
    }

    /// See [`RoleSlot::retry_now`].
    pub fn retry_now(&self) {
        self.nudges.retry_now();
    }

    /// Whether the last attempt failed in a way only an operator can fix.
    pub fn needs_operator(&self) -> bool {
        self.state
            .borrow()
            .last_error
            .as_ref()
            .is_some_and(|failure| !failure.class.is_transient())
    }

    /// A usable session, waiting while one is being fetched; the MFA
    /// session's last error when none is usable and none is coming.
    async fn wait_usable(&self, clock: &StsClock) -> Result<Arc<Credential>, StsError> {
        let mut updates = self.state.subscribe();
        loop {
            {
                let state = updates.borrow_and_update();
                if let Some(session) = state.usable(clock.host_now()) {
                    return Ok(session);
                }
                if !state.fetching {
                    return Err(mfa_session_unavailable(&state));
                }
            }
            if updates.changed().await.is_err() {
                return Err(mfa_session_unavailable(&self.state()));
            }
        }
    }

    /// STS refused `session` (ExpiredToken, InvalidClientTokenId) for a role:
    /// have the refresher fetch a new one, once per session.
    fn report_rejected(&self, session: &Arc<Credential>, error: &StsError) {
        let newly_rejected = self.state.send_if_modified(|state| {
            let current = state
                .session
                .as_ref()
                .is_some_and(|held| Arc::ptr_eq(held, session));
            if !current || state.rejected {
                return false;
            }
            state.rejected = true;
            state.fetching = true;
            true
        });
        if newly_rejected {
            self.rejections_in_a_row.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                class = error.class.name(),
                error = %error,
                "STS refused the MFA session before its expiry; fetching a new one"
            );
            self.nudges.retry_now();
        }
    }

    /// A role was assumed with the session: it works.
    fn report_worked(&self) {
        self.rejections_in_a_row.store(0, Ordering::Relaxed);
    }

    fn update(&self, change: impl FnOnce(&mut MfaSessionState)) {
        self.state.send_modify(change);
    }
}

/// The error a role records while no MFA session is usable.
fn mfa_session_unavailable(state: &MfaSessionState) -> StsError {
    let (class, message) = match &state.last_error {
        Some(failure) => (
            failure.class,
            format!("no usable MFA session: {}", failure.message),
        ),
        None => (
            FailureClass::Unavailable,
            "no usable MFA session yet".to_owned(),
        ),
    };
    StsError {
        operation: GET_SESSION_TOKEN,
        class,
        code: None,
        message,
    }
}

/// Where sessions come from: shared by every role's refresher task and the
/// MFA session's.
pub struct Refresher {
    /// Swapped on reload when the key or the `[aws]` settings change.
    sts: ArcSwap<Sts>,
    ledger: Arc<TotpLedger>,
    clock: Arc<StsClock>,
    ahead: Duration,
    /// How many roles queue for codes from the same ledger.
    sharing: AtomicUsize,
    mfa_session: Option<Arc<MfaSession>>,
    metrics: Arc<Metrics>,
}

impl Refresher {
    pub fn new(
        sts: Sts,
        ledger: Arc<TotpLedger>,
        clock: Arc<StsClock>,
        ahead: Duration,
        sharing: usize,
        mfa_session: Option<Arc<MfaSession>>,
        metrics: Arc<Metrics>,
    ) -> Refresher {
        Refresher {
            sts: ArcSwap::from_pointee(sts),
            ledger,
            clock,
            ahead,
            sharing: AtomicUsize::new(sharing),
            mfa_session,
            metrics,
        }
    }

    /// Uses `sts` for every call from now on (a new key or endpoint).
    pub fn replace_sts(&self, sts: Sts) {
        self.sts.store(Arc::new(sts));
    }

    /// The number of roles now served, for the refresh lead.
    pub fn set_sharing(&self, roles: usize) {
        self.sharing.store(roles, Ordering::Relaxed);
    }

    pub fn mfa_session(&self) -> Option<&Arc<MfaSession>> {
        self.mfa_session.as_ref()
    }

    pub fn ledger(&self) -> &Arc<TotpLedger> {
        &self.ledger
    }

    /// Roles queueing for codes: all of them with a code per role, none
    /// (only the MFA session) in session-token mode.
    fn code_users(&self) -> usize {
        match self.mfa_session {
            Some(_) => 1,
            None => self.sharing.load(Ordering::Relaxed),
        }
    }

    /// Keeps `slot` fresh until `stop` is cancelled. A slot that already
    /// holds a usable credential (a refresher restarted by a reload) keeps
    /// it until its scheduled refresh.
    pub async fn run(self: Arc<Self>, slot: Arc<RoleSlot>, stop: CancellationToken) {
        let mut next_attempt = self.first_attempt(&slot);
        let mut failures = 0u32;
        let mut waiting_for_mfa_session = false;
        let mut warned_short = false;
        loop {
            slot.update_status(|status| status.next_attempt = Some(next_attempt));
            let mut mfa_updates = self
                .mfa_session
                .as_ref()
                .filter(|_| waiting_for_mfa_session)
                .map(|mfa| mfa.state.subscribe());
            let woke = sleep_until(
                &self.clock,
                next_attempt,
                &slot.nudges,
                mfa_updates.as_mut(),
                &stop,
            );
            if !woke.await {
                return;
            }
            let result = tokio::select! {
                result = self.fetch_role(&slot.spec) => result,
                () = stop.cancelled() => return,
            };
            let now = self.clock.host_now();
            match result {
                Ok(credential) => {
                    failures = 0;
                    waiting_for_mfa_session = false;
                    next_attempt = self.next_refresh(
                        &credential,
                        now,
                        &slot.spec.name.to_string(),
                        &mut warned_short,
                    );
                    tracing::info!(
                        role = %slot.spec.name,
                        expires = %rfc3339(credential.expiration),
                        next_refresh = %rfc3339(next_attempt),
                        "refreshed role session"
                    );
                    slot.publish(credential, now);
                    self.metrics.record_refresh(&slot.spec.name, None);
                }
                Err(error) => {
                    failures += 1;
                    waiting_for_mfa_session = self.waits_for_mfa_session(&error);
                    next_attempt = if waiting_for_mfa_session {
                        // Retried as soon as a usable MFA session appears.
                        now + SLOW_RETRY
                    } else {
                        self.retry_at(&error, failures, now)
                    };
                    let held = slot.usable(now).map(|c| rfc3339(c.expiration));
                    tracing::warn!(
                        role = %slot.spec.name,
                        class = error.class.name(),
                        error = %error,
                        next_attempt = %if waiting_for_mfa_session { "when a new MFA session arrives".to_owned() } else { rfc3339(next_attempt) },
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

    /// Keeps the MFA session fresh until `stop` is cancelled; returns at
    /// once when there is none (a code per role).
    pub async fn run_mfa_session(self: Arc<Self>, stop: CancellationToken) {
        let Some(mfa) = self.mfa_session.clone() else {
            return;
        };
        let mut next_attempt = self.clock.host_now();
        let mut failures = 0u32;
        let mut warned_short = false;
        let mut last_call: Option<tokio::time::Instant> = None;
        loop {
            mfa.update(|state| state.next_attempt = Some(next_attempt));
            if !sleep_until(&self.clock, next_attempt, &mfa.nudges, None, &stop).await {
                return;
            }
            // Sessions refused again and again, before any role could use
            // them, are not a matter of one expired session: back off as
            // for an outage rather than spend a code every step.
            let refusals = mfa.rejections_in_a_row.load(Ordering::Relaxed);
            if refusals > 1
                && let Some(wait) = last_call
                    .map(|at| {
                        let delay = retry_delay(FailureClass::Throttled, refusals - 1);
                        delay.saturating_sub(at.elapsed())
                    })
                    .filter(|wait| !wait.is_zero())
            {
                let now = self.clock.host_now();
                next_attempt = now + wait;
                tracing::warn!(
                    refusals,
                    next_attempt = %rfc3339(next_attempt),
                    "STS refused new MFA sessions repeatedly; backing off before spending another code on one"
                );
                mfa.update(|state| {
                    state.fetching = false;
                    state.last_error = Some(RefreshFailure {
                        class: FailureClass::InvalidKey,
                        message: format!("STS refused {refusals} MFA sessions in a row"),
                        at: now,
                    });
                });
                continue;
            }
            mfa.update(|state| state.fetching = true);
            let result = tokio::select! {
                result = self.fetch_mfa_session(&mfa) => result,
                () = stop.cancelled() => return,
            };
            last_call = Some(tokio::time::Instant::now());
            let now = self.clock.host_now();
            match result {
                Ok(session) => {
                    failures = 0;
                    next_attempt =
                        self.next_refresh(&session, now, "MFA session", &mut warned_short);
                    tracing::info!(
                        expires = %rfc3339(session.expiration),
                        next_refresh = %rfc3339(next_attempt),
                        "refreshed MFA session"
                    );
                    mfa.update(|state| {
                        state.session = Some(Arc::new(session));
                        state.rejected = false;
                        state.fetching = false;
                        state.last_refresh = Some(now);
                        state.last_error = None;
                        state.refreshes += 1;
                    });
                }
                Err(error) => {
                    failures += 1;
                    next_attempt = self.retry_at(&error, failures, now);
                    tracing::warn!(
                        class = error.class.name(),
                        error = %error,
                        next_attempt = %rfc3339(next_attempt),
                        hint = error.class.hint(),
                        "MFA session refresh failed"
                    );
                    mfa.update(|state| {
                        state.fetching = false;
                        state.last_error = Some(RefreshFailure {
                            class: error.class,
                            message: error.to_string(),
                            at: now,
                        });
                    });
                }
            }
        }
    }

    /// When a refresher restarted on a slot should first call STS.
    fn first_attempt(&self, slot: &RoleSlot) -> SystemTime {
        let now = self.clock.host_now();
        let status = slot.status();
        match status.next_attempt {
            Some(at) if slot.usable(now).is_some() && status.last_error.is_none() => at,
            _ => now,
        }
    }

    async fn fetch_role(&self, role: &RoleSpec) -> Result<Credential, StsError> {
        let Some(mfa) = &self.mfa_session else {
            let code = self.ledger.next_code().await;
            tracing::debug!(role = %role.name, counter = code.counter, "calling AssumeRole");
            let sts = self.sts.load_full();
            return sts
                .assume_role(role, self.ledger.serial_number(), &code)
                .await;
        };
        let session = mfa.wait_usable(&self.clock).await?;
        tracing::debug!(role = %role.name, "calling AssumeRole with the MFA session");
        let result = self
            .sts
            .load_full()
            .assume_role_chained(role, &session)
            .await;
        match &result {
            Ok(_) => mfa.report_worked(),
            Err(error) if refuses_session(error) => mfa.report_rejected(&session, error),
            Err(_) => {}
        }
        result
    }

    async fn fetch_mfa_session(&self, mfa: &MfaSession) -> Result<Credential, StsError> {
        let code = self.ledger.next_code().await;
        tracing::debug!(counter = code.counter, "calling GetSessionToken");
        self.sts
            .load_full()
            .get_session_token(
                mfa.duration,
                self.ledger.serial_number(),
                &code,
                &mfa.account_id,
            )
            .await
    }

    /// Whether a role's failure is the MFA session's, to be retried when a new one arrives.
    fn waits_for_mfa_session(&self, error: &StsError) -> bool {
        self.mfa_session.is_some()
            && (error.operation == GET_SESSION_TOKEN || refuses_session(error))
    }

    /// When to refresh a session just received at `now`; warns once per
    /// refresher when sessions are shorter than `refresh.ahead`.
    fn next_refresh(
        &self,
        credential: &Credential,
        now: SystemTime,
        what: &str,
        warned_short: &mut bool,
    ) -> SystemTime {
        let lifetime = credential.remaining(now);
        let lead = refresh_lead(lifetime, self.ahead, self.code_users());
        if lifetime <= self.ahead && !*warned_short {
            *warned_short = true;
            tracing::warn!(
                session = what,
                lifetime_seconds = lifetime.as_secs(),
                refresh_ahead_seconds = self.ahead.as_secs(),
                refresh_lead_seconds = lead.as_secs(),
                "STS granted a session shorter than refresh.ahead; refreshing it at half its life instead, so clients see it change often; check the role's duration and MaxSessionDuration"
            );
        }
        now + lifetime.saturating_sub(lead)
    }

    /// When to try again after the `failures`-th failure in a row.
    fn retry_at(&self, error: &StsError, failures: u32, now: SystemTime) -> SystemTime {
        let mut at = now + retry_delay(error.class, failures);
        if error.class == FailureClass::MfaBudget {
            self.ledger.budget_exhausted();
            at = at.max(self.ledger.next_window_start());
        }
        at
    }
}

/// Whether STS refused the credentials a chained call was signed with.
fn refuses_session(error: &StsError) -> bool {
    matches!(
        error.class,
        FailureClass::ExpiredKey | FailureClass::InvalidKey
    )
}

/// Sleeps until the wall-clock time `at`, in chunks of at most
/// [`MAX_SLEEP`], re-reading the clock whenever woken. Returns true when
/// due (the time has come, a retry was asked for, or — when `mfa_updates`
/// is given — a usable MFA session appeared), false when stopped.
async fn sleep_until(
    clock: &StsClock,
    at: SystemTime,
    nudges: &Nudges,
    mut mfa_updates: Option<&mut watch::Receiver<MfaSessionState>>,
    stop: &CancellationToken,
) -> bool {
    loop {
        if nudges.retry.swap(false, Ordering::Relaxed) {
            return true;
        }
        // A session refused earlier is never usable, so this is a new one
        // (possibly one that arrived before this wait began).
        if let Some(updates) = mfa_updates.as_deref_mut()
            && updates
                .borrow_and_update()
                .usable(clock.host_now())
                .is_some()
        {
            return true;
        }
        let left = at.duration_since(clock.host_now()).unwrap_or_default();
        if left.is_zero() {
            return true;
        }
        let mfa_changed = async {
            let closed = match mfa_updates.as_deref_mut() {
                Some(updates) => updates.changed().await.is_err(),
                None => true,
            };
            if closed {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = tokio::time::sleep(left.min(MAX_SLEEP)) => {}
            () = nudges.wake.notified() => {}
            () = mfa_changed => {}
            () = stop.cancelled() => return false,
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

    /// A host clock that tests can step, as an operator or NTP would.
    #[derive(Debug)]
    struct SteppedClock {
        base: crate::clock::TokioClock,
        step_secs: std::sync::atomic::AtomicU64,
    }

    impl SteppedClock {
        fn new() -> Arc<SteppedClock> {
            Arc::new(SteppedClock {
                base: crate::clock::TokioClock::starting_at(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                ),
                step_secs: Default::default(),
            })
        }

        fn step_forward(&self, by: Duration) {
            self.step_secs.fetch_add(by.as_secs(), Ordering::Relaxed);
        }
    }

    impl crate::clock::Clock for SteppedClock {
        fn now(&self) -> SystemTime {
            self.base.now() + Duration::from_secs(self.step_secs.load(Ordering::Relaxed))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresher_woken_after_the_wall_clock_jumps_past_its_target_is_due_at_once() {
        let host = SteppedClock::new();
        let clock = StsClock::new(host.clone());
        let nudges = Nudges::default();
        let stop = CancellationToken::new();
        let target = clock.host_now() + Duration::from_secs(3600);
        let sleeping = sleep_until(&clock, target, &nudges, None, &stop);
        tokio::pin!(sleeping);

        let early = tokio::time::timeout(Duration::from_secs(5), &mut sleeping).await;
        assert!(early.is_err(), "not due an hour early");
        nudges.wake();
        let woken = tokio::time::timeout(Duration::from_secs(5), &mut sleeping).await;
        assert!(woken.is_err(), "a wake without a jump goes back to sleep");

        host.step_forward(Duration::from_secs(7200));
        nudges.wake();
        let started = tokio::time::Instant::now();
        assert!(sleeping.await, "due once the wall clock is past the target");
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "at once, not after a chunk"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_jump_nobody_reports_is_noticed_within_the_longest_sleep() {
        let host = SteppedClock::new();
        let clock = StsClock::new(host.clone());
        let nudges = Nudges::default();
        let stop = CancellationToken::new();
        let target = clock.host_now() + Duration::from_secs(3600);
        let sleeping = sleep_until(&clock, target, &nudges, None, &stop);
        tokio::pin!(sleeping);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut sleeping)
                .await
                .is_err()
        );

        host.step_forward(Duration::from_secs(7200));
        let started = tokio::time::Instant::now();
        assert!(sleeping.await);
        assert!(started.elapsed() <= MAX_SLEEP, "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_request_ends_the_sleep_and_a_stop_ends_it_with_false() {
        let clock = StsClock::new(SteppedClock::new());
        let nudges = Nudges::default();
        let stop = CancellationToken::new();
        let target = clock.host_now() + Duration::from_secs(3600);
        nudges.retry_now();
        assert!(sleep_until(&clock, target, &nudges, None, &stop).await);
        stop.cancel();
        assert!(!sleep_until(&clock, target, &nudges, None, &stop).await);
    }

    #[tokio::test(start_paused = true)]
    async fn roles_wait_for_the_mfa_session_being_fetched_and_then_use_it() {
        let clock = StsClock::new(SteppedClock::new());
        let mfa = Arc::new(MfaSession::new(
            Duration::from_secs(3600),
            "123456789012".into(),
        ));
        let waiting = tokio::spawn({
            let mfa = mfa.clone();
            async move {
                let clock = StsClock::new(SteppedClock::new());
                mfa.wait_usable(&clock)
                    .await
                    .map(|c| c.access_key_id.clone())
            }
        });
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(
            !waiting.is_finished(),
            "waits while the first session is fetched"
        );
        let now = clock.host_now();
        mfa.update(|state| {
            state.session = Some(Arc::new(credential(now + Duration::from_secs(3600))));
            state.fetching = false;
        });
        assert_eq!(waiting.await.unwrap().unwrap(), "ASIAEXAMPLE");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_mfa_session_fails_waiting_roles_with_its_cause() {
        let clock = StsClock::new(SteppedClock::new());
        let mfa = MfaSession::new(Duration::from_secs(3600), "123456789012".into());
        mfa.update(|state| {
            state.fetching = false;
            state.last_error = Some(RefreshFailure {
                class: FailureClass::InvalidKey,
                message: "GetSessionToken failed".into(),
                at: SystemTime::UNIX_EPOCH,
            });
        });
        let error = mfa.wait_usable(&clock).await.unwrap_err();
        assert_eq!(error.class, FailureClass::InvalidKey);
        assert_eq!(error.operation, GET_SESSION_TOKEN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_mfa_session_asks_for_one_new_session_however_many_roles_report_it() {
        let clock = StsClock::new(SteppedClock::new());
        let mfa = MfaSession::new(Duration::from_secs(3600), "123456789012".into());
        let session = Arc::new(credential(clock.host_now() + Duration::from_secs(3600)));
        mfa.update(|state| {
            state.session = Some(session.clone());
            state.fetching = false;
        });
        let expired = StsError {
            operation: "AssumeRole",
            class: FailureClass::ExpiredKey,
            code: Some("ExpiredToken".into()),
            message: "The security token included in the request is expired".into(),
        };
        for _ in 0..5 {
            mfa.report_rejected(&session, &expired);
        }
        assert_eq!(mfa.rejections_in_a_row.load(Ordering::Relaxed), 1);
        assert!(
            mfa.nudges.retry.load(Ordering::Relaxed),
            "the refresher is asked"
        );
        let state = mfa.state();
        assert!(
            state.rejected && state.fetching,
            "roles wait for the new session"
        );
        assert!(state.usable(clock.host_now()).is_none());
    }
}
