//! The write-back of `rule add / remove`: rule changes from the CLI, written into the
//! config file's text with toml_edit so the operator's comments, order and layout stay as
//! they were. The daemon validates the new text whole before it replaces the file
//! ([`file_replace`](super::file_replace)).

use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};

/// Why a rule change cannot be written into the text; the TOML parser's error is the
/// source of `Parse` (print the chain, `crate::error::chain`, to show it).
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the config file is not valid TOML")]
    Parse(#[from] toml_edit::TomlError),
    #[error("`rule` in the config file is not an array of [[rule]] tables")]
    NotRules,
    #[error("there is no rule named {0:?}")]
    NoSuchRule(String),
}

/// `text` with a `[[rule]]` appended after the last one.
pub fn add(text: &str, name: &str, listen: u16, target: &str) -> Result<String, EditError> {
    let mut doc: DocumentMut = text.parse()?;
    let mut t = Table::new();
    t["name"] = value(name);
    t["listen"] = value(listen as i64);
    t["target"] = value(target);
    match doc.get_mut("rule") {
        None => {
            let mut a = ArrayOfTables::new();
            a.push(t);
            doc.insert("rule", Item::ArrayOfTables(a));
        }
        Some(item) => item.as_array_of_tables_mut().ok_or(EditError::NotRules)?.push(t),
    }
    Ok(doc.to_string())
}

/// `text` without the `[[rule]]` named `name` (its own comment lines go with it).
pub fn remove(text: &str, name: &str) -> Result<String, EditError> {
    let mut doc: DocumentMut = text.parse()?;
    let rules = doc
        .get_mut("rule")
        .ok_or_else(|| EditError::NoSuchRule(name.to_string()))?
        .as_array_of_tables_mut()
        .ok_or(EditError::NotRules)?;
    let index = rules
        .iter()
        .position(|t| t.get("name").and_then(|v| v.as_str()) == Some(name))
        .ok_or_else(|| EditError::NoSuchRule(name.to_string()))?;
    rules.remove(index);
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# NAT VM 1\ninterface = \"eth0\" # the LB side\n\n# brokers\n[[rule]]\nname = \"b1\" # first\nlisten = 9092\ntarget = \"10.0.0.1:9092\"\n\n[[rule]]\nname = \"b2\"\nlisten = 9093\ntarget = \"10.0.0.2:9092\"\n";

    #[test]
    fn add_keeps_comments_and_appends() {
        let out = add(TEXT, "b3", 9094, "broker3.corp:9092").unwrap();
        assert!(out.starts_with(TEXT.trim_end()), "{out}");
        assert!(
            out.contains(
                "[[rule]]\nname = \"b3\"\nlisten = 9094\ntarget = \"broker3.corp:9092\"\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn add_to_a_file_without_rules() {
        let out = add("interface = \"eth0\"\n", "b1", 9092, "10.0.0.1:9092").unwrap();
        assert!(out.contains("[[rule]]") && out.contains("name = \"b1\""), "{out}");
    }

    #[test]
    fn remove_keeps_the_others_and_their_comments() {
        let out = remove(TEXT, "b2").unwrap();
        assert!(!out.contains("b2"), "{out}");
        assert!(out.contains("# NAT VM 1") && out.contains("# the LB side"), "{out}");
        assert!(out.contains("name = \"b1\" # first"), "{out}");
        assert!(matches!(remove(TEXT, "nope"), Err(EditError::NoSuchRule(_))));
    }

    #[test]
    fn a_file_that_is_not_toml_keeps_the_parser_error_as_the_source() {
        let parser = "mode = \"auto\n".parse::<DocumentMut>().unwrap_err();
        let e = add("mode = \"auto\n", "b1", 9092, "10.0.0.1:9092").unwrap_err();
        assert!(matches!(&e, EditError::Parse(p) if *p == parser), "{e:?}");
        // As the daemon answers `rule add`: the text it gave when the cause was in Display.
        let shown = crate::error::chain(&e);
        assert_eq!(shown, format!("the config file is not valid TOML: {parser}"));
    }
}
