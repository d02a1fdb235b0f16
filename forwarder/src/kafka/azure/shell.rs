//! `az` commands as words, each a mix of literal text and `${VARIABLE}` references, and
//! their rendering as bash. Literal text can come from the network (a broker's advertised
//! name): it is always quoted so the shell reads it as text, never as code; only the
//! references to the script's own variables expand.

use serde::{Serialize, Serializer};
use std::fmt::Write;

/// One piece of a word.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A variable set at the top of the script.
    Var(String),
}

/// One argument of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word(Vec<Part>);

impl Word {
    /// Literal text, whatever characters it holds.
    pub fn text(s: impl Into<String>) -> Word {
        Word(vec![Part::Text(s.into())])
    }

    /// `template` with each `${NAME}` a reference to one of `vars` (the script's variables);
    /// anything else is literal. Only for templates written here: a name not in `vars` is a
    /// bug, caught by the unit tests through [`Word::variables`].
    pub fn template(template: &str, vars: &[&str]) -> Word {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            let Some(len) = rest[start + 2..].find('}') else { break };
            let name = &rest[start + 2..start + 2 + len];
            let Some(var) = vars.iter().find(|v| **v == name) else {
                panic!("{name} is not one of the script's variables");
            };
            if start > 0 {
                parts.push(Part::Text(rest[..start].into()));
            }
            parts.push(Part::Var(var.to_string()));
            rest = &rest[start + 3 + len..];
        }
        if !rest.is_empty() || parts.is_empty() {
            parts.push(Part::Text(rest.into()));
        }
        Word(parts)
    }

    /// The word with every reference replaced by `value(name)`: what the shell passes on.
    pub fn expand(&self, value: impl Fn(&str) -> String) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Var(v) => value(v),
            })
            .collect()
    }

    /// The word as written in the JSON output: references as `${NAME}`.
    pub fn raw(&self) -> String {
        self.expand(|v| format!("${{{v}}}"))
    }

    pub fn variables(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The word as bash reads it back: text quoted, references in double quotes.
    pub fn shell(&self) -> String {
        let text_only = self.0.iter().all(|p| matches!(p, Part::Text(_)));
        if text_only {
            return quote(&self.raw());
        }
        // One double-quoted string when the text parts hold nothing bash would interpret
        // there; otherwise single-quoted text and double-quoted references side by side.
        let plain = |t: &str| !t.contains(['"', '\\', '$', '`', '!']);
        if self
            .0
            .iter()
            .all(|p| matches!(p, Part::Var(_)) || matches!(p, Part::Text(t) if plain(t)))
        {
            return format!("\"{}\"", self.raw());
        }
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => quote(t),
                Part::Var(v) => format!("\"${{{v}}}\""),
            })
            .collect()
    }
}

/// Bare when every character is one bash leaves alone; else single quotes, or double
/// quotes for text with a single quote and nothing bash reads inside double quotes (a
/// JMESPath query); else single quotes with '\'' for each quote.
fn quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else if s.contains('\'') && !s.contains(['"', '\\', '$', '`', '!']) {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// One `az` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzCommand {
    pub words: Vec<Word>,
}

impl AzCommand {
    /// `az` and the literal subcommand words.
    pub fn new(subcommand: &str) -> AzCommand {
        AzCommand {
            words: std::iter::once("az").chain(subcommand.split(' ')).map(Word::text).collect(),
        }
    }

    pub fn arg(mut self, flag: &str, value: Word) -> AzCommand {
        self.words.push(Word::text(flag));
        self.words.push(value);
        self
    }

    /// A flag that takes no value (`--disable-overprovision`).
    pub fn flag(mut self, flag: &str) -> AzCommand {
        self.words.push(Word::text(flag));
        self
    }

    /// The command as one bash line, its options on continuation lines when long.
    pub fn line(&self) -> String {
        let mut out = String::new();
        let mut width = 0;
        for (i, w) in self.words.iter().enumerate() {
            let s = w.shell();
            let flag = s.starts_with("--");
            if i > 0 {
                if flag && width + s.len() > 60 {
                    out.push_str(" \\\n    ");
                    width = 4;
                } else {
                    out.push(' ');
                    width += 1;
                }
            }
            width += s.len();
            let _ = write!(out, "{s}");
        }
        out
    }

