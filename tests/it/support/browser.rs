//! Headless Chromium for the status page's tests: load a page, let its scripts run for a
//! while, and read back the rendered DOM.
//!
//! The binary is `$SIDECACHE_CHROMIUM`, else the first of `chromium`, `chromium-browser` and
//! `google-chrome` on `PATH` (`./dev test` installs Debian's `chromium`). It runs with a temp
//! profile and `--no-sandbox`, so it works as root in CI.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The Chromium binary, or a panic that says how to install one.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("SIDECACHE_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no headless Chromium found (chromium, chromium-browser, google-chrome or \
         $SIDECACHE_CHROMIUM): run ./dev deps, or apt-get install chromium"
    );
}

fn run(args: &[String]) -> std::process::Output {
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--mute-audio",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args);
    let out = cmd.output().expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The DOM of `url` after its scripts ran for `run_for` of virtual time (timers fire;
/// network requests are real and waited for).
pub fn dump_dom(url: &str, run_for: Duration) -> String {
    let out = run(&[
        format!("--virtual-time-budget={}", run_for.as_millis()),
        "--dump-dom".into(),
        url.into(),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`dump_dom`] from async code: the browser runs on a blocking thread, so the server under
/// test (on the test's runtime) keeps answering it.
pub async fn dump_dom_async(url: String, run_for: Duration) -> String {
    tokio::task::spawn_blocking(move || dump_dom(&url, run_for))
        .await
        .expect("browser thread")
}

/// The status page's refresh counter in `dom` (how many polls its script completed).
pub fn refreshes(dom: &str) -> Option<u32> {
    text_of_id(dom, "refreshes").and_then(|t| t.parse().ok())
}

/// The text of the first element after `from` in `html` that carries `attr="value"`:
/// what lies between the end of its start tag and the next `<`. `None` when absent.
pub fn text_after(html: &str, from: usize, attr: &str, value: &str) -> Option<String> {
    let needle = format!("{attr}=\"{value}\"");
    let at = from + html.get(from..)?.find(&needle)?;
    let open_end = at + html[at..].find('>')? + 1;
    let close = open_end + html[open_end..].find('<')?;
    Some(unescape(&html[open_end..close]))
}

/// The text of the element with `id` (see [`text_after`]).
pub fn text_of_id(html: &str, id: &str) -> Option<String> {
    text_after(html, 0, "id", id)
}

/// The text of cell `data-k="key"` in the row `data-route="route"`.
pub fn route_cell(html: &str, route: &str, key: &str) -> Option<String> {
    let row = html.find(&format!("data-route=\"{route}\""))?;
    let row_end = row + html[row..].find("</tr>")?;
    text_after(&html[..row_end], row, "data-k", key)
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}
