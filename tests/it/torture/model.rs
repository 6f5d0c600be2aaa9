//! What the fleet serves and what each operation changes: the URLs under test, their tags and
//! lifetimes, the writes (what each bumps at the origin and which purges it may cause), and
//! the admin purge targets (what each covers). The config in `fleet.rs` and this model must
//! agree; both are written from the same table below.
//!
//! | route         | pattern                     | lifetime                         | tags          | purged by writes                       |
//! |---------------|-----------------------------|----------------------------------|---------------|----------------------------------------|
//! | `items`       | `GET /api/items/:id`        | `ttl` 4 s or 6 s (reload variant)| `item:{id}`   | any write to it, a create's `Location` |
//! | `item_detail` | `GET /api/items/:id/detail` | `ttl` 30 s                       | `item:{id}`   | `PUT/PATCH/DELETE /api/items/:id`      |
//! | `sessions`    | `GET /api/sessions/:id/state` | `until-invalidated`            | `session:{id}`| `POST .../end`, a write to it          |
//! | `pages`       | `GET /pages/:id`            | origin mode, `max-age` 4 s       | `page:{id}`   | any write to it                        |
//! | `hot`         | `GET /hot/:id`              | `until-invalidated`              | none          | nothing the harness does               |
//!
//! Writes to `/api/other/:n` (the flood) match no route: nothing cached can depend on them.

use std::time::Duration;

pub const ITEMS: u32 = 6;
pub const SESSIONS: u32 = 4;
pub const PAGES: u32 = 4;
/// The query variants of an item (each its own cache entry, one resource at the origin).
pub const ITEM_QUERIES: [&str; 3] = ["", "?v=1", "?v=2"];
/// The `items` route's TTL in each config variant a reload may switch to.
pub const ITEM_TTLS: [&str; 2] = ["4s", "6s"];
/// The shortest of [`ITEM_TTLS`].
pub const ITEM_TTL_MIN: Duration = Duration::from_secs(4);
pub const DETAIL_TTL: Duration = Duration::from_secs(30);
/// `max-age` of the origin's answers (the `pages` route in origin mode).
pub const PAGE_MAX_AGE_SECS: u64 = 4;
/// The entry the flood check watches on the other instances.
pub const HOT_URL: &str = "/hot/1";

/// Every URL the harness GETs (the hot one aside).
pub fn urls() -> Vec<String> {
    let mut urls = Vec::new();
    for id in 1..=ITEMS {
        for q in ITEM_QUERIES {
            urls.push(format!("/api/items/{id}{q}"));
        }
        urls.push(format!("/api/items/{id}/detail"));
    }
    for id in 1..=SESSIONS {
        urls.push(format!("/api/sessions/{id}/state"));
    }
    for id in 1..=PAGES {
        urls.push(format!("/pages/{id}"));
    }
    urls
}

/// The path of a URL: the resource the origin versions.
pub fn path_of(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// The tags the config gives the entry of `url`.
pub fn tags_of(url: &str) -> Vec<String> {
    let segments: Vec<&str> = path_of(url).split('/').collect();
    match segments.as_slice() {
        ["", "api", "items", id] | ["", "api", "items", id, "detail"] => vec![format!("item:{id}")],
        ["", "api", "sessions", id, "state"] => vec![format!("session:{id}")],
        ["", "pages", id] => vec![format!("page:{id}")],
        _ => vec![],
    }
}

/// The shortest fresh lifetime an entry of `url` can get under any config variant (`None`:
/// only a purge removes it).
pub fn min_lifetime(url: &str) -> Option<Duration> {
    let path = path_of(url);
    if path.starts_with("/pages/") {
        Some(Duration::from_secs(PAGE_MAX_AGE_SECS))
    } else if path.ends_with("/detail") {
        Some(DETAIL_TTL)
    } else if path.starts_with("/api/items/") {
        Some(ITEM_TTL_MIN)
    } else {
        None
    }
}

/// Which entries a purge (or a write's invalidation) reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// Exactly this URL.
    Url(String),
    /// This path and every query variant of it (`path` and `path?...`).
    Path(String),
    /// Every URL starting with this.
    Prefix(String),
    /// Every entry with this tag.
    Tag(String),
}

