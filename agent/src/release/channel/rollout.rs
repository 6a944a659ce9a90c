//! The rollout settings of a channel document: the canary share and the
//! weekly maintenance windows, with the text forms they are written in.
//! Apart from the document because they are policy input, read by
//! `fleet::rollout`, not part of what makes a document trustworthy.

use serde::{Deserialize, Serialize};

use crate::types::Interval;

/// A share of the fleet, stored in basis points (0 to 10,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share(pub u32);

/// Written as the percentage it was read from (`12.5%`), so that a channel
/// file kept in the watcher's record reads back the same.
impl Serialize for Share {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (whole, hundredths) = (self.0 / 100, self.0 % 100);
        if hundredths == 0 {
            s.serialize_str(&format!("{whole}%"))
        } else {
            s.serialize_str(&format!("{whole}.{hundredths:02}%"))
        }
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Fraction(f64),
            Text(String),
        }
        let fraction = match Raw::deserialize(d)? {
            // `canary: 5` means 5 %, most likely: the `%` is what is missing.
            Raw::Fraction(f) if f > 1.0 && f <= 100.0 => {
                return Err(D::Error::custom(format!(
                    "share {f} is a fraction above 1: write a percentage with its %, like {f}%, or a fraction like {}",
                    f / 100.0
                )));
            }
            Raw::Fraction(f) => f,
            Raw::Text(t) => {
                let number = t.trim().strip_suffix('%').ok_or_else(|| {
                    D::Error::custom(format!(
                        "share {t:?} must be a percentage like 10% or a fraction like 0.1"
                    ))
                })?;
                number
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| D::Error::custom(format!("share {t:?} is not a number")))?
                    / 100.0
            }
        };
        if !(0.0..=1.0).contains(&fraction) || fraction.is_nan() {
            return Err(D::Error::custom("a share must be between 0% and 100%"));
        }
        Ok(Share((fraction * 10_000.0).round() as u32))
    }
}

/// A weekly maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Days it opens on: `mon` … `sun`; every day when empty.
    #[serde(default)]
    pub days: Vec<Weekday>,
    /// Opening time, `HH:MM`, in `time_zone`.
    pub start: ClockTime,
    /// How long it stays open.
    pub length: Interval,
    /// IANA time zone, e.g. `Europe/Berlin`; default `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A wall-clock time `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct ClockTime {
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
}

impl From<ClockTime> for String {
    fn from(t: ClockTime) -> String {
        format!("{:02}:{:02}", t.hour, t.minute)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("time {text:?} must be HH:MM"));
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        let (hour, minute): (u8, u8) =
            (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h.len() != 2 || m.len() != 2 || hour > 23 || minute > 59 {
            return Err(bad());
        }
        Ok(ClockTime { hour, minute })
    }
}
