//! Micro-benchmarks of the per-request work on sidecache's hot (L1 hit) path, piece by piece:
//! route match + rewrite + cache key, L1 lookup + hit rebuild through the pingora `Storage`
//! API, the L2 value codec and its compression (zstd vs lz4 on the stand-in's JSON), and
//! metrics recording (the counters, and the ring the stats API reads). Whole-request costs
//! under load are measured by `benches/load/run.sh`; these say where inside a request the
//! time goes.
//!
//! `cargo bench --bench hot_path` (< 1 minute); CI only compiles it.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_http::{RequestHeader, ResponseHeader};
use sidecache::cache::key;
use sidecache::cache::status::CacheOutcome;
use sidecache::cache::storage::codec;
use sidecache::cache::storage::entry::StoredEntry;
use sidecache::cache::storage::{storage_key, EntryContext, TieredCache};
use sidecache::config::{self, CacheConfig, L1Config};
use sidecache::routing::{RewriteDecision, Router};
use sidecache::telemetry::metrics::{MethodLabel, RouteMetrics};
use sidecache::telemetry::window;

const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
const PATH: &str = "/api/contractors/42/bundle";

fn request() -> RequestHeader {
    let mut req = RequestHeader::build(
        "GET",
        b"/api/contractors/42/bundle?include=reviews&x=1",
        None,
    )
    .expect("request header");
    req.insert_header("Host", "api.local").expect("host");
    req.insert_header("Accept-Language", "en-GB")
        .expect("accept-language");
    req
}

/// A contractor bundle as the origin sends it: ~5 KB JSON, the usual response headers.
fn meta_and_body() -> (CacheMeta, Bytes) {
    let mut h = ResponseHeader::build(200, None).expect("response header");
    h.append_header("Content-Type", "application/json; charset=utf-8")
        .expect("ct");
    h.append_header("Content-Length", "5120").expect("cl");
    h.append_header("X-Powered-By", "Express").expect("xpb");
    h.append_header("ETag", "W/\"1400-abcdef0123456789\"")
        .expect("etag");
    h.append_header("Date", "Sat, 28 Nov 2026 12:00:00 GMT")
        .expect("date");
    let now = SystemTime::now();
    let mut m = CacheMeta::new(now + Duration::from_secs(300), now, 30, 600, h);
    m.extensions_mut().insert(EntryContext {
        url: "/api/contractors/42/bundle?include=reviews".into(),
        route: "contractor_bundle".into(),
        tags: vec!["contractor:42".into()],
        ..Default::default()
    });
    (m, Bytes::from(vec![b'x'; 5120]))
}

fn routing(c: &mut Criterion) {
    let config = config::parse(DEMO_CONFIG, None, &HashMap::<String, String>::new())
        .expect("config/demo.toml parses");
    let router = Router::new(&config);
    let req = request();
    let mut g = c.benchmark_group("routing");
    g.bench_function("rewrite+route+cache_key", |b| {
        b.iter(|| {
            let path = black_box(PATH);
            let upstream = match router.rewrite(path) {
                RewriteDecision::Forward { upstream, .. } => upstream.index,
                RewriteDecision::NotFound => usize::MAX,
            };
            let route = router.route(&Method::GET, path);
            let rules = route.and_then(|m| m.policy.cache.as_ref()).map(|c| &c.key);
            let req = black_box(&req);
            let query = key::keyed_query(req.uri.query(), rules);
            let input = key::KeyInput {
                site: "http://127.0.0.1:8080",
                path: req.uri.path(),
                query: query.as_deref(),
                headers: &req.headers,
            };
            let k: CacheKey = key::cache_key(&input, rules);
            (upstream, storage_key(&k))
        })
    });
    g.finish();
}

fn l1(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache: &'static TieredCache = Box::leak(Box::new(TieredCache::new(&CacheConfig {
        default_mode: None,
        key_host: true,
        targeted_cache_control: vec![],
        honor_request_directives: true,
        lock_timeout: Duration::from_secs(5),
        soft_purge_grace: Duration::from_secs(60),
        surrogate_key_header: None,
        l1: L1Config {
            max_bytes: 64 << 20,
            max_object_bytes: 8 << 20,
        },
        l2: None,
    })));
    let k = CacheKey::new(PATH, "");
    let (meta, body) = meta_and_body();
    let span = Span::inactive();
    rt.block_on(async {
        let mut mh = cache
            .get_miss_handler(&k, &meta, &span.handle())
            .await
            .expect("miss handler");
        mh.write_body(body, true).await.expect("write");
        mh.finish().await.expect("finish");
    });
    let mut g = c.benchmark_group("l1");
    g.bench_function("lookup+read_body (hit)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (m, mut hit) = cache
                    .lookup(black_box(&k), &span.handle())
                    .await
                    .expect("lookup")
                    .expect("hit");
                let body = hit.read_body().await.expect("read").expect("body");
                (m.fresh_until(), body.len())
            })
        })
    });
    let missing = CacheKey::new("/api/contractors/missing/bundle", "");
    g.bench_function("lookup (miss)", |b| {
        b.iter(|| {
            rt.block_on(cache.lookup(black_box(&missing), &span.handle()))
                .is_ok()
        })
    });
    g.finish();
}