    /// For a `... create` command, the `... show` of the resource it would create: the same
    /// command group and the flags that name the resource, nothing else. `None` for any
    /// other command (`update`, `add`, `az rest --method put` are idempotent themselves).
    pub fn show_of_create(&self) -> Option<AzCommand> {
        const NAMING: &[&str] = &[
            "--subscription",
            "--resource-group",
            "--name",
            "--lb-name",
            "--nsg-name",
            "--zone-name",
            "--workspace-name",
            "--pe-name",
        ];
        let flags = self.words.iter().position(|w| w.raw().starts_with("--"))?;
        if self.words[flags - 1].raw() != "create" {
            return None;
        }
        let mut words: Vec<Word> = self.words[..flags - 1].to_vec();
        // `--lb-name` names the parent of a load balancer's probe, frontend or rule; on a
        // Private Link Service it is the LB it sits on, not part of its name.
        let in_lb = words.get(1..3).is_some_and(|g| g[0].raw() == "network" && g[1].raw() == "lb");
        words.push(Word::text("show"));
        // Each flag with the word after it, unless that is a flag too (a flag of no value).
        let rest = &self.words[flags..];
        for (i, flag) in rest.iter().enumerate() {
            let flag_text = flag.raw();
            let Some(value) = rest.get(i + 1).filter(|_| flag_text.starts_with("--")) else {
                continue;
            };
            let named = NAMING.contains(&flag_text.as_str()) && (flag_text != "--lb-name" || in_lb);
            if named && !value.raw().starts_with("--") {
                words.extend([flag.clone(), value.clone()]);
            }
        }
        Some(AzCommand { words })
    }

    /// The arguments after `az`, references left as `${NAME}`.
    pub fn argv(&self) -> Vec<String> {
        self.words[1..].iter().map(Word::raw).collect()
    }

    pub fn variables(&self) -> impl Iterator<Item = &str> + '_ {
        self.words.iter().flat_map(Word::variables)
    }
}

impl Serialize for AzCommand {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("AzCommand", 2)?;
        st.serialize_field("argv", &self.argv())?;
        st.serialize_field("line", &self.line())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What bash makes of a word, by running it: the test of the quoting.
    fn through_bash(w: &Word, vars: &[(&str, &str)]) -> String {
        let script = format!("printf '%s' {}", w.shell());
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .envs(vars.iter().copied())
            .output()
            .expect("bash");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn text_from_the_network_stays_text() {
        for hostile in ["$(touch /tmp/x)", "`id`", "a'b", "a\"b\\c", "x; rm -rf ~", "", "a b", "!x"]
        {
            assert_eq!(through_bash(&Word::text(hostile), &[]), hostile, "{hostile}");
            let mut w = Word::template("${RG}/", &["RG"]);
            w.0.push(Part::Text(hostile.into()));
            assert_eq!(through_bash(&w, &[("RG", "rg 1")]), format!("rg 1/{hostile}"));
        }
    }

    #[test]
    fn references_expand_and_plain_words_stay_bare() {
        let w = Word::template("/subscriptions/${SUB}/resourceGroups/${RG}/x", &["SUB", "RG"]);
        assert_eq!(w.shell(), "\"/subscriptions/${SUB}/resourceGroups/${RG}/x\"");
        assert_eq!(
            through_bash(&w, &[("SUB", "s"), ("RG", "r")]),
            "/subscriptions/s/resourceGroups/r/x"
        );
        assert_eq!(w.variables().collect::<Vec<_>>(), ["SUB", "RG"]);
        assert_eq!(Word::text("kafka-broker-1").shell(), "kafka-broker-1");
        assert_eq!(Word::template("${RG}", &["RG"]).shell(), "\"${RG}\"");
    }

    #[test]
    fn the_show_of_a_create_keeps_the_naming_flags_around_flags_without_values() {
        let create = AzCommand::new("vmss create")
            .arg("--resource-group", Word::text("rg"))
            .flag("--disable-overprovision")
            .arg("--name", Word::text("vmss"))
            .arg("--image", Word::text("Ubuntu2404"));
        let show = create.show_of_create().unwrap();
        assert_eq!(show.argv(), ["vmss", "show", "--resource-group", "rg", "--name", "vmss"]);
    }

    #[test]
    #[should_panic(expected = "NOPE is not one of the script's variables")]
    fn an_undeclared_reference_is_a_bug() {
        Word::template("${NOPE}", &["RG"]);
    }
}
