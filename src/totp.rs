//! The TOTP ledger: one per MFA device, shared by every role that uses it.
//!
//! STS accepts a code once, within about ±2 steps (±60 s) of its clock, and
//! counts about nine verifications per device in each fixed 3-minute UTC
//! window before it refuses every code. The ledger is the only way to get a
//! code, and it keeps these rules:
//!
//! - a counter handed out once is never handed out again (it remembers
//!   every counter for the whole window STS accepts);
//! - at most one code per 30-second step, so callers queue and are served in
//!   order, one step apart; this also staggers roles that start together;
//! - at most [`BUDGET_PER_WINDOW`] codes per 3-minute window, and none at
//!   all until the next window after STS reports the budget spent; none
//!   within a second of a window boundary, since STS's time is known only
//!   to about half a second.
//!
//! A caller that cannot have a code now waits for the step or window in
//! which it can; it never fails. Codes are computed on STS's clock
//! ([`StsClock`]), not the host's.
//!
//! The ledger keeps the daemon's only long-lived copy of the seed, inside
//! totp-rs's `Totp` (zeroized on drop, redacted in `Debug`); the loaded
//! [`Seed`] is dropped once the ledger is built. [`TotpLedger::lock_seed`]
//! keeps that copy out of swap.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};

use crate::clock::{StsClock, unix_seconds};
use crate::secret::Seed;

/// AWS virtual MFA devices: 30-second steps, 6 digits, SHA-1.
pub const STEP_SECONDS: u64 = 30;
const DIGITS: u8 = 6;
/// STS counts verifications in fixed windows of this length.
pub const WINDOW_SECONDS: u64 = 180;
/// STS refuses past about nine a window; six leaves room for a person
/// resyncing the device, and is what one code per step allows anyway.
pub const BUDGET_PER_WINDOW: u32 = 6;
/// STS accepts codes this many steps either side of its time; a counter
/// must be remembered at least this long after its step.
const ACCEPTED_STEPS: u64 = 2;
/// STS's time is known to about half a second (a `Date` header has
/// one-second resolution), so no code is issued this close to a window
/// boundary, where STS could count it in the neighbouring window. Callers
/// that waited for a window or a step would otherwise all land exactly on
/// the boundary.
const BOUNDARY_GUARD: Duration = Duration::from_secs(1);
/// Counters at which two seeds are compared (codes long past, never presented).
const SEED_CHECK_COUNTERS: [u64; 3] = [1, 1_000, 1_000_000];

/// One code, good for one STS call.
pub struct TotpCode {
    pub counter: u64,
    code: SecretString,
}

impl TotpCode {
    pub fn expose(&self) -> &str {
        self.code.expose_secret()
    }
}

impl std::fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpCode")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// What the ledger has done, for health and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerStats {
    pub codes_issued: u64,
    pub issued_this_window: u32,
}

/// The ledger in use, replaced whole when a reload brings another device.
pub type CurrentLedger = Arc<arc_swap::ArcSwap<TotpLedger>>;

pub struct TotpLedger {
    serial_number: String,
    totp: totp_rs::Totp,
    clock: Arc<StsClock>,
    /// Callers queue here, in order, while one waits for its step.
    queue: tokio::sync::Mutex<()>,
    state: Mutex<LedgerState>,
    codes_issued: AtomicU64,
}

impl std::fmt::Debug for TotpLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpLedger")
            .field("serial_number", &self.serial_number)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct LedgerState {
    used: BTreeSet<u64>,
    window: u64,
    issued_in_window: u32,
    /// STS said the budget is spent: no code before this window index.
    blocked_until_window: u64,
}

impl TotpLedger {
    pub fn new(serial_number: String, seed: &Seed, clock: Arc<StsClock>) -> TotpLedger {
        let totp = generator(seed);
        TotpLedger {
            serial_number,
            totp,
            clock,
            queue: tokio::sync::Mutex::new(()),
            state: Mutex::new(LedgerState::default()),
            codes_issued: AtomicU64::new(0),
        }
    }

    pub fn serial_number(&self) -> &str {
        &self.serial_number
    }

