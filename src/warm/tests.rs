//! Unit tests for warming: expansion, ids files, targets and the report.

use std::io::Write;
use std::time::{Duration, Instant};

use super::*;
use crate::config::WarmTemplate;

/// A `[warm]` with defaults, `urls` and `templates`.
pub(super) fn config(urls: &[&str], templates: Vec<WarmTemplate>) -> WarmConfig {
    WarmConfig {
        on_start: false,
        every: None,
        jitter: Duration::ZERO,
        concurrency: 4,
        rate_per_second: 50,
        max_ready_delay: Duration::from_secs(30),
        host: None,
        urls: urls.iter().map(|u| (*u).to_owned()).collect(),
        templates,
    }
}

#[test]
fn expands_urls_then_ids_then_ids_file_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ids.txt");
    let mut f = std::fs::File::create(&file).unwrap();
    writeln!(f, "# active contractors, last 7 days\n\n  7  \n8 # trailing comment\n1\n   # indented comment").unwrap();
    let c = config(
        &["/api/state-machine/diagram", "/api/state-machine/diagram"],
        vec![WarmTemplate {
            template: crate::pattern::Template::parse("/api/contractors/{id}/bundle")
                .expect("template"),
            ids: vec!["1".into(), "2".into()],
            ids_file: Some(file),
        }],
    );
    assert_eq!(
        expand(&c).unwrap(),
        [
            "/api/state-machine/diagram",
            "/api/contractors/1/bundle",
            "/api/contractors/2/bundle",
            "/api/contractors/7/bundle",
            "/api/contractors/8/bundle",
        ]
    );
}

#[test]
fn parse_ids_skips_blanks_and_comments_and_keeps_line_numbers() {
    assert_eq!(
        parse_ids("a\n\n# x\n b \nc#d\r\n"),
        [
            (1, "a".to_owned()),
            (4, "b".to_owned()),
            (5, "c".to_owned())
        ]
    );
    assert!(parse_ids("").is_empty());
}

#[test]
fn missing_ids_file_is_an_error_naming_the_file() {
    let c = config(
        &[],
        vec![WarmTemplate {
            template: crate::pattern::Template::parse("/c/{id}").expect("template"),
            ids: vec![],
            ids_file: Some("/nonexistent/warm/ids.txt".into()),
        }],
    );
    let err = expand(&c).unwrap_err();
    assert!(matches!(err, WarmError::IdsFile { .. }));
    assert!(
        err.to_string().contains("/nonexistent/warm/ids.txt"),
        "{err}"
    );
}

#[test]
fn bad_id_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ids.txt");
    std::fs::write(&file, "1\n2/3\n").unwrap();
    let c = config(
        &[],
        vec![WarmTemplate {
            template: crate::pattern::Template::parse("/c/{id}").expect("template"),
            ids: vec![],
            ids_file: Some(file.clone()),
        }],
    );
    let err = expand(&c).unwrap_err().to_string();
    assert!(err.contains(&format!("{}:2", file.display())), "{err}");
    let inline = config(
        &[],
        vec![WarmTemplate {
            template: crate::pattern::Template::parse("/c/{id}").expect("template"),
            ids: vec!["a b".into()],
            ids_file: None,
        }],
    );
    assert!(matches!(expand(&inline), Err(WarmError::InvalidId { .. })));
}

#[test]
fn targets() {
    assert_eq!(
        parse_target("http://127.0.0.1:8080").unwrap(),
        "127.0.0.1:8080"
    );
    assert_eq!(
        parse_target("http://cache.internal/").unwrap(),
        "cache.internal:80"
    );
    for bad in [
        "127.0.0.1:8080",
        "https://x:1",
        "http://",
        "http://x:1/api",
        "http://a@b:1",
    ] {
        assert!(parse_target(bad).is_err(), "{bad}");
    }
    assert_eq!(
        local_target("0.0.0.0:8080".parse().unwrap()),
        "127.0.0.1:8080"
    );
    assert_eq!(local_target("[::]:8080".parse().unwrap()), "[::1]:8080");
    assert_eq!(local_target("10.1.2.3:81".parse().unwrap()), "10.1.2.3:81");
}

#[test]
fn outcomes_are_classified_by_x_cache_and_status() {
    assert_eq!(Outcome::classify(200, Some("MISS")), Outcome::Fetched);
    assert_eq!(
        Outcome::classify(200, Some("UNCACHEABLE")),
        Outcome::Fetched
    );
    assert_eq!(Outcome::classify(200, None), Outcome::Fetched);
    assert_eq!(Outcome::classify(200, Some("HIT-L1")), Outcome::AlreadyWarm);
    assert_eq!(Outcome::classify(304, Some("HIT-L2")), Outcome::AlreadyWarm);
    assert_eq!(Outcome::classify(200, Some("STALE")), Outcome::AlreadyWarm);
    assert_eq!(
        Outcome::classify(502, Some("MISS")),
        Outcome::Failed("status 502".into())
    );
}

#[test]
fn x_cache_is_read_as_a_cache_outcome_whatever_its_case_and_padding() {
    assert_eq!(
        Outcome::classify(200, Some(" hit-l2 ")),
        Outcome::AlreadyWarm
    );
    assert_eq!(Outcome::classify(200, Some("Stale")), Outcome::AlreadyWarm);
    assert_eq!(
        Outcome::classify(200, Some("REVALIDATED")),
        Outcome::Fetched
    );
    assert_eq!(
        Outcome::classify(200, Some("HIT-L1, MISS")),
        Outcome::Fetched
    );
}

#[test]
fn report_summary_and_exit_code() {
    let mut r = WarmReport::default();
    r.record("/a", Outcome::Fetched);
    r.record("/b", Outcome::Fetched);
    r.record("/c", Outcome::AlreadyWarm);
    assert_eq!(r.exit_code(), 0);
    r.record("/d", Outcome::Failed("status 500".into()));
    assert_eq!(
        (r.done(), r.fetched, r.already_warm, r.failed),
        (4, 2, 1, 1)
    );
    assert_eq!(r.exit_code(), 1);
    assert_eq!(
        r.progress_line(10),
        "warm: 4/10 fetched 2, already warm 1, failed 1"
    );
    let text = r.render_text();
    assert!(text.starts_with("warmed 4 URL(s) in "), "{text}");
    assert!(
        text.contains("fetched 2, already warm 1, failed 1"),
        "{text}"
    );
    assert!(text.contains("FAILED /d: status 500"), "{text}");
    let j = r.to_json();
    assert_eq!(j["fetched"], 2);
    assert_eq!(j["already_warm"], 1);
    assert_eq!(j["failed"], 1);
    assert_eq!(j["failures"][0]["url"], "/d");
}

#[test]
fn progress_prints_every_n_or_every_interval() {
    let t0 = Instant::now();
    let mut g = ProgressGate::new(100, Duration::from_secs(1), t0);
    assert!(!g.should_print(1, t0));
    assert!(!g.should_print(99, t0 + Duration::from_millis(500)));
    assert!(g.should_print(100, t0 + Duration::from_millis(600)));
    assert!(!g.should_print(101, t0 + Duration::from_millis(700)));
    assert!(g.should_print(102, t0 + Duration::from_millis(1700)));
    // Nothing new finished: no line even after the interval.
    assert!(!g.should_print(102, t0 + Duration::from_secs(5)));
}
