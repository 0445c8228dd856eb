//! Whether a backing service (Redis, the database) is known to be down.
//!
//! Without it, every request during an outage waits out its own connect or
//! response timeout before failing: seconds each, and connections pile up
//! under load. With it, the first failure opens the breaker, later callers
//! get that failure at once, and one probe at a time (run by the owner)
//! checks whether the service is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Breaker {
    /// Read on every call: an atomic, so the healthy path takes no lock.
    open: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    last_error: String,
    probing: bool,
}

impl Breaker {
    /// `Err` with the failure that opened the breaker while it is open.
    pub fn check(&self) -> Result<(), String> {
        if !self.open.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(self.lock().last_error.clone())
    }

    /// Opens the breaker on `error`. True when no probe is running, so the
    /// caller must start one (and call [`closed`](Self::closed) when it
    /// succeeds).
    #[must_use]
    pub fn open(&self, error: String) -> bool {
        let mut inner = self.lock();
        inner.last_error = error;
        self.open.store(true, Ordering::Release);
        !std::mem::replace(&mut inner.probing, true)
    }

    /// The probe got through: callers go to the service again.
    pub fn closed(&self) {
        let mut inner = self.lock();
        inner.probing = false;
        self.open.store(false, Ordering::Release);
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data is two plain fields, valid whatever a panicking holder
        // was doing.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::Breaker;

    #[test]
    fn one_probe_per_outage_and_the_error_is_kept() {
        let b = Breaker::default();
        assert_eq!(b.check(), Ok(()));
        assert!(b.open("refused".into()), "the first failure starts a probe");
        assert!(!b.open("timed out".into()), "a second one does not");
        assert_eq!(b.check(), Err("timed out".into()));
        b.closed();
        assert_eq!(b.check(), Ok(()));
        assert!(b.open("refused".into()), "a new outage starts a new probe");
    }
}