    /// Locks the pages holding the ledger's copy of the seed in memory.
    /// The copy sits on the heap and never moves, so locking it once holds
    /// for the ledger's life.
    pub fn lock_seed(&self) -> std::io::Result<()> {
        crate::secret::lock_in_memory(self.totp.secret().as_bytes())
    }

    /// Whether `seed` is this ledger's seed (a reload re-reads it): the two
    /// agree on codes for several fixed counters, which different seeds do
    /// with a chance of about one in 10^18.
    pub fn has_seed(&self, seed: &Seed) -> bool {
        let other = generator(seed);
        SEED_CHECK_COUNTERS.iter().all(|&counter| {
            let time = counter * STEP_SECONDS;
            self.totp.generate(time) == other.generate(time)
        })
    }

    /// Waits until a code may be used, marks it used and returns it.
    /// Cancel-safe: a caller dropped while waiting consumes nothing.
    pub async fn next_code(&self) -> TotpCode {
        let _turn = self.queue.lock().await;
        loop {
            let now = self.clock.now();
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let wait = state.wait_before_issue(now);
                if wait.is_zero() {
                    let counter = unix_seconds(now) / STEP_SECONDS;
                    state.issue(counter, unix_seconds(now) / WINDOW_SECONDS);
                    self.codes_issued.fetch_add(1, Ordering::Relaxed);
                    let code = self.totp.generate(counter * STEP_SECONDS).to_string();
                    return TotpCode {
                        counter,
                        code: SecretString::from(code),
                    };
                }
                wait
            };
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "waiting for a fresh MFA step"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// STS reported the device's budget spent: hold every code until the next window.
    pub fn budget_exhausted(&self) {
        let window = unix_seconds(self.clock.now()) / WINDOW_SECONDS;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.blocked_until_window = state.blocked_until_window.max(window + 1);
    }

    /// The start of the next window on the host clock, for reporting a retry time.
    pub fn next_window_start(&self) -> SystemTime {
        let window = unix_seconds(self.clock.now()) / WINDOW_SECONDS;
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs((window + 1) * WINDOW_SECONDS);
        self.clock.to_host(start)
    }

    pub fn stats(&self) -> LedgerStats {
        let window = unix_seconds(self.clock.now()) / WINDOW_SECONDS;
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let issued_this_window = if state.window == window {
            state.issued_in_window
        } else {
            0
        };
        LedgerStats {
            codes_issued: self.codes_issued.load(Ordering::Relaxed),
            issued_this_window,
        }
    }
}

impl LedgerState {
    /// How long until a code may be issued at `now` (zero: now).
    fn wait_before_issue(&self, now: SystemTime) -> Duration {
        let guard = near_window_boundary(now);
        if !guard.is_zero() {
            return guard;
        }
        let seconds = unix_seconds(now);
        let window = seconds / WINDOW_SECONDS;
        let counter = seconds / STEP_SECONDS;
        let window_full = window == self.window && self.issued_in_window >= BUDGET_PER_WINDOW;
        if window < self.blocked_until_window || window_full {
            let next_window = (window + 1).max(self.blocked_until_window);
            return until(now, next_window * WINDOW_SECONDS);
        }
        if self.used.contains(&counter) {
            return until(now, (counter + 1) * STEP_SECONDS);
        }
        Duration::ZERO
    }

