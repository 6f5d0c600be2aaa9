//! `[warm]`: the urls and templates warming requests, and its schedule.

use super::*;

/// The shortest `warm.every`.
pub(super) const MIN_WARM_EVERY: Duration = Duration::from_secs(1);

pub(super) fn warm(doc: &mut Doc<'_>, root: &mut Table<'_>, source: Option<&Path>) -> WarmConfig {
    let mut t = root.table(doc, "warm");
    let on_start = t
        .get(doc, "on_start")
        .and_then(|e| e.bool(doc))
        .unwrap_or(false);
    let concurrency = t
        .get(doc, "concurrency")
        .and_then(|e| e.int_in(doc, 1, 1024))
        .unwrap_or(4);
    let rate_per_second = t
        .get(doc, "rate_per_second")
        .and_then(|e| e.int_in(doc, 1, 1_000_000))
        .unwrap_or(50);
    let max_ready_delay = t
        .get(doc, "max_ready_delay")
        .and_then(|e| e.duration(doc))
        .unwrap_or(Duration::from_secs(30));
    let every_entry = t.get(doc, "every");
    let every = every_entry.as_ref().and_then(|e| {
        let d = e.duration(doc)?;
        if d < MIN_WARM_EVERY {
            e.error(doc, "must be at least 1s");
            return None;
        }
        Some(d)
    });
    let jitter_entry = t.get(doc, "jitter");
    let jitter = match (&jitter_entry, every) {
        (Some(e), Some(every)) => e.duration(doc).and_then(|j| {
            if j > every {
                e.error(doc, "must not exceed warm.every");
                None
            } else {
                Some(j)
            }
        }),
        (Some(e), None) => {
            e.error(doc, "needs warm.every");
            None
        }
        (None, Some(every)) => Some(every / 10),
        (None, None) => None,
    }
    .unwrap_or(Duration::ZERO);
    let host = t.get(doc, "host").and_then(|e| {
        e.parsed(doc, |s| {
            let mut normal = String::new();
            crate::normalize::normalize_authority(s, "http", &mut normal)
                .map(|()| s.to_owned())
                .map_err(|_| format!("invalid host {s:?}: expected host[:port]"))
        })
    });
    let urls: Vec<String> = t
        .get(doc, "urls")
        .and_then(|e| e.strings(doc))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(u, e)| e.parsed(doc, |_| absolute_path(&u)))
        .collect();
    let base = source.and_then(Path::parent);
    let mut templates = Vec::new();
    for mut wt in tables(doc, &mut t, "templates") {
        let template = wt.require(doc, "template").and_then(|e| {
            e.parsed(doc, |s| {
                let template = Template::parse(s).map_err(|e| e.to_string())?;
                if template.names().next().is_none() || template.names().any(|n| n != "id") {
                    return Err(format!(
                        "template {s:?} must use {{id}} and no other {{name}}"
                    ));
                }
                absolute_path(s)?;
                Ok(template)
            })
        });
        let ids: Vec<String> = wt
            .get(doc, "ids")
            .and_then(|e| e.strings(doc))
            .map(|list| list.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
        let ids_entry = wt.get(doc, "ids_file");
        let ids_file = ids_entry
            .as_ref()
            .and_then(|e| e.str(doc))
            .map(|f| match base {
                Some(dir) => dir.join(f),
                None => PathBuf::from(f),
            });
        if ids.is_empty() && ids_file.is_none() && ids_entry.is_none() {
            doc.error(wt.path.clone(), wt.line, "needs ids or ids_file");
        }
        wt.finish(doc);
        if let Some(template) = template {
            templates.push(WarmTemplate {
                template,
                ids,
                ids_file,
            });
        }
    }
    if let Some(e) = &every_entry {
        if urls.is_empty() && templates.is_empty() {
            e.error(
                doc,
                "needs warm.urls or [[warm.templates]]: there is nothing to warm",
            );
        }
    }
    t.finish(doc);
    WarmConfig {
        every,
        jitter,
        on_start,
        concurrency,
        rate_per_second,
        max_ready_delay,
        host,
        urls,
        templates,
    }
}
