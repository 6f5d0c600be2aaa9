//! What the origin is told about a request's URL, checked where it matters: at the origin
//! (a recording upstream keeps every head as it arrived) and in the cache key (a second
//! request that must, or must not, be served the first one's entry). Ordinary traffic runs
//! beside every case and must see no error.
//!
//! - From untrusted peers, fields frameworks build links from (`X-Forwarded-Prefix/-Port/
//!   -Ssl/-Scheme`) never reach the origin; from anyone, `X-Original-URL`, `X-Rewrite-URL`
//!   and `X-Host` (which make origins serve another path or host) never do.
//! - From a trusted proxy, the key and the origin use the same value: the one the nearest
//!   proxy appended, for `X-Forwarded-Host`/`-Proto` and `Forwarded` alike.
//! - An absolute-form target names the host for the key and the upstream alike.

use crate::support;

use std::time::Duration;

use support::backend::{start_backend, Backend};
use support::raw::{exchange, RawConn};
use support::recorder::{AnswerWhen, Received, Recorder};
use support::sidecache::{Sidecache, SidecacheOptions};
use support::traffic::Traffic;

const CONFIG: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
grace_period = "1s"
TRUSTED

[proxy]
default_upstream = "backend"

[[upstreams]]
name = "backend"
address = "{backend}"

[[upstreams]]
name = "recorder"
address = "RECORDER"

[[rewrites]]
source = "/rec/:path*"
destination = "recorder"

[[routes]]
name = "recorded"
match = "GET /rec/:path*"
ttl = "60s"

[cache]
default_mode = "off"
"#;

/// The stand-in backend (ordinary traffic), a recorder on `/rec/...` (cached 60 s), and
/// sidecache in front, trusting `127.0.0.1` (the tests' own address) when `trusted`.
async fn start(trusted: bool) -> (Backend, Recorder, Sidecache, Traffic) {
    let backend = start_backend(Duration::ZERO).await;
    let recorder = Recorder::start(AnswerWhen::AfterBody).await;
    let trust = if trusted {
        "trusted_proxies = [\"127.0.0.1\"]"
    } else {
        ""
    };
    let config = CONFIG
        .replace("TRUSTED", trust)
        .replace("RECORDER", &recorder.addr().to_string());
    let sc = Sidecache::start(SidecacheOptions::new(config).backend(backend.addr())).await;
    let listen = sc.listen_addr();
    let traffic = Traffic::start(2, move |w, i| {
        format!("http://{listen}/api/events/{}/context", (w * 1000 + i) % 20)
    });
    (backend, recorder, sc, traffic)
}

/// Send one raw request on a new connection; returns its status and `X-Cache`.
async fn send(sc: &Sidecache, head: &str) -> (u16, String) {
    let r = exchange(sc.listen_addr(), head.as_bytes()).await;
    (r.status, r.header("x-cache").unwrap_or("").to_owned())
}

/// The last request the recorder received.
fn last(recorder: &Recorder) -> Received {
    recorder
        .requests()
        .pop()
        .expect("the origin received a request")
}