    fn issue(&mut self, counter: u64, window: u64) {
        self.used.insert(counter);
        // Counters older than STS's acceptance window can never be presented again.
        let oldest_relevant = counter.saturating_sub(2 * ACCEPTED_STEPS + 1);
        self.used = self.used.split_off(&oldest_relevant);
        if window != self.window {
            self.window = window;
            self.issued_in_window = 0;
        }
        self.issued_in_window += 1;
    }
}

/// The codes of the step before `now` and of the step at `now`: the two
/// consecutive codes IAM asks for to enable or resynchronise a device, as a
/// person would type them after watching one code follow another. They
/// bypass the ledger because IAM's checks are not STS verifications: they
/// neither consume codes for STS nor count against its budget.
pub fn consecutive_codes(seed: &Seed, now: SystemTime) -> [TotpCode; 2] {
    let totp = generator(seed);
    let current = unix_seconds(now) / STEP_SECONDS;
    [current.saturating_sub(1), current].map(|counter| TotpCode {
        counter,
        code: SecretString::from(totp.generate(counter * STEP_SECONDS).to_string()),
    })
}

/// How long to wait when `now` is within [`BOUNDARY_GUARD`] of a window
/// boundary: until that much past it (zero otherwise).
fn near_window_boundary(now: SystemTime) -> Duration {
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let window = Duration::from_secs(WINDOW_SECONDS);
    let into_window = Duration::from_nanos((since_epoch.as_nanos() % window.as_nanos()) as u64);
    if into_window < BOUNDARY_GUARD {
        BOUNDARY_GUARD - into_window
    } else if into_window > window - BOUNDARY_GUARD {
        window - into_window + BOUNDARY_GUARD
    } else {
        Duration::ZERO
    }
}

/// AWS's code generator for `seed`.
fn generator(seed: &Seed) -> totp_rs::Totp {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(0)
        .with_step_duration(STEP_SECONDS)
        .with_secret(seed.expose_secret())
        .build_noncompliant()
}

/// The time from `now` to the epoch second `target`, at least a millisecond.
fn until(now: SystemTime, target: u64) -> Duration {
    let target = SystemTime::UNIX_EPOCH + Duration::from_secs(target);
    target
        .duration_since(now)
        .unwrap_or_default()
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use secrecy::SecretSlice;

    fn ledger_at(start_secs: u64) -> TotpLedger {
        let host = Arc::new(TokioClock::starting_at(
            SystemTime::UNIX_EPOCH + Duration::from_secs(start_secs),
        ));
        let clock = Arc::new(StsClock::new(host));
        let seed: Seed = SecretSlice::from(b"12345678901234567890".to_vec());
        TotpLedger::new("arn:aws:iam::123456789012:mfa/test".into(), &seed, clock)
    }

    #[tokio::test(start_paused = true)]
    async fn codes_match_the_rfc_6238_reference_values() {
        // RFC 6238 appendix B, SHA-1, truncated to 6 digits.
        let ledger = ledger_at(59);
        assert_eq!(ledger.next_code().await.expose(), "287082");
        let ledger = ledger_at(1_111_111_109);
        assert_eq!(ledger.next_code().await.expose(), "081804");
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_caller_in_the_same_step_waits_for_the_next_step() {
        let ledger = ledger_at(1_800_000_000); // the start of a step and a window
        let started = tokio::time::Instant::now();
        let first = ledger.next_code().await;
        let second = ledger.next_code().await;
        assert_eq!(second.counter, first.counter + 1);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_ne!(first.expose(), second.expose());
    }

    #[tokio::test(start_paused = true)]
    async fn no_window_sees_more_than_the_budget_and_no_counter_repeats() {
        let ledger = ledger_at(1_800_000_000 + 7);
        let mut counters = BTreeSet::new();
        let mut per_window = std::collections::BTreeMap::new();
        for _ in 0..40 {
            let code = ledger.next_code().await;
            assert!(
                counters.insert(code.counter),
                "counter {} handed out twice",
                code.counter
            );
            *per_window
                .entry(code.counter * STEP_SECONDS / WINDOW_SECONDS)
                .or_insert(0) += 1;
        }
        assert!(
            per_window.values().all(|&n| n <= BUDGET_PER_WINDOW),
            "{per_window:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_sts_reports_the_budget_spent_no_code_comes_before_the_next_window() {
        let ledger = ledger_at(1_800_000_000 + 50);
        ledger.next_code().await;
        ledger.budget_exhausted();
        let code = ledger.next_code().await;
        let window_start = (1_800_000_000 / WINDOW_SECONDS + 1) * WINDOW_SECONDS;
        assert_eq!(code.counter * STEP_SECONDS, window_start);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_full_window_the_next_code_waits_past_its_start_by_the_guard() {
        let ledger = ledger_at(1_800_000_000); // the start of a step and a window
        let started = tokio::time::Instant::now();
        for _ in 0..BUDGET_PER_WINDOW {
            ledger.next_code().await;
        }
        ledger.next_code().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(WINDOW_SECONDS) + BOUNDARY_GUARD
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_moved_back_never_brings_a_used_counter_back() {
        let host = Arc::new(TokioClock::starting_at(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let clock = Arc::new(StsClock::new(host));
        let seed: Seed = SecretSlice::from(b"12345678901234567890".to_vec());
        let ledger = TotpLedger::new("serial".into(), &seed, clock.clone());
        let first = ledger.next_code().await;
        tokio::time::advance(Duration::from_secs(31)).await;
        // STS turns out to be 31 s behind: its current step is the one just used.
        clock.observe(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let second = ledger.next_code().await;
        assert!(
            second.counter > first.counter,
            "{} then {}",
            first.counter,
            second.counter
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_code_is_issued_within_a_second_of_a_window_boundary() {
        // Half a second before a window ends.
        let window_end = (1_800_000_000 / WINDOW_SECONDS + 1) * WINDOW_SECONDS;
        let ledger = ledger_at(window_end - 1);
        tokio::time::advance(Duration::from_millis(500)).await;
        let started = tokio::time::Instant::now();
        let code = ledger.next_code().await;
        assert_eq!(
            code.counter * STEP_SECONDS,
            window_end,
            "issued in the new window"
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(1500),
            "a second past the boundary"
        );
    }

    #[test]
    fn debug_output_never_shows_the_seed() {
        let host = Arc::new(TokioClock::starting_at(SystemTime::UNIX_EPOCH));
        let seed: Seed = SecretSlice::from(b"MARKER-seed-0123456789".to_vec());
        let ledger = TotpLedger::new("serial".into(), &seed, Arc::new(StsClock::new(host)));
        for debug in [format!("{ledger:?}"), format!("{:?}", ledger.totp)] {
            assert!(!debug.contains("MARKER"), "{debug}");
            assert!(!debug.contains("77, 65, 82"), "raw bytes: {debug}");
        }
    }

    #[test]
    fn the_ledgers_own_copy_of_the_seed_is_what_gets_locked() {
        let host = Arc::new(TokioClock::starting_at(SystemTime::UNIX_EPOCH));
        let seed: Seed = SecretSlice::from(b"12345678901234567890".to_vec());
        let ledger = TotpLedger::new("serial".into(), &seed, Arc::new(StsClock::new(host)));
        drop(seed);
        ledger
            .lock_seed()
            .expect("mlock (the tests run with room to lock a page)");
        let address = ledger.totp.secret().as_bytes().as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_mapping = false;
        let mut locked_kb = None;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().and_then(|first| {
                let (start, end) = first.split_once('-')?;
                Some((
                    usize::from_str_radix(start, 16).ok()?,
                    usize::from_str_radix(end, 16).ok()?,
                ))
            });
            if let Some((start, end)) = range {
                in_mapping = (start..end).contains(&address);
            } else if let Some(kb) = line.strip_prefix("Locked:").filter(|_| in_mapping) {
                locked_kb = kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok();
            }
        }
        assert!(
            locked_kb.is_some_and(|kb| kb > 0),
            "the mapping holding the seed has {locked_kb:?} kB locked"
        );
    }

    #[test]
    fn consecutive_codes_are_the_previous_and_the_current_step() {
        let seed: Seed = SecretSlice::from(b"12345678901234567890".to_vec());
        // RFC 6238 appendix B: 1111111109 is in step 37037036.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_111_111_109);
        let [first, second] = consecutive_codes(&seed, now);
        assert_eq!((first.counter, second.counter), (37_037_035, 37_037_036));
        assert_eq!(second.expose(), "081804");
    }

    #[test]
    fn a_ledger_recognises_its_own_seed_and_no_other() {
        let ledger = ledger_at(1_800_000_000);
        let same: Seed = SecretSlice::from(b"12345678901234567890".to_vec());
        let other: Seed = SecretSlice::from(b"12345678901234567891".to_vec());
        assert!(ledger.has_seed(&same));
        assert!(!ledger.has_seed(&other));
    }

    #[test]
    fn debug_output_never_shows_the_code() {
        let code = TotpCode {
            counter: 7,
            code: SecretString::from("123456".to_owned()),
        };
        assert!(!format!("{code:?}").contains("123456"));
    }
}
