//! `[server]`: listeners, threads, and the connection limits of the data plane.

use super::*;

pub(super) fn server(doc: &mut Doc<'_>, root: &mut Table<'_>) -> ServerConfig {
    let mut t = root.table(doc, "server");
    let addr = |t: &mut Table<'_>, doc: &mut Doc<'_>, key, default: [u8; 4], port| {
        t.get(doc, key)
            .and_then(|e| e.parsed(doc, parse_socket_addr))
            .unwrap_or(SocketAddr::from((default, port)))
    };
    let server = ServerConfig {
        listen: addr(&mut t, doc, "listen", [0, 0, 0, 0], 8080),
        admin_listen: addr(&mut t, doc, "admin_listen", [127, 0, 0, 1], 9091),
        threads: t
            .get(doc, "threads")
            .and_then(|e| e.int_in(doc, 1, 1024))
            .unwrap_or_else(default_threads),
        work_stealing: t
            .get(doc, "work_stealing")
            .and_then(|e| e.bool(doc))
            .unwrap_or(false),
        grace_period: t
            .get(doc, "grace_period")
            .and_then(|e| e.duration(doc))
            .unwrap_or(Duration::from_secs(10)),
        access_log: t
            .get(doc, "access_log")
            .and_then(|e| e.bool(doc))
            .unwrap_or(false),
        max_request_body_bytes: t
            .get(doc, "max_request_body")
            .and_then(|e| e.size(doc))
            .unwrap_or(64 << 20),
        admin_token: None,
        watch: t
            .get(doc, "watch")
            .and_then(|e| e.bool(doc))
            .unwrap_or(false),
        trusted_proxies: t
            .get(doc, "trusted_proxies")
            .and_then(|e| e.strings(doc))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(s, e)| e.parsed(doc, |_| Cidr::parse(&s)))
            .collect(),
        allow_body_on_safe_methods: t
            .get(doc, "allow_body_on_safe_methods")
            .and_then(|e| e.bool(doc))
            .unwrap_or(false),
        tunnel_idle_timeout: t
            .get(doc, "tunnel_idle_timeout")
            .and_then(|e| e.positive_duration(doc))
            .unwrap_or(Duration::from_secs(60)),
        limits: limits(doc, &mut t),
    };
    t.forbid(
        doc,
        "admin_token",
        "the admin token is never read from the file; set SIDECACHE_ADMIN_TOKEN instead",
    );
    t.finish(doc);
    server
}

pub(super) fn limits(doc: &mut Doc<'_>, t: &mut Table<'_>) -> ConnectionLimits {
    let d = ConnectionLimits::default();
    let mut duration = |t: &mut Table<'_>, key, default| {
        t.get(doc, key)
            .and_then(|e| e.positive_duration(doc))
            .unwrap_or(default)
    };
    let header_timeout = duration(t, "header_timeout", d.header_timeout);
    let keepalive_timeout = duration(t, "keepalive_timeout", d.keepalive_timeout);
    let admin_body_timeout = duration(t, "admin_body_timeout", d.admin_body_timeout);
    let send_timeout = duration(t, "send_timeout", d.send_timeout);
    let min_send_rate = t
        .get(doc, "min_send_rate")
        .and_then(|e| match e.size_or_off(doc)? {
            Some(0) => {
                e.error(doc, "must be greater than 0 (or \"off\")");
                None
            }
            Some(rate) => Some(usize::try_from(rate).ok()),
            None => Some(None),
        })
        .unwrap_or(d.min_send_rate);
    let max_header_bytes = t
        .get(doc, "max_header_bytes")
        .and_then(|e| {
            let n = e.size(doc)?;
            if !(1024..=1 << 20).contains(&n) {
                e.error(doc, "must be between 1KiB and 1MiB (pingora's own limit)");
                return None;
            }
            usize::try_from(n).ok()
        })
        .unwrap_or(d.max_header_bytes);
    ConnectionLimits {
        max_header_bytes,
        max_headers: t
            .get(doc, "max_headers")
            .and_then(|e| e.int_in(doc, 1, 256))
            .unwrap_or(d.max_headers),
        header_timeout,
        keepalive_timeout,
        max_requests_per_connection: t
            .get(doc, "max_requests_per_connection")
            .and_then(|e| e.int_in(doc, 1, 1_000_000_000))
            .unwrap_or(d.max_requests_per_connection),
        max_connections: t
            .get(doc, "max_connections")
            .and_then(|e| e.int_in(doc, 1, 1_000_000))
            .unwrap_or(d.max_connections),
        admin_body_timeout,
        send_timeout,
        min_send_rate,
    }
}
