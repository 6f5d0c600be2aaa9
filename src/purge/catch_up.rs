//! Purges other instances finished that this one never heard of: the repair of a lost
//! broadcast.
//!
//! A purge's broadcast can be lost while every instance stays subscribed: the purging
//! instance's `PUBLISH` timed out, or Redis dropped the message. Then the gap rule of
//! [`super::broadcast`] never fires and the others would keep the entry in L1 until its
//! deadline (for the until-invalidated session state, up to `max_ttl`). So every purge whose
//! Redis part finished is also logged in Redis (`lua/finished.lua`: its message, exactly as
//! broadcast and signed the same way, under a sequence number), and each instance reads the
//! log every `cache.l2.purge_poll` (default 1 s, one small call) and applies to its L1 the
//! purges it has not applied yet ([`super::applied`]: a purge heard by broadcast is not
//! applied again). Entries are checked like broadcasts ([`super::broadcast::classify`]):
//! instances with different channel secrets ignore each other's, and their own are skipped.
//!
//! The first reading sets where the reader starts; an instance that already holds entries
//! then (it served requests before Redis could be read) clears its L1, since they may
//! predate purges it never heard of.
//!
//! So once a purge has reached Redis, another instance serves what it removed for at most
//! `purge_poll` plus one Redis round trip, however its broadcast fared (`docs/design.md`
//! gives the figure). A reader that finds the log restarted (Redis lost its state) or trimmed
//! past what it last read (it could not read for longer than the log's 100,000 purges last)
//! may have missed purges: it clears its L1, as the gap rule does, and counts it.

use std::time::Duration;

use tokio::sync::watch;

use super::broadcast::{classify, Received};
use super::PurgeService;
use crate::cache::storage::l2::FinishedLog;
use crate::telemetry::events::{InternalEvent, PurgeLogGap, PurgeMessageDropped, PurgesCaughtUp};

/// Purges read from the log per call; a full page is followed at once by the next.
pub const PAGE: usize = 512;

/// Where the reader is in the log: the last sequence read, once known.
#[derive(Debug, Default)]
struct Cursor {
    last: Option<u64>,
}

/// What a reading of the log means for this instance.
#[derive(Debug, PartialEq, Eq)]
enum Reading {
    /// The first reading: start after the newest purge (L1 holds nothing older than this
    /// process's first reading).
    Start(u64),
    /// Purges may have been missed (the log restarted or was trimmed past the cursor):
    /// clear L1 and go on from the newest.
    Gap(u64),
    /// The purges after the cursor, to apply.
    Purges,
}

impl Cursor {
    fn judge(&self, log: &FinishedLog) -> Reading {
        let Some(last) = self.last else {
            return Reading::Start(log.newest);
        };
        if log.newest < last || (log.oldest > last + 1 && log.newest > last) {
            return Reading::Gap(log.newest);
        }
        Reading::Purges
    }
}

/// Read the finished-purge log every `cache.l2.purge_poll` until `shutdown` flips (see the
/// module docs). Returns at once without L2.
pub(super) async fn run(service: &'static PurgeService, mut shutdown: watch::Receiver<bool>) {
    let Some(l2) = service.cache().l2() else {
        return;
    };
    let mut cursor = Cursor::default();
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = l2.purge_poll();
        let Ok(log) = l2
            .finished_since(cursor.last.unwrap_or(u64::MAX), PAGE)
            .await
        else {
            continue;
        };
        match cursor.judge(&log) {
            Reading::Start(newest) => {
                // entries stored before this first reading (requests served while Redis was
                // still out of reach) may predate purges this instance never heard of
                let l1 = service.cache().l1();
                l1.sync();
                if l1.entry_count() > 0 {
                    service.cache().clear_l1();
                    PurgeLogGap.emit();
                }
                cursor.last = Some(newest);
            }
            Reading::Gap(newest) => {
                service.cache().clear_l1();
                PurgeLogGap.emit();
                cursor.last = Some(newest);
            }
            Reading::Purges => {
                let full = log.purges.len() == PAGE;
                let mut applied = 0;
                for (seq, entry) in log.purges {
                    cursor.last = Some(seq);
                    if apply_logged(service, &entry).await {
                        applied += 1;
                    }
                }
                if applied > 0 {
                    PurgesCaughtUp { count: applied }.emit();
                }
                if full {
                    wait = Duration::ZERO;
                }
            }
        }
    }
}

/// Apply one logged purge unless it is this instance's own, was applied already, or does
/// not verify; true when it was applied.
async fn apply_logged(service: &'static PurgeService, entry: &[u8]) -> bool {
    let m = match classify(entry, service.instance_id(), service.channel_key()) {
        Received::Own => return false,
        Received::Remote(m) => m,
        Received::Malformed(e) => {
            PurgeMessageDropped {
                reason: e.drop_reason(),
                error: &e,
            }
            .emit();
            return false;
        }
    };
    // the log is written by this build's format only: every entry carries its generation
    let Some(generation) = m.gen else {
        return false;
    };
    if service.applied().note(generation).is_err() {
        return false;
    }
    service.apply(&m.into_request()).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(newest: u64, oldest: u64) -> FinishedLog {
        FinishedLog {
            generation: 1,
            newest,
            oldest,
            purges: Vec::new(),
        }
    }

    #[test]
    fn the_cursor_starts_at_the_newest_and_sees_gaps() {
        let mut c = Cursor::default();
        assert_eq!(c.judge(&log(7, 1)), Reading::Start(7));
        c.last = Some(7);
        assert_eq!(c.judge(&log(7, 1)), Reading::Purges);
        assert_eq!(c.judge(&log(9, 8)), Reading::Purges);
        // Redis lost the log (restart, flush)
        assert_eq!(c.judge(&log(2, 1)), Reading::Gap(2));
        assert_eq!(c.judge(&log(0, 0)), Reading::Gap(0));
        // trimmed past the cursor: 8 is gone
        assert_eq!(c.judge(&log(200_000, 100_001)), Reading::Gap(200_000));
        // an empty log at the cursor is no gap
        c.last = Some(0);
        assert_eq!(c.judge(&log(0, 0)), Reading::Purges);
    }
}
