//! The parsed TOML document, walked table by table with key paths and line numbers.
//!
//! We read the file with `toml_edit` (which keeps byte spans for keys, values and table
//! headers) instead of deriving serde structs: serde stops at the first problem, while this
//! walker records every problem in [`Doc::errors`] and carries on with defaults. Unknown keys
//! are found by [`Table::finish`], which knows which keys the caller asked for.

use super::units::{parse_duration, parse_size};
use super::{ConfigError, KeyLines};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::Range;
use std::time::Duration;
use toml_edit::{ArrayOfTables, Item, TableLike, Value};

/// The source text, the problems found so far, and the line of every key read.
pub(crate) struct Doc<'t> {
    text: &'t str,
    pub errors: Vec<ConfigError>,
    lines: RefCell<BTreeMap<String, usize>>,
}

impl<'t> Doc<'t> {
    pub fn new(text: &'t str) -> Self {
        Self {
            text,
            errors: Vec::new(),
            lines: RefCell::new(BTreeMap::new()),
        }
    }

    /// The line of every key path read so far.
    pub fn take_lines(&self) -> KeyLines {
        KeyLines(self.lines.take())
    }

    /// 1-based line of a byte offset span.
    pub fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        let start = span?.start.min(self.text.len());
        Some(
            self.text.as_bytes()[..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1,
        )
    }

    /// Record a problem.
    pub fn error(&mut self, path: impl Into<String>, line: Option<usize>, message: impl Display) {
        self.errors.push(ConfigError {
            path: path.into(),
            line,
            message: message.to_string(),
        });
    }
}

/// What a key holds, with inline tables treated like tables.
#[derive(Clone, Copy)]
enum Node<'n> {
    Value(&'n Value),
    Table(&'n dyn TableLike),
    Tables(&'n ArrayOfTables),
    Nothing,
}

impl<'n> Node<'n> {
    fn of_item(item: &'n Item) -> Self {
        match item {
            Item::Value(v) => Self::of_value(v),
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::None => Node::Nothing,
        }
    }

    fn of_value(value: &'n Value) -> Self {
        match value {
            Value::InlineTable(t) => Node::Table(t),
            v => Node::Value(v),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Node::Value(Value::String(_)) => "a string",
            Node::Value(Value::Integer(_)) => "an integer",
            Node::Value(Value::Float(_)) => "a float",
            Node::Value(Value::Boolean(_)) => "a boolean",
            Node::Value(Value::Datetime(_)) => "a datetime",
            Node::Value(Value::Array(_)) | Node::Tables(_) => "an array",
            Node::Value(Value::InlineTable(_)) | Node::Table(_) => "a table",
            Node::Nothing => "nothing",
        }
    }
}

/// One value in the document, with its key path (`routes[2].ttl`) and line.
#[derive(Clone)]
pub(crate) struct Entry<'n> {
    pub path: String,
    pub line: Option<usize>,
    node: Node<'n>,
}

impl<'n> Entry<'n> {
    /// Record a problem about this value.
    pub fn error(&self, doc: &mut Doc<'_>, message: impl Display) {
        doc.error(self.path.clone(), self.line, message);
    }

    fn wrong_type<T>(&self, doc: &mut Doc<'_>, expected: &str) -> Option<T> {
        self.error(
            doc,
            format!("expected {expected}, found {}", self.node.kind()),
        );
        None
    }

    /// The string, or a type error.
    pub fn str(&self, doc: &mut Doc<'_>) -> Option<&'n str> {
        match self.node {
            Node::Value(Value::String(s)) => Some(s.value().as_str()),
            _ => self.wrong_type(doc, "a string"),
        }
    }

    /// The boolean, or a type error.
    pub fn bool(&self, doc: &mut Doc<'_>) -> Option<bool> {
        match self.node {
            Node::Value(Value::Boolean(b)) => Some(*b.value()),
            _ => self.wrong_type(doc, "a boolean"),
        }
    }

    /// The integer, or a type error.
    pub fn int(&self, doc: &mut Doc<'_>) -> Option<i64> {
        match self.node {
            Node::Value(Value::Integer(i)) => Some(*i.value()),
            _ => self.wrong_type(doc, "an integer"),
        }
    }

    /// An integer in `min..=max`, or an error naming the range.
    pub fn int_in<T: TryFrom<i64>>(&self, doc: &mut Doc<'_>, min: i64, max: i64) -> Option<T> {
        let n = self.int(doc)?;
        match T::try_from(n) {
            Ok(v) if (min..=max).contains(&n) => Some(v),
            _ => {
                self.error(doc, format!("{n} is out of range: expected {min}..={max}"));
                None
            }
        }
    }

    /// The string passed through `parse`, whose error becomes the message.
    pub fn parsed<T, E: Display>(
        &self,
        doc: &mut Doc<'_>,
        parse: impl FnOnce(&'n str) -> Result<T, E>,
    ) -> Option<T> {
        let s = self.str(doc)?;
        parse(s).map_err(|e| self.error(doc, e)).ok()
    }

    /// A duration string like `"5s"`.
    pub fn duration(&self, doc: &mut Doc<'_>) -> Option<Duration> {
        self.parsed(doc, parse_duration)
    }

    /// A duration that must not be zero.
    pub fn positive_duration(&self, doc: &mut Doc<'_>) -> Option<Duration> {
        let d = self.duration(doc)?;
        if d.is_zero() {
            self.error(doc, "must be greater than 0");
            return None;
        }
        Some(d)
    }

    /// A size string like `"8MiB"` or a plain integer of bytes.
    pub fn size(&self, doc: &mut Doc<'_>) -> Option<u64> {
        match self.node {
            Node::Value(Value::Integer(_)) => self.int_in(doc, 0, i64::MAX),
            Node::Value(Value::String(_)) => self.parsed(doc, parse_size),
            _ => self.wrong_type(doc, "a size like \"8MiB\" or a number of bytes"),
        }
    }

    /// A size, or the string `"off"` (`Some(None)`).
    pub fn size_or_off(&self, doc: &mut Doc<'_>) -> Option<Option<u64>> {
        match self.node {
            Node::Value(Value::String(s)) if s.value() == "off" => Some(None),
            Node::Value(Value::Integer(_) | Value::String(_)) => self.size(doc).map(Some),
            _ => self.wrong_type(doc, "a size like \"4KiB\", a number of bytes, or \"off\""),
        }
    }

    /// The elements of an array (of values or of tables), with indexed paths.
    pub fn list(&self, doc: &mut Doc<'_>) -> Option<Vec<Entry<'n>>> {
        let at = |i: usize, line: Option<usize>, node: Node<'n>| Entry {
            path: format!("{}[{i}]", self.path),
            line: line.or(self.line),
            node,
        };
        match self.node {
            Node::Value(Value::Array(a)) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| at(i, doc.line(v.span()), Node::of_value(v)))
                    .collect(),
            ),
            Node::Tables(a) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, t)| at(i, doc.line(t.span()), Node::Table(t)))
                    .collect(),
            ),
            _ => self.wrong_type(doc, "an array"),
        }
    }

    /// An array of strings.
    pub fn strings(&self, doc: &mut Doc<'_>) -> Option<Vec<(String, Entry<'n>)>> {
        let items = self.list(doc)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(s) = item.str(doc) {
                out.push((s.to_string(), item));
            }
        }
        Some(out)
    }

    /// The table, or a type error.
    pub fn table(&self, doc: &mut Doc<'_>) -> Option<Table<'n>> {
        match self.node {
            Node::Table(t) => Some(Table {
                path: self.path.clone(),
                line: self.line,
                table: Some(t),
                used: Vec::new(),
                hidden: Vec::new(),
            }),
            _ => self.wrong_type(doc, "a table"),
        }
    }
}

