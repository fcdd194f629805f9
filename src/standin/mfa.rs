//! The stand-in's view of the virtual MFA devices: which codes it accepts.
//!
//! It follows what STS is observed to do:
//! - codes are RFC 6238 TOTP (HMAC-SHA-1, 6 digits, 30 s steps), accepted
//!   within ±2 steps of the stand-in's clock;
//! - each step's code is accepted once per device; the set of used steps is
//!   kept, so an unused older code may still pass after a newer one;
//! - each device may be verified a limited number of times in each fixed
//!   3-minute UTC window, successes and failures alike; past that every
//!   verification in the window is refused without looking at the code.
//!
//! Replacing a device (same serial number) starts its record afresh.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use totp_rs::{Algorithm, Totp};

/// Length of one TOTP step in seconds; RFC 6238's default, used by AWS.
const STEP_SECS: u64 = 30;
/// Digits in a code; AWS virtual MFA devices use 6.
const DIGITS: u8 = 6;
/// Steps either side of the current one whose codes STS accepts (observed: ±60 s).
const SKEW_STEPS: u64 = 2;
/// Length of the fixed UTC window in which verifications are counted (observed).
const BUDGET_WINDOW_SECS: u64 = 180;
/// Verifications STS allows per device per window before refusing (observed).
const BUDGET_PER_WINDOW: u64 = 9;

/// What became of one MFA verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The code was right and its step unused; the step is now used.
    Accepted,
    /// The code matches no step within the window.
    Rejected,
    /// The code matches only steps that were already accepted.
    Reused,
    /// No device has this serial number.
    UnknownSerial,
    /// The device's verifications for this window are spent.
    OverBudget,
}

/// The outcome of one verification and how many the device has had in its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Verification {
    pub(super) verdict: Verdict,
    /// Verifications of this device in the current window, this one included;
    /// zero when the serial number is unknown.
    pub(super) in_window: u64,
}

/// Every known device, by serial number.
#[derive(Default)]
pub(super) struct MfaRegistry {
    devices: HashMap<String, DeviceLedger>,
}

/// One device's generator and record of use.
struct DeviceLedger {
    totp: Totp,
    used_steps: BTreeSet<u64>,
    verifications_by_window: BTreeMap<u64, u64>,
}

impl MfaRegistry {
    /// Adds a device, replacing any device with the same serial number.
    pub(super) fn add(&mut self, serial_number: &str, seed: &[u8]) {
        let totp = generator(seed);
        let ledger = DeviceLedger {
            totp,
            used_steps: BTreeSet::new(),
            verifications_by_window: BTreeMap::new(),
        };
        self.devices.insert(serial_number.to_owned(), ledger);
    }

    /// Forgets a device, so STS no longer accepts its codes.
    pub(super) fn remove(&mut self, serial_number: &str) {
        self.devices.remove(serial_number);
    }

    /// Verifies `code` for the device `serial_number` at `now_secs` (Unix seconds).
    pub(super) fn verify(
        &mut self,
        serial_number: &str,
        code: &str,
        now_secs: u64,
    ) -> Verification {
        let Some(device) = self.devices.get_mut(serial_number) else {
            return Verification {
                verdict: Verdict::UnknownSerial,
                in_window: 0,
            };
        };

        let in_window = device.count_verification(now_secs);
        let verdict = if in_window > BUDGET_PER_WINDOW {
            Verdict::OverBudget
        } else {
            device.check_code(code, now_secs)
        };
        Verification { verdict, in_window }
    }
}

/// Whether `first` and `second` are the codes of two consecutive steps,
/// both within ±2 steps of `now_secs`: what IAM asks to enable or
/// resynchronise a device. These checks spend nothing from STS's budget.
pub(super) fn are_consecutive_codes(seed: &[u8], first: &str, second: &str, now_secs: u64) -> bool {
    let totp = generator(seed);
    let current = now_secs / STEP_SECS;
    let code_at = |step: u64| totp.generate(step * STEP_SECS).to_string();
    (current.saturating_sub(SKEW_STEPS)..current + SKEW_STEPS)
        .any(|step| code_at(step) == first && code_at(step + 1) == second)
}

fn generator(seed: &[u8]) -> Totp {
    // Real seeds are 40 bytes; shorter test seeds are accepted rather than
    // refused, since judging seed strength is not the stand-in's job.
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_step_duration(STEP_SECS)
        .with_skew(0)
        .with_secret(seed.to_vec())
        .build_noncompliant()
}

