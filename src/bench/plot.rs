//! The bench report's plots as inline SVG: the latency percentile curves of every URL (log
//! latency axis, the p95 budget drawn across), the error rate of every URL against the
//! maximum, and a latency histogram per URL. Axes scale to the data; every text is escaped.

use std::fmt::Write as _;
use std::time::Duration;

use super::report::{percentile, UrlReport};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 18.0;
const BOTTOM: f64 = 46.0;

/// Series colours, in URL order (cycled).
pub const COLOURS: [&str; 6] = [
    "#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2",
];

/// The budget lines' colour.
const BUDGET: &str = "#dc2626";

/// Histogram bins per URL.
pub const BINS: usize = 30;

/// The percentiles each curve is drawn through.
fn curve_percentiles() -> impl Iterator<Item = f64> {
    (0..=99).map(f64::from).chain([99.5, 99.9, 100.0])
}

/// `&`, `<`, `>` and quotes as entities, for SVG text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The smallest of 1, 2 and 5 times a power of ten that is at least `x` (1 for `x <= 0`).
pub fn nice_ceiling(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let decade = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * decade)
        .find(|v| *v >= x * (1.0 - 1e-12))
        .unwrap_or(10.0 * decade)
}

/// A base-10 log axis from `10^lo` to `10^hi` (milliseconds): whole decades around the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogAxis {
    pub lo: i32,
    pub hi: i32,
}

impl LogAxis {
    /// The decades enclosing `min..=max` (positive; at least one decade).
    pub fn enclosing(min: f64, max: f64) -> LogAxis {
        let min = if min > 0.0 { min } else { 0.001 };
        let max = if max > min { max } else { min * 10.0 };
        let lo = min.log10().floor() as i32;
        let mut hi = max.log10().ceil() as i32;
        if hi <= lo {
            hi = lo + 1;
        }
        LogAxis { lo, hi }
    }

    /// Where `v` lies, 0 (bottom) to 1 (top), clamped.
    pub fn fraction(&self, v: f64) -> f64 {
        if v <= 0.0 {
            return 0.0;
        }
        ((v.log10() - f64::from(self.lo)) / f64::from(self.hi - self.lo)).clamp(0.0, 1.0)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A tick label in milliseconds: `0.1`, `1`, `20`, `1000`.
fn ms_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The plot area's x for a fraction 0..1 of its width, and y for a fraction of its height
/// (0 at the bottom).
fn x_at(f: f64) -> f64 {
    LEFT + f * (WIDTH - LEFT - RIGHT)
}
fn y_at(f: f64) -> f64 {
    HEIGHT - BOTTOM - f * (HEIGHT - TOP - BOTTOM)
}

fn open_svg(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" font-family="system-ui, sans-serif" font-size="12"><title>{}</title><rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##,
        escape(title)
    );
    // The plot frame.
    let _ = write!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#9ca3af"/>"##,
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM
    );
}

fn axis_label(out: &mut String, x: f64, y: f64, anchor: &str, text: &str) {
    let _ = write!(
        out,
        r##"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" fill="#374151">{}</text>"##,
        escape(text)
    );
}

fn y_tick(out: &mut String, f: f64, label: &str) {
    let y = y_at(f);
    let _ = write!(
        out,
        r##"<line class="y-tick" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e7eb"/>"##,
        WIDTH - RIGHT
    );
    axis_label(out, LEFT - 6.0, y + 4.0, "end", label);
}

fn x_tick(out: &mut String, f: f64, label: &str) {
    let x = x_at(f);
    let _ = write!(
        out,
        r##"<line class="x-tick" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e5e7eb"/>"##,
        HEIGHT - BOTTOM
    );
    axis_label(out, x, HEIGHT - BOTTOM + 16.0, "middle", label);
}

fn budget_line(out: &mut String, y: f64, label: &str) {
    let _ = write!(
        out,
        r#"<line class="budget" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{BUDGET}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
        WIDTH - RIGHT
    );
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{BUDGET}">{}</text>"#,
        WIDTH - RIGHT - 4.0,
        y - 4.0,
        escape(label)
    );
}

