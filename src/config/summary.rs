//! The one-screen summary of a valid config that `sidecache check` prints: listeners,
//! upstreams, rewrites, routes and cache tiers, in the order a request meets them.

use std::fmt::Write;
use std::path::Path;

use super::{Config, Ttl};

/// The one-screen summary `sidecache check` prints for the valid config `c` read from `path`.
pub fn render(path: &Path, c: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: OK", path.display());
    let _ = writeln!(
        s,
        "listen {}  admin {}  threads {}  grace {:?}",
        c.server.listen, c.server.admin_listen, c.server.threads, c.server.grace_period
    );
    let _ = writeln!(s, "\nupstreams:");
    for u in &c.upstreams {
        let _ = writeln!(
            s,
            "  {:<16} {:<24} connect {:?}, read {:?}",
            u.name, u.address, u.connect_timeout, u.read_timeout
        );
    }
    let _ = writeln!(s, "\nrewrites (first match wins):");
    for r in &c.rewrites {
        let _ = writeln!(
            s,
            "  {:<32} -> {}:{}",
            r.source.source(),
            c.upstream_name(r.upstream),
            r.path.as_ref().map_or("(same path)", |p| p.source())
        );
    }
    match c.proxy.default_upstream {
        Some(u) => {
            let _ = writeln!(
                s,
                "  (unmatched)                      -> {}",
                c.upstream_name(u)
            );
        }
        None => {
            let _ = writeln!(s, "  (unmatched)                      -> 404");
        }
    }
    let _ = writeln!(s, "\nroutes (first match wins):");
    for r in &c.routes {
        let what = match &r.cache {
            None => "cache off".to_owned(),
            Some(rc) => {
                let ttl = match rc.ttl {
                    Some(Ttl::Fixed(d)) => format!("ttl {d:?}"),
                    Some(Ttl::UntilInvalidated) => {
                        format!(
                            "until-invalidated (max {:?})",
                            rc.max_ttl.unwrap_or_default()
                        )
                    }
                    None => "origin headers".to_owned(),
                };
                format!("{:?} {ttl}", rc.mode).to_lowercase()
            }
        };
        let methods: Vec<&str> = r.methods.iter().map(http::Method::as_str).collect();
        let _ = writeln!(
            s,
            "  {:<20} {} {:<40} {what}",
            r.name,
            methods.join(","),
            r.pattern.source()
        );
    }
    let l2 = c.cache.l2.as_ref().map_or_else(
        || "off (L1 only)".to_owned(),
        |l2| {
            let fill = if l2.fill_lock { ", fill lock" } else { "" };
            format!("redis {}, timeout {:?}{fill}", l2.mode.label(), l2.timeout)
        },
    );
    let _ = writeln!(
        s,
        "\ncache: default mode {:?}, L1 {} MiB (objects <= {} KiB), L2 {l2}",
        c.cache.default_mode,
        c.cache.l1.max_bytes / (1024 * 1024),
        c.cache.l1.max_object_bytes / 1024
    );
    s
}
