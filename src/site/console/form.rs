//! The retention form: the fields as typed, checked into [`MaintenanceTask`] settings, or a
//! message per field that is wrong.

use std::collections::HashMap;

use crate::store::MaintenanceTask;

/// The days of the week, as stored.
pub const DAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

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

    /// The settings, or the problems by field name.
    pub fn check(
        &self,
        current: &MaintenanceTask,
    ) -> Result<MaintenanceTask, HashMap<&'static str, String>> {
        let mut errors = HashMap::new();
        let days = match self.delete_older_than_days.parse::<u32>() {
            Ok(d) if (MIN_DAYS..=MAX_DAYS).contains(&d) => d,
            _ => {
                errors.insert(
                    "delete_older_than_days",
                    format!(
                        "Enter a whole number of days from {MIN_DAYS} to {MAX_DAYS} \
                         (got {:?}).",
                        self.delete_older_than_days
                    ),
                );
                0
            }
        };
        let mut week = Vec::new();
        for d in &self.days_of_week {
            let d = d.to_ascii_lowercase();
            if !DAYS.contains(&d.as_str()) {
                errors.insert(
                    "days_of_week",
                    format!("{d:?} is not a day of the week (mon, tue, … sun)."),
                );
            } else if !week.contains(&d) {
                week.push(d);
            }
        }
        if week.is_empty() && !errors.contains_key("days_of_week") {
            errors.insert("days_of_week", "Tick at least one day.".into());
        }
        week.sort_by_key(|d| DAYS.iter().position(|x| x == d));
        let window = match parse_window(&self.window) {
            Ok(w) => Some(w),
            Err(e) => {
                errors.insert("window", e);
                None
            }
        };
        if let Err(e) = check_time_zone(&self.time_zone) {
            errors.insert("time_zone", e);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let (begin, latest) = window.unwrap_or_default();
        Ok(MaintenanceTask {
            name: current.name.clone(),
            enabled: self.enabled,
            delete_older_than_days: days,
            days_of_week: week,
            begin_time: begin,
            latest_begin_time: latest,
            time_zone: self.time_zone.clone(),
            updated_ms: current.updated_ms,
        })
    }
}

/// `"HH:MM-HH:MM"`, the latest begin after the begin, into the two times.
pub fn parse_window(s: &str) -> Result<(String, String), String> {
    let bad = || format!("Enter the window as HH:MM-HH:MM, e.g. 02:00-05:00 (got {s:?}).");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (
        hhmm(a.trim()).ok_or_else(bad)?,
        hhmm(b.trim()).ok_or_else(bad)?,
    );
    if b <= a {
        return Err(format!(
            "The latest begin time must be after the begin time (got {s:?})."
        ));
    }
    let f = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
    Ok((f(a), f(b)))
}

/// Minutes after midnight of `HH:MM`.
fn hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// `UTC`, or an IANA name the system's time zone database holds.
pub fn check_time_zone(tz: &str) -> Result<(), String> {
    if tz == "UTC" {
        return Ok(());
    }
    let well_formed = !tz.is_empty()
        && tz.len() <= 64
        && !tz.starts_with('/')
        && !tz.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    if well_formed
        && std::path::Path::new("/usr/share/zoneinfo")
            .join(tz)
            .is_file()
    {
        Ok(())
    } else {
        Err(format!(
            "{tz:?} is not a time zone this system knows; use an IANA name such as \
             Europe/Berlin, or UTC."
        ))
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
