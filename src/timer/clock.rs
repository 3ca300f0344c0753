//! Clocks that feed the timer wheel: the only place in corq that reads `Instant`.
//!
//! The wheel itself never reads time (it takes `now_ms` as a parameter), so the reactor asks a
//! [`Clock`] once per loop iteration and passes the value down. Production uses
//! [`MonotonicClock`]; tests use [`ManualClock`] and move time by hand.
//!
//! Both clocks count whole milliseconds and round *down*: a `now` that is never ahead of real
//! time means a timer polled with it can never fire before its deadline (the same reason tokio's
//! `TimeSource` rounds deadlines up).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A source of monotonic milliseconds.
pub trait Clock {
    /// Milliseconds since the clock's origin. Never decreases between calls on the same clock.
    fn now_ms(&self) -> u64;
}

/// Real monotonic time: milliseconds since the clock was created.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    /// The origin; `now_ms` is measured from here so values start near 0 and fit the wheel's
    /// `u64` ticks for ~584 million years.
    start: Instant,
}

impl MonotonicClock {
    /// A clock whose `now_ms()` is 0 at the moment of this call.
    pub fn new() -> Self {
        MonotonicClock {
            start: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        // `as_millis` truncates, which is the rounding we want (see the module doc). The cast
        // cannot lose bits before the process has run for 584 million years.
        self.start.elapsed().as_millis() as u64
    }
}

/// Hand-driven time for tests, shareable between a test and a server thread.
///
/// Clones share one counter, so a test keeps one handle and gives another to the server.
#[derive(Debug, Clone)]
pub struct ManualClock {
    /// The current time in ms, shared by every clone.
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock that reads `start_ms` until it is moved.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// Jumps to `ms`. Setting an earlier time is allowed (to test that consumers tolerate it),
    /// although a real monotonic clock never does that.
    pub fn set(&self, ms: u64) {
        self.now.store(ms, Ordering::SeqCst);
    }

    /// Moves the clock forward by `ms`, saturating at `u64::MAX`.
    pub fn advance(&self, ms: u64) {
        // fetch_update with a closure that always returns Some cannot fail.
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ms))
            });
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_between_clones() {
        let a = ManualClock::new(5);
        let b = a.clone();
        assert_eq!(b.now_ms(), 5);
        a.advance(10);
        assert_eq!(b.now_ms(), 15);
        b.set(3);
        assert_eq!(a.now_ms(), 3);
        a.set(u64::MAX - 1);
        a.advance(10);
        assert_eq!(b.now_ms(), u64::MAX);
    }

    #[test]
    fn manual_clock_crosses_threads() {
        let clock = ManualClock::new(0);
        let remote = clock.clone();
        let handle = std::thread::spawn(move || remote.advance(42));
        handle.join().unwrap();
        assert_eq!(clock.now_ms(), 42);
    }

    #[test]
    fn monotonic_clock_starts_near_zero_and_does_not_go_back() {
        let c = MonotonicClock::new();
        let a = c.now_ms();
        let b = c.now_ms();
        assert!(a < 1_000, "a fresh clock read {a} ms");
        assert!(b >= a, "clock went back: {a} then {b}");
    }
}
