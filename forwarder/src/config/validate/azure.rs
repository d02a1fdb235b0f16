//! The `[azure]` table: `scheduled_events` (whether to follow Azure's Scheduled Events and
//! drain for a disruptive one) and `scheduled_events_interval`.

use super::timeouts::duration_at;
use crate::config::{azure::AzureEvents, spans::Section, ConfigError};
use std::time::Duration;

const AZURE_KEYS: &[&str] = &["scheduled_events", "scheduled_events_interval"];

const EXPECT_TABLE: &str = "expected an [azure] table with scheduled_events = true";
const EXPECT_BOOL: &str = "expected true or false";
const EXPECT_INTERVAL: &str = "expected a duration from 1s to 60s, like \"5s\"";

/// Azure asks for a poll at least once a minute; a terminate notice gives 5 to 15 minutes.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// `[azure]`; absent, or `scheduled_events = false`: no events followed.
pub(super) fn azure(root: &Section) -> Result<Option<AzureEvents>, ConfigError> {
    let Some(a) = root.table("azure", "azure.", AZURE_KEYS, EXPECT_TABLE)? else { return Ok(None) };
    let on = match a.get("scheduled_events") {
        None => return Err(a.missing("scheduled_events", EXPECT_TABLE)),
        Some((span, item)) => match item.as_bool() {
            Some(b) => b,
            None => return Err(a.wrong_type("scheduled_events", span, item, EXPECT_BOOL)),
        },
    };
    let interval = match duration_at(&a, "scheduled_events_interval")? {
        None => DEFAULT_INTERVAL,
        Some((d, _)) if (Duration::from_secs(1)..=MAX_INTERVAL).contains(&d) => d,
        Some((_, span)) => return Err(a.bad("scheduled_events_interval", span, EXPECT_INTERVAL)),
    };
    Ok(on.then_some(AzureEvents { interval }))
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use std::{path::Path, time::Duration};

    fn parsed(azure: &str) -> Result<crate::config::Settings, String> {
        let text = format!("interface = \"eth0\"\n[azure]\n{azure}\n");
        parse(Path::new("f.toml"), &text).map_err(|e| crate::error::chain(&e))
    }

    #[test]
    fn scheduled_events_are_followed_only_when_asked() {
        let on = parsed("scheduled_events = true").unwrap().azure.unwrap();
        assert_eq!(on.interval, Duration::from_secs(5));
        let every = parsed("scheduled_events = true\nscheduled_events_interval = \"2s\"");
        assert_eq!(every.unwrap().azure.unwrap().interval, Duration::from_secs(2));
        assert_eq!(parsed("scheduled_events = false").unwrap().azure, None);
        let none = parse(Path::new("f.toml"), "interface = \"eth0\"\n").unwrap();
        assert_eq!(none.azure, None);
    }

    #[test]
    fn bad_azure_settings_name_their_line_and_field() {
        for (text, line, field) in [
            ("scheduled_events = \"yes\"", 3, "azure.scheduled_events"),
            (
                "scheduled_events = true\nscheduled_events_interval = \"5m\"",
                4,
                "azure.scheduled_events_interval",
            ),
            ("scheduled_events = true\nterminate = true", 4, "azure.terminate"),
            ("scheduled_events_interval = \"5s\"", 2, "azure.scheduled_events"),
        ] {
            let e = parsed(text).unwrap_err();
            assert!(e.starts_with(&format!("f.toml:{line}:")), "{text:?}: {e}");
            assert!(e.contains(field), "{text:?}: {e}");
        }
    }
}
