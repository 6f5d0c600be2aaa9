//! Checks that the deployment artifacts agree with the code and with each other:
//! the Grafana dashboard and the alert rules only use metric names that the metrics
//! registry holds, promtool accepts the Prometheus files, and every
//! alert's `runbook_url` points at a heading that exists in `docs/runbook.md`.
//!
//! `promtool` must be on PATH (`./dev deps` or `./dev test` installs it); the test fails,
//! rather than skips, when it is missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Metric names the registry holds: (all names, histogram names), from
/// [`sidecache::telemetry::metrics::families`] (`gather()` would omit the labelled families
/// that have no series yet).
fn declared_metrics() -> (BTreeSet<String>, BTreeSet<String>) {
    use sidecache::telemetry::metrics::{families, FamilyKind};
    let all: BTreeSet<String> = families().iter().map(|f| f.name.clone()).collect();
    let histograms: BTreeSet<String> = families()
        .iter()
        .filter(|f| f.kind == FamilyKind::Histogram)
        .map(|f| f.name.clone())
        .collect();
    assert!(
        all.contains("sidecache_requests_total") && !histograms.is_empty(),
        "the registry lists no families ({all:?})"
    );
    (all, histograms)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

/// Every `sidecache_*` token in `text` (split on anything outside `[a-z0-9_]`).
fn metric_tokens(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !is_name_char(c))
        .filter(|t| t.starts_with("sidecache_"))
        .map(str::to_owned)
        .collect()
}

/// The tokens that are not exported series names: unknown names, and histogram base names
/// used without a `_bucket`/`_sum`/`_count` suffix (there is no such series).
fn unknown_metrics(tokens: &BTreeSet<String>) -> Vec<String> {
    let (all, histograms) = declared_metrics();
    tokens
        .iter()
        .filter(|t| {
            if histograms.contains(t.as_str()) {
                return true;
            }
            if all.contains(t.as_str()) {
                return false;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| t.strip_suffix(s));
            !matches!(base, Some(b) if histograms.contains(b))
        })
        .cloned()
        .collect()
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map {
                match (k.as_str(), val) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => collect_exprs(val, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_parses_and_uses_only_exported_metrics() {
    let text = read("deploy/grafana/sidecache.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is valid JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    assert!(dash["schemaVersion"].as_u64().unwrap_or(0) >= 36);

    let panels = dash["panels"].as_array().expect("dashboard has panels");
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for p in panels {
        let id = p["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        if p["type"] == "row" {
            continue;
        }
        graphs += 1;
        let targets = p["targets"].as_array().unwrap_or_else(|| {
            panic!("panel {:?} has no targets", p["title"]);
        });
        assert!(!targets.is_empty(), "panel {:?} has no targets", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                !expr.trim().is_empty(),
                "panel {:?} has an empty expr",
                p["title"]
            );
        }
    }
    assert!(
        graphs >= 10,
        "expected a full dashboard, found {graphs} panels"
    );

    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for needed in ["datasource", "route"] {
        assert!(
            vars.contains(&needed),
            "template variable `{needed}` missing"
        );
    }

    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    let tokens: BTreeSet<String> = exprs.iter().flat_map(|e| metric_tokens(e)).collect();
    assert!(tokens.contains("sidecache_requests_total"));
    let unknown = unknown_metrics(&tokens);
    assert!(
        unknown.is_empty(),
        "dashboard uses metrics the registry does not hold: {unknown:?}"
    );
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    let text = read("deploy/prometheus/alerts.yml");
    let tokens = metric_tokens(&text);
    assert!(tokens.contains("sidecache_requests_total"));
    let unknown = unknown_metrics(&tokens);
    assert!(
        unknown.is_empty(),
        "alerts.yml uses metrics the registry does not hold: {unknown:?}"
    );
}

fn promtool(dir: &Path, args: &[&str]) {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not on PATH: run `./dev deps` (installs the Debian package \
             `prometheus`, which provides promtool) or `apt-get install -y prometheus`"
        ),
        Err(e) => panic!("running promtool: {e}"),
    };
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_rules_and_config() {
    let dir = root().join("deploy/prometheus");
    promtool(&dir, &["check", "rules", "alerts.yml"]);
    promtool(&dir, &["check", "config", "prometheus.yml"]);
}

/// GitHub's heading anchor: lower-case, spaces to `-`, punctuation other than `-`/`_` dropped.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_runbook_url_has_a_runbook_section() {
    let runbook = read("docs/runbook.md");
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in runbook.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            anchors.insert(github_anchor(rest.trim_start_matches('#')));
        }
    }

    let alerts = read("deploy/prometheus/alerts.yml");
    let alert_count = alerts.matches("- alert:").count();
    let urls: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url:"))
        .map(|u| u.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect();
    assert_eq!(urls.len(), alert_count, "every alert needs a runbook_url");
    for url in urls {
        let (path, anchor) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("runbook_url {url} has no #anchor"));
        assert!(
            path.ends_with("docs/runbook.md"),
            "runbook_url {url} should point at docs/runbook.md"
        );
        assert!(
            anchors.contains(anchor),
            "runbook_url {url}: docs/runbook.md has no heading with anchor `{anchor}`"
        );
    }
}

#[test]
fn github_anchor_rules() {
    assert_eq!(github_anchor(" SidecacheL2Down"), "sidecachel2down");
    assert_eq!(
        github_anchor("Roll back a config (SIGHUP)"),
        "roll-back-a-config-sighup"
    );
    assert_eq!(github_anchor("Flush: route/URL/tag"), "flush-routeurltag");
}
