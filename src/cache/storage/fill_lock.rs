//! The cross-instance fill lock (`cache.l2.fill_lock = true`): one origin fetch per key for a
//! whole fleet, where pingora's cache lock only coalesces within one process.
//!
//! On an L1 and L2 miss the lookup runs `lua/fill.lua` on `{prefix}v2:lock:{key}` (beside the
//! entry, so on a cluster it is on the entry's slot), which reads the entry and, only when
//! it is absent, takes the lock, in one atomic step:
//! - **taken**: the lookup misses and this request fetches. The [`FillLock`] guard rides with
//!   the request (in its [`super::L1Probe`]) into the miss handler and the L2 write, and is
//!   released (only if the token still holds it) when that write has finished, or when the
//!   request ends without storing (an error, a client gone, a hit after all: a waiter then
//!   takes the lock and one fetches). A request whose answer cannot be stored (uncacheable,
//!   too large) **gives up** the lock instead: for [`GAVE_UP_LINGER`] the lock tells its
//!   waiters to go to the origin at once, rather than taking it in turn and waiting out one
//!   fetch each.
//! - **held by another holder**: the lookup polls with the same script, with backoff from
//!   5 ms doubling to 100 ms, for at most `cache.lock_timeout`. The entry appearing is served
//!   as HIT-L2; a lock released without an entry (the holder's store was refused, or failed)
//!   or expired (its holder died) is taken by the next poll, so one waiter fetches for all;
//!   a holder that gave up, or the time running out, sends the request to the origin as it
//!   would go without the lock.
//! - **Redis unreachable** (error, timeout, breaker open): the lookup misses at once, as
//!   today.
//!
//! An entry this instance holds in L1 that expired past its stale window is refetched the
//! same way, one request per fleet: its lookup reads Redis first (another instance's
//! refreshed copy is served), then takes the lock with the entry counting as absent while it
//! has not been refreshed ([`super::l2::Absent::ExpiredAt`]); the holder fetches from its
//! stale copy (so a revalidation or stale-if-error still applies), the others wait for it.
//!
//! The entry is read and the lock taken in one step because a holder writes the entry
//! before it releases the lock: whoever finds the lock free also finds the entry, unless the
//! holder made none. Two separate steps let a late request (its read before the store, its
//! take after the release) fetch a second time.
//!
//! Only a lookup that carries the request's probe takes the lock (the request plan's
//! lookups all do), since the guard needs somewhere to live until the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::l2::{Absent, FillState, L2Store};
use super::EntryKey;

/// First poll delay of a waiter.
const POLL_MIN: Duration = Duration::from_millis(5);

/// Largest poll delay of a waiter.
const POLL_MAX: Duration = Duration::from_millis(100);

/// How long a lock whose holder gave up says so to its waiters.
pub const GAVE_UP_LINGER: Duration = Duration::from_secs(1);

/// A held fill lock: released (if still ours) when dropped, or given up when its request's
/// answer could not be stored ([`give_up`]).
pub struct FillLock {
    l2: &'static L2Store,
    key: EntryKey,
    token: u64,
    gave_up: bool,
}

impl FillLock {
    /// Its request's answer cannot be stored: the lock says so when dropped.
    pub fn give_up(&mut self) {
        self.gave_up = true;
    }
}

impl Drop for FillLock {
    fn drop(&mut self) {
        let (l2, key, token) = (self.l2, self.key, self.token);
        let gave_up = self.gave_up.then_some(GAVE_UP_LINGER);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = l2.release_fill_lock(&key, token, gave_up).await;
            });
        }
    }
}

/// Where a request keeps the fill lock it took, shared by the copies of its probe.
pub type FillSlot = Arc<std::sync::Mutex<Option<FillLock>>>;

/// What the fill lock decided for a lookup that missed L1 and L2.
pub enum FillOutcome {
    /// Fetch from the origin (the lock was taken, or cannot help); `waited`: after waiting
    /// on another holder, so the fetch begins later than the lookup did.
    Fetch { waited: bool },
    /// Another instance filled the entry meanwhile: its raw L2 bytes.
    Filled(Vec<u8>),
}

/// Take the fill lock of `key` into `slot`, or wait (at most `timeout`) for its holder's
/// entry.
pub async fn take_or_wait(
    l2: &'static L2Store,
    key: &EntryKey,
    slot: &FillSlot,
    timeout: Duration,
    refetch: bool,
) -> FillOutcome {
    let deadline = Instant::now() + timeout;
    let mut delay = POLL_MIN;
    let mut waited = false;
    loop {
        let token = fastrand::u64(1..);
        let absent = if refetch {
            Absent::ExpiredAt(std::time::SystemTime::now())
        } else {
            Absent::Missing
        };
        match l2.take_fill_lock(key, token, timeout, absent).await {
            Ok(FillState::Filled(raw)) => return FillOutcome::Filled(raw),
            Ok(FillState::Taken) => {
                let lock = FillLock {
                    l2,
                    key: *key,
                    token,
                    gave_up: false,
                };
                *crate::sync::lock(slot) = Some(lock);
                return FillOutcome::Fetch { waited };
            }
            Ok(FillState::Held) => {}
            Ok(FillState::GaveUp) | Err(_) => return FillOutcome::Fetch { waited },
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return FillOutcome::Fetch { waited };
        }
        tokio::time::sleep(delay.min(left)).await;
        waited = true;
        delay = (delay * 2).min(POLL_MAX);
    }
}

/// What the fill lock decided for the refresh of a soft-purged entry.
pub enum RefreshOutcome {
    /// The lock was free and is now in the slot (or Redis could not be asked): this request
    /// refreshes the entry.
    Fetch,
    /// Another instance refreshed it meanwhile: its raw L2 bytes.
    Refreshed(Vec<u8>),
    /// Another holder is refreshing it: no fetch from here.
    Busy,
}

/// One attempt at the fill lock of a soft-purged `key` for its refresh (see
/// [`super::TieredCache::refresh_soft`]): never waits, since clients are served the stale
/// copy meanwhile.
pub async fn take_for_refresh(
    l2: &'static L2Store,
    key: &EntryKey,
    slot: &FillSlot,
    ttl: Duration,
) -> RefreshOutcome {
    let token = fastrand::u64(1..);
    match l2.take_fill_lock(key, token, ttl, Absent::SoftPurged).await {
        Ok(FillState::Filled(raw)) => RefreshOutcome::Refreshed(raw),
        Ok(FillState::Taken) => {
            *crate::sync::lock(slot) = Some(FillLock {
                l2,
                key: *key,
                token,
                gave_up: false,
            });
            RefreshOutcome::Fetch
        }
        // a holder gave up (its response was not storable), or Redis cannot say: fetch
        // without the lock, as a miss would
        Ok(FillState::GaveUp) | Err(_) => RefreshOutcome::Fetch,
        Ok(FillState::Held) => RefreshOutcome::Busy,
    }
}

/// Whether `slot` holds a fill lock: its request took it and must fetch, never wait on it.
pub fn holds(slot: &FillSlot) -> bool {
    crate::sync::lock(slot).is_some()
}

/// The answer of the request holding `slot`'s lock cannot be stored: give the lock up.
pub fn give_up(slot: &FillSlot) {
    if let Some(lock) = crate::sync::lock(slot).as_mut() {
        lock.give_up();
    }
}

/// Take the lock out of `slot` (for the miss handler, which keeps it until its L2 write is
/// done).
pub fn take(slot: &FillSlot) -> Option<FillLock> {
    crate::sync::lock(slot).take()
}
