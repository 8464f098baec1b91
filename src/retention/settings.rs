//! The retention task's settings, checked: the age, the days of week, the window and the time
//! zone. Stored as text in `maintenance_tasks`; parsed here whenever they are read or changed,
//! so bad input gets an error naming the field and a stored value that no longer parses (a time
//! zone removed from the system's database) stops the schedule with that error in the log.

use std::collections::BTreeSet;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use serde::Deserialize;
use thiserror::Error;

use crate::store::MaintenanceTask;

/// A setting that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    /// `delete_older_than_days` outside 1 to 3650.
    #[error("delete older than days must be 1 to 3650, not {0}")]
    Days(i64),
    /// A day of week that is not a day name, or an empty list.
    #[error("days of week {0:?}: give day names separated by commas, e.g. sat,sun")]
    Weekdays(String),
    /// A window that is not `HH:MM-HH:MM` with the latest begin after the begin.
    #[error(
        "window {0:?}: give HH:MM-HH:MM with the second time later than the first, e.g. 00:00-05:00"
    )]
    Window(String),
    /// A time zone the system's time zone database does not know.
    #[error("time zone {0:?} is unknown: give an IANA name such as UTC or Europe/Paris")]
    TimeZone(String),
}

/// Parsed settings of the retention task.
#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub delete_older_than_days: u32,
    pub weekdays: BTreeSet<u8>,
    pub begin: Time,
    pub latest_begin: Time,
    pub tz_name: String,
    pub tz: TimeZone,
}

/// A change of settings: what is `None` stays as it is. The body of `PUT
/// /api/v1/maintenance` and the options of `mprelay maintenance set`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    pub enabled: Option<bool>,
    pub delete_older_than_days: Option<i64>,
    /// `"sat,sun"`, three-letter or full day names.
    pub days: Option<String>,
    /// `"HH:MM-HH:MM"`: begin time and latest begin time.
    pub window: Option<String>,
    /// An IANA time zone name.
    pub time_zone: Option<String>,
}

impl Settings {
    pub fn from_task(t: &MaintenanceTask) -> Result<Self, SettingsError> {
        let window = format!("{}-{}", t.begin_time, t.latest_begin_time);
        let (begin, latest_begin) = parse_window(&window)?;
        Ok(Self {
            enabled: t.enabled,
            delete_older_than_days: check_days(i64::from(t.delete_older_than_days))?,
            weekdays: parse_weekdays(&t.days_of_week.join(","))?,
            begin,
            latest_begin,
            tz: parse_tz(&t.time_zone)?,
            tz_name: t.time_zone.clone(),
        })
    }

    /// Whether the task is scheduled on this day of week.
    pub fn runs_on(&self, day: Weekday) -> bool {
        self.weekdays.contains(&(day.to_monday_zero_offset() as u8))
    }
}

/// The task's settings with `change` applied, checked; the stored task is not touched.
pub fn apply(
    task: &MaintenanceTask,
    change: &SettingsChange,
) -> Result<MaintenanceTask, SettingsError> {
    let mut t = task.clone();
    if let Some(e) = change.enabled {
        t.enabled = e;
    }
    if let Some(d) = change.delete_older_than_days {
        t.delete_older_than_days = check_days(d)?;
    }
    if let Some(days) = &change.days {
        t.days_of_week = parse_weekdays(days)?
            .into_iter()
            .map(|d| DAY_NAMES[d as usize].to_string())
            .collect();
    }
    if let Some(w) = &change.window {
        let (b, l) = parse_window(w)?;
        t.begin_time = fmt_time(b);
        t.latest_begin_time = fmt_time(l);
    }
    if let Some(z) = &change.time_zone {
        parse_tz(z)?;
        t.time_zone = z.trim().to_string();
    }
    Settings::from_task(&t)?;
    Ok(t)
}

/// Three-letter names, Monday first (the stored form).
pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn check_days(d: i64) -> Result<u32, SettingsError> {
    if (1..=3650).contains(&d) {
        Ok(d as u32)
    } else {
        Err(SettingsError::Days(d))
    }
}

