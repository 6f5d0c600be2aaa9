//! The module layers that `docs/design.md` draws hold in the code: every top-level module of
//! `src/` imports (`crate::x`, outside unit tests and comments) only modules of a layer below
//! its own, so there are no cycles, and every module is in exactly one layer.
//!
//! The layers are read from the block between `<!-- layers -->` and `<!-- /layers -->` in
//! `docs/design.md` (lines `N  module, module  description`, layer 0 at the bottom). A failure lists
//! every upward or sideways import at once, with the files that make it. Run with
//! `cargo test --test it module_layers -- --nocapture` to print the graph as the code has it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Module -> layer, from design.md.
fn layers() -> BTreeMap<String, usize> {
    let design = fs::read_to_string(Path::new(ROOT).join("docs/design.md")).expect("design.md");
    let block = design
        .split("<!-- layers -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /layers -->").next())
        .expect("docs/design.md has a <!-- layers --> ... <!-- /layers --> block");
    let mut layers = BTreeMap::new();
    for line in block.lines() {
        // `N  a, b, c    description`: the modules run up to the first gap of two spaces
        let line = line.trim_start();
        let Some((n, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else {
            continue;
        };
        let rest = rest.trim_start();
        let modules = rest.split("  ").next().unwrap_or("");
        for module in modules.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            assert!(
                layers.insert(module.to_owned(), n).is_none(),
                "design.md lists `{module}` in two layers"
            );
        }
    }
    layers
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None`: the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The code of a file that counts: up to its unit tests, without comment lines.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `code` names through `crate::`.
fn imported(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c}`: the first segment of each top-level item
            let mut depth = 0;
            let mut item_start = true;
            for (j, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        found.insert(ident(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

#[test]
fn every_module_imports_only_layers_below_its_own() {
    let layers = layers();
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();

    // module -> imported module -> files
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let entry = graph.entry(module.clone()).or_default();
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue; // a module's unit tests, in a file of their own
        }
        let text = fs::read_to_string(file).expect("read source");
        for target in imported(&code(&text)) {
            if target != module && target != "self" && target != "super" {
                let rel = file
                    .strip_prefix(ROOT)
                    .unwrap_or(file)
                    .display()
                    .to_string();
                entry.entry(target).or_default().insert(rel);
            }
        }
    }

    for module in graph.keys() {
        if !layers.contains_key(module) {
            problems.push(format!("src/{module} is in no layer of docs/design.md"));
        }
    }
    for module in layers.keys() {
        if !graph.contains_key(module) {
            problems.push(format!(
                "docs/design.md lists `{module}`, which src/ does not have"
            ));
        }
    }
    let mut by_layer: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (module, targets) in &graph {
        let Some(&own) = layers.get(module) else {
            continue;
        };
        let below: Vec<&str> = targets.keys().map(String::as_str).collect();
        by_layer
            .entry(own)
            .or_default()
            .push(format!("{module} -> {}", below.join(", ")));
        for (target, files) in targets {
            match layers.get(target) {
                Some(&t) if t < own => {}
                Some(&t) => problems.push(format!(
                    "{module} (layer {own}) imports {target} (layer {t}): {}",
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
                None => {}
            }
        }
    }
    for (layer, modules) in by_layer.iter().rev() {
        for m in modules {
            println!("{layer:>2}  {m}");
        }
    }
    assert!(
        problems.is_empty(),
        "the code breaks docs/design.md's layers:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_scanner_reads_grouped_and_plain_imports_and_skips_comments_and_tests() {
    let text = "use crate::{bench, purge::x, warm::{a, b}};\n\
                /// see [`crate::server`]\n\
                let a = crate::config::X; // crate::live\n\
                #[cfg(test)]\nuse crate::admin;";
    let found: Vec<String> = imported(&code(text)).into_iter().collect();
    assert_eq!(found, ["bench", "config", "purge", "warm"]);
}
