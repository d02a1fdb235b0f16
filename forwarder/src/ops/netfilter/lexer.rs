//! Splitting iptables-save lines: the one place that knows how iptables-save quotes its
//! words and how `iptables-save -c` prefixes counters.

/// A quote that is never closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unterminated {quote} quote")]
pub struct UnterminatedQuote {
    pub quote: char,
}

/// `[12:720] -A ...` (iptables-save -c) -> `-A ...`; anything else is returned as it is.
pub fn strip_counters(line: &str) -> &str {
    let Some((counters, rest)) = line.strip_prefix('[').and_then(|l| l.split_once(']')) else {
        return line;
    };
    let numbers = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match counters.split_once(':') {
        Some((packets, bytes)) if numbers(packets) && numbers(bytes) => rest.trim_start(),
        _ => line,
    }
}

/// Words of an iptables-save line, as a shell would split them: iptables-save puts a word
/// with spaces or quotes (a comment, a log prefix) in `"..."` with backslash escapes;
/// hand-edited files also use `'...'` and backslashes outside quotes. Quotes go, an empty
/// `""` stays a word.
pub fn shell_words(text: &str) -> Result<Vec<String>, UnterminatedQuote> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '"' | '\'' => {
                let w = word.get_or_insert_with(String::new);
                read_quoted(c, &mut chars, w)?;
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

fn read_quoted(
    quote: char,
    chars: &mut std::str::Chars,
    word: &mut String,
) -> Result<(), UnterminatedQuote> {
    while let Some(c) = chars.next() {
        match c {
            c if c == quote => return Ok(()),
            '\\' if quote == '"' => word.extend(chars.next()),
            c => word.push(c),
        }
    }
    Err(UnterminatedQuote { quote })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_counters_only_strips_counters() {
        assert_eq!(strip_counters("[12:720] -A X"), "-A X");
        assert_eq!(strip_counters("[a:1] -A X"), "[a:1] -A X");
        assert_eq!(strip_counters("[12] -A X"), "[12] -A X");
        assert_eq!(strip_counters("-A X"), "-A X");
    }

    #[test]
    fn shell_words_quoting() {
        let w = shell_words(r#"-A X --comment "a \"b\" c" 'd e' f\ g"#).unwrap();
        assert_eq!(w, ["-A", "X", "--comment", "a \"b\" c", "d e", "f g"]);
        assert_eq!(shell_words("a \"\" b").unwrap(), ["a", "", "b"]);
        assert_eq!(shell_words("'open").unwrap_err().to_string(), "unterminated ' quote");
    }

    #[test]
    fn shell_words_keep_quoted_comments_whole() {
        assert_eq!(
            shell_words(r#"-A INPUT -m comment --comment "say \"hi\" there" -j ACCEPT"#).unwrap(),
            vec!["-A", "INPUT", "-m", "comment", "--comment", "say \"hi\" there", "-j", "ACCEPT"]
        );
    }
}
