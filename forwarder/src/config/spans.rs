//! Reading the file with spans: every key and value keeps its place in the text, so that
//! an error names the file, line, column and field. [`Source`] turns a byte offset into
//! that place; [`Section`] is one table of the file with typed reads of its keys that fail
//! with "expected ...; found ..." messages. What a key's value must be is validation's
//! business (`validate/`); this file only knows TOML types and places.

use super::error::{ConfigCause, ConfigError};
use std::ops::{Range, RangeInclusive};
use toml_edit::{Item, Key, TableLike, TomlError, Value};

/// A byte range of the file's text.
pub(super) type Span = Range<usize>;

/// Positions in the source text, for error messages.
pub(super) struct Source<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
}

impl Source<'_> {
    pub(super) fn error(&self, span: Span, field: &str, message: impl Into<String>) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ConfigError {
            file: self.file.to_string(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            field: field.to_string(),
            message: message.into(),
            cause: None,
        }
    }

    /// A TOML syntax error: the parser names no field, so the key written on that line
    /// (qualified by the table it is in) stands for it.
    pub(super) fn syntax_error(&self, e: TomlError) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let field = self.key_at(span.start);
        self.error(span, &field, "invalid TOML").because(ConfigCause::Toml(Box::new(e)))
    }

    fn key_at(&self, offset: usize) -> String {
        let offset = offset.min(self.text.len());
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next().unwrap_or("").trim();
        let header = |l: &str| l.trim().trim_matches(|c| c == '[' || c == ']').trim().to_string();
        if line.starts_with('[') {
            return header(line);
        }
        let key = line.split_once('=').map_or(line, |(k, _)| k).trim().trim_matches('"');
        let table = self.text[..start].lines().rev().find(|l| l.trim_start().starts_with('['));
        match (table.map(header), key.is_empty()) {
            (Some(t), false) => format!("{t}.{key}"),
            (Some(t), true) => t,
            (None, false) => key.to_string(),
            (None, true) => "-".to_string(),
        }
    }

    /// The text at `span` as written, for "found ...": its first line, shortened.
    fn written(&self, span: &Span) -> String {
        let s = self.text.get(span.clone()).unwrap_or("").lines().next().unwrap_or("").trim();
        if s.chars().count() > 40 {
            format!("{}...", s.chars().take(40).collect::<String>())
        } else {
            s.to_string()
        }
    }

    /// "a string \"x\"", "an integer 5", "a table": what was written where something of
    /// another type was expected.
    pub(super) fn found(&self, item: &Item, span: &Span) -> String {
        let kind = match item {
            Item::None => return "nothing".to_string(),
            Item::Table(_) => return "a table".to_string(),
            Item::ArrayOfTables(_) => return "an array of tables".to_string(),
            Item::Value(v) => match v {
                Value::String(_) => "a string",
                Value::Integer(_) => "an integer",
                Value::Float(_) => "a float",
                Value::Boolean(_) => "a boolean",
                Value::Datetime(_) => "a date-time",
                Value::Array(_) => "an array",
                Value::InlineTable(_) => "an inline table",
            },
        };
        format!("{kind} {}", self.written(span))
    }
}

/// One table of the file: the top level, `[timeouts]` or one `[[rule]]`.
#[derive(Clone, Copy)]
pub(super) struct Section<'a> {
    pub(super) src: &'a Source<'a>,
    pub(super) table: &'a dyn TableLike,
    /// How its keys are named in errors: "", "timeouts." or "rule.".
    pub(super) prefix: &'static str,
    /// Where it starts (its header), for missing keys.
    pub(super) at: usize,
}

