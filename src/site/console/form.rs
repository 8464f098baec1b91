//! The retention form: the fields as typed, checked into [`MaintenanceTask`] settings, or a
//! message per field that is wrong.

use std::collections::HashMap;

use crate::retention::settings::{self, SettingsChange, SettingsError};
use crate::store::MaintenanceTask;

/// The days of the week, as stored.
pub const DAYS: [&str; 7] = settings::DAY_NAMES;

/// Shortest and longest retention age, in days.
pub const MIN_DAYS: u32 = 1;
pub const MAX_DAYS: u32 = 3650;

/// What the form posted, kept as typed so a page with errors shows it again.
#[derive(Debug, Clone, Default)]
pub struct RetentionForm {
    pub enabled: bool,
    pub delete_older_than_days: String,
    pub days_of_week: Vec<String>,
    pub window: String,
    pub time_zone: String,
}

impl RetentionForm {
    /// The form filled from the stored settings.
    pub fn from_task(t: &MaintenanceTask) -> Self {
        Self {
            enabled: t.enabled,
            delete_older_than_days: t.delete_older_than_days.to_string(),
            days_of_week: t.days_of_week.clone(),
            window: format!("{}-{}", t.begin_time, t.latest_begin_time),
            time_zone: t.time_zone.clone(),
        }
    }

    /// The form from a urlencoded body (`days_of_week` repeats, one per ticked box).
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        let get = |k: &str| {
            pairs
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        Self {
            enabled: pairs.iter().any(|(n, v)| n == "enabled" && v == "on"),
            delete_older_than_days: get("delete_older_than_days"),
            days_of_week: pairs
                .iter()
                .filter(|(n, _)| n == "days_of_week")
                .map(|(_, v)| v.trim().to_string())
                .collect(),
            window: get("window"),
            time_zone: get("time_zone"),
        }
    }

    /// The settings, or the problems by field name. The fields are checked by the retention
    /// task's own parser ([`settings::apply`]), one field at a time so every wrong field gets
    /// its message; the messages here speak to someone filling in the form.
    pub fn check(
        &self,
        current: &MaintenanceTask,
    ) -> Result<MaintenanceTask, HashMap<&'static str, String>> {
        let days = self.delete_older_than_days.parse::<i64>().unwrap_or(0);
        let week = self.days_of_week.join(",");
        let fields = [
            SettingsChange {
                delete_older_than_days: Some(days),
                ..Default::default()
            },
            SettingsChange {
                days: Some(week.clone()),
                ..Default::default()
            },
            SettingsChange {
                window: Some(self.window.clone()),
                ..Default::default()
            },
            SettingsChange {
                time_zone: Some(self.time_zone.clone()),
                ..Default::default()
            },
        ];
        let mut errors = HashMap::new();
        for change in &fields {
            if let Err(e) = settings::apply(current, change) {
                let (field, message) = self.message(&e);
                errors.entry(field).or_insert(message);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let all = SettingsChange {
            enabled: Some(self.enabled),
            delete_older_than_days: Some(days),
            days: Some(week),
            window: Some(self.window.clone()),
            time_zone: Some(self.time_zone.clone()),
        };
        settings::apply(current, &all).map_err(|e| {
            let (field, message) = self.message(&e);
            HashMap::from([(field, message)])
        })
    }

    /// The form field a settings error is about, and what to tell the user.
    fn message(&self, e: &SettingsError) -> (&'static str, String) {
        match e {
            SettingsError::Days(_) => (
                "delete_older_than_days",
                format!(
                    "Enter a whole number of days from {MIN_DAYS} to {MAX_DAYS} (got {:?}).",
                    self.delete_older_than_days
                ),
            ),
            SettingsError::Weekdays(_) => {
                let wrong = self
                    .days_of_week
                    .iter()
                    .find(|d| settings::parse_weekdays(d).is_err());
                let m = match wrong {
                    Some(d) => format!("{d:?} is not a day of the week (mon, tue, … sun)."),
                    None => "Tick at least one day.".into(),
                };
                ("days_of_week", m)
            }
            SettingsError::Window(w) => (
                "window",
                format!(
                    "Enter the window as HH:MM-HH:MM, e.g. 02:00-05:00; the latest begin time \
                     must be after the begin time (got {w:?})."
                ),
            ),
            SettingsError::TimeZone(tz) => (
                "time_zone",
                format!(
                    "{tz:?} is not a time zone this system knows; use an IANA name such as \
                     Europe/Berlin, or UTC."
                ),
            ),
        }
    }
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
            begin_time: "02:00".into(),
            latest_begin_time: "05:00".into(),
            time_zone: "UTC".into(),
            updated_ms: 1,
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_good_form_gives_settings() {
        let f = RetentionForm::from_pairs(&pairs(&[
            ("enabled", "on"),
            ("delete_older_than_days", " 30 "),
            ("days_of_week", "sun"),
            ("days_of_week", "mon"),
            ("window", "1:00-04:30"),
            ("time_zone", "UTC"),
        ]));
        let err = f.check(&task()).unwrap_err();
        assert!(err["window"].contains("HH:MM-HH:MM"), "{err:?}");
        let f = RetentionForm {
            window: "01:00-04:30".into(),
            ..f
        };
        let t = f.check(&task()).unwrap();
        assert_eq!(t.delete_older_than_days, 30);
        assert_eq!(t.days_of_week, vec!["mon", "sun"]);
        assert_eq!(
            (t.begin_time.as_str(), t.latest_begin_time.as_str()),
            ("01:00", "04:30")
        );
        assert_eq!(RetentionForm::from_task(&t).window, "01:00-04:30");
    }

    #[test]
    fn every_bad_field_is_named() {
        let f = RetentionForm::from_pairs(&pairs(&[
            ("delete_older_than_days", "0"),
            ("days_of_week", "funday"),
            ("window", "05:00-02:00"),
            ("time_zone", "../../etc/passwd"),
        ]));
        let err = f.check(&task()).unwrap_err();
        assert!(err["delete_older_than_days"].contains("from 1 to 3650"));
        assert!(err["days_of_week"].contains("\"funday\""));
        assert!(err["window"].contains("after the begin time"));
        assert!(err["time_zone"].contains("not a time zone"));
        let f = RetentionForm::from_pairs(&pairs(&[("delete_older_than_days", "3651")]));
        let err = f.check(&task()).unwrap_err();
        assert!(err.contains_key("delete_older_than_days"));
        assert_eq!(err["days_of_week"], "Tick at least one day.");
    }
}
