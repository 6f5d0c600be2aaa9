//! [`PurgeLog`]: this process's record of recent purges, which decides whether work that
//! began before a purge may still store what it found in L1 (and whether an L2 read may be
//! served).
//!
//! Every purge this process applies (local ones, and other instances' received broadcasts)
//! takes the next **generation** of a process-wide counter and is recorded with it (kind,
//! target) before anything is removed. Work that may end in an L1 insert (an origin fetch,
//! an L2 read to promote) notes the generation when it begins ([`PurgeLog::generation`],
//! taken by the request plan's L1 probe); its insert goes through [`PurgeLog::admit`], which
//! refuses it when a purge recorded after that generation matches the entry's url, url
//! prefix or tag. The check and the insert run under the log's read lock and a purge records
//! itself under its write lock, so an insert either lands before the record (and the purge,
//! which removes after recording, removes it) or sees it.
//!
//! The record is bounded ([`RECORDS_KEPT`]): when the oldest records are dropped, the
//! **floor** rises to the newest dropped generation and work that began before the floor is
//! refused, since it may have missed a purge (never cache wrongly). The gap rule's L1 clear
//! raises the floor to now the same way ([`PurgeLog::forget_all`]).
//!
//! A local purge's L2 part (Redis delete, broadcast) runs after its L1 part. Until it has
//! finished its record is also **unsettled** ([`PurgeTicket`]): an entry it matches that an
//! L2 read returns is treated as a miss by every request, even one that began after the
//! purge, because Redis may still hold the old copy. Dropping the ticket settles it, at a
//! generation of its own: work that began while the purge was unsettled is still checked
//! against it after it settles (an L2 read that was on the wire when the Redis delete ran
//! may carry the old copy), and only work that began after the settling is not.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{EntryContext, PurgeKind};

/// Purges kept in the record; older ones are forgotten by raising the floor.
pub const RECORDS_KEPT: usize = 16_384;

/// Where what a request would store came from, which decides which purges can refuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// Fetched from the origin (a miss, a revalidation): refused only by a purge recorded
    /// after the work began. A purge still running (or settled since) does not matter: what
    /// the origin answered after the purge was recorded is newer than what it removed.
    Origin,
    /// Read from Redis: also refused by a purge that was unsettled when the work began, since
    /// Redis may still have held, or been sending, the old copy.
    Redis,
}

crate::labels::label_enum! {
    /// Why work that began before a purge may not store what it found (the `reason` label of
    /// `sidecache_stores_refused_total`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Refusal {
        /// A purge after the work began (or one still running) matches the entry.
        Purged => "purged",
        /// The record no longer reaches back to when the work began: it may have missed a purge.
        Forgotten => "forgotten",
        /// When the work began is unknown to this tier (Redis was not reached when it began).
        Unknown => "unknown",
    }
    /// The metric label value.
    fn label;
}

/// One recorded purge.
#[derive(Debug)]
struct Record {
    generation: u64,
    kind: PurgeKind,
    target: Box<str>,
}

impl Record {
    /// Does this purge remove an entry with context `ctx`? The same rule as the tiers'
    /// indexes: entries without a url are found by tag only.
    fn matches(&self, ctx: &EntryContext) -> bool {
        let target = &*self.target;
        match self.kind {
            PurgeKind::Url => !ctx.url.is_empty() && ctx.url == target,
            PurgeKind::Prefix => !ctx.url.is_empty() && ctx.url.starts_with(target),
            PurgeKind::Tag => ctx.tags.iter().any(|t| t == target),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Recorded purges, oldest first (ascending generations).
    records: VecDeque<Record>,
    /// Work that began before this generation is refused.
    floor: u64,
    /// Purges whose L2 part has not finished.
    unsettled: Vec<Record>,
    /// Purges settled, each with the generation it settled at, in that order: work that
    /// began before a purge settled is checked against it.
    settled: VecDeque<(u64, Record)>,
}

/// The record of recent purges and the generation counter (see the module docs).
#[derive(Debug, Default)]
pub struct PurgeLog {
    generation: AtomicU64,
    state: RwLock<State>,
}

/// Permission to insert one entry; holds off purges from being recorded until dropped.
#[must_use = "insert while holding the admission"]
pub struct Admission<'a> {
    _held: RwLockReadGuard<'a, State>,
}

/// A recorded purge whose L2 part may still be running; dropping it settles the purge.
#[must_use = "dropping the ticket settles the purge at once"]
#[derive(Debug)]
pub struct PurgeTicket<'a> {
    log: &'a PurgeLog,
    generation: u64,
    unsettled: bool,
}

