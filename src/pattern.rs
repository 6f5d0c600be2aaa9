//! Next.js-style path patterns (`/api/contractors/:id/bundle`, `/api/:path*`, `/api/admin/*`)
//! and the templates filled from their captured params.
//!
//! A leaf module: the config compiles every pattern and template here once (validation is
//! where a bad one is reported), and routing only matches and fills the compiled values.
//! Matching borrows from the pattern and the path and never allocates.

/// Most named params a pattern may capture; [`Pattern::parse`] rejects more.
pub const MAX_PARAMS: usize = 8;

/// Why a pattern string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern does not begin with `/`.
    #[error("pattern must start with '/'")]
    MissingLeadingSlash,
    /// Two slashes with nothing between them.
    #[error("pattern has an empty segment (\"//\")")]
    EmptySegment,
    /// A `:` segment without a name.
    #[error("segment ':' has no name")]
    UnnamedParam,
    /// A param name with characters other than ASCII letters, digits and `_`.
    #[error("param name {0:?} may only contain letters, digits and '_'")]
    BadParamName(String),
    /// The same param name used twice.
    #[error("param :{0} appears more than once")]
    DuplicateParam(String),
    /// A `*`/`+` catch-all that is not the last segment.
    #[error("catch-all segment {0:?} must be the last segment")]
    CatchAllNotLast(String),
    /// More than [`MAX_PARAMS`] named params.
    #[error("pattern has more than {MAX_PARAMS} params")]
    TooManyParams,
    /// A `{` without its `}` (or a `}` without its `{`) in a brace template.
    #[error("unbalanced braces in template {0:?}")]
    UnbalancedBraces(String),
    /// A `{}` with no name in a brace template.
    #[error("empty {{}} in template {0:?}")]
    EmptyBraces(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// `:name*` (zero or more), `:name+` (one or more), `*` (anonymous, zero or more).
    CatchAll {
        name: Option<String>,
        min_one: bool,
    },
}

/// A compiled path pattern, e.g. `/api/contractors/:id/bundle`, `/api/:path*`, `/api/admin/*`, `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Pattern {
    /// Compile a pattern string; see [`Pattern::matches`] for the syntax.
    pub fn parse(src: &str) -> Result<Pattern, PatternError> {
        let body = src
            .strip_prefix('/')
            .ok_or(PatternError::MissingLeadingSlash)?;
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        if !body.is_empty() {
            let parts: Vec<&str> = body.split('/').collect();
            let last = parts.len() - 1;
            for (i, part) in parts.iter().enumerate() {
                let segment = Self::segment(part)?;
                if matches!(segment, Segment::CatchAll { .. }) && i != last {
                    return Err(PatternError::CatchAllNotLast((*part).to_string()));
                }
                if let Segment::Param(name)
                | Segment::CatchAll {
                    name: Some(name), ..
                } = &segment
                {
                    let name = &part[1..1 + name.len()];
                    if names.contains(&name) {
                        return Err(PatternError::DuplicateParam(name.to_string()));
                    }
                    names.push(name);
                    if names.len() > MAX_PARAMS {
                        return Err(PatternError::TooManyParams);
                    }
                }
                segments.push(segment);
            }
        }
        Ok(Pattern {
            source: src.to_string(),
            segments,
        })
    }

    fn segment(part: &str) -> Result<Segment, PatternError> {
        if part.is_empty() {
            return Err(PatternError::EmptySegment);
        }
        if part == "*" {
            return Ok(Segment::CatchAll {
                name: None,
                min_one: false,
            });
        }
        let Some(name) = part.strip_prefix(':') else {
            return Ok(Segment::Literal(part.to_string()));
        };
        let (name, catch_all) = if let Some(n) = name.strip_suffix('*') {
            (n, Some(false))
        } else if let Some(n) = name.strip_suffix('+') {
            (n, Some(true))
        } else {
            (name, None)
        };
        if name.is_empty() {
            return Err(PatternError::UnnamedParam);
        }
        if !valid_name(name) {
            return Err(PatternError::BadParamName(name.to_string()));
        }
        Ok(match catch_all {
            Some(min_one) => Segment::CatchAll {
                name: Some(name.to_string()),
                min_one,
            },
            None => Segment::Param(name.to_string()),
        })
    }

    /// The pattern as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Names of the params this pattern captures, in order (the anonymous `*` has none).
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) => Some(n.as_str()),
            Segment::CatchAll { name, .. } => name.as_deref(),
            Segment::Literal(_) => None,
        })
    }

    /// Whether this pattern has an anonymous `*` segment (which cannot be used in a template).
    pub fn has_anonymous_catch_all(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::CatchAll { name: None, .. }))
    }

    /// Match a request path (no query string). Named segment `:id` matches one non-empty segment;
    /// `:name*` matches the rest (zero or more segments, value without leading slash, e.g. "a/b");
    /// `:name+` one or more; a bare `*` is an anonymous catch-all. Matching is exact otherwise
    /// (a trailing slash matters only as Next.js does it: treat "/a/" and "/a" as the same path).
    /// Segments are compared as sent: percent-encoding is neither decoded nor required.
    pub fn matches<'a>(&'a self, path: &'a str) -> Option<Params<'a>> {
        let body = path.strip_prefix('/')?;
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut rest = if body.is_empty() { None } else { Some(body) };
        let mut params = Params::default();
        for segment in &self.segments {
            if let Segment::CatchAll { name, min_one } = segment {
                let value = rest.unwrap_or("");
                if *min_one && value.is_empty() {
                    return None;
                }
                if let Some(name) = name {
                    params.push(name, value);
                }
                return Some(params);
            }
            let current = rest?;
            let (head, tail) = match current.find('/') {
                Some(i) => (&current[..i], Some(&current[i + 1..])),
                None => (current, None),
            };
            match segment {
                Segment::Literal(lit) if lit == head => {}
                Segment::Param(name) if !head.is_empty() => {
                    params.push(name, head);
                }
                _ => return None,
            }
            rest = tail;
        }
        rest.is_none().then_some(params)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

/// Params captured by a match: up to [`MAX_PARAMS`] `(name, value)` pairs in fixed arrays, no heap.
#[derive(Clone, Copy, Debug, Default)]
pub struct Params<'a> {
    pairs: [(&'a str, &'a str); MAX_PARAMS],
    len: usize,
}

