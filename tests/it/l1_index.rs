//! The L1 index agrees with L1, by construction: inserts of one key raced against each other
//! and against url, prefix and tag purges, many thousands of times, never leave an entry
//! that the index does not know (which a purge would then miss until the entry's deadline:
//! up to `max_ttl` on the until-invalidated session-state route).
//!
//! Seeded: `SIDECACHE_L1_RACE_SEED` replays a run, `SIDECACHE_L1_RACE_ROUNDS` (default
//! 5,000) sets its length.

use crate::support;

use std::sync::{Arc, Barrier};
use std::thread;

use bytes::Bytes;
use sidecache::cache::storage::entry::StoredEntry;
use sidecache::cache::storage::{EntryContext, L1Store, PurgeKind};
use support::storage::meta;

const URL: &str = "/api/concierge/sessions/7/state";
const TAG: &str = "session:7";

fn entry(version: u64) -> StoredEntry {
    StoredEntry::from_meta(
        &meta(3600, URL, &[TAG]),
        EntryContext {
            url: URL.into(),
            route: "session_state".into(),
            tags: vec![TAG.into()],
            ..Default::default()
        },
        Bytes::from(format!("version {version}")),
    )
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn racing_inserts_of_one_key_and_purges_never_leave_an_unindexed_entry() {
    let seed = env("SIDECACHE_L1_RACE_SEED", fastrand::u64(..1_000_000));
    let rounds = env("SIDECACHE_L1_RACE_ROUNDS", 5_000);
    eprintln!("l1 index race: SIDECACHE_L1_RACE_SEED={seed} SIDECACHE_L1_RACE_ROUNDS={rounds}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let l1 = Arc::new(L1Store::new(64 << 20));
    let key = [7u8; 16];
    for round in 0..rounds {
        // two or three inserts of the key, and sometimes a purge, released at once
        let inserts = rng.usize(2..=3);
        let purge = match rng.u8(..4) {
            0 => Some((PurgeKind::Url, URL)),
            1 => Some((PurgeKind::Prefix, "/api/concierge/sessions/7")),
            2 => Some((PurgeKind::Tag, TAG)),
            _ => None,
        };
        let start = Arc::new(Barrier::new(inserts + usize::from(purge.is_some())));
        let mut threads = Vec::new();
        for i in 0..inserts {
            let (l1, start, e) = (l1.clone(), start.clone(), entry(round * 3 + i as u64));
            threads.push(thread::spawn(move || {
                start.wait();
                l1.insert(key, e);
            }));
        }
        if let Some((kind, target)) = purge {
            let (l1, start) = (l1.clone(), start.clone());
            threads.push(thread::spawn(move || {
                start.wait();
                l1.purge_now(kind, target);
            }));
        }
        for t in threads {
            t.join().expect("racing thread");
        }
        assert!(
            l1.index_agrees(),
            "round {round} (SIDECACHE_L1_RACE_SEED={seed}): L1 holds an entry its index does not"
        );
        // and what that means: a purge finds whatever L1 holds
        if rng.bool() {
            l1.purge_now(PurgeKind::Tag, TAG);
            l1.sync();
            assert!(
                l1.get(&key).is_none(),
                "round {round} (SIDECACHE_L1_RACE_SEED={seed}): a tag purge missed the entry"
            );
        }
    }
}
