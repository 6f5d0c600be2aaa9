//! `sidecache bench` (bench::run) against the stand-in backend over real sockets.

use crate::support;

use std::time::Duration;

use sidecache::bench::{self, BenchError, BenchOptions, Verdict};
use support::backend::start_backend;

fn opts(urls: Vec<String>) -> BenchOptions {
    BenchOptions {
        urls,
        iterations: 10,
        concurrency: 2,
        ..BenchOptions::default()
    }
}

#[tokio::test]
async fn generous_budget_passes_and_reports_every_url() {
    let b = start_backend(Duration::from_millis(20)).await;
    let report = bench::run(&BenchOptions {
        p95_budget: Duration::from_secs(2),
        headers: vec![("x-bench".into(), "1".into())],
        ..opts(vec![
            b.url("/api/state-machine/diagram"),
            b.url("/api/state-machine/metadata"),
        ])
    })
    .await
    .unwrap();
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render_text());
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.urls.len(), 2);
    for u in &report.urls {
        assert_eq!((u.requests, u.successes, u.errors), (10, 10, 0));
        assert_eq!(u.success_rate, 1.0);
        assert!(u.min >= Duration::from_millis(20), "{:?}", u.min);
        assert!(u.min <= u.p50 && u.p50 <= u.p95 && u.p95 <= u.p99 && u.p99 <= u.max);
        // The legacy backend sends no X-Cache.
        assert_eq!(u.x_cache.get("none"), Some(&10));
    }
    assert_eq!(b.stats().hits("/api/state-machine/diagram"), 10);
    let text = report.render_text();
    assert!(text.contains("Success rate: 100.00% (10/10)"), "{text}");
    assert!(text.contains("Overall: PASS"), "{text}");
    let json = report.to_json();
    assert_eq!(json["verdict"], "pass");
    assert!(json["urls"][0]["latency_ms"]["p95"].as_f64().unwrap() >= 20.0);
}

#[tokio::test]
async fn one_millisecond_budget_fails_on_p95() {
    let b = start_backend(Duration::from_millis(20)).await;
    let report = bench::run(&BenchOptions {
        p95_budget: Duration::from_millis(1),
        ..opts(vec![b.url("/api/events/1/context")])
    })
    .await
    .unwrap();
    assert_eq!(report.exit_code(), 1);
    let reasons = report.verdict.reasons();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("p95"), "{reasons:?}");
    assert!(report.render_text().contains("FAIL"));
}

#[tokio::test]
async fn error_statuses_and_outages_are_measured_as_errors() {
    let b = start_backend(Duration::ZERO).await;
    let report = bench::run(&opts(vec![b.url("/api/health")])).await.unwrap();
    let u = &report.urls[0];
    assert_eq!((u.successes, u.errors), (0, 10));
    assert_eq!(u.errors_by_kind.get("status 404"), Some(&10));
    assert!(u.verdict.reasons()[0].contains("error rate 100.00%"));

    b.stop().await;
    let report = bench::run(&BenchOptions {
        timeout: Duration::from_secs(2),
        ..opts(vec![b.url("/api/state-machine/metadata")])
    })
    .await
    .unwrap();
    assert_eq!(report.urls[0].errors, 10);
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn timeouts_count_as_errors() {
    let b = start_backend(Duration::ZERO).await;
    let report = bench::run(&BenchOptions {
        iterations: 2,
        concurrency: 1,
        timeout: Duration::from_millis(100),
        ..opts(vec![b.url("/test/stall")])
    })
    .await
    .unwrap();
    assert_eq!(report.urls[0].errors_by_kind.get("timeout"), Some(&2));
}

#[tokio::test]
async fn bad_urls_are_rejected_before_sending() {
    let err = bench::run(&opts(vec!["https://example.com/".into()]))
        .await
        .unwrap_err();
    assert!(matches!(err, BenchError::InvalidUrl { .. }), "{err}");
}