impl<'a> Section<'a> {
    fn field(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(super) fn error(&self, span: Span, key: &str, message: impl Into<String>) -> ConfigError {
        self.src.error(span, &self.field(key), message)
    }

    pub(super) fn deny_unknown(&self, known: &[&str]) -> Result<(), ConfigError> {
        let table: &'a dyn TableLike = self.table;
        for (key, item) in table.iter() {
            if !known.contains(&key) {
                let span = table
                    .key(key)
                    .and_then(Key::span)
                    .or_else(|| item.span())
                    .unwrap_or(self.at..self.at);
                return Err(self.error(
                    span,
                    key,
                    format!("unknown key; expected one of {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn get(&self, key: &str) -> Option<(Span, &'a Item)> {
        let table: &'a dyn TableLike = self.table;
        let (k, item) = table.get_key_value(key)?;
        let span = item.span().or_else(|| k.span()).unwrap_or(self.at..self.at);
        Some((span, item))
    }

    /// The table `[key]` as a section whose keys errors name `prefix` + key, every key of it
    /// one of `known`; `None` when absent. Not a table: an error saying `expected`.
    pub(super) fn table(
        &self,
        key: &str,
        prefix: &'static str,
        known: &[&str],
        expected: &str,
    ) -> Result<Option<Section<'a>>, ConfigError> {
        let Some((span, item)) = self.get(key) else { return Ok(None) };
        let Some(table) = item.as_table_like() else {
            return Err(self.wrong_type(key, span, item, expected));
        };
        let section = Section { src: self.src, table, prefix, at: span.start };
        section.deny_unknown(known)?;
        Ok(Some(section))
    }

    pub(super) fn missing(&self, key: &str, expected: &str) -> ConfigError {
        self.error(self.at..self.at, key, format!("missing key; {expected}"))
    }

    /// A value of the right type but not one of the allowed ones.
    pub(super) fn bad(&self, key: &str, span: Span, expected: &str) -> ConfigError {
        let found = self.src.written(&span);
        self.error(span, key, format!("{expected}; found {found}"))
    }

    /// A value of the wrong type.
    pub(super) fn wrong_type(
        &self,
        key: &str,
        span: Span,
        item: &Item,
        expected: &str,
    ) -> ConfigError {
        let found = self.src.found(item, &span);
        self.error(span, key, format!("{expected}; found {found}"))
    }

    pub(super) fn string(
        &self,
        key: &str,
        expected: &str,
    ) -> Result<Option<(&'a str, Span)>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some((span, item)) => match item.as_str() {
                Some(s) => Ok(Some((s, span))),
                None => Err(self.wrong_type(key, span, item, expected)),
            },
        }
    }

    pub(super) fn integer(
        &self,
        key: &str,
        allowed: RangeInclusive<i64>,
        expected: &str,
    ) -> Result<Option<(i64, Span)>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some((span, item)) => match item.as_integer() {
                Some(n) if allowed.contains(&n) => Ok(Some((n, span))),
                Some(_) => Err(self.bad(key, span, expected)),
                None => Err(self.wrong_type(key, span, item, expected)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_text::{at, err, BASE};

    #[test]
    fn errors_name_line_column_and_field() {
        let e = err(&format!("{BASE}snat_ports = \"5-1\"\n"));
        assert_eq!((e.line, e.field.as_str()), (2, "snat_ports"));
        let e = err(&format!("{BASE}bogus = 1\n"));
        assert_eq!((e.line, e.field.as_str()), (2, "bogus"), "{e}");
        let e = err(&format!("{BASE}max_flows = \"many\"\n"));
        assert_eq!((e.line, e.field.as_str()), (2, "max_flows"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nname = \"a\"\nlisten = 9092\ntarget = \"1.2.3.4:1\"\n[[rule]]\nname = \"b\"\nlisten = 9092\ntarget = \"1.2.3.4:1\"\n"
        ));
        assert_eq!((e.line, e.column, e.field.as_str()), (8, 10, "rule.listen"), "{e}");
        let e =
            err(&format!("{BASE}[[rule]]\nname = \"a\"\nlisten = 45000\ntarget = \"1.2.3.4:1\"\n"));
        assert!(e.message.contains("inside snat_ports"), "{e}");
        let e = err(&format!("{BASE}allowed_sources = [\"10.0.0.0/33\"]\n"));
        assert_eq!((e.line, e.field.as_str()), (2, "allowed_sources"));
        assert!(e.to_string().starts_with("f.toml:2:"), "{e}");
    }

    const RULE: &str = "[[rule]]\nname = \"a\"\nlisten = 9092\ntarget = \"10.0.0.9:1\"\n";

    #[test]
    fn types_and_unknown_keys_in_every_table() {
        let e = err(&format!("{BASE}[timeouts]\nsyn = \"1s\"\nidle = \"1s\"\n"));
        assert_eq!(at(&e), (4, 1, "timeouts.idle"), "{e}");
        let e = err(&format!("{BASE}{RULE}weight = 1\n"));
        assert_eq!(at(&e), (6, 1, "rule.weight"), "{e}");
        assert!(e.message.contains("expected one of name, listen, target"), "{e}");
        let e = err("interface = 5\n");
        assert_eq!(at(&e), (1, 13, "interface"), "{e}");
        assert!(e.message.contains("found an integer 5"), "{e}");
        let e = err(&format!("{BASE}timeouts = 5\n"));
        assert_eq!(at(&e), (2, 12, "timeouts"), "{e}");
        let e = err(&format!("{BASE}[rule]\nname = \"a\"\n"));
        assert_eq!(at(&e), (2, 1, "rule"), "{e}");
        let e = err(&format!("{BASE}[timeouts]\nsyn = 60\n"));
        assert_eq!(at(&e), (3, 7, "timeouts.syn"), "{e}");
        // A dotted key and inline tables are the same tables written differently.
        let e = err(&format!("{BASE}timeouts.syn = \"0s\"\n"));
        assert_eq!(at(&e), (2, 16, "timeouts.syn"), "{e}");
        let e = err(&format!(
            "{BASE}rule = [{{ name = \"a\", listen = 9092, target = \"10.0.0.9:1\" }},\n  {{ name = \"b\", listen = 9092, target = \"10.0.0.9:1\" }}]\n"
        ));
        assert_eq!(at(&e), (3, 26, "rule.listen"), "{e}");
    }

    #[test]
    fn missing_keys() {
        let e = err("mode = \"tc\"\n");
        assert_eq!(at(&e), (1, 1, "interface"), "{e}");
        let e = err(&format!("{BASE}\n[[rule]]\nname = \"a\"\nlisten = 9092\n"));
        assert_eq!(at(&e), (3, 1, "rule.target"), "{e}");
        assert!(e.message.starts_with("missing key"), "{e}");
    }
}
