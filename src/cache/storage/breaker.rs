//! [`CircuitBreaker`]: stops sending L2 operations to a Redis that keeps failing, so an outage
//! costs each L1 miss nothing instead of the full read timeout.
//!
//! Closed: everything goes through; `failures` consecutive failures/timeouts open it.
//! Open: every operation is skipped until `cooldown` has passed, then exactly one probe is let
//! through (half-open). The probe's success closes the breaker, its failure re-opens it.
//! The `l2_up` gauge follows the state of the breaker that guards reads and writes of
//! entries (1 closed, 0 otherwise). Purges have a breaker of their own
//! ([`BreakerScope::Purges`]), so a big or slow purge can never open the one reads depend on.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::atomic_duration::AtomicDuration;
use super::events::{BreakerState, BreakerTransition};
use crate::telemetry::events::InternalEvent;
use crate::telemetry::metrics::metrics;

/// Which Redis operations a breaker guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerScope {
    /// Entry reads and writes (what `sidecache_l2_up` and readiness report).
    Entries,
    /// Purge batches and their broadcasts.
    Purges,
}

impl BreakerScope {
    /// The log field value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Entries => "entries",
            Self::Purges => "purges",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { since: Instant },
}

/// What a breaker lets through now ([`CircuitBreaker::admits`]), for a caller that paces its
/// own work by it (the purge backlog's worker) rather than sending operations to be skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admits {
    /// Closed: every operation.
    All,
    /// Open, and its cooldown has passed: one operation, the probe.
    Probe,
    /// Open: nothing for this long (the rest of its cooldown).
    NoneFor(Duration),
    /// Half-open with its probe out: nothing until the probe reports (its success closes
    /// the breaker) or is replaced after another cooldown.
    ProbeOut,
}

/// Consecutive-failure circuit breaker with a cooldown and a single half-open probe.
#[derive(Debug)]
pub struct CircuitBreaker {
    state: Mutex<State>,
    threshold: AtomicU32,
    cooldown: AtomicDuration,
    scope: BreakerScope,
}

impl CircuitBreaker {
    /// A closed breaker for `scope` that opens after `failures` consecutive failures (at
    /// least 1).
    pub fn new(scope: BreakerScope, failures: u32, cooldown: Duration) -> Self {
        if scope == BreakerScope::Entries {
            metrics().l2_up.set(1);
        }
        CircuitBreaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: AtomicU32::new(failures.max(1)),
            cooldown: AtomicDuration::new(cooldown),
            scope,
        }
    }

    /// Change threshold and cooldown (hot reload); the current state is kept.
    pub fn reconfigure(&self, failures: u32, cooldown: Duration) {
        self.threshold.store(failures.max(1), Ordering::Relaxed);
        self.cooldown.set(cooldown);
    }

    fn cooldown(&self) -> Duration {
        self.cooldown.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // a panic while holding this tiny lock cannot leave the state inconsistent
        crate::sync::lock(&self.state)
    }

    /// May an operation be sent now? In the open state after the cooldown this returns true
    /// once (the probe) and false for everyone else until the probe reports back. A probe that
    /// never reports (e.g. its future was dropped) is replaced after another cooldown.
    pub fn allow(&self) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *s = State::HalfOpen { since: now };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { since } if now.duration_since(since) >= self.cooldown() => {
                *s = State::HalfOpen { since: now };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    /// What [`CircuitBreaker::allow`] would let through now, without taking the probe.
    pub fn admits(&self) -> Admits {
        let now = Instant::now();
        match *self.lock() {
            State::Closed { .. } => Admits::All,
            State::Open { until } if now < until => Admits::NoneFor(until - now),
            State::HalfOpen { since } if now.duration_since(since) < self.cooldown() => {
                Admits::ProbeOut
            }
            State::Open { .. } | State::HalfOpen { .. } => Admits::Probe,
        }
    }

    /// Report a successful operation: closes the breaker.
    pub fn on_success(&self) {
        let mut s = self.lock();
        let was_closed = matches!(*s, State::Closed { .. });
        *s = State::Closed { failures: 0 };
        drop(s);
        if !was_closed {
            BreakerTransition {
                scope: self.scope,
                to: BreakerState::Closed,
            }
            .emit();
        }
    }

    /// Report a failed or timed-out operation. Returns true when this failure opened the
    /// breaker.
    pub fn on_failure(&self) -> bool {
        let now = Instant::now();
        let threshold = self.threshold.load(Ordering::Relaxed);
        let mut s = self.lock();
        let opened = match *s {
            State::Closed { failures } if failures + 1 >= threshold => true,
            State::Closed { failures } => {
                *s = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::HalfOpen { .. } => true,
            State::Open { .. } => false,
        };
        if opened {
            *s = State::Open {
                until: now + self.cooldown(),
            };
        }
        drop(s);
        if opened {
            BreakerTransition {
                scope: self.scope,
                to: BreakerState::Open,
            }
            .emit();
        }
        opened
    }

    /// True when closed (Redis considered usable).
    pub fn is_closed(&self) -> bool {
        matches!(*self.lock(), State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let b = CircuitBreaker::new(BreakerScope::Purges, 2, Duration::from_millis(30));
        b.on_failure();
        assert!(b.is_closed());
        assert_eq!(b.admits(), Admits::All);
        b.on_failure();
        assert!(!b.is_closed());
        assert!(
            matches!(b.admits(), Admits::NoneFor(w) if w <= Duration::from_millis(30)),
            "open: nothing until the cooldown ends"
        );
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admits(), Admits::Probe);
        assert!(b.allow(), "one probe after cooldown");
        assert!(!b.allow(), "only one probe");
        assert_eq!(
            b.admits(),
            Admits::ProbeOut,
            "nothing while the probe is out"
        );
        b.on_failure();
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        b.on_success();
        assert!(b.is_closed() && b.allow());
    }
}
