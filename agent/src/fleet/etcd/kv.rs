//! The key-value and lease requests the coordinator makes, each one call
//! of etcd's JSON gateway (`/v3/kv/*`, `/v3/lease/*`) through
//! [`Etcd::call`], which tries the endpoints and renews the token.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{B64, Etcd, EtcdError, KeyValue, decode_text, number, range_request, short};

impl Etcd {
    /// Grants a lease of `ttl`; returns its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let answer = self
            .call(
                "lease grant",
                "/v3/lease/grant",
                json!({ "TTL": ttl.as_secs().to_string() }),
            )
            .await?;
        let id = number(&answer["ID"]);
        if id == 0 {
            return Err(EtcdError::new(
                "lease grant",
                format!("no lease id in the answer: {}", short(&answer)),
            ));
        }
        Ok(id)
    }

    /// Renews a lease; `false` when it no longer exists (it expired or was revoked).
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        let answer = self
            .call(
                "lease keep-alive",
                "/v3/lease/keepalive",
                json!({ "ID": lease.to_string() }),
            )
            .await?;
        // The gateway streams; its one message is wrapped in "result". A
        // lease that is gone answers without a TTL.
        Ok(number(&answer["result"]["TTL"]) > 0)
    }

    /// Revokes a lease, deleting its keys.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call(
            "lease revoke",
            "/v3/lease/revoke",
            json!({ "ID": lease.to_string() }),
        )
        .await
        .map(drop)
    }

    /// Puts `key` = `value` attached to `lease` (0: none) only if `key` does
    /// not exist, deleting `also_delete` (if any) in the same transaction;
    /// true when it was created.
    pub async fn create(
        &self,
        key: &str,
        value: &str,
        lease: i64,
        also_delete: Option<&str>,
    ) -> Result<bool, EtcdError> {
        let k = B64.encode(key);
        let mut success = vec![
            json!({ "request_put": { "key": k, "value": B64.encode(value), "lease": lease.to_string() } }),
        ];
        if let Some(other) = also_delete {
            success.push(json!({ "request_delete_range": { "key": B64.encode(other) } }));
        }
        self.txn(
            json!({ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }),
            success,
        )
        .await
    }

    /// A transaction of one comparison and the requests made when it holds;
    /// true when it held.
    async fn txn(&self, compare: Value, success: Vec<Value>) -> Result<bool, EtcdError> {
        let answer = self
            .call(
                "txn",
                "/v3/kv/txn",
                json!({ "compare": [compare], "success": success }),
            )
            .await?;
        Ok(answer["succeeded"].as_bool().unwrap_or(false))
    }

    /// Puts `key` = `value` without a lease.
    pub async fn put(&self, key: &str, value: &str) -> Result<(), EtcdError> {
        self.call(
            "put",
            "/v3/kv/put",
            json!({ "key": B64.encode(key), "value": B64.encode(value) }),
        )
        .await
        .map(drop)
    }

    /// Puts `key` = `value` attached to `lease`: the key goes when the
    /// lease ends. Returns the key's create revision (kept when the key
    /// existed already).
    pub async fn put_leased(&self, key: &str, value: &str, lease: i64) -> Result<i64, EtcdError> {
        let answer = self
            .call(
                "put",
                "/v3/kv/put",
                json!({ "key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string(), "prev_kv": true }),
            )
            .await?;
        let before = number(&answer["prev_kv"]["create_revision"]);
        Ok(if before > 0 {
            before
        } else {
            number(&answer["header"]["revision"])
        })
    }

    /// Deletes `key` if it was last changed at `mod_revision`; true when deleted.
    pub async fn delete_if_unchanged(
        &self,
        key: &str,
        mod_revision: i64,
    ) -> Result<bool, EtcdError> {
        let k = B64.encode(key);
        self.txn(
            json!({ "key": k, "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision.to_string() }),
            vec![json!({ "request_delete_range": { "key": k } })],
        )
        .await
    }

    /// Every key under `prefix`, with its value.
    pub async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, EtcdError> {
        let answer = self
            .call("range", "/v3/kv/range", range_request(prefix, false))
            .await?;
        Ok(key_values(&answer["kvs"]))
    }

    /// How many keys lie under `count_prefix`, and every key under
    /// `range_prefix` with its value: one request, one revision.
    pub async fn count_and_range(
        &self,
        count_prefix: &str,
        range_prefix: &str,
    ) -> Result<(u64, Vec<KeyValue>), EtcdError> {
        let answer = self
            .call(
                "txn",
                "/v3/kv/txn",
                json!({ "success": [
                    { "request_range": range_request(count_prefix, true) },
                    { "request_range": range_request(range_prefix, false) },
                ]}),
            )
            .await?;
        let responses = &answer["responses"];
        if !responses[1]["response_range"].is_object() {
            return Err(EtcdError::new(
                "txn",
                format!("not the two ranges asked for: {}", short(&answer)),
            ));
        }
        let count = number(&responses[0]["response_range"]["count"]);
        Ok((
            u64::try_from(count).unwrap_or(0),
            key_values(&responses[1]["response_range"]["kvs"]),
        ))
    }

    /// How many keys under `prefix` were created before revision `before`,
    /// as the store was at revision `at`, counted up to `most`.
    pub async fn count_created_before(
        &self,
        prefix: &str,
        at: i64,
        before: i64,
        most: u32,
    ) -> Result<u64, EtcdError> {
        if before <= 1 {
            // etcd reads a limit of 0 as none.
            return Ok(0);
        }
        // etcd counts before it filters: the keys themselves are counted.
        let mut request = range_request(prefix, false);
        request["keys_only"] = json!(true);
        request["revision"] = json!(at.to_string());
        request["max_create_revision"] = json!((before - 1).to_string());
        request["limit"] = json!(most.to_string());
        let answer = self.call("range", "/v3/kv/range", request).await?;
        Ok(answer["kvs"].as_array().map_or(0, |kvs| kvs.len() as u64))
    }
}

/// The key-value pairs of a range's answer (`kvs`), keys and values
/// decoded lossily.
fn key_values(kvs: &Value) -> Vec<KeyValue> {
    kvs.as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| KeyValue {
                    key: decode_text(&kv["key"]),
                    value: decode_text(&kv["value"]),
                    mod_revision: number(&kv["mod_revision"]),
                    create_revision: number(&kv["create_revision"]),
                    lease: number(&kv["lease"]),
                })
                .collect()
        })
        .unwrap_or_default()
}