/// A table being read: remembers which keys were asked for, to report the others.
pub(crate) struct Table<'n> {
    pub path: String,
    pub line: Option<usize>,
    table: Option<&'n dyn TableLike>,
    used: Vec<&'static str>,
    hidden: Vec<&'static str>,
}

impl<'n> Table<'n> {
    /// The document root.
    pub fn root(table: &'n toml_edit::Table) -> Self {
        Self {
            path: String::new(),
            line: None,
            table: Some(table),
            used: Vec::new(),
            hidden: Vec::new(),
        }
    }

    /// A table that is absent from the file (every key takes its default).
    pub fn empty(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            table: None,
            used: Vec::new(),
            hidden: Vec::new(),
        }
    }

    /// The key path of `key` in this table.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value at `key`, if present (and marks `key` as known).
    pub fn get(&mut self, doc: &Doc<'_>, key: &'static str) -> Option<Entry<'n>> {
        self.used.push(key);
        let (k, item) = self.table?.get_key_value(key)?;
        let node = Node::of_item(item);
        let span = k.span().or_else(|| match node {
            Node::Table(_) | Node::Tables(_) => item.span(),
            _ => None,
        });
        let path = self.key_path(key);
        let line = doc.line(span);
        if let Some(line) = line {
            doc.lines.borrow_mut().insert(path.clone(), line);
        }
        Some(Entry { path, line, node })
    }

    /// Report `key` with `message` if present, without listing it among the known keys.
    pub fn forbid(&mut self, doc: &mut Doc<'_>, key: &'static str, message: &str) {
        self.hidden.push(key);
        if let Some(e) = self.get(doc, key) {
            e.error(doc, message);
        }
        self.used.retain(|k| *k != key);
    }

    /// The sub-table at `key`, or an empty one when absent or of the wrong type.
    pub fn table(&mut self, doc: &mut Doc<'_>, key: &'static str) -> Table<'n> {
        self.get(doc, key)
            .and_then(|e| e.table(doc))
            .unwrap_or_else(|| Table::empty(self.key_path(key)))
    }

    /// The value at `key`, or a "missing required key" error.
    pub fn require(&mut self, doc: &mut Doc<'_>, key: &'static str) -> Option<Entry<'n>> {
        let entry = self.get(doc, key);
        if entry.is_none() {
            doc.error(self.key_path(key), self.line, "missing required key");
        }
        entry
    }

    /// Report every key that was never asked for.
    pub fn finish(self, doc: &mut Doc<'_>) {
        let Some(table) = self.table else { return };
        for (key, item) in table.iter() {
            if self.used.contains(&key) || self.hidden.contains(&key) {
                continue;
            }
            let span = table
                .key(key)
                .and_then(|k| k.span())
                .or_else(|| item.span());
            doc.error(
                self.key_path(key),
                doc.line(span),
                format!(
                    "unknown key {key:?}; expected one of: {}",
                    self.used.join(", ")
                ),
            );
        }
    }
}
