//! When the host backs up (and drills): `hourly`, `daily`, `weekly`, `"HH:MM"`
//! or a raw systemd `OnCalendar` expression, turned into the timer's
//! `OnCalendar=` line and the interval `status` measures freshness against.
//!
//! `daily`, `hourly` and `weekly` get a concrete time derived from a hash of
//! the timer, app and host: steady across deploys (so `status` can show it and
//! the user can plan around it), and different per app and host (so a storage
//! box is not hit by every host at 00:00).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum Schedule {
    Hourly,
    Daily,
    Weekly,
    /// Every day at this time (the host's local time).
    At {
        hour: u8,
        minute: u8,
    },
    /// A systemd calendar expression as given; its interval is unknown, so the
    /// config must say how old a backup may get (`max_age`).
    Calendar(String),
}

const HOUR: Duration = Duration::from_secs(3600);

impl Schedule {
    /// The timer's `OnCalendar=` value. `timer` names what runs (`backup`,
    /// `verify`) so an app's two timers get different times.
    pub fn on_calendar(&self, timer: &str, app: &str, host: &str) -> String {
        let steady = steady_minutes(timer, app, host);
        let (hour, minute) = ((steady / 60) % 24, steady % 60);
        match self {
            Schedule::Hourly => format!("*-*-* *:{minute:02}:00"),
            Schedule::Daily => format!("*-*-* {hour:02}:{minute:02}:00"),
            Schedule::Weekly => {
                let day =
                    ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][(steady / 1440) as usize % 7];
                format!("{day} *-*-* {hour:02}:{minute:02}:00")
            }
            Schedule::At { hour, minute } => format!("*-*-* {hour:02}:{minute:02}:00"),
            Schedule::Calendar(expr) => expr.clone(),
        }
    }

    /// How often it runs, for "the newest snapshot is older than twice the
    /// schedule"; `None` for a raw expression.
    pub fn interval(&self) -> Option<Duration> {
        match self {
            Schedule::Hourly => Some(HOUR),
            Schedule::Daily | Schedule::At { .. } => Some(24 * HOUR),
            Schedule::Weekly => Some(7 * 24 * HOUR),
            Schedule::Calendar(_) => None,
        }
    }
}

/// Minutes into the week (0..10080), from SHA-256: the same on every machine
/// and every vpsup version, unlike std's hasher.
fn steady_minutes(timer: &str, app: &str, host: &str) -> u32 {
    let digest = Sha256::digest(format!("vpsup {timer}\0{app}\0{host}").as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % (7 * 24 * 60)
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Schedule, String> {
        match s {
            "hourly" => return Ok(Schedule::Hourly),
            "daily" => return Ok(Schedule::Daily),
            "weekly" => return Ok(Schedule::Weekly),
            _ => {}
        }
        let digits = |t: &str, len: std::ops::RangeInclusive<usize>| {
            len.contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())
        };
        if let Some((h, m)) = s
            .split_once(':')
            .filter(|(h, m)| digits(h, 1..=2) && digits(m, 2..=2))
        {
            // Looks like a time of day: it must be one.
            return match (h.parse::<u8>(), m.parse::<u8>()) {
                (Ok(hour @ 0..=23), Ok(minute @ 0..=59)) => Ok(Schedule::At { hour, minute }),
                _ => Err(format!(
                    "invalid schedule {s:?}: a time of day is 00:00 to 23:59"
                )),
            };
        }
        // A calendar expression has a time or a date part: digits, `*`, and
        // separators; nothing a unit file or a shell could read otherwise.
        let calendar = s.len() <= 120
            && s.contains(|c: char| c.is_ascii_digit() || c == '*')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || " *-:,./~".contains(c));
        if calendar {
            Ok(Schedule::Calendar(s.to_string()))
        } else {
            Err(format!(
                "invalid schedule {s:?}: use \"hourly\", \"daily\", \"weekly\", a time like \"03:30\", or a systemd OnCalendar expression like \"Mon..Fri *-*-* 02:00\""
            ))
        }
    }
}

impl TryFrom<String> for Schedule {
    type Error = String;
    fn try_from(s: String) -> Result<Schedule, String> {
        s.parse()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Hourly => f.write_str("hourly"),
            Schedule::Daily => f.write_str("daily"),
            Schedule::Weekly => f.write_str("weekly"),
            Schedule::At { hour, minute } => write!(f, "{hour:02}:{minute:02}"),
            Schedule::Calendar(expr) => f.write_str(expr),
        }
    }
}

impl From<Schedule> for String {
    fn from(s: Schedule) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Schedule {
        s.parse().unwrap()
    }

    #[test]
    fn words_times_and_calendars_parse() {
        assert_eq!(parse("daily"), Schedule::Daily);
        assert_eq!(parse("03:07"), Schedule::At { hour: 3, minute: 7 });
        assert_eq!(parse("3:07"), Schedule::At { hour: 3, minute: 7 });
        assert_eq!(
            parse("Mon..Fri *-*-* 02:00"),
            Schedule::Calendar("Mon..Fri *-*-* 02:00".into())
        );
        assert_eq!(parse("*:0/15"), Schedule::Calendar("*:0/15".into()));
        for bad in [
            "24:00",
            "12:60",
            "nightly",
            "daily\nExecStart=/bin/sh",
            "$(reboot) 1",
            "",
        ] {
            let err = bad.parse::<Schedule>().unwrap_err();
            assert!(err.contains("invalid schedule"), "{bad}: {err}");
        }
        for text in ["hourly", "daily", "weekly", "03:07", "*:0/15"] {
            assert_eq!(parse(text).to_string(), text);
        }
    }

    #[test]
    fn daily_is_a_steady_time_per_app_and_host() {
        let shop = parse("daily").on_calendar("backup", "shop", "web-1");
        assert_eq!(shop, parse("daily").on_calendar("backup", "shop", "web-1"));
        assert!(
            shop.starts_with("*-*-* ") && shop.ends_with(":00"),
            "{shop}"
        );
        // Different apps, hosts and timers spread out.
        let others = [
            parse("daily").on_calendar("backup", "blog", "web-1"),
            parse("daily").on_calendar("backup", "shop", "web-2"),
            parse("daily").on_calendar("verify", "shop", "web-1"),
        ];
        assert!(others.iter().all(|o| *o != shop), "{others:?}");
        // Pinned: a change here moves every user's backups.
        assert_eq!(steady_minutes("backup", "shop", "web-1"), {
            let d = Sha256::digest(b"vpsup backup\0shop\0web-1");
            u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 10080
        });
    }

    #[test]
    fn each_kind_has_its_calendar_and_interval() {
        let cases = [
            ("hourly", Some(HOUR)),
            ("daily", Some(24 * HOUR)),
            ("weekly", Some(168 * HOUR)),
            ("03:07", Some(24 * HOUR)),
            ("*:0/15", None),
        ];
        for (text, interval) in cases {
            let s = parse(text);
            assert_eq!(s.interval(), interval, "{text}");
            let calendar = s.on_calendar("backup", "shop", "web-1");
            if std::path::Path::new("/usr/bin/systemd-analyze").exists() {
                let out = std::process::Command::new("systemd-analyze")
                    .args(["calendar", &calendar])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{calendar}: {out:?}");
            }
        }
        assert_eq!(
            parse("03:07").on_calendar("backup", "a", "b"),
            "*-*-* 03:07:00"
        );
        assert!(parse("weekly")
            .on_calendar("verify", "shop", "web-1")
            .contains(" *-*-* "));
    }
}
