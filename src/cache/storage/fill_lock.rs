//! The cross-instance fill lock (`cache.l2.fill_lock = true`): one origin fetch per key for a
//! whole fleet, where pingora's cache lock only coalesces within one process.
//!
//! On an L1 and L2 miss the lookup tries `SET {prefix}v2:lock:{key} token NX PX lock_timeout`
//! (beside the entry, so on a cluster it is on the entry's slot):
//! - **taken**: the lookup misses and this request fetches. The [`FillLock`] guard rides with
//!   the request (in its [`super::L1Probe`]) into the miss handler and the L2 write, and is
//!   released (only if the token still holds it) when that write has finished, or when the
//!   request ends without storing anything (an uncacheable answer, an error), so waiters
//!   never sit out the whole timeout for nothing.
//! - **held by another instance**: the lookup polls L2 (the entry and whether the lock is
//!   still held, one round trip) with backoff from 5 ms doubling to 100 ms, for at most
//!   `cache.lock_timeout`. The entry appearing is served as HIT-L2; the lock vanishing
//!   without an entry (released, or expired because its holder died) or the time running
//!   out is a miss, and the request goes to the origin as it would without the lock.
//! - **Redis unreachable** (error, timeout, breaker open): the lookup misses at once, as
//!   today.
//!
//! Only a lookup that carries the request's probe takes the lock (the request plan's
//! lookups all do), since the guard needs somewhere to live until the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::l2::L2Store;
use super::EntryKey;

/// First poll delay of a waiter.
const POLL_MIN: Duration = Duration::from_millis(5);

/// Largest poll delay of a waiter.
const POLL_MAX: Duration = Duration::from_millis(100);

/// A held fill lock: released (if still ours) when dropped.
pub struct FillLock {
    l2: &'static L2Store,
    key: EntryKey,
    token: u64,
}

impl Drop for FillLock {
    fn drop(&mut self) {
        let (l2, key, token) = (self.l2, self.key, self.token);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = l2.release_fill_lock(&key, token).await;
            });
        }
    }
}

/// Where a request keeps the fill lock it took, shared by the copies of its probe.
pub type FillSlot = Arc<std::sync::Mutex<Option<FillLock>>>;

/// What the fill lock decided for a lookup that missed L1 and L2.
pub enum FillOutcome {
    /// Fetch from the origin (the lock was taken, or cannot help).
    Fetch,
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
) -> FillOutcome {
    let token = fastrand::u64(1..);
    match l2.take_fill_lock(key, token, timeout).await {
        Ok(true) => {
            let lock = FillLock {
                l2,
                key: *key,
                token,
            };
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(lock);
            return FillOutcome::Fetch;
        }
        Ok(false) => {}
        Err(_) => return FillOutcome::Fetch,
    }
    let deadline = Instant::now() + timeout;
    let mut delay = POLL_MIN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return FillOutcome::Fetch;
        }
        tokio::time::sleep(delay.min(left)).await;
        match l2.fill_state(key).await {
            Ok((Some(raw), _)) => return FillOutcome::Filled(raw),
            Ok((None, true)) => {}
            Ok((None, false)) | Err(_) => return FillOutcome::Fetch,
        }
        delay = (delay * 2).min(POLL_MAX);
    }
}

/// Take the lock out of `slot` (for the miss handler, which keeps it until its L2 write is
/// done).
pub fn take(slot: &FillSlot) -> Option<FillLock> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}