fn codec_bench(c: &mut Criterion) {
    let (meta, body) = meta_and_body();
    let entry = StoredEntry::from_meta(&meta, EntryContext::default(), body);
    let encoded = Bytes::from(codec::encode(&entry));
    let mut g = c.benchmark_group("l2_codec");
    g.bench_function("encode (5 KB)", |b| {
        b.iter(|| codec::encode(black_box(&entry)))
    });
    g.bench_function("decode (5 KB)", |b| {
        b.iter(|| codec::decode(black_box(encoded.clone()), 8 << 20).expect("decodes"))
    });
    g.bench_function("to_meta (hit rebuild)", |b| {
        b.iter(|| black_box(&entry).to_meta())
    });
    g.finish();
}

/// The stand-in's JSON payloads the compression choice was measured on: a contractor bundle
/// (~5 KB), the state-machine diagram, and a 100 KB page of 20 different bundles.
fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    use sidecache::demo::payloads;
    let bundle = |id: u64| serde_json::to_vec(&payloads::contractor_bundle(&id.to_string(), id));
    let mut page = b"[".to_vec();
    for id in 0..20 {
        page.extend(bundle(id).expect("json"));
        page.push(b',');
    }
    page.push(b']');
    vec![
        ("bundle", bundle(42).expect("json")),
        (
            "diagram",
            serde_json::to_vec(&payloads::diagram()).expect("json"),
        ),
        ("page", page),
    ]
}

/// zstd (levels 1 and 3) against lz4 on the stand-in's JSON: compress and decompress time
/// per payload, and the stored size (printed once, ratio = raw / stored).
fn compression_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2_compression");
    for (name, raw) in payloads() {
        let z1 = zstd::bulk::compress(&raw, 1).expect("zstd");
        let z3 = zstd::bulk::compress(&raw, 3).expect("zstd");
        let l4 = lz4_flex::compress(&raw);
        let ratio = |n: usize| raw.len() as f64 / n as f64;
        eprintln!(
            "{name}: {} B raw; zstd-1 {} B ({:.1}x), zstd-3 {} B ({:.1}x), lz4 {} B ({:.1}x)",
            raw.len(),
            z1.len(),
            ratio(z1.len()),
            z3.len(),
            ratio(z3.len()),
            l4.len(),
            ratio(l4.len())
        );
        g.bench_function(format!("zstd-1 compress {name}"), |b| {
            b.iter(|| zstd::bulk::compress(black_box(&raw), 1).expect("zstd"))
        });
        // One context kept and reused, against one made per call (`bulk::compress`).
        let mut cctx = zstd::bulk::Compressor::new(1).expect("zstd context");
        g.bench_function(format!("zstd-1 compress, reused context {name}"), |b| {
            b.iter(|| cctx.compress(black_box(&raw)).expect("zstd"))
        });
        let mut dctx = zstd::bulk::Decompressor::new().expect("zstd context");
        g.bench_function(format!("zstd decompress, reused context {name}"), |b| {
            b.iter(|| dctx.decompress(black_box(&z1), raw.len()).expect("zstd"))
        });
        // zstd's fast levels (negative: no entropy-coded literals, shorter searches), one
        // reused context each, as the codec keeps them.
        for level in [-1, -3, -7] {
            let mut fast = zstd::bulk::Compressor::new(level).expect("zstd context");
            let out = fast.compress(&raw).expect("zstd");
            eprintln!(
                "{name}: zstd level {level} {} B ({:.1}x)",
                out.len(),
                ratio(out.len())
            );
            g.bench_function(
                format!("zstd level {level} compress, reused context {name}"),
                |b| b.iter(|| fast.compress(black_box(&raw)).expect("zstd")),
            );
        }
        g.bench_function(format!("zstd-3 compress {name}"), |b| {
            b.iter(|| zstd::bulk::compress(black_box(&raw), 3).expect("zstd"))
        });
        g.bench_function(format!("lz4 compress {name}"), |b| {
            b.iter(|| lz4_flex::compress(black_box(&raw)))
        });
        g.bench_function(format!("zstd decompress {name}"), |b| {
            b.iter(|| zstd::bulk::decompress(black_box(&z1), raw.len()).expect("zstd"))
        });
        g.bench_function(format!("lz4 decompress {name}"), |b| {
            b.iter(|| lz4_flex::decompress(black_box(&l4), raw.len()).expect("lz4"))
        });
    }
    g.finish();
}

fn metrics_bench(c: &mut Criterion) {
    let rm = RouteMetrics::new("bench_route", 1);
    let mut g = c.benchmark_group("metrics");
    g.bench_function("record_request", |b| {
        b.iter(|| {
            rm.record_request(
                MethodLabel::Get,
                black_box(200),
                CacheOutcome::HitL1,
                Duration::from_micros(40),
            )
        })
    });
    // The windowed ring the stats API reads, recorded beside the counters.
    g.bench_function("window record", |b| {
        b.iter(|| {
            rm.window().record(
                window::now_second(),
                CacheOutcome::HitL1,
                black_box(200),
                Duration::from_micros(40),
            )
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = routing, l1, codec_bench, compression_bench, metrics_bench
}
criterion_main!(benches);
