//! Time for the services: the one place in this crate that reads a clock.
//! Every service is given a [`Clock`]; production passes [`SystemClock`],
//! tests a [`ManualClock`] they move forward instead of sleeping, so idle,
//! stale and lockout windows are tested without waiting for them.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Wall-clock time, in unix milliseconds.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_ms(&self) -> i64;

    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The clock every service holds.
pub type SharedClock = Arc<dyn Clock>;

/// Whether `every_ms` have passed between `since_ms` and `now_ms`. A wall
/// clock stepped back (NTP) counts as due, so periodic work cannot stall
/// until the clock catches up again.
pub fn due(now_ms: i64, since_ms: i64, every_ms: i64) -> bool {
    now_ms < since_ms || now_ms - since_ms >= every_ms
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one reading of the real clock
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to: for tests.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// Starts at the system's time now, so tokens it stamps are also valid
    /// to a verifier that reads the real clock.
    pub fn starting_now() -> Arc<Self> {
        Self::at(SystemClock.now_ms())
    }

    pub fn at(now_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            now_ms: AtomicI64::new(now_ms),
        })
    }

    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now_ms.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        assert_eq!(clock.now_secs(), 1);
        clock.advance(Duration::from_millis(2_500));
        assert_eq!(clock.now_ms(), 3_500);
        assert!(SystemClock.now_ms() > 1_600_000_000_000);
        assert!(!due(1_500, 1_000, 1_000));
        assert!(due(2_000, 1_000, 1_000));
        assert!(due(500, 1_000, 1_000), "a clock stepped back is due");
    }
}
