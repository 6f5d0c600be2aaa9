//! `[[upstreams]]`, `[proxy]` and `[[rewrites]]`: where requests go.

use super::*;

pub(super) fn proxy(doc: &mut Doc<'_>, root: &mut Table<'_>, upstreams: &[&str]) -> ProxyConfig {
    let mut t = root.table(doc, "proxy");
    let default_upstream = t
        .get(doc, "default_upstream")
        .and_then(|e| e.parsed(doc, |s| known_upstream(s, upstreams)));
    t.finish(doc);
    ProxyConfig { default_upstream }
}

/// The index of upstream `name`, or an error listing the defined ones.
pub(super) fn known_upstream(name: &str, upstreams: &[&str]) -> Result<usize, String> {
    upstreams.iter().position(|u| *u == name).ok_or_else(|| {
        format!(
            "unknown upstream {name:?}; defined upstreams: {}",
            upstreams.join(", ")
        )
    })
}

pub(super) fn upstreams(doc: &mut Doc<'_>, root: &mut Table<'_>) -> Vec<UpstreamConfig> {
    let list = tables(doc, root, "upstreams");
    if list.is_empty() {
        doc.error("upstreams", None, "at least one [[upstreams]] is required");
    }
    let mut out: Vec<UpstreamConfig> = Vec::new();
    for mut t in list {
        let name = t.require(doc, "name").and_then(|e| {
            let name = e.parsed(doc, |s| {
                let ok = !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                ok.then(|| s.to_string()).ok_or_else(|| {
                    format!("invalid upstream name {s:?}: use letters, digits, '-' and '_'")
                })
            })?;
            if out.iter().any(|u| u.name == name) {
                e.error(doc, format!("duplicate upstream name {name:?}"));
                return None;
            }
            Some(name)
        });
        let address = t
            .require(doc, "address")
            .and_then(|e| e.parsed(doc, |s| check_host_port(s).map(|()| s.to_string())));
        let mut timeout = |key, default| {
            t.get(doc, key)
                .and_then(|e| e.positive_duration(doc))
                .unwrap_or(Duration::from_secs(default))
        };
        let upstream = UpstreamConfig {
            name: name.unwrap_or_default(),
            address: address.unwrap_or_default(),
            connect_timeout: timeout("connect_timeout", 1),
            read_timeout: timeout("read_timeout", 60),
            write_timeout: timeout("write_timeout", 30),
            idle_timeout: timeout("idle_timeout", 60),
        };
        t.finish(doc);
        if !upstream.name.is_empty() {
            out.push(upstream);
        }
    }
    out
}

pub(super) fn rewrites(
    doc: &mut Doc<'_>,
    root: &mut Table<'_>,
    upstreams: &[&str],
) -> Vec<RewriteConfig> {
    let mut out = Vec::new();
    for mut t in tables(doc, root, "rewrites") {
        let source = t.require(doc, "source");
        let pattern = source.as_ref().and_then(|e| e.parsed(doc, parse_pattern));
        let destination = t.require(doc, "destination").and_then(|e| {
            let dest = e.str(doc)?;
            let (upstream, path) = match dest.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (dest, None),
            };
            let upstream = match known_upstream(upstream, upstreams) {
                Ok(i) => i,
                Err(msg) => {
                    e.error(doc, msg);
                    return None;
                }
            };
            let Some(path) = path else {
                return Some((upstream, None));
            };
            let template = match parse_pattern(path) {
                Ok(t) => t,
                Err(msg) => {
                    e.error(doc, format!("invalid destination path template: {msg}"));
                    return None;
                }
            };
            if template.has_anonymous_catch_all() {
                e.error(
                    doc,
                    "destination cannot use an anonymous *; name it in the source, e.g. :path*",
                );
                return None;
            }
            if let Some(source) = &pattern {
                let missing: Vec<&str> = template
                    .param_names()
                    .filter(|n| !source.param_names().any(|s| s == *n))
                    .collect();
                if !missing.is_empty() {
                    e.error(
                        doc,
                        format!(
                            "destination uses :{}, which the source {:?} does not define",
                            missing.join(", :"),
                            source.source()
                        ),
                    );
                    return None;
                }
            }
            Some((upstream, Some(template)))
        });
        let strip_prefix = t
            .get(doc, "strip_prefix")
            .and_then(|e| e.parsed(doc, absolute_path));
        let add_prefix = t
            .get(doc, "add_prefix")
            .and_then(|e| e.parsed(doc, absolute_path));
        t.finish(doc);
        if let (Some(p), Some((upstream, path))) = (pattern, destination) {
            out.push(RewriteConfig {
                source: p,
                upstream,
                path,
                strip_prefix,
                add_prefix,
            });
        }
    }
    out
}