impl Coverage {
    pub fn covers(&self, url: &str) -> bool {
        match self {
            Coverage::Url(u) => u == url,
            Coverage::Path(p) => path_of(url) == p,
            Coverage::Prefix(p) => url.starts_with(p.as_str()),
            Coverage::Tag(t) => tags_of(url).contains(t),
        }
    }
}

/// An admin purge's target, as sent in `POST /admin/purge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Url(String),
    Prefix(String),
    Tag(String),
}

impl Target {
    /// `(kind, target)` as sidecache logs and broadcasts it.
    pub fn kind_and_value(&self) -> (&'static str, &str) {
        match self {
            Target::Url(v) => ("url", v),
            Target::Prefix(v) => ("prefix", v),
            Target::Tag(v) => ("tag", v),
        }
    }

    pub fn coverage(&self) -> Coverage {
        match self {
            Target::Url(u) => Coverage::Url(u.clone()),
            Target::Prefix(p) => Coverage::Prefix(p.clone()),
            Target::Tag(t) => Coverage::Tag(t.clone()),
        }
    }

    /// The resources an operator changed before asking for this purge: the paths of the
    /// URLs under test it covers.
    pub fn changed_paths(&self) -> Vec<String> {
        let coverage = self.coverage();
        let mut paths: Vec<String> = urls()
            .iter()
            .filter(|u| coverage.covers(u))
            .map(|u| path_of(u).to_owned())
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// The purge body.
    pub fn body(&self) -> serde_json::Value {
        let (kind, value) = self.kind_and_value();
        serde_json::json!({ kind: value })
    }
}

/// The prefixes an admin purge may name (never one that reaches [`HOT_URL`]).
pub fn purge_prefixes() -> Vec<String> {
    let mut p = vec![
        "/api/".to_owned(),
        "/api/items/".to_owned(),
        "/api/sessions/".to_owned(),
        "/pages/".to_owned(),
    ];
    p.extend((1..=ITEMS).map(|id| format!("/api/items/{id}")));
    p
}

/// The tags an admin purge may name.
pub fn purge_tags() -> Vec<String> {
    let mut t: Vec<String> = (1..=ITEMS).map(|id| format!("item:{id}")).collect();
    t.extend((1..=SESSIONS).map(|id| format!("session:{id}")));
    t.extend((1..=PAGES).map(|id| format!("page:{id}")));
    t
}

/// The writes the harness makes (through sidecache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `PUT /api/items/:id[?q]`: the item and, by `invalidate_on`, its detail.
    PutItem,
    /// `PATCH /api/items/:id[?q]`: as `PutItem`.
    PatchItem,
    /// `DELETE /api/items/:id[?q]`: as `PutItem`.
    DeleteItem,
    /// `POST /api/items/:id[?q]`: the item only (no `invalidate_on` for POST).
    PostItem,
    /// `POST /api/items` answered `201 Location: /api/items/:id`.
    CreateItem,
    /// `POST /api/sessions/:id/end`: the session state, by `invalidate_on`.
    EndSession,
    /// `PUT /api/sessions/:id/state`.
    PutSession,
    /// `POST /pages/:id`.
    PostPage,
}

impl WriteKind {
    pub const ALL: [WriteKind; 8] = [
        WriteKind::PutItem,
        WriteKind::PatchItem,
        WriteKind::DeleteItem,
        WriteKind::PostItem,
        WriteKind::CreateItem,
        WriteKind::EndSession,
        WriteKind::PutSession,
        WriteKind::PostPage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WriteKind::PutItem => "put-item",
            WriteKind::PatchItem => "patch-item",
            WriteKind::DeleteItem => "delete-item",
            WriteKind::PostItem => "post-item",
            WriteKind::CreateItem => "create-item",
            WriteKind::EndSession => "end-session",
            WriteKind::PutSession => "put-session",
            WriteKind::PostPage => "post-page",
        }
    }

    pub fn from_name(name: &str) -> Option<WriteKind> {
        WriteKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// How many ids this kind picks from.
    pub fn ids(self) -> u32 {
        match self {
            WriteKind::EndSession | WriteKind::PutSession => SESSIONS,
            WriteKind::PostPage => PAGES,
            _ => ITEMS,
        }
    }

    /// Whether the write may carry one of [`ITEM_QUERIES`].
    pub fn takes_query(self) -> bool {
        matches!(
            self,
            WriteKind::PutItem | WriteKind::PatchItem | WriteKind::DeleteItem | WriteKind::PostItem
        )
    }
}

