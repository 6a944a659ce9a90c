//! The spec's `health` section: exec and HTTP probes with their timeout and
//! retry interval. Apart because probes are checked once the node is up, not
//! written to it, and share no rules with the other sections.

use serde::{Deserialize, Serialize};

use crate::types::Interval;

/// A health check: a command that must exit 0, or an HTTP URL that must
/// answer with a status. Retried until its timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// What to check.
    pub probe: Probe,
    /// How long it may take to pass, retries included; default 30s.
    pub timeout: Interval,
    /// Pause between attempts; default 1s.
    pub interval: Interval,
}

/// The two kinds of health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Probe {
    /// Run a command (absolute path, then arguments); exit 0 passes.
    Exec(Vec<String>),
    /// GET a URL; the expected status passes.
    Http {
        /// `http://` or `https://` URL.
        url: String,
        /// Expected status; default 200.
        status: u16,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    #[serde(default)]
    exec: Option<Vec<String>>,
    #[serde(default)]
    http: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    timeout: Option<Interval>,
    #[serde(default)]
    interval: Option<Interval>,
}

impl<'de> Deserialize<'de> for HealthCheck {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let raw = RawHealthCheck::deserialize(d)?;
        let probe = match (raw.exec, raw.http) {
            (Some(argv), None) => {
                if raw.status.is_some() {
                    return Err(D::Error::custom("health: status belongs to http checks"));
                }
                match argv.first() {
                    Some(program)
                        if program.starts_with('/') && !argv.iter().any(|a| a.contains('\0')) => {}
                    _ => {
                        return Err(D::Error::custom(
                            "health: exec needs an absolute program path, then its arguments",
                        ));
                    }
                }
                Probe::Exec(argv)
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.chars().any(char::is_control)
                {
                    return Err(D::Error::custom(format!(
                        "health: {url:?} is not an http:// or https:// URL"
                    )));
                }
                Probe::Http {
                    url,
                    status: raw.status.unwrap_or(200),
                }
            }
            _ => return Err(D::Error::custom("health: give exactly one of exec or http")),
        };
        Ok(HealthCheck {
            probe,
            timeout: raw.timeout.unwrap_or(Interval::secs(30)),
            interval: raw.interval.unwrap_or(Interval::secs(1)),
        })
    }
}
