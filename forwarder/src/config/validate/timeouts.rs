//! The durations: `dns_refresh` at the top level and the `[timeouts]` table (`syn`,
//! `established`, `closing`), each written like "30s" and from 1s to 30d.

use crate::config::{
    spans::Section, ConfigError, ConfigWarning, Timeouts, ESTABLISHED_DEFAULT, ESTABLISHED_FLOOR,
};
use std::time::Duration;

/// The keys of `[timeouts]`.
pub const TIMEOUT_KEYS: &[&str] = &["syn", "established", "closing"];

const EXPECT_DURATION: &str = "expected a duration like \"30s\", \"2m\" or \"2h\", from 1s to 30d";

const MIN_DURATION: Duration = Duration::from_secs(1);
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// `dns_refresh`, default 30s.
pub(super) fn dns_refresh(root: &Section) -> Result<Duration, ConfigError> {
    Ok(duration(root, "dns_refresh")?.unwrap_or(Duration::from_secs(30)))
}

/// `[timeouts]` (or `timeouts.syn = ...`, or an inline table); a key not written keeps
/// its default. An established timeout below RFC 5382's floor is kept, with a warning.
pub(super) fn timeouts(
    root: &Section,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Timeouts, ConfigError> {
    let mut timeouts = Timeouts::default();
    let expected = "expected a [timeouts] table with syn, established and closing";
    let Some(t) = root.table("timeouts", "timeouts.", TIMEOUT_KEYS, expected)? else {
        return Ok(timeouts);
    };
    if let Some(d) = duration(&t, "syn")? {
        timeouts.syn = d;
    }
    if let Some((d, span)) = duration_at(&t, "established")? {
        timeouts.established = d;
        if d < ESTABLISHED_FLOOR {
            let message = format!(
                "{} is below RFC 5382's floor for a NAT (2h 4m): a connection idle until its \
                 first TCP keepalive (Linux sends it after 2h) is forgotten before the probe \
                 comes, and the probe is reset; the default is {}",
                humantime::format_duration(d),
                humantime::format_duration(ESTABLISHED_DEFAULT)
            );
            warnings.push(ConfigWarning::at(t.error(span, "established", message)));
        }
    }
    if let Some(d) = duration(&t, "closing")? {
        timeouts.closing = d;
    }
    Ok(timeouts)
}

/// A duration from [`MIN_DURATION`] to [`MAX_DURATION`], written like "30s".
fn duration(section: &Section, key: &str) -> Result<Option<Duration>, ConfigError> {
    Ok(duration_at(section, key)?.map(|(d, _)| d))
}

/// [`duration`], with where its value is written.
pub(super) fn duration_at(
    section: &Section,
    key: &str,
) -> Result<Option<(Duration, crate::config::spans::Span)>, ConfigError> {
    let Some((s, span)) = section.string(key, EXPECT_DURATION)? else { return Ok(None) };
    match humantime::parse_duration(s) {
        Ok(d) if (MIN_DURATION..=MAX_DURATION).contains(&d) => Ok(Some((d, span))),
        _ => Err(section.bad(key, span, EXPECT_DURATION)),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, ESTABLISHED_DEFAULT};
    use std::{path::Path, time::Duration};

    fn settings(timeouts: &str) -> crate::config::Settings {
        let text = format!("interface = \"eth0\"\n[timeouts]\n{timeouts}\n");
        parse(Path::new("f.toml"), &text).unwrap()
    }

    #[test]
    fn the_default_established_timeout_outlives_linux_keepalive_probes() {
        let s = settings("syn = \"10s\"");
        assert_eq!(s.timeouts.established, ESTABLISHED_DEFAULT);
        // tcp_keepalive_time 7200 s + tcp_keepalive_probes 9 x tcp_keepalive_intvl 75 s.
        assert_eq!(ESTABLISHED_DEFAULT, Duration::from_secs(7200 + 9 * 75));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn an_established_timeout_below_rfc_5382_loads_with_a_warning_at_its_place() {
        let s = settings("syn = \"10s\"\nestablished = \"2h\"");
        assert_eq!(s.timeouts.established, Duration::from_secs(7200));
        let [w] = s.warnings.as_slice() else { panic!("{:?}", s.warnings) };
        assert_eq!((w.file.as_str(), w.line, w.column), ("f.toml", 4, 15));
        assert_eq!(w.field, "timeouts.established");
        assert!(w.message.contains("RFC 5382") && w.message.contains("2h 11m 15s"), "{w}");
        // At the floor itself, and above it: no warning.
        for ok in ["2h 4m", "3h", "30d"] {
            let s = settings(&format!("established = \"{ok}\""));
            assert!(s.warnings.is_empty(), "{ok}: {:?}", s.warnings);
        }
    }
}