/// The latency axis of [`percentile_plot`]: the decades around every complete response's
/// latency and the p95 budget, in milliseconds.
pub fn latency_axis(urls: &[UrlReport], p95_budget: Duration) -> LogAxis {
    let samples = urls.iter().flat_map(|u| u.latencies.iter().copied());
    let (mut min, mut max) = (f64::INFINITY, ms(p95_budget));
    for d in samples {
        let v = ms(d);
        min = min.min(v);
        max = max.max(v);
    }
    if !min.is_finite() {
        min = max / 10.0;
    }
    LogAxis::enclosing(min.min(ms(p95_budget)), max)
}

/// Latency (log, ms) by percentile (0 to 100) for every URL, with the p95 budget line and the
/// p95 marked.
pub fn percentile_plot(urls: &[UrlReport], p95_budget: Duration) -> String {
    let axis = latency_axis(urls, p95_budget);
    let mut out = String::new();
    open_svg(&mut out, "Latency by percentile");
    for e in axis.lo..=axis.hi {
        let v = 10f64.powi(e);
        y_tick(&mut out, axis.fraction(v), &ms_label(v));
    }
    for p in [0.0, 25.0, 50.0, 75.0, 90.0, 99.0] {
        x_tick(&mut out, p / 100.0, &format!("p{p}"));
    }
    for (i, u) in urls.iter().enumerate() {
        if u.latencies.is_empty() {
            continue;
        }
        let points: Vec<String> = curve_percentiles()
            .map(|p| {
                let v = ms(percentile(&u.latencies, p));
                format!("{:.1},{:.1}", x_at(p / 100.0), y_at(axis.fraction(v)))
            })
            .collect();
        let colour = COLOURS[i % COLOURS.len()];
        let _ = write!(
            out,
            r#"<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            escape(&u.url)
        );
        let p95 = ms(u.p95);
        let _ = write!(
            out,
            r#"<circle class="p95" cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>{} p95 {:.3} ms</title></circle>"#,
            x_at(0.95),
            y_at(axis.fraction(p95)),
            escape(&u.url),
            p95
        );
    }
    budget_line(
        &mut out,
        y_at(axis.fraction(ms(p95_budget))),
        &format!("p95 budget {} ms", ms_label(ms(p95_budget))),
    );
    close_svg(out, "percentile", "latency, ms (log)")
}

/// Writes the axis titles and closes the document.
fn close_svg(mut out: String, x_title: &str, y_title: &str) -> String {
    axis_label(&mut out, x_at(0.5), HEIGHT - 8.0, "middle", x_title);
    let _ = write!(
        out,
        r##"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle" fill="#374151">{}</text>"##,
        y_at(0.5),
        y_at(0.5),
        escape(y_title)
    );
    out.push_str("</svg>");
    out
}

/// The error rate of each URL (bars, 0 to a nice ceiling above the data and the maximum)
/// against the maximum error rate (the budget line).
pub fn error_rate_plot(urls: &[UrlReport], max_error_rate: f64) -> String {
    let rates: Vec<f64> = urls
        .iter()
        .map(|u| {
            if u.requests == 0 {
                1.0
            } else {
                u.errors as f64 / u.requests as f64
            }
        })
        .collect();
    let top_pct = nice_ceiling(
        rates
            .iter()
            .copied()
            .fold(max_error_rate, f64::max)
            .max(0.001)
            * 100.0
            * 1.1,
    )
    .min(100.0);
    let mut out = String::new();
    open_svg(&mut out, "Error rate by URL");
    for i in 0..=4 {
        let v = top_pct * f64::from(i) / 4.0;
        y_tick(&mut out, f64::from(i) / 4.0, &format!("{} %", trim(v)));
    }
    let n = rates.len().max(1) as f64;
    let slot = (WIDTH - LEFT - RIGHT) / n;
    for (i, (rate, u)) in rates.iter().zip(urls).enumerate() {
        let f = (rate * 100.0 / top_pct).clamp(0.0, 1.0);
        let x = LEFT + slot * i as f64 + slot * 0.2;
        let _ = write!(
            out,
            r#"<rect class="bar" x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {:.2} %</title></rect>"#,
            y_at(f),
            slot * 0.6,
            y_at(0.0) - y_at(f),
            COLOURS[i % COLOURS.len()],
            escape(&u.url),
            rate * 100.0
        );
        axis_label(
            &mut out,
            x + slot * 0.3,
            HEIGHT - BOTTOM + 16.0,
            "middle",
            &format!("URL {}", i + 1),
        );
    }
    budget_line(
        &mut out,
        y_at((max_error_rate * 100.0 / top_pct).clamp(0.0, 1.0)),
        &format!("max error rate {} %", trim(max_error_rate * 100.0)),
    );
    close_svg(out, "URL (numbered as in the list below)", "error rate")
}