/// "sat,sun" → Monday-zero offsets. Case-insensitive; three-letter or full names.
pub fn parse_weekdays(s: &str) -> Result<BTreeSet<u8>, SettingsError> {
    let bad = || SettingsError::Weekdays(s.to_string());
    let mut out = BTreeSet::new();
    for part in s.split(',') {
        let p = part.trim().to_ascii_lowercase();
        let i = DAY_NAMES
            .iter()
            .position(|d| *d == p)
            .or_else(|| FULL_NAMES.iter().position(|d| *d == p))
            .ok_or_else(bad)?;
        out.insert(i as u8);
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// "00:00-05:00" → (begin, latest begin), the latest strictly after the begin.
pub fn parse_window(s: &str) -> Result<(Time, Time), SettingsError> {
    let bad = || SettingsError::Window(s.to_string());
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (
        parse_hhmm(a).ok_or_else(bad)?,
        parse_hhmm(b).ok_or_else(bad)?,
    );
    if b <= a {
        return Err(bad());
    }
    Ok((a, b))
}

fn parse_hhmm(s: &str) -> Option<Time> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

/// "HH:MM".
pub fn fmt_time(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

fn parse_tz(name: &str) -> Result<TimeZone, SettingsError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(SettingsError::TimeZone(name.into()));
    }
    TimeZone::get(name).map_err(|_| SettingsError::TimeZone(name.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> MaintenanceTask {
        MaintenanceTask {
            name: "t".into(),
            enabled: true,
            delete_older_than_days: 90,
            days_of_week: vec!["sat".into()],
            begin_time: "00:00".into(),
            latest_begin_time: "05:00".into(),
            time_zone: "UTC".into(),
            updated_ms: 0,
        }
    }

    #[test]
    fn defaults_parse() {
        let s = Settings::from_task(&task()).unwrap();
        assert!(s.runs_on(Weekday::Saturday) && !s.runs_on(Weekday::Sunday));
        assert_eq!(
            (fmt_time(s.begin), fmt_time(s.latest_begin)),
            ("00:00".into(), "05:00".into())
        );
    }

    #[test]
    fn changes_apply_and_bad_input_names_the_field() {
        let t = apply(
            &task(),
            &SettingsChange {
                delete_older_than_days: Some(30),
                days: Some("Sun, SATURDAY,mon".into()),
                window: Some("22:30-23:45".into()),
                time_zone: Some("Europe/Paris".into()),
                enabled: Some(false),
            },
        )
        .unwrap();
        assert_eq!(t.delete_older_than_days, 30);
        assert_eq!(t.days_of_week, ["mon", "sat", "sun"]);
        assert_eq!(
            (t.begin_time.as_str(), t.latest_begin_time.as_str()),
            ("22:30", "23:45")
        );
        assert_eq!(t.time_zone, "Europe/Paris");
        assert!(!t.enabled);

        let err = |c: SettingsChange| apply(&task(), &c).unwrap_err().to_string();
        for d in [0, 3651, -1] {
            let e = err(SettingsChange {
                delete_older_than_days: Some(d),
                ..Default::default()
            });
            assert!(e.contains("1 to 3650"), "{e}");
        }
        for d in ["", "sat,", "saturnday", "1"] {
            let e = err(SettingsChange {
                days: Some(d.into()),
                ..Default::default()
            });
            assert!(e.contains("days of week"), "{e}");
        }
        for w in [
            "05:00-00:00",
            "01:00-01:00",
            "1:00-2:00",
            "00:00",
            "24:00-24:30",
            "00:00-05:60",
        ] {
            let e = err(SettingsChange {
                window: Some(w.into()),
                ..Default::default()
            });
            assert!(e.contains("window"), "{w}: {e}");
        }
        let e = err(SettingsChange {
            time_zone: Some("Mars/Olympus".into()),
            ..Default::default()
        });
        assert!(e.contains("time zone \"Mars/Olympus\""), "{e}");
    }
}