const URL_FIELDS: [&str; 4] = [
    "X-Forwarded-Prefix: /evil",
    "X-Forwarded-Port: 8443",
    "X-Forwarded-Ssl: on",
    "X-Forwarded-Scheme: https",
];
const TARGET_OVERRIDES: [&str; 3] = [
    "X-Original-URL: /admin",
    "X-Rewrite-URL: /admin",
    "X-Host: evil.example",
];

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_peers_cannot_tell_the_origin_another_url() {
    let (_backend, recorder, sc, traffic) = start(false).await;
    let fields: String = URL_FIELDS
        .iter()
        .chain(&TARGET_OVERRIDES)
        .map(|f| format!("{f}\r\n"))
        .collect();
    let (status, _) = send(
        &sc,
        &format!("GET /rec/page HTTP/1.1\r\nHost: api.example\r\n{fields}\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    let seen = last(&recorder);
    for field in URL_FIELDS.iter().chain(&TARGET_OVERRIDES) {
        let name = field.split(':').next().unwrap_or("");
        assert!(
            seen.header_all(name).is_empty(),
            "{name} reached the origin: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header_all("x-forwarded-host"), ["api.example"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
    traffic.stop_without_failures().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_chain_is_keyed_and_forwarded_by_the_value_it_appended() {
    let (_backend, recorder, sc, traffic) = start(true).await;
    // The client (behind the trusted proxy) claimed evil.example; the proxy appended the
    // real host. Both the key and the origin must see shop.example.
    let (status, x_cache) = send(
        &sc,
        "GET /rec/chain HTTP/1.1\r\nHost: internal\r\n\
         X-Forwarded-Host: evil.example, shop.example\r\nX-Forwarded-Proto: http, https\r\n\
         X-Original-URL: /admin\r\nX-Forwarded-Prefix: /shop\r\n\r\n",
    )
    .await;
    assert_eq!((status, x_cache.as_str()), (200, "MISS"));
    let seen = last(&recorder);
    assert_eq!(seen.header_all("x-forwarded-host"), ["shop.example"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), ["https"]);
    assert!(seen.header_all("x-original-url").is_empty(), "{seen:?}");
    assert_eq!(
        seen.header_all("x-forwarded-prefix"),
        ["/shop"],
        "a trusted proxy's own URL fields are kept"
    );
    // Keyed under https://shop.example: the proxy's plain statement hits that entry...
    let (_, x_cache) = send(
        &sc,
        "GET /rec/chain HTTP/1.1\r\nHost: internal\r\nX-Forwarded-Host: shop.example\r\n\
         X-Forwarded-Proto: https\r\n\r\n",
    )
    .await;
    assert_eq!(x_cache, "HIT-L1");
    // ...and so does the same statement in Forwarded's last element.
    let (_, x_cache) = send(
        &sc,
        "GET /rec/chain HTTP/1.1\r\nHost: internal\r\n\
         Forwarded: host=evil.example;proto=http, host=shop.example;proto=https\r\n\r\n",
    )
    .await;
    assert_eq!(x_cache, "HIT-L1");
    // The client's claim alone is another site: not served shop.example's entry.
    let (_, x_cache) = send(
        &sc,
        "GET /rec/chain HTTP/1.1\r\nHost: internal\r\nX-Forwarded-Host: evil.example\r\n\
         X-Forwarded-Proto: https\r\n\r\n",
    )
    .await;
    assert_eq!(x_cache, "MISS");
    // A Forwarded chain alone: the origin gets its last element only.
    let (_, _) = send(
        &sc,
        "GET /rec/forwarded HTTP/1.1\r\nHost: internal\r\n\
         Forwarded: for=1.1.1.1;host=evil.example, for=2.2.2.2;host=shop.example;proto=https\r\n\r\n",
    )
    .await;
    let seen = last(&recorder);
    assert_eq!(
        seen.header_all("forwarded"),
        ["for=2.2.2.2;host=shop.example;proto=https"]
    );
    assert_eq!(seen.header_all("x-forwarded-host"), ["shop.example"]);
    traffic.stop_without_failures().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absolute_form_target_names_the_host_for_the_key_and_the_upstream() {
    let (_backend, recorder, sc, traffic) = start(false).await;
    // HTTP/1.0 without Host: the target's authority is the only host named.
    let (status, x_cache) = send(&sc, "GET http://a.example/rec/abs HTTP/1.0\r\n\r\n").await;
    assert_eq!((status, x_cache.as_str()), (200, "MISS"));
    let seen = last(&recorder);
    assert_eq!(seen.target, "/rec/abs", "origin-form upstream");
    assert_eq!(seen.header_all("host"), ["a.example"]);
    assert_eq!(seen.header_all("x-forwarded-host"), ["a.example"]);
    let (_, x_cache) = send(&sc, "GET /rec/abs HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert_eq!(x_cache, "HIT-L1", "keyed under the target's host");

    // A Host that disagrees with the target: which host is meant is ambiguous, refused.
    let count = recorder.count();
    let mut conn = RawConn::connect(sc.listen_addr()).await;
    conn.send(b"GET http://a.example/rec/abs2 HTTP/1.1\r\nHost: b.example\r\n\r\n")
        .await;
    let r = conn
        .response(Duration::from_secs(5))
        .await
        .expect("an answer")
        .expect_response("conflicting host");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["reason"], "host_differs_from_target");
    assert_eq!(recorder.count(), count, "never forwarded");
    // The same authority in both is fine, and keyed as that host.
    let (_, x_cache) = send(
        &sc,
        "GET http://a.example/rec/abs2 HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await;
    assert_eq!(x_cache, "MISS");
    let (_, x_cache) = send(&sc, "GET /rec/abs2 HTTP/1.1\r\nHost: b.example\r\n\r\n").await;
    assert_eq!(x_cache, "MISS", "b.example is not served a.example's entry");
    let (_, x_cache) = send(&sc, "GET /rec/abs2 HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert_eq!(x_cache, "HIT-L1");
    traffic.stop_without_failures().await;
}
