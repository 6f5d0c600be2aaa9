//! Every path a response can take is finished by one function
//! (`sidecache::proxy::response_head::finish`): a miss, a fast-path L1 hit, a pingora-cache
//! hit and a bypass all lose the fields listed in `NEVER_SENT` and the hop-by-hop ones, and
//! carry `X-Cache`, `Cache-Status` and `X-Request-Id`; and a fast-path hit and a
//! pingora-cache hit of the same entry carry the same fields, so a rule added to one path
//! and not the other shows here.

use crate::support;

use support::http::{get, Resp};
use support::scripted::{Scripted, ScriptedOrigin};
use support::sidecache::{Sidecache, SidecacheOptions};

const CONFIG: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
grace_period = "1s"

[proxy]
default_upstream = "origin"

[[upstreams]]
name = "origin"
address = "{backend}"

[[routes]]
name = "passed"
match = "GET /bypass"
cache = false

[cache]
default_mode = "origin"
"#;

/// A cacheable answer carrying every field no client may receive.
fn answer() -> Scripted {
    let mut s = Scripted::ok("{\"n\":1}")
        .header("cache-control", "max-age=60")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5");
    for name in sidecache::proxy::response_head::NEVER_SENT {
        s = s.header(name.as_str(), "max-age=60");
    }
    s
}

/// The fields of `r`, lower-cased and sorted, without those whose value is per response.
fn field_names(r: &Resp) -> Vec<String> {
    let mut names: Vec<String> = r
        .headers
        .keys()
        .map(|n| n.as_str().to_owned())
        .filter(|n| !matches!(n.as_str(), "date" | "age"))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn assert_finished(what: &str, r: &Resp, x_cache: &str) {
    assert_eq!(r.status, 200, "{what}");
    assert_eq!(r.x_cache(), x_cache, "{what}");
    for name in sidecache::proxy::response_head::NEVER_SENT {
        assert!(r.header(name.as_str()).is_none(), "{what}: {name} sent");
    }
    for hop in ["x-hop", "keep-alive", "upgrade", "trailer", "te"] {
        assert!(r.header(hop).is_none(), "{what}: {hop} sent");
    }
    for added in ["x-cache", "cache-status", "x-request-id"] {
        assert!(r.header(added).is_some(), "{what}: no {added}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_path_finishes_the_response_header_the_same_way() {
    let origin = ScriptedOrigin::start().await;
    origin.script("/entry", [answer()]);
    origin.script("/bypass", [answer()]);
    let sc = Sidecache::start(SidecacheOptions::new(CONFIG).backend(origin.addr())).await;

    let miss = get(&sc.url("/entry"), &[]).await;
    assert_finished("miss", &miss, "MISS");
    let fast = get(&sc.url("/entry"), &[]).await;
    assert_finished("fast-path hit", &fast, "HIT-L1");
    // A conditional request that does not match is answered by pingora-cache's hit path.
    let pingora = get(&sc.url("/entry"), &[("if-none-match", "\"other\"")]).await;
    assert_finished("pingora-cache hit", &pingora, "HIT-L1");
    assert_eq!(
        field_names(&fast),
        field_names(&pingora),
        "the two hit paths send the same fields"
    );
    let bypass = get(&sc.url("/bypass"), &[]).await;
    assert_finished("bypass", &bypass, "BYPASS");
    assert_eq!(origin.hits("/entry"), 1);
}