/// One write, resolved into its request and what it changes.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub method: &'static str,
    /// Path and query.
    pub url: String,
    /// Paths the origin bumps besides the request's own (`x-also-bump`).
    pub also_bump: Vec<String>,
    /// The `Location` the origin answers with (`x-answer-location`).
    pub location: Option<String>,
}

impl WriteRequest {
    pub fn new(kind: WriteKind, id: u32, query: usize) -> WriteRequest {
        let q = if kind.takes_query() {
            ITEM_QUERIES[query % ITEM_QUERIES.len()]
        } else {
            ""
        };
        let item = format!("/api/items/{id}");
        let detail = format!("/api/items/{id}/detail");
        let state = format!("/api/sessions/{id}/state");
        let (method, url, also_bump, location) = match kind {
            WriteKind::PutItem => ("PUT", format!("{item}{q}"), vec![detail], None),
            WriteKind::PatchItem => ("PATCH", format!("{item}{q}"), vec![detail], None),
            WriteKind::DeleteItem => ("DELETE", format!("{item}{q}"), vec![detail], None),
            WriteKind::PostItem => ("POST", format!("{item}{q}"), vec![], None),
            WriteKind::CreateItem => ("POST", "/api/items".to_owned(), vec![], Some(item)),
            WriteKind::EndSession => ("POST", format!("/api/sessions/{id}/end"), vec![state], None),
            WriteKind::PutSession => ("PUT", state, vec![], None),
            WriteKind::PostPage => ("POST", format!("/pages/{id}"), vec![], None),
        };
        WriteRequest {
            method,
            url,
            also_bump,
            location,
        }
    }

    /// A flood write: `POST /api/other/{n}`, which nothing cached depends on.
    pub fn other(n: u32) -> WriteRequest {
        WriteRequest {
            method: "POST",
            url: format!("/api/other/{n}"),
            also_bump: vec![],
            location: None,
        }
    }

    /// The paths whose entries (every query variant) the write's purges reach, as the
    /// config promises: its own path (RFC 9111 §4.4), the `invalidate_on` target, the
    /// `Location`. (`also_bump` is exactly the `invalidate_on` target here.)
    pub fn purged_paths(&self) -> Vec<String> {
        let mut paths = vec![path_of(&self.url).to_owned()];
        paths.extend(self.also_bump.iter().cloned());
        paths.extend(self.location.iter().cloned());
        paths
    }

    /// Every `(kind, target)` a purge caused by this write may name: its url and path, the
    /// `path?` prefix of each purged path.
    pub fn allowed_purges(&self) -> Vec<(&'static str, String)> {
        let mut allowed = vec![("url", self.url.clone())];
        for path in self.purged_paths() {
            allowed.push(("url", path.clone()));
            allowed.push(("prefix", format!("{path}?")));
        }
        allowed
    }

    /// The request headers that tell the origin what else the write changes.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if !self.also_bump.is_empty() {
            h.push(("x-also-bump", self.also_bump.join(",")));
        }
        if let Some(l) = &self.location {
            h.push(("x-answer-location", l.clone()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_matches_the_config() {
        assert!(Coverage::Tag("item:3".into()).covers("/api/items/3/detail"));
        assert!(Coverage::Tag("item:3".into()).covers("/api/items/3?v=1"));
        assert!(!Coverage::Tag("item:3".into()).covers("/api/items/4"));
        assert!(Coverage::Path("/api/items/3".into()).covers("/api/items/3?v=2"));
        assert!(!Coverage::Path("/api/items/3".into()).covers("/api/items/3/detail"));
        assert!(Coverage::Prefix("/api/items/3".into()).covers("/api/items/3/detail"));
        assert!(!Coverage::Prefix("/api/".into()).covers(HOT_URL));
    }
}
