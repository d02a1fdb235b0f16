//! The durations: `dns_refresh` at the top level and the `[timeouts]` table (`syn`,
//! `established`, `closing`), each written like "30s" and from 1s to 30d.

use crate::config::{spans::Section, ConfigError, Timeouts};
use std::time::Duration;

const TIMEOUT_KEYS: &[&str] = &["syn", "established", "closing"];

const EXPECT_DURATION: &str = "expected a duration like \"30s\", \"2m\" or \"2h\", from 1s to 30d";

const MIN_DURATION: Duration = Duration::from_secs(1);
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// `dns_refresh`, default 30s.
pub(super) fn dns_refresh(root: &Section) -> Result<Duration, ConfigError> {
    Ok(duration(root, "dns_refresh")?.unwrap_or(Duration::from_secs(30)))
}

/// `[timeouts]` (or `timeouts.syn = ...`, or an inline table); a key not written keeps
/// its default.
pub(super) fn timeouts(root: &Section) -> Result<Timeouts, ConfigError> {
    let mut timeouts = Timeouts::default();
    let Some((span, item)) = root.get("timeouts") else { return Ok(timeouts) };
    let Some(table) = item.as_table_like() else {
        return Err(root.wrong_type(
            "timeouts",
            span,
            item,
            "expected a [timeouts] table with syn, established and closing",
        ));
    };
    let t = Section { src: root.src, table, prefix: "timeouts.", at: span.start };
    t.deny_unknown(TIMEOUT_KEYS)?;
    if let Some(d) = duration(&t, "syn")? {
        timeouts.syn = d;
    }
    if let Some(d) = duration(&t, "established")? {
        timeouts.established = d;
    }
    if let Some(d) = duration(&t, "closing")? {
        timeouts.closing = d;
    }
    Ok(timeouts)
}

/// A duration from [`MIN_DURATION`] to [`MAX_DURATION`], written like "30s".
fn duration(section: &Section, key: &str) -> Result<Option<Duration>, ConfigError> {
    let Some((s, span)) = section.string(key, EXPECT_DURATION)? else { return Ok(None) };
    match humantime::parse_duration(s) {
        Ok(d) if (MIN_DURATION..=MAX_DURATION).contains(&d) => Ok(Some(d)),
        _ => Err(section.bad(key, span, EXPECT_DURATION)),
    }
}