impl PurgeTicket<'_> {
    /// The generation the purge was recorded with.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Drop for PurgeTicket<'_> {
    fn drop(&mut self) {
        if self.unsettled {
            self.log.settle(self.generation);
        }
    }
}

impl PurgeLog {
    /// An empty record at generation 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // the state is consistent after every statement; a panicking holder cannot break it
        crate::sync::read(&self.state)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        crate::sync::write(&self.state)
    }

    /// The generation now: work that begins now is checked against the purges after it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Record a purge of `kind`/`target` with the next generation. With `unsettled`, it also
    /// counts as running until the returned ticket is dropped (its L2 part is still to come).
    pub fn record(&self, kind: PurgeKind, target: &str, unsettled: bool) -> PurgeTicket<'_> {
        let mut state = self.write();
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let record = || Record {
            generation,
            kind,
            target: target.into(),
        };
        state.records.push_back(record());
        while state.records.len() > RECORDS_KEPT {
            if let Some(old) = state.records.pop_front() {
                state.floor = old.generation;
            }
        }
        if unsettled {
            state.unsettled.push(record());
        }
        PurgeTicket {
            log: self,
            generation,
            unsettled,
        }
    }

    /// Settle the unsettled purge recorded with `generation` (its L2 part has run): it is
    /// checked from now on only against work that began before this moment.
    fn settle(&self, generation: u64) {
        let mut state = self.write();
        let Some(i) = state
            .unsettled
            .iter()
            .position(|r| r.generation == generation)
        else {
            return;
        };
        let record = state.unsettled.swap_remove(i);
        let settled_at = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        state.settled.push_back((settled_at, record));
        while state.settled.len() > RECORDS_KEPT {
            if let Some((old, _)) = state.settled.pop_front() {
                state.floor = state.floor.max(old);
            }
        }
    }

    /// Forget every purge so far (the gap rule's L1 clear): work that began before now is
    /// refused. Running purges stay unsettled.
    pub fn forget_all(&self) {
        let mut state = self.write();
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        state.records.clear();
        state.settled.clear();
        state.floor = generation;
    }

    fn check(
        state: &State,
        since: u64,
        ctx: &EntryContext,
        from: Provenance,
    ) -> Result<(), Refusal> {
        if since < state.floor {
            return Err(Refusal::Forgotten);
        }
        let newer = state.records.partition_point(|r| r.generation <= since);
        let mut later = state.records.range(newer..);
        if later.any(|r| r.matches(ctx)) {
            return Err(Refusal::Purged);
        }
        if from == Provenance::Redis {
            let settled_later = state.settled.partition_point(|(at, _)| *at <= since);
            let mut running = state
                .unsettled
                .iter()
                .chain(state.settled.range(settled_later..).map(|(_, r)| r));
            if running.any(|r| r.matches(ctx)) {
                return Err(Refusal::Purged);
            }
        }
        Ok(())
    }

    /// May what work that began at generation `since` found for `ctx`, read from Redis, be
    /// served?
    pub fn check_since(&self, since: u64, ctx: &EntryContext) -> Result<(), Refusal> {
        Self::check(&self.read(), since, ctx, Provenance::Redis)
    }

    /// May work that began at generation `since` store an entry with context `ctx` that came
    /// `from` the origin or Redis? While the returned admission is held no purge can be
    /// recorded, so an insert made under it is either seen by a purge's removal or refused.
    pub fn admit(
        &self,
        since: u64,
        ctx: &EntryContext,
        from: Provenance,
    ) -> Result<Admission<'_>, Refusal> {
        let state = self.read();
        Self::check(&state, since, ctx, from)?;
        Ok(Admission { _held: state })
    }

    /// Purges recorded and not yet forgotten, and those still unsettled (for tests and
    /// debugging).
    pub fn sizes(&self) -> (usize, usize) {
        let state = self.read();
        (state.records.len(), state.unsettled.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(url: &str, tags: &[&str]) -> EntryContext {
        EntryContext {
            url: url.into(),
            route: "r".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_later_matching_purge_refuses_and_an_earlier_one_does_not() {
        let log = PurgeLog::new();
        let e = ctx("/a/1?x=1", &["t:1"]);
        let before = log.generation();
        drop(log.record(PurgeKind::Url, "/a/1?x=1", false));
        let after = log.generation();
        assert_eq!(log.check_since(before, &e), Err(Refusal::Purged));
        assert_eq!(log.check_since(after, &e), Ok(()));
        for (kind, target, hit) in [
            (PurgeKind::Url, "/a/1", false),
            (PurgeKind::Prefix, "/a/1?", true),
            (PurgeKind::Prefix, "/a/10", false),
            (PurgeKind::Tag, "t:1", true),
            (PurgeKind::Tag, "t:10", false),
        ] {
            let since = log.generation();
            drop(log.record(kind, target, false));
            let got = log.admit(since, &e, Provenance::Redis).map(drop);
            assert_eq!(got.is_err(), hit, "{kind:?} {target}");
        }
        // an entry without url is found by its tags only
        let no_url = ctx("", &["t:2"]);
        let since = log.generation();
        drop(log.record(PurgeKind::Prefix, "", false));
        assert_eq!(log.check_since(since, &no_url), Ok(()));
    }

    #[test]
    fn an_unsettled_purge_refuses_even_work_that_began_after_it() {
        let log = PurgeLog::new();
        let e = ctx("/s/1/state", &[]);
        let ticket = log.record(PurgeKind::Prefix, "/s/1/state?", true);
        let ticket2 = log.record(PurgeKind::Url, "/s/1/state", true);
        let now = log.generation();
        assert_eq!(ticket2.generation(), now);
        assert_eq!(log.check_since(now, &e), Err(Refusal::Purged));
        assert_eq!(log.sizes().1, 2);
        drop(ticket2);
        drop(ticket);
        // work that began while they were unsettled is still refused: its L2 read may have
        // been on the wire when the Redis delete ran
        assert_eq!(log.check_since(now, &e), Err(Refusal::Purged));
        assert_eq!(log.sizes().1, 0);
        // work that begins after they settled is not
        assert_eq!(log.check_since(log.generation(), &e), Ok(()));
    }

    #[test]
    fn a_running_purge_refuses_what_redis_sent_not_what_the_origin_sent_after_it() {
        let log = PurgeLog::new();
        let e = ctx("/items/1", &[]);
        let ticket = log.record(PurgeKind::Url, "/items/1", true);
        // work that begins after the purge was recorded: the origin's answer is newer than
        // what the purge removed, Redis's may be the old copy
        let after = log.generation();
        assert!(log.admit(after, &e, Provenance::Origin).is_ok());
        assert_eq!(
            log.admit(after, &e, Provenance::Redis).map(drop),
            Err(Refusal::Purged)
        );
        drop(ticket);
        assert!(log.admit(after, &e, Provenance::Origin).is_ok());
        assert_eq!(
            log.admit(after, &e, Provenance::Redis).map(drop),
            Err(Refusal::Purged)
        );
        // work that began before it: refused whatever its source
        let before = after - 1;
        assert_eq!(
            log.admit(before, &e, Provenance::Origin).map(drop),
            Err(Refusal::Purged)
        );
    }

    #[test]
    fn forgotten_records_raise_the_floor() {
        let log = PurgeLog::new();
        let e = ctx("/unrelated", &[]);
        let early = log.generation();
        for i in 0..RECORDS_KEPT + 2 {
            drop(log.record(PurgeKind::Url, &format!("/other/{i}"), false));
        }
        assert_eq!(log.sizes().0, RECORDS_KEPT);
        assert_eq!(log.check_since(early, &e), Err(Refusal::Forgotten));
        let recent = log.generation() - 10;
        assert_eq!(log.check_since(recent, &e), Ok(()));
        log.forget_all();
        assert_eq!(log.check_since(recent, &e), Err(Refusal::Forgotten));
        assert_eq!(log.check_since(log.generation(), &e), Ok(()));
    }
}
