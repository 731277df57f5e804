//! The owner's weekly schedule: when Hearth may work. Each entry is days and a time window in
//! local time, e.g. `mon-fri 18:00-08:00` (overnight: the part after midnight belongs to the
//! next morning), `sat,sun 00:00-24:00`, `daily 01:00-07:00`. No entries: any time.

use chrono::{Datelike, Timelike};

/// Why an entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule entry {entry:?}: {reason}")]
pub struct ScheduleError {
    pub entry: String,
    pub reason: String,
}

/// One entry: on these days (Monday = 0), from `start` to `end` minutes after midnight.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Window {
    days: [bool; 7],
    start: u16,
    end: u16,
}

/// The whole schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    windows: Vec<Window>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(name: &str) -> Option<usize> {
    let name = name.to_ascii_lowercase();
    DAYS.iter().position(|d| name.starts_with(d))
}

fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl Schedule {
    /// Read the entries; the first bad one is the error.
    pub fn parse(entries: &[String]) -> Result<Self, ScheduleError> {
        let windows = entries
            .iter()
            .map(|entry| {
                let bad = |reason: &str| ScheduleError {
                    entry: entry.clone(),
                    reason: reason.into(),
                };
                let (days_text, times) = entry
                    .trim()
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| bad("write days then times, e.g. \"mon-fri 18:00-08:00\""))?;
                let mut days = [false; 7];
                for part in days_text.split(',') {
                    match part.to_ascii_lowercase().as_str() {
                        "daily" | "every" | "all" => days = [true; 7],
                        "weekdays" => days[..5].fill(true),
                        "weekends" => days[5..].fill(true),
                        range => {
                            let (from, to) = range.split_once('-').unwrap_or((range, range));
                            let (from, to) = day(from).zip(day(to)).ok_or_else(|| {
                                bad("days are mon..sun, daily, weekdays or weekends")
                            })?;
                            let mut d = from;
                            loop {
                                days[d] = true;
                                if d == to {
                                    break;
                                }
                                d = (d + 1) % 7;
                            }
                        }
                    }
                }
                let (start, end) = times
                    .trim()
                    .split_once('-')
                    .and_then(|(a, b)| Some((minutes(a.trim())?, minutes(b.trim())?)))
                    .ok_or_else(|| bad("times are HH:MM-HH:MM, e.g. 18:00-08:00"))?;
                if start == end {
                    return Err(bad("the window is empty (start equals end)"));
                }
                Ok(Window { days, start, end })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { windows })
    }

    /// Whether work is allowed on `weekday` (Monday = 0) at `minute` after midnight.
    pub fn allows_at(&self, weekday: usize, minute: u16) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let yesterday = (weekday + 6) % 7;
        self.windows.iter().any(|w| {
            if w.start < w.end {
                w.days[weekday] && (w.start..w.end).contains(&minute)
            } else {
                // Overnight: the evening of a listed day, or the morning after one.
                (w.days[weekday] && minute >= w.start) || (w.days[yesterday] && minute < w.end)
            }
        })
    }

    /// Whether work is allowed now, in local time.
    pub fn allows_now(&self) -> bool {
        let now = chrono::Local::now();
        self.allows_at(
            now.weekday().num_days_from_monday() as usize,
            (now.hour() * 60 + now.minute()) as u16,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(entries: &[&str]) -> Schedule {
        Schedule::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    const MON: usize = 0;
    const FRI: usize = 4;
    const SAT: usize = 5;
    const SUN: usize = 6;

    #[test]
    fn no_entries_means_any_time() {
        assert!(Schedule::default().allows_at(MON, 0));
    }

    #[test]
    fn overnight_windows_run_into_the_next_morning() {
        let s = schedule(&["mon-fri 18:00-08:00"]);
        assert!(!s.allows_at(MON, 12 * 60));
        assert!(s.allows_at(MON, 18 * 60));
        assert!(s.allows_at(FRI, 23 * 60 + 59));
        assert!(
            s.allows_at(SAT, 7 * 60 + 59),
            "Friday night runs into Saturday"
        );
        assert!(!s.allows_at(SAT, 8 * 60));
        assert!(!s.allows_at(MON, 3 * 60), "Sunday night is not listed");
    }

    #[test]
    fn day_lists_ranges_and_whole_days() {
        let s = schedule(&["sat,sun 00:00-24:00", "weekdays 01:00-06:30"]);
        assert!(s.allows_at(SUN, 23 * 60 + 59));
        assert!(s.allows_at(FRI, 6 * 60 + 29));
        assert!(!s.allows_at(FRI, 6 * 60 + 30));
        let wrap = schedule(&["fri-mon 10:00-11:00"]);
        assert!(wrap.allows_at(SUN, 10 * 60) && wrap.allows_at(MON, 10 * 60));
        assert!(!wrap.allows_at(2, 10 * 60));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "mon-fri",
            "someday 10:00-11:00",
            "mon 25:00-26:00",
            "mon 10:00-10:00",
        ] {
            let error = Schedule::parse(&[bad.to_owned()]).unwrap_err();
            assert_eq!(error.entry, bad);
        }
    }
}
