//! Checking the `replace` settings, at startup and again before each
//! request, before anything is prepared or run: every message names the
//! `replace.` key at fault. Apart because it only reads settings and runs
//! nothing.

use super::action_name;
use crate::config::{ReplaceAction, ReplaceSettings};

/// Checks the settings (at startup, and again before each request). The
/// message names the `replace.` key at fault.
pub fn validate(settings: &ReplaceSettings) -> Result<(), String> {
    if settings.timeout.0.is_zero() {
        return Err("replace.timeout must be longer than zero".into());
    }
    if !settings.drain.is_empty() {
        check_argv("replace.drain", &settings.drain)?;
    }
    let action = action_name(settings.action);
    let unused = |key: &str, hint: &str| {
        Err(format!(
            "replace.{key} is set but replace.action is {action} ({hint})"
        ))
    };
    match settings.action {
        ReplaceAction::Poweroff | ReplaceAction::Webhook if !settings.command.is_empty() => {
            return unused("command", "it is only used with action: exec");
        }
        ReplaceAction::Poweroff | ReplaceAction::Exec if settings.url.is_some() => {
            return unused("url", "it is only used with action: webhook");
        }
        ReplaceAction::Poweroff | ReplaceAction::Exec if settings.secret_file.is_some() => {
            return unused("secret_file", "it is only used with action: webhook");
        }
        ReplaceAction::Poweroff | ReplaceAction::Exec if settings.ca_file.is_some() => {
            return unused("ca_file", "it is only used with action: webhook");
        }
        _ => {}
    }
    match settings.action {
        ReplaceAction::Poweroff => Ok(()),
        ReplaceAction::Exec => {
            if settings.command.is_empty() {
                return Err(
                    "replace.action is exec but replace.command is empty (give the program's absolute path and its arguments)"
                        .into(),
                );
            }
            check_argv("replace.command", &settings.command)
        }
        ReplaceAction::Webhook => {
            let Some(url) = &settings.url else {
                return Err("replace.action is webhook but replace.url is not set".into());
            };
            let https = check_url(url)?;
            if settings.secret_file.is_none() {
                return Err(
                    "replace.action is webhook but replace.secret_file is not set (requests must be signed)"
                        .into(),
                );
            }
            if settings.ca_file.is_some() && !https {
                return Err(format!(
                    "replace.ca_file is set but replace.url {url:?} is not https://"
                ));
            }
            Ok(())
        }
    }
}

fn check_argv(key: &str, argv: &[String]) -> Result<(), String> {
    let program = argv.first().map(String::as_str).unwrap_or("");
    if !program.starts_with('/') {
        return Err(format!(
            "{key}: the program {program:?} must be an absolute path"
        ));
    }
    if let Some(arg) = argv.iter().find(|a| a.contains('\0')) {
        return Err(format!("{key}: argument {arg:?} contains a NUL byte"));
    }
    Ok(())
}

/// Checks a webhook URL; true when it is `https://`.
fn check_url(text: &str) -> Result<bool, String> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("replace.url {text:?} is not a valid URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "replace.url {:?} must not contain credentials (requests are signed with replace.secret_file)",
            redact(&url)
        ));
    }
    match url.scheme() {
        "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(true),
        "http" if is_loopback(&url) => Ok(false),
        "http" => Err(format!(
            "replace.url {text:?} must be https:// (http:// is only accepted for 127.0.0.1 and localhost)"
        )),
        _ => Err(format!("replace.url {text:?} must be an https:// URL")),
    }
}

pub(super) fn is_loopback(url: &reqwest::Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

fn redact(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}
