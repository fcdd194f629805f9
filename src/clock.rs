//! Time: the host's wall clock, and STS's clock as learned from its answers.
//!
//! Every STS response carries a `Date` header. [`StsClock`] keeps the
//! offset between that header and the host clock, and reads the time as STS
//! sees it: TOTP codes are computed on it and the SDK signs requests with
//! it, so a host clock minutes off still gets codes STS accepts and
//! signatures it verifies. Expirations received from STS are converted back
//! to host time before they are served, because clients compare them with
//! their own clock.
//!
//! [`Clock`] is the one seam through which the wall clock is read, so tests
//! can drive time with tokio's paused clock instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

/// A `Date` header has one-second resolution; smaller changes are noise.
const OFFSET_RESOLUTION_MS: i64 = 1000;
/// Beyond this the host clock is worth a warning: TOTP tolerates ±60 s.
pub const OFFSET_WARNING: Duration = Duration::from_secs(30);

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> SystemTime;
}

/// The host's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// STS's clock: the host clock plus the offset learned from `Date` headers.
#[derive(Debug)]
pub struct StsClock {
    host: Arc<dyn Clock>,
    offset_ms: AtomicI64,
    learned: AtomicBool,
}

impl StsClock {
    pub fn new(host: Arc<dyn Clock>) -> StsClock {
        StsClock {
            host,
            offset_ms: AtomicI64::new(0),
            learned: AtomicBool::new(false),
        }
    }

    /// The host clock.
    pub fn host_now(&self) -> SystemTime {
        self.host.now()
    }

    /// The time as STS sees it.
    pub fn now(&self) -> SystemTime {
        shift(self.host.now(), self.offset_ms.load(Ordering::Relaxed))
    }

    /// STS time minus host time, in milliseconds; `None` before any answer.
    pub fn offset_ms(&self) -> Option<i64> {
        self.learned
            .load(Ordering::Relaxed)
            .then(|| self.offset_ms.load(Ordering::Relaxed))
    }

    /// Records the `Date` of an STS answer received now. Returns the new
    /// offset when it moved by more than the header's resolution.
    pub fn observe(&self, server_date: SystemTime) -> Option<i64> {
        // The header is truncated to the second: the true time lies in
        // [date, date + 1 s), so take the middle.
        let server_ms = millis(server_date) + OFFSET_RESOLUTION_MS / 2;
        let offset = server_ms - millis(self.host.now());
        let previous = self.offset_ms.load(Ordering::Relaxed);
        let first = !self.learned.swap(true, Ordering::Relaxed);
        if first || (offset - previous).abs() > OFFSET_RESOLUTION_MS {
            self.offset_ms.store(offset, Ordering::Relaxed);
            return Some(offset);
        }
        None
    }

    /// Converts a time on STS's clock to the host's clock.
    pub fn to_host(&self, sts_time: SystemTime) -> SystemTime {
        shift(sts_time, -self.offset_ms.load(Ordering::Relaxed))
    }
}

/// Lets the SDK sign requests on STS time.
#[derive(Debug, Clone)]
pub struct SigningTime(pub Arc<StsClock>);

impl aws_smithy_async::time::TimeSource for SigningTime {
    fn now(&self) -> SystemTime {
        self.0.now()
    }
}

fn millis(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_millis() as i64,
        Err(before) => -(before.duration().as_millis() as i64),
    }
}

fn shift(time: SystemTime, offset_ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(offset_ms.unsigned_abs());
    if offset_ms >= 0 {
        time + magnitude
    } else {
        time - magnitude
    }
}

/// Seconds since the epoch, for TOTP counters and 3-minute windows.
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Notices the host's wall clock being set: stepped by an operator or by
/// NTP, or moved forward when the host resumes from suspend.
///
/// It is a `CLOCK_REALTIME` timerfd armed far in the future with
/// `TFD_TIMER_CANCEL_ON_SET`: the kernel cancels it, and a read fails with
/// `ECANCELED`, whenever the clock is set discontinuously (and, on current
/// kernels, on resume). Setting the clock needs `CAP_SYS_TIME`, so the
/// test suite cannot exercise it; where it is unavailable the refreshers'
/// bounded sleeps still notice a jump within a minute.
#[derive(Debug)]
pub struct ClockJumps {
    timer: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl ClockJumps {
    pub fn new() -> std::io::Result<ClockJumps> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let timer = timerfd_create(
            TimerfdClockId::Realtime,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        arm(&timer)?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it
        // until dropped, so the descriptor stays open and the same.
        let timer = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(timer, tokio::io::Interest::READABLE)
        }?;
        Ok(ClockJumps { timer })
    }

    /// Resolves the next time the wall clock is set.
    pub async fn next(&mut self) -> std::io::Result<()> {
        loop {
            let mut ready = self.timer.readable().await?;
            let mut expirations = [0u8; 8];
            match rustix::io::read(self.timer.get_ref(), &mut expirations) {
                Err(rustix::io::Errno::CANCELED) => {
                    arm(self.timer.get_ref())?;
                    return Ok(());
                }
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(error) => return Err(error.into()),
                // The far-future expiry came (a clock set past 2106): re-arm.
                Ok(_) => arm(self.timer.get_ref())?,
            }
        }
    }
}

/// Arms `timer` for 2106 (as far as any 32-bit `time_t` peer agrees),
/// cancelled when the clock is set.
fn arm(timer: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let far = Timespec {
        tv_sec: i64::from(u32::MAX),
        tv_nsec: 0,
    };
    timerfd_settime(
        timer,
        TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET,
        &Itimerspec {
            it_interval: zero,
            it_value: far,
        },
    )?;
    Ok(())
}

/// A clock that follows tokio's (pausable) clock from a fixed start, for tests.
#[derive(Debug)]
pub struct TokioClock {
    start: SystemTime,
    origin: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start: SystemTime) -> TokioClock {
        TokioClock {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.start + self.origin.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(SystemTime);
    impl Clock for Fixed {
        fn now(&self) -> SystemTime {
            self.0
        }
    }

    #[test]
    fn the_offset_is_learned_from_a_date_header_and_applied() {
        let host = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = StsClock::new(Arc::new(Fixed(host)));
        assert_eq!(clock.offset_ms(), None);
        assert_eq!(
            clock.observe(host + Duration::from_secs(240)),
            Some(240_500)
        );
        assert_eq!(clock.now(), host + Duration::from_millis(240_500));
        assert_eq!(
            clock.to_host(host + Duration::from_secs(3600)),
            host + Duration::from_millis(3_359_500)
        );
    }

    #[test]
    fn a_date_within_the_header_resolution_does_not_move_the_offset() {
        let host = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = StsClock::new(Arc::new(Fixed(host)));
        clock.observe(host - Duration::from_secs(95));
        assert_eq!(clock.observe(host - Duration::from_secs(95)), None);
        assert_eq!(clock.observe(host), Some(500));
    }
}