impl DeviceLedger {
    fn count_verification(&mut self, now_secs: u64) -> u64 {
        let window = now_secs / BUDGET_WINDOW_SECS;
        let count = self.verifications_by_window.entry(window).or_insert(0);
        *count += 1;
        *count
    }

    fn check_code(&mut self, code: &str, now_secs: u64) -> Verdict {
        let current = now_secs / STEP_SECS;
        let earliest = current.saturating_sub(SKEW_STEPS);
        let matching: Vec<u64> = (earliest..=current + SKEW_STEPS)
            .filter(|step| self.totp.generate(step * STEP_SECS).to_string() == code)
            .collect();

        if matching.is_empty() {
            return Verdict::Rejected;
        }
        match matching.iter().find(|step| !self.used_steps.contains(step)) {
            Some(&step) => {
                self.used_steps.insert(step);
                Verdict::Accepted
            }
            None => Verdict::Reused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERIAL: &str = "arn:aws:iam::123456789012:mfa/svc";
    const SEED: &[u8] = b"12345678901234567890";
    /// A moment in the middle of a budget window and of a step.
    const NOW: u64 = 1_700_000_000 / BUDGET_WINDOW_SECS * BUDGET_WINDOW_SECS + 45;

    fn code_at(secs: u64) -> String {
        totp_rs::Builder::new()
            .with_secret(SEED.to_vec())
            .build_noncompliant()
            .generate(secs)
            .to_string()
    }

    fn registry() -> MfaRegistry {
        let mut registry = MfaRegistry::default();
        registry.add(SERIAL, SEED);
        registry
    }

    #[test]
    fn a_code_matches_rfc_6238_test_vectors() {
        // RFC 6238 appendix B, SHA-1, truncated to 6 digits.
        assert_eq!(code_at(59), "287082");
        assert_eq!(code_at(1_111_111_109), "081804");

        let mut registry = registry();
        assert_eq!(
            registry.verify(SERIAL, "081804", 1_111_111_109).verdict,
            Verdict::Accepted
        );
    }

    #[test]
    fn an_older_unused_code_passes_after_a_newer_one() {
        let mut registry = registry();

        assert_eq!(
            registry.verify(SERIAL, &code_at(NOW), NOW).verdict,
            Verdict::Accepted
        );
        let older = code_at(NOW - STEP_SECS);
        assert_eq!(
            registry.verify(SERIAL, &older, NOW).verdict,
            Verdict::Accepted
        );
        assert_eq!(
            registry.verify(SERIAL, &older, NOW).verdict,
            Verdict::Reused
        );
    }

    #[test]
    fn the_budget_counts_failures_and_resets_with_the_next_window() {
        let mut registry = registry();

        for attempt in 1..=BUDGET_PER_WINDOW {
            let verification = registry.verify(SERIAL, "000000x", NOW);
            assert_eq!(verification.verdict, Verdict::Rejected);
            assert_eq!(verification.in_window, attempt);
        }
        let refused = registry.verify(SERIAL, &code_at(NOW), NOW);
        assert_eq!(refused.verdict, Verdict::OverBudget);

        let next_window = NOW + BUDGET_WINDOW_SECS;
        let fresh = registry.verify(SERIAL, &code_at(next_window), next_window);
        assert_eq!(
            fresh,
            Verification {
                verdict: Verdict::Accepted,
                in_window: 1
            }
        );
    }

    #[test]
    fn an_unknown_serial_is_not_counted_against_any_device() {
        let mut registry = registry();

        let verification = registry.verify("arn:aws:iam::123456789012:mfa/other", "123456", NOW);
        assert_eq!(
            verification,
            Verification {
                verdict: Verdict::UnknownSerial,
                in_window: 0
            }
        );
    }

    #[test]
    fn replacing_a_device_forgets_its_used_codes() {
        let mut registry = registry();
        let code = code_at(NOW);
        assert_eq!(
            registry.verify(SERIAL, &code, NOW).verdict,
            Verdict::Accepted
        );

        registry.add(SERIAL, SEED);
        assert_eq!(
            registry.verify(SERIAL, &code, NOW).verdict,
            Verdict::Accepted
        );
    }
}
