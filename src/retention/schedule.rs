//! When the task may start: on the configured days of week, from the begin time up to (not
//! including) the latest begin time, in the task's time zone. A window is identified by its
//! start; the scheduler starts at most one run per window, and a window that passed while the
//! site was down is not made up for: the next run waits for the next window.

use jiff::Timestamp;

use super::settings::Settings;

/// A window as Unix milliseconds: runs may start in `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// The window `now_ms` is in, if any.
pub fn window_at(s: &Settings, now_ms: i64) -> Option<Window> {
    next_window(s, now_ms).filter(|w| w.start_ms <= now_ms)
}

/// The window `now_ms` is in, or else the next one to open.
pub fn next_window(s: &Settings, now_ms: i64) -> Option<Window> {
    let today = Timestamp::from_millisecond(now_ms)
        .ok()?
        .to_zoned(s.tz.clone())
        .date();
    // Eight days: today's window may have passed, and the same weekday comes again in seven.
    for offset in 0..8 {
        let day = today.checked_add(jiff::Span::new().days(offset)).ok()?;
        if !s.runs_on(day.weekday()) {
            continue;
        }
        let at = |t| {
            day.to_datetime(t)
                .to_zoned(s.tz.clone())
                .ok()
                .map(|z| z.timestamp().as_millisecond())
        };
        let w = Window {
            start_ms: at(s.begin)?,
            end_ms: at(s.latest_begin)?,
        };
        if w.end_ms > now_ms {
            return Some(w);
        }
    }
    None
}

/// A time as RFC 3339 in the task's zone, for messages.
pub fn describe(s: &Settings, ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(t) => t
            .to_zoned(s.tz.clone())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string(),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::settings::{SettingsChange, apply};
    use crate::store::MaintenanceTask;

    fn settings(days: &str, window: &str, tz: &str) -> Settings {
        let base = MaintenanceTask {
            name: "t".into(),
            enabled: true,
            delete_older_than_days: 90,
            days_of_week: vec!["sat".into()],
            begin_time: "00:00".into(),
            latest_begin_time: "05:00".into(),
            time_zone: "UTC".into(),
            updated_ms: 0,
        };
        let t = apply(
            &base,
            &SettingsChange {
                days: Some(days.into()),
                window: Some(window.into()),
                time_zone: Some(tz.into()),
                ..Default::default()
            },
        )
        .unwrap();
        Settings::from_task(&t).unwrap()
    }

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn saturday_night_utc() {
        let s = settings("sat", "00:00-05:00", "UTC");
        // 2026-11-28 is a Saturday.
        let w = Window {
            start_ms: ms("2026-11-28T00:00:00Z"),
            end_ms: ms("2026-11-28T05:00:00Z"),
        };
        assert_eq!(window_at(&s, ms("2026-11-28T00:00:00Z")), Some(w));
        assert_eq!(window_at(&s, ms("2026-11-28T04:59:59Z")), Some(w));
        assert_eq!(window_at(&s, ms("2026-11-28T05:00:00Z")), None);
        assert_eq!(window_at(&s, ms("2026-11-27T23:59:59Z")), None);
        assert_eq!(next_window(&s, ms("2026-11-24T16:00:00Z")), Some(w));
        // Missed this week's: the next is a week later.
        assert_eq!(
            next_window(&s, ms("2026-11-28T06:00:00Z"))
                .unwrap()
                .start_ms,
            ms("2026-12-05T00:00:00Z")
        );
    }

    #[test]
    fn windows_follow_the_time_zone() {
        let s = settings("sun", "01:00-03:00", "Europe/Paris");
        // Paris is UTC+1 in winter: Sunday 01:00 there is Sunday 00:00 UTC.
        let w = window_at(&s, ms("2026-11-29T00:30:00Z")).unwrap();
        assert_eq!(w.start_ms, ms("2026-11-29T00:00:00Z"));
        assert_eq!(w.end_ms, ms("2026-11-29T02:00:00Z"));
        assert_eq!(window_at(&s, ms("2026-11-29T02:30:00Z")), None);
        assert_eq!(describe(&s, w.start_ms), "2026-11-29 01:00 CET");
    }
}
