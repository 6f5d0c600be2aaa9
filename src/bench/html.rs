//! `sidecache bench --report FILE.html`: one self-contained HTML file (inline CSS and SVG, no
//! script, nothing loaded from elsewhere) with the verdict, the run's parameters, the
//! latency percentile plot with the p95 budget, the error rates against the maximum, and a
//! table and histogram per URL. Meant to be kept: a weekly run from cron writes one per week.

use std::fmt::Write as _;
use std::time::Duration;

use super::plot::{self, escape, COLOURS};
use super::{BenchOptions, BenchReport, UrlReport, Verdict};

/// When and how long the run was.
#[derive(Debug, Clone)]
pub struct RunTimes {
    /// Start, as RFC 3339 UTC.
    pub started: String,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn verdict_html(v: &Verdict) -> String {
    match v {
        Verdict::Pass => r#"<span class="pass">PASS</span>"#.to_owned(),
        Verdict::Fail(_) => r#"<span class="fail">FAIL</span>"#.to_owned(),
    }
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "–".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{} ×{v}", escape(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn url_section(out: &mut String, i: usize, u: &UrlReport, opts: &BenchOptions) {
    let colour = COLOURS[i % COLOURS.len()];
    let _ = write!(
        out,
        r#"<section class="url"><h3><span class="swatch" style="background:{colour}"></span>URL {n}: <code>{url}</code> {verdict}</h3>"#,
        n = i + 1,
        url = escape(&u.url),
        verdict = verdict_html(&u.verdict)
    );
    if let Verdict::Fail(reasons) = &u.verdict {
        let _ = write!(
            out,
            "<p class=\"fail\">{}</p>",
            reasons
                .iter()
                .map(|r| escape(r))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let _ = write!(
        out,
        "<table><tr><th>requests</th><th>successes</th><th>errors</th><th>min</th><th>avg</th>\
         <th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{} ms</td><td>{} ms</td>\
         <td>{} ms</td><td>{} ms</td><td>{} ms</td></tr></table>\
         <p>X-Cache: {}. Errors: {}.</p>",
        u.requests,
        u.successes,
        u.errors,
        ms(u.min),
        ms(u.avg),
        ms(u.p50),
        ms(u.p95),
        ms(u.p99),
        ms(u.max),
        counts(&u.x_cache),
        counts(&u.errors_by_kind)
    );
    out.push_str(&plot::histogram(u, opts.p95_budget));
    out.push_str("</section>");
}

/// The report document.
pub fn render(report: &BenchReport, opts: &BenchOptions, times: &RunTimes) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>sidecache bench report</title>
<style>
body { margin: 24px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2937; max-width: 800px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; } h3 { font-size: 14px; margin: 0 0 8px; }
table { border-collapse: collapse; margin: 6px 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #e5e7eb; padding: 3px 8px; text-align: right; } th { background: #f9fafb; font-weight: 500; }
table.params td, table.params th { text-align: left; }
.pass { color: #15803d; font-weight: 700; } .fail { color: #b91c1c; font-weight: 700; }
.verdict { font-size: 28px; margin: 8px 0; }
section.url { border-top: 1px solid #e5e7eb; padding-top: 12px; margin-top: 16px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
svg { max-width: 100%; height: auto; display: block; margin: 8px 0; }
code { word-break: break-all; }
.legend > span { display: inline-block; margin-right: 14px; }
</style></head><body>
"#,
    );
    let _ = write!(
        out,
        "<h1>sidecache bench report</h1><p>{} · sidecache {}</p>\
         <div class=\"verdict\" id=\"verdict\">{}</div>",
        escape(&times.started),
        env!("CARGO_PKG_VERSION"),
        verdict_html(&report.verdict)
    );
    if let Verdict::Fail(reasons) = &report.verdict {
        out.push_str("<ul class=\"fail\">");
        for r in reasons {
            let _ = write!(out, "<li>{}</li>", escape(r));
        }
        out.push_str("</ul>");
    }
    let passed = report.urls.iter().filter(|u| u.verdict.is_pass()).count();
    let _ = write!(
        out,
        "<h2>Run</h2><table class=\"params\">\
         <tr><th>URLs</th><td>{} ({passed} within budget)</td></tr>\
         <tr><th>requests per URL</th><td>{}</td></tr>\
         <tr><th>concurrency</th><td>{}</td></tr>\
         <tr><th>p95 budget</th><td>{} ms</td></tr>\
         <tr><th>max error rate</th><td>{:.2} %</td></tr>\
         <tr><th>request timeout</th><td>{:.1} s</td></tr>\
         <tr><th>extra headers</th><td>{}</td></tr>\
         <tr><th>duration</th><td>{:.2} s</td></tr></table>",
        report.urls.len(),
        opts.iterations,
        opts.concurrency,
        ms(report.p95_budget),
        report.max_error_rate * 100.0,
        opts.timeout.as_secs_f64(),
        // Names only: values may be credentials.
        if opts.headers.is_empty() {
            "none".to_owned()
        } else {
            opts.headers
                .iter()
                .map(|(k, _)| escape(k))
                .collect::<Vec<_>>()
                .join(", ")
        },
        times.elapsed.as_secs_f64()
    );
    out.push_str("<h2>Latency by percentile</h2><p>Each URL's latency at every percentile of its complete responses (log scale); the dots mark p95, the dashed line the p95 budget.</p>");
    out.push_str("<p class=\"legend\">");
    for (i, u) in report.urls.iter().enumerate() {
        let _ = write!(
            out,
            r#"<span><span class="swatch" style="background:{}"></span>URL {}: <code>{}</code></span> "#,
            COLOURS[i % COLOURS.len()],
            i + 1,
            escape(&u.url)
        );
    }
    out.push_str("</p>");
    out.push_str(&plot::percentile_plot(&report.urls, report.p95_budget));
    out.push_str("<h2>Error rate</h2><p>4xx/5xx, timeouts and transport errors per request; the dashed line is the maximum.</p>");
    out.push_str(&plot::error_rate_plot(&report.urls, report.max_error_rate));
    out.push_str("<h2>URLs</h2>");
    for (i, u) in report.urls.iter().enumerate() {
        url_section(&mut out, i, u, opts);
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plot::tests::{check_well_formed, url};

    #[test]
    fn the_report_holds_the_verdict_parameters_and_every_plot() {
        let mut slow = url("http://h/slow?x=1&y=2", &[400, 600, 700], 1);
        slow.verdict = Verdict::Fail(vec!["p95 700.000 ms exceeds budget 500.000 ms".into()]);
        let urls = vec![url("http://h/fast", &[1, 2, 3], 0), slow];
        let report = BenchReport::new(urls, Duration::from_millis(500), 0.01);
        let opts = BenchOptions {
            urls: vec!["http://h/fast".into(), "http://h/slow?x=1&y=2".into()],
            iterations: 3,
            concurrency: 2,
            headers: vec![("Authorization".into(), "Bearer secret".into())],
            ..BenchOptions::default()
        };
        let html = render(
            &report,
            &opts,
            &RunTimes {
                started: "2026-12-02T03:00:00Z".into(),
                elapsed: Duration::from_millis(1500),
            },
        );
        assert!(
            html.contains(r#"<div class="verdict" id="verdict"><span class="fail">FAIL</span>"#)
        );
        assert!(html.contains("http://h/slow?x=1&amp;y=2: p95 700.000 ms exceeds budget"));
        assert!(html.contains("<tr><th>concurrency</th><td>2</td></tr>"));
        assert!(html.contains("<tr><th>p95 budget</th><td>500.000 ms</td></tr>"));
        assert!(html.contains("Authorization") && !html.contains("secret"));
        // One percentile plot, one error-rate plot, one histogram per URL; each well-formed.
        let svgs: Vec<&str> = html
            .split("<svg ")
            .skip(1)
            .map(|s| &s[..s.find("</svg>").unwrap() + 6])
            .collect();
        assert_eq!(svgs.len(), 4);
        for svg in svgs {
            check_well_formed(&format!("<svg {svg}"));
        }
        for external in ["<script", "src=", "href=", "@import", "url("] {
            assert!(!html.contains(external), "self-contained: {external}");
        }
    }
}
