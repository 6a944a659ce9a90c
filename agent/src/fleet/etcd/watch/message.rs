//! The messages of etcd's watch stream as the JSON gateway writes them,
//! one a line: parsed into what the watch keeps (the kind, key and create
//! revision of each event; never a value).

use base64::Engine as _;
use serde_json::Value;

use crate::fleet::etcd::{B64, UNAUTHENTICATED, number};

/// gRPC's status code for a permission etcd refused.
const PERMISSION_DENIED: i64 = 7;

/// What happened to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or changed.
    Put,
    /// Deleted (by hand, by a transaction, or with its lease).
    Delete,
}

/// One event of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key (UTF-8, lossily).
    pub key: String,
    /// The revision that created the key (a delete's only when the watch
    /// asked for the key as it was before); 0 when not sent.
    pub created: i64,
}

/// One message of a watch stream.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Message {
    /// The watch exists; events follow.
    Created,
    /// Events (none in a progress message).
    Events(Vec<WatchEvent>),
    /// etcd ended the watch: why, and the gRPC code when it names one.
    Canceled { code: Option<i64>, reason: String },
}

/// One line of a watch stream.
pub(super) fn parse_message(line: &[u8]) -> Result<Message, String> {
    let message: Value = serde_json::from_slice(line)
        .map_err(|_| "a watch message that is not JSON: is this etcd's client port?".to_owned())?;
    let error = &message["error"];
    if error.is_object() {
        let code = [&error["grpc_code"], &error["code"]]
            .into_iter()
            .map(number)
            .find(|c| *c != 0);
        let text = error["message"].as_str().unwrap_or("no message");
        return Ok(Message::Canceled {
            code,
            reason: text.chars().take(200).collect(),
        });
    }
    let result = &message["result"];
    if !result.is_object() {
        return Err("a watch message without a result".into());
    }
    if result["canceled"].as_bool() == Some(true) {
        let reason = result["cancel_reason"].as_str().unwrap_or_default();
        let compacted = number(&result["compact_revision"]);
        let reason = if compacted != 0 {
            format!("its start revision was compacted (etcd keeps from {compacted} on)")
        } else if reason.is_empty() {
            "no reason given".to_owned()
        } else {
            reason.chars().take(200).collect()
        };
        let code = if reason.contains("code = Unauthenticated") {
            Some(UNAUTHENTICATED)
        } else if reason.contains("code = PermissionDenied") {
            Some(PERMISSION_DENIED)
        } else {
            None
        };
        return Ok(Message::Canceled { code, reason });
    }
    if result["created"].as_bool() == Some(true) {
        return Ok(Message::Created);
    }
    let Some(events) = result["events"].as_array() else {
        return Ok(Message::Events(Vec::new()));
    };
    events
        .iter()
        .map(|event| {
            let kind = match event["type"].as_str() {
                // The gateway leaves out fields equal to zero: PUT is 0.
                None | Some("PUT") => EventKind::Put,
                Some("DELETE") => EventKind::Delete,
                Some(other) => return Err(format!("a watch event of unknown type {other:?}")),
            };
            let key = event["kv"]["key"]
                .as_str()
                .and_then(|k| B64.decode(k).ok())
                .ok_or("a watch event without a base64 key")?;
            let created = match kind {
                EventKind::Put => number(&event["kv"]["create_revision"]),
                EventKind::Delete => number(&event["prev_kv"]["create_revision"]),
            };
            Ok(WatchEvent {
                kind,
                key: String::from_utf8_lossy(&key).into_owned(),
                created,
            })
        })
        .collect::<Result<_, String>>()
        .map(Message::Events)
}

// Lines copied from etcd 3.4's gateway, and lines no etcd writes.
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Message, String> {
        parse_message(text.as_bytes())
    }

    #[test]
    fn messages_as_etcd_3_4_writes_them() {
        let header =
            r#""header":{"cluster_id":"1","member_id":"2","revision":"6","raft_term":"2"}"#;
        assert_eq!(
            parse(&format!(r#"{{"result":{{{header},"created":true}}}}"#)),
            Ok(Message::Created)
        );
        // /driftless/g/slots/0, put then deleted; then deleted as a watch
        // with `prev_kv` sees it.
        let key = "L2RyaWZ0bGVzcy9nL3Nsb3RzLzA=";
        let prev =
            format!(r#""prev_kv":{{"key":"{key}","create_revision":"2","mod_revision":"2"}}"#);
        assert_eq!(
            parse(&format!(
                r#"{{"result":{{{header},"events":[{{"kv":{{"key":"{key}","create_revision":"2","mod_revision":"2","version":"1","value":"aGk="}}}},{{"type":"DELETE","kv":{{"key":"{key}","mod_revision":"3"}}}},{{"type":"DELETE","kv":{{"key":"{key}","mod_revision":"4"}},{prev}}}]}}}}"#
            )),
            Ok(Message::Events(vec![
                WatchEvent {
                    kind: EventKind::Put,
                    key: "/driftless/g/slots/0".into(),
                    created: 2,
                },
                WatchEvent {
                    kind: EventKind::Delete,
                    key: "/driftless/g/slots/0".into(),
                    created: 0,
                },
                WatchEvent {
                    kind: EventKind::Delete,
                    key: "/driftless/g/slots/0".into(),
                    created: 2,
                },
            ]))
        );
        assert_eq!(
            parse(&format!(r#"{{"result":{{{header}}}}}"#)),
            Ok(Message::Events(Vec::new())),
            "a progress message"
        );
    }

    #[test]
    fn cancellations_say_why() {
        let compacted = parse(
            r#"{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"5"}}"#,
        );
        assert!(
            matches!(&compacted, Ok(Message::Canceled { code: None, reason }) if reason.contains("compacted")),
            "{compacted:?}"
        );
        let token = parse(
            r#"{"result":{"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"}}"#,
        );
        assert!(
            matches!(
                &token,
                Ok(Message::Canceled {
                    code: Some(UNAUTHENTICATED),
                    ..
                })
            ),
            "{token:?}"
        );
        let error =
            parse(r#"{"error":{"grpc_code":7,"http_code":403,"message":"permission denied"}}"#);
        assert_eq!(
            error,
            Ok(Message::Canceled {
                code: Some(PERMISSION_DENIED),
                reason: "permission denied".into()
            })
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "not json",
            "[]",
            r#"{"other":1}"#,
            r#"{"result":{"events":[{"type":"EXPIRE","kv":{"key":"YQ=="}}]}}"#,
            r#"{"result":{"events":[{"kv":{"key":"not base64!"}}]}}"#,
            r#"{"result":{"events":[{"kv":{}}]}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
