//! L1 is bounded by bytes: the weight moka counts must be what an entry really costs in the
//! heap (its header map, context, body, moka's node and the purge indexes), or a flood of
//! small distinct entries holds far more memory than `cache.l1.max_bytes` says.
//!
//! This binary counts every allocation (its own global allocator), fills an L1 far past its
//! budget with entries shaped like the legacy API's responses, and compares the heap held
//! with the budget.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;
use sidecache::cache::storage::entry::StoredEntry;
use sidecache::cache::storage::l1::{heap_cost, HIT_HEADER_LINES};
use sidecache::cache::storage::{EntryContext, L1Store};

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// An entry like a contractor bundle as the stand-in sends it: the origin's headers, a url,
/// a route, two tags and a body of `body_len` bytes.
fn entry(i: usize, body_len: usize) -> StoredEntry {
    let mut h = ResponseHeader::build(200, Some(8)).expect("header");
    for (n, v) in [
        ("content-type", "application/json; charset=utf-8"),
        ("cache-control", "public, max-age=300"),
        ("etag", "W/\"5f3-8d7a6c9e\""),
        ("date", "Wed, 02 Dec 2026 05:00:00 GMT"),
        ("content-length", "1523"),
        ("x-powered-by", "Express"),
        ("vary", "Accept-Encoding"),
    ] {
        h.append_header(n, v).expect("header");
    }
    let now = SystemTime::now();
    let meta = CacheMeta::new(now + Duration::from_secs(300), now, 0, 0, h);
    let ctx = EntryContext {
        url: format!("/api/contractors/{i}/bundle"),
        route: "contractor-bundle".into(),
        tags: vec![format!("contractor:{i}"), "bundles".into()],
        ..Default::default()
    };
    StoredEntry::from_meta(&meta, ctx, Bytes::from(vec![b'x'; body_len]))
}

fn key(i: usize) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(i as u64).to_le_bytes());
    k[8] = 0x5c;
    k
}

/// Fill an L1 of `budget` bytes with `3 × budget` worth of entries and return the heap it
/// holds afterwards (bytes).
fn held_after_flood(budget: u64, body_len: usize) -> (isize, u64) {
    let before = live();
    let l1 = L1Store::new(budget);
    let mut i = 0;
    let mut inserted = 0u64;
    while inserted < 3 * budget {
        let e = entry(i, body_len);
        inserted += heap_cost(&e);
        l1.insert(key(i), e);
        // As if each entry was hit once: the fast path's prebuilt header (the stored one plus
        // a few headers) is part of what an entry holds.
        if let Some(stored) = l1.get(&key(i)) {
            let mut hit = stored.entry.header_with_room(HIT_HEADER_LINES);
            for (n, v) in [
                ("x-cache", "HIT-L1"),
                ("cache-status", "sidecache; hit"),
                ("age", "0"),
                ("x-request-id", ""),
            ] {
                hit.append_header(n, v).expect("header");
            }
            let hit = hit.clone();
            let _ = stored.hit_header.set(Box::new(hit));
        }
        i += 1;
        if i % 4096 == 0 {
            l1.sync();
        }
    }
    l1.sync();
    let held = live() - before;
    let weighted = l1.weighted_bytes();
    eprintln!(
        "  {} entries, {} B heap each, weight {} B each",
        l1.entry_count(),
        held / l1.entry_count().max(1) as isize,
        weighted / l1.entry_count().max(1)
    );
    drop(l1);
    (held, weighted)
}

#[test]
fn l1_holds_no_more_heap_than_its_byte_budget() {
    let budget = 16 << 20;
    // Small bodies are where per-entry overhead dominates; 1.5 KiB is the bundle's size.
    for body_len in [64, 1523, 16 << 10] {
        let (held, weighted) = held_after_flood(budget, body_len);
        let ratio = held as f64 / budget as f64;
        eprintln!(
            "body {body_len} B: heap held {held} B = {ratio:.2}× the {budget} B budget \
             (moka's weighted size {weighted} B)"
        );
        assert!(
            ratio <= 1.10,
            "body {body_len} B: L1 holds {ratio:.2}× its budget in heap"
        );
    }
}