impl<'a> Params<'a> {
    /// Add a `(name, value)` pair (e.g. to fill a warm template by hand); `false` when full.
    pub fn push(&mut self, name: &'a str, value: &'a str) -> bool {
        match self.pairs.get_mut(self.len) {
            Some(slot) => {
                *slot = (name, value);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The value captured for `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// All `(name, value)` pairs in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.pairs.into_iter().take(self.len)
    }

    /// Number of captured params.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Fill a destination path template ("/api/:path*", "/v2/:id") from params, appending to `out`.
/// A missing param fills as empty; an empty catch-all drops its slash ("/api/:path*" -> "/api").
pub fn fill_path(template: &Pattern, params: &Params<'_>, out: &mut String) {
    let start = out.len();
    for segment in &template.segments {
        let value = match segment {
            Segment::Literal(lit) => lit.as_str(),
            Segment::Param(name) => params.get(name).unwrap_or(""),
            Segment::CatchAll { name, .. } => {
                name.as_deref().and_then(|n| params.get(n)).unwrap_or("")
            }
        };
        if matches!(segment, Segment::CatchAll { .. }) && value.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(value);
    }
    if out.len() == start {
        out.push('/');
    }
}

/// A compiled brace template: a tag such as `contractor:{id}` or a warm URL such as
/// `/api/contractors/{id}/bundle`, filled from captured params by [`Template::fill`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Literal(String),
    Name(String),
}

impl Template {
    /// Compile a brace template, checking that braces balance and every `{}` has a name.
    pub fn parse(src: &str) -> Result<Template, PatternError> {
        let mut parts = Vec::new();
        let mut rest = src;
        loop {
            match (rest.find('{'), rest.find('}')) {
                (None, None) => break,
                (Some(o), Some(c)) if o < c => {
                    let name = &rest[o + 1..c];
                    if name.contains('{') {
                        return Err(PatternError::UnbalancedBraces(src.to_string()));
                    }
                    if name.is_empty() {
                        return Err(PatternError::EmptyBraces(src.to_string()));
                    }
                    if o > 0 {
                        parts.push(TemplatePart::Literal(rest[..o].to_string()));
                    }
                    parts.push(TemplatePart::Name(name.to_string()));
                    rest = &rest[c + 1..];
                }
                _ => return Err(PatternError::UnbalancedBraces(src.to_string())),
            }
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Literal(rest.to_string()));
        }
        Ok(Template {
            source: src.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The `{name}`s the template uses, in order (repeats included).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Name(n) => Some(n.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// Fill the template from `params`. A `{name}` with no such param is left as written, so a
    /// filled tag can never collide with a real one.
    pub fn fill(&self, params: &Params<'_>) -> String {
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                TemplatePart::Literal(l) => out.push_str(l),
                TemplatePart::Name(n) => match params.get(n) {
                    Some(value) => out.push_str(value),
                    None => {
                        out.push('{');
                        out.push_str(n);
                        out.push('}');
                    }
                },
            }
        }
        out
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

/// Compiled values compare equal to the text they were compiled from.
impl PartialEq<&str> for Template {
    fn eq(&self, other: &&str) -> bool {
        self.source == *other
    }
}

/// Compiled values compare equal to the text they were compiled from.
impl PartialEq<&str> for Pattern {
    fn eq(&self, other: &&str) -> bool {
        self.source == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m<'a>(p: &'a Pattern, path: &'a str) -> Option<Vec<(&'a str, &'a str)>> {
        p.matches(path).map(|ps| ps.iter().collect())
    }

    #[test]
    fn named_segment_matches_one_non_empty_segment() {
        let p = Pattern::parse("/api/contractors/:id/bundle").unwrap();
        assert_eq!(
            m(&p, "/api/contractors/42/bundle"),
            Some(vec![("id", "42")])
        );
        assert_eq!(m(&p, "/api/contractors//bundle"), None);
        assert_eq!(m(&p, "/api/contractors/42"), None);
        assert_eq!(m(&p, "/api/contractors/42/bundle/x"), None);
        assert_eq!(p.param_names().collect::<Vec<_>>(), ["id"]);
        assert_eq!(p.source(), "/api/contractors/:id/bundle");
    }

    #[test]
    fn trailing_slash_is_ignored() {
        let p = Pattern::parse("/a/b").unwrap();
        assert!(p.matches("/a/b/").is_some());
        assert!(p.matches("/a/b").is_some());
        let p = Pattern::parse("/a/b/").unwrap();
        assert!(p.matches("/a/b").is_some());
    }

    #[test]
    fn root_pattern_matches_only_root() {
        let p = Pattern::parse("/").unwrap();
        assert!(p.matches("/").is_some());
        assert!(p.matches("/x").is_none());
        assert!(p.matches("").is_none());
    }

    #[test]
    fn star_catch_all_takes_zero_one_or_many_segments() {
        let p = Pattern::parse("/api/:path*").unwrap();
        assert_eq!(m(&p, "/api"), Some(vec![("path", "")]));
        assert_eq!(m(&p, "/api/"), Some(vec![("path", "")]));
        assert_eq!(m(&p, "/api/a"), Some(vec![("path", "a")]));
        assert_eq!(m(&p, "/api/a/b/c"), Some(vec![("path", "a/b/c")]));
        assert_eq!(m(&p, "/other/a"), None);
    }

    #[test]
    fn plus_catch_all_needs_one_segment() {
        let p = Pattern::parse("/files/:rest+").unwrap();
        assert_eq!(m(&p, "/files"), None);
        assert_eq!(m(&p, "/files/a/b"), Some(vec![("rest", "a/b")]));
    }

    #[test]
    fn anonymous_star_captures_nothing() {
        let p = Pattern::parse("/api/admin/*").unwrap();
        assert_eq!(m(&p, "/api/admin/users/1"), Some(vec![]));
        assert_eq!(m(&p, "/api/admin"), Some(vec![]));
        assert!(p.has_anonymous_catch_all());
        assert_eq!(p.param_names().count(), 0);
    }

    #[test]
    fn percent_encoded_segments_pass_through_untouched() {
        let p = Pattern::parse("/u/:name/:rest*").unwrap();
        let ps = p.matches("/u/a%2Fb/c%20d/e").unwrap();
        assert_eq!(ps.get("name"), Some("a%2Fb"));
        assert_eq!(ps.get("rest"), Some("c%20d/e"));
        assert!(Pattern::parse("/caf%C3%A9")
            .unwrap()
            .matches("/café")
            .is_none());
    }

    #[test]
    fn parse_errors_are_clear() {
        let cases = [
            ("api", PatternError::MissingLeadingSlash),
            ("/a//b", PatternError::EmptySegment),
            ("/a/:", PatternError::UnnamedParam),
            ("/a/:*", PatternError::UnnamedParam),
            ("/a/:b-c", PatternError::BadParamName("b-c".into())),
            ("/:id/:id", PatternError::DuplicateParam("id".into())),
            ("/:p*/x", PatternError::CatchAllNotLast(":p*".into())),
            ("/*/x", PatternError::CatchAllNotLast("*".into())),
        ];
        for (src, err) in cases {
            assert_eq!(Pattern::parse(src), Err(err), "{src}");
        }
        assert_eq!(
            PatternError::UnnamedParam.to_string(),
            "segment ':' has no name"
        );
    }

    #[test]
    fn more_than_max_params_is_rejected() {
        let ok = (0..MAX_PARAMS)
            .map(|i| format!("/:p{i}"))
            .collect::<String>();
        assert!(Pattern::parse(&ok).is_ok());
        let too_many = format!("{ok}/:extra");
        assert_eq!(Pattern::parse(&too_many), Err(PatternError::TooManyParams));
        let p = Pattern::parse(&ok).unwrap();
        let path = (0..MAX_PARAMS).map(|i| format!("/{i}")).collect::<String>();
        assert_eq!(p.matches(&path).unwrap().len(), MAX_PARAMS);
    }

    #[test]
    fn params_push_stops_when_full() {
        let mut ps = Params::default();
        assert!(ps.is_empty());
        for _ in 0..MAX_PARAMS {
            assert!(ps.push("a", "b"));
        }
        assert!(!ps.push("a", "b"));
        assert_eq!(ps.len(), MAX_PARAMS);
    }

    #[test]
    fn fill_path_uses_params() {
        let src = Pattern::parse("/api/:path*").unwrap();
        let dst = Pattern::parse("/v2/:path*").unwrap();
        let mut out = String::new();
        fill_path(&dst, &src.matches("/api/a/b").unwrap(), &mut out);
        assert_eq!(out, "/v2/a/b");
        out.clear();
        fill_path(&dst, &src.matches("/api").unwrap(), &mut out);
        assert_eq!(out, "/v2");
        out.clear();
        let only = Pattern::parse("/:path*").unwrap();
        fill_path(&only, &Params::default(), &mut out);
        assert_eq!(out, "/");
        out.clear();
        let id = Pattern::parse("/c/:id/x").unwrap();
        let mut ps = Params::default();
        ps.push("id", "7");
        fill_path(&id, &ps, &mut out);
        assert_eq!(out, "/c/7/x");
    }

    #[test]
    fn templates_fill_known_names_and_keep_unknown() {
        let mut ps = Params::default();
        ps.push("id", "42");
        let fill = |t: &str| Template::parse(t).expect("template").fill(&ps);
        assert_eq!(fill("contractor:{id}"), "contractor:42");
        assert_eq!(fill("/c/{id}/b/{id}"), "/c/42/b/42");
        assert_eq!(fill("x:{other}"), "x:{other}");
        assert_eq!(fill("plain"), "plain");
        assert_eq!(
            Template::parse("contractor:{id}").expect("t"),
            "contractor:{id}"
        );
    }

    #[test]
    fn templates_check_balance() {
        let names =
            |t: &str| Template::parse(t).map(|t| t.names().map(String::from).collect::<Vec<_>>());
        assert_eq!(names("a:{id}:{x}").unwrap(), ["id", "x"]);
        assert!(names("none").unwrap().is_empty());
        assert!(names("open{id").is_err());
        assert!(names("a:{id").is_err());
        assert!(names("a:}id{").is_err());
        assert!(names("a:{}").is_err());
        assert!(names("a:{{id}}").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Parsing and matching never panic, and what a match captures is part of the path.
        #[test]
        fn patterns_never_panic_and_capture_pieces_of_the_path(
            pattern in "(/(:?[a-z]{1,3}|\\*|:[a-z]{1,3}[*+]?)){0,5}/?",
            path in "(/[a-z0-9%.]{0,4}){0,6}/?",
        ) {
            let pattern = if pattern.is_empty() { "/".to_owned() } else { pattern };
            let path = if path.is_empty() { "/".to_owned() } else { path };
            if let Ok(p) = Pattern::parse(&pattern) {
                if let Some(params) = p.matches(&path) {
                    for (_, value) in params.iter() {
                        prop_assert!(path.contains(value));
                    }
                    let mut filled = String::new();
                    fill_path(&p, &params, &mut filled);
                    prop_assert!(filled.starts_with('/'));
                }
            }
            let _ = Template::parse(&path);
        }

        /// A pattern made only of literal segments matches exactly its own path.
        #[test]
        fn literal_patterns_match_themselves(segments in proptest::collection::vec("[a-z0-9]{1,5}", 0..5)) {
            let path = format!("/{}", segments.join("/"));
            let p = Pattern::parse(&path).expect("literal pattern");
            prop_assert!(p.matches(&path).is_some());
            let longer = format!("{path}/x");
            prop_assert!(p.matches(&longer).is_none() || path == "/");
        }
    }
}