/// A number without trailing zeros (at most 3 decimals).
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Counts of `latencies` in [`BINS`] equal bins from 0 to `top` ms (the last bin takes
/// everything above).
pub fn bin_counts(latencies: &[Duration], top: f64) -> [u64; BINS] {
    let mut bins = [0u64; BINS];
    for d in latencies {
        let i = ((ms(*d) / top) * BINS as f64).floor();
        let i = if i.is_finite() && i >= 0.0 {
            (i as usize).min(BINS - 1)
        } else {
            0
        };
        bins[i] += 1;
    }
    bins
}

/// The histogram of one URL's latencies: [`BINS`] bins from 0 to a nice ceiling above its
/// slowest response, the p95 budget line when it falls inside (else a note).
pub fn histogram(u: &UrlReport, p95_budget: Duration) -> String {
    let top = nice_ceiling(ms(u.max).max(0.001));
    let bins = bin_counts(&u.latencies, top);
    let top_count = nice_ceiling(bins.iter().copied().max().unwrap_or(0).max(1) as f64);
    let mut out = String::new();
    open_svg(&mut out, &format!("Latency histogram of {}", u.url));
    for i in 0..=4 {
        y_tick(
            &mut out,
            f64::from(i) / 4.0,
            &trim(top_count * f64::from(i) / 4.0),
        );
    }
    for i in 0..=5 {
        x_tick(
            &mut out,
            f64::from(i) / 5.0,
            &trim(top * f64::from(i) / 5.0),
        );
    }
    let bin_width = (WIDTH - LEFT - RIGHT) / BINS as f64;
    for (i, n) in bins.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        let f = *n as f64 / top_count;
        let _ = write!(
            out,
            r##"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#60a5fa"><title>{}–{} ms: {n}</title></rect>"##,
            LEFT + bin_width * i as f64 + 0.5,
            y_at(f),
            (bin_width - 1.0).max(0.5),
            y_at(0.0) - y_at(f),
            trim(top * i as f64 / BINS as f64),
            trim(top * (i + 1) as f64 / BINS as f64)
        );
    }
    let budget = ms(p95_budget);
    if budget <= top {
        let x = x_at(budget / top);
        let _ = write!(
            out,
            r#"<line class="budget" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="{BUDGET}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
            HEIGHT - BOTTOM
        );
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{BUDGET}">p95 budget {} ms</text>"#,
            x - 4.0,
            TOP + 14.0,
            trim(budget)
        );
    } else {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{BUDGET}">p95 budget {} ms: beyond the slowest response</text>"#,
            WIDTH - RIGHT - 4.0,
            TOP + 14.0,
            trim(budget)
        );
    }
    let p95 = ms(u.p95);
    let x = x_at((p95 / top).clamp(0.0, 1.0));
    let _ = write!(
        out,
        r##"<line class="p95" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#111827" stroke-width="1"/>"##,
        HEIGHT - BOTTOM
    );
    close_svg(out, "latency, ms", "requests")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::report::Verdict;
    use std::collections::BTreeMap;

    /// Checks that `svg` is well-formed XML as far as the plots use it: every tag closed in
    /// order, attribute values quoted, no raw `<` or stray `&` in text. Returns the element
    /// names in document order.
    pub(crate) fn check_well_formed(svg: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = svg;
        while let Some(lt) = rest.find('<') {
            check_text(&rest[..lt]);
            let gt = rest[lt..].find('>').expect("unclosed tag") + lt;
            let tag = &rest[lt + 1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().expect("tag name").to_owned();
            check_attributes(tag[name.len()..].trim());
            names.push(name.clone());
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        names
    }

    fn check_text(text: &str) {
        assert!(!text.contains('>'), "raw > in text {text:?}");
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "stray & in {text:?}"
            );
        }
    }

    fn check_attributes(mut attrs: &str) {
        while !attrs.is_empty() {
            let eq = attrs.find('=').expect("attribute without value");
            let name = attrs[..eq].trim();
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                "attribute name {name:?}"
            );
            let value = &attrs[eq + 1..];
            assert!(value.starts_with('"'), "unquoted value of {name}");
            let end = value[1..].find('"').expect("unterminated value") + 1;
            check_text(&value[1..end]);
            attrs = value[end + 1..].trim_start();
        }
    }

    /// The `attr="…"` numbers of every element named `name`.
    fn numbers(svg: &str, class: &str, attr: &str) -> Vec<f64> {
        svg.split('<')
            .filter(|t| t.contains(&format!("class=\"{class}\"")))
            .filter_map(|t| {
                let at = t.find(&format!(" {attr}=\""))? + attr.len() + 3;
                t[at..].split('"').next()?.parse().ok()
            })
            .collect()
    }

    pub(crate) fn url(name: &str, latencies_ms: &[u64], errors: u64) -> UrlReport {
        let mut latencies: Vec<Duration> = latencies_ms
            .iter()
            .map(|m| Duration::from_millis(*m))
            .collect();
        latencies.sort_unstable();
        let n = latencies.len() as u64 + errors;
        UrlReport {
            url: name.to_owned(),
            requests: n,
            successes: n - errors,
            errors,
            success_rate: 1.0,
            min: latencies.first().copied().unwrap_or_default(),
            max: latencies.last().copied().unwrap_or_default(),
            avg: Duration::ZERO,
            p50: percentile(&latencies, 50.0),
            p95: percentile(&latencies, 95.0),
            p99: percentile(&latencies, 99.0),
            x_cache: BTreeMap::new(),
            errors_by_kind: BTreeMap::new(),
            verdict: Verdict::Pass,
            latencies,
        }
    }

    #[test]
    fn nice_ceilings_and_log_axes_enclose_the_data() {
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1.3), 2.0);
        assert_eq!(nice_ceiling(36.0), 50.0);
        assert_eq!(nice_ceiling(501.0), 1000.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(LogAxis::enclosing(1.5, 480.0), LogAxis { lo: 0, hi: 3 });
        assert_eq!(LogAxis::enclosing(0.2, 0.3), LogAxis { lo: -1, hi: 0 });
        assert_eq!(LogAxis::enclosing(10.0, 10.0), LogAxis { lo: 1, hi: 2 });
        let a = LogAxis { lo: 0, hi: 2 };
        assert_eq!(a.fraction(10.0), 0.5);
        assert_eq!(a.fraction(1000.0), 1.0);
        assert_eq!(a.fraction(0.0), 0.0);
    }

    #[test]
    fn the_percentile_plot_is_well_formed_and_its_axis_scales_to_the_data() {
        let urls = [
            url("http://x/a?b=1&c=<2>", &[2, 3, 3, 4, 40], 0),
            url("http://x/b", &[1, 1, 2, 900], 0),
        ];
        let svg = percentile_plot(&urls, Duration::from_millis(500));
        let names = check_well_formed(&svg);
        assert_eq!(names[0], "svg");
        assert_eq!(names.iter().filter(|n| *n == "polyline").count(), 2);
        assert!(svg.contains("http://x/a?b=1&amp;c=&lt;2&gt;"), "escaped");
        // 1 ms .. 900 ms: decades 1, 10, 100, 1000.
        let axis = latency_axis(&urls, Duration::from_millis(500));
        assert_eq!(axis, LogAxis { lo: 0, hi: 3 });
        assert_eq!(numbers(&svg, "y-tick", "y1").len(), 4);
        for label in [">1<", ">10<", ">100<", ">1000<"] {
            assert!(svg.contains(label), "{label}");
        }
        // Every point lies inside the plot area; the slowest at its top, the fastest at
        // its bottom.
        let ys: Vec<f64> = svg
            .split("points=\"")
            .skip(1)
            .flat_map(|s| {
                let pts = s.split('"').next().unwrap_or("").to_owned();
                pts.split(' ')
                    .filter_map(|p| p.split(',').nth(1)?.parse::<f64>().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        let (top, bottom) = (y_at(1.0), y_at(0.0));
        assert!(ys.iter().all(|y| (top..=bottom).contains(y)), "{ys:?}");
        let lowest = ys.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(
            lowest > top && lowest < y_at(0.95),
            "900 ms just under 1000"
        );
        // The budget line at 500 ms.
        let budget = numbers(&svg, "budget", "y1");
        assert_eq!(budget.len(), 1);
        assert!((budget[0] - y_at(axis.fraction(500.0))).abs() < 0.1);
        // A budget far above the data widens the axis to show it.
        let fast = [url("http://x/c", &[1, 2, 3], 0)];
        assert_eq!(
            latency_axis(&fast, Duration::from_millis(500)),
            LogAxis { lo: 0, hi: 3 }
        );
        assert_eq!(
            latency_axis(&fast, Duration::from_millis(5)),
            LogAxis { lo: 0, hi: 1 }
        );
    }

    #[test]
    fn histograms_bin_every_response_and_scale_to_the_slowest() {
        let u = url("http://x/a", &[1, 2, 2, 3, 9, 36], 0);
        let svg = histogram(&u, Duration::from_millis(20));
        check_well_formed(&svg);
        // 36 ms: the axis runs to 50 ms, ticks every 10.
        assert!(svg.contains(">50<") && !svg.contains(">100<"), "{svg}");
        let bins = bin_counts(&u.latencies, 50.0);
        assert_eq!(bins.iter().sum::<u64>(), 6);
        assert_eq!(bins[(36.0 / 50.0 * BINS as f64) as usize], 1);
        // The tallest bar (3 responses in the first bins) sets the count axis: 5.
        let heights = numbers(&svg, "bar", "height");
        assert_eq!(heights.len(), bins.iter().filter(|n| **n > 0).count());
        let budget = numbers(&svg, "budget", "x1");
        assert!((budget[0] - x_at(20.0 / 50.0)).abs() < 0.1);
        // A budget beyond the slowest response is said, not drawn off the axis.
        let far = histogram(&u, Duration::from_millis(500));
        check_well_formed(&far);
        assert!(numbers(&far, "budget", "x1").is_empty());
        assert!(far.contains("beyond the slowest response"));
        // No complete response: still a well-formed (empty) plot.
        check_well_formed(&histogram(
            &url("http://x/none", &[], 3),
            Duration::from_millis(5),
        ));
    }

    #[test]
    fn the_error_rate_plot_scales_to_the_rates_and_draws_the_maximum() {
        let urls = [
            url("http://x/a", &[1; 90], 10),
            url("http://x/b", &[1; 100], 0),
        ];
        let svg = error_rate_plot(&urls, 0.01);
        check_well_formed(&svg);
        // 10 % errors: the axis tops at 20 % (nice ceiling of 11 %).
        assert!(svg.contains(">20 %<"), "{svg}");
        let heights = numbers(&svg, "bar", "height");
        let full = y_at(0.0) - y_at(1.0);
        assert!((heights[0] - full * 0.5).abs() < 0.2, "{heights:?}");
        assert_eq!(heights[1], 0.0);
        let budget = numbers(&svg, "budget", "y1");
        assert!((budget[0] - y_at(0.05)).abs() < 0.1, "1 % of 20 %");
    }
}
