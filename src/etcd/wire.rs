//! The JSON of etcd's gateway (`/v3/...`): request builders and typed,
//! checked responses.
//!
//! The gateway speaks the proto3 JSON mapping of etcd's gRPC messages:
//! `bytes` fields are base64, `int64` fields are decimal strings, and a
//! field at its default value (0, false, empty) is left out. Nothing read
//! from the socket is trusted: every field is parsed into a typed struct,
//! and a missing or malformed one is [`Error::Etcd`], never a panic.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Base64 of `bytes`, as the gateway wants `bytes` fields.
pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// An `int64` field: the gateway writes decimal strings, but accept a JSON
/// number too.
fn int64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// A `bytes` field, decoded from base64.
fn bytes<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    STANDARD.decode(s).map_err(serde::de::Error::custom)
}

/// What every response carries. `revision` is the store's revision when
/// the request was served (for a write, the revision it created).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, deserialize_with = "int64")]
    pub revision: i64,
}

/// One key and its metadata.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct KeyValue {
    #[serde(default, deserialize_with = "bytes")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "bytes")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "int64")]
    pub create_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    pub mod_revision: i64,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    #[serde(default, deserialize_with = "int64")]
    pub count: i64,
}

/// The answer of one operation inside a transaction (only ranges are
/// read; the rest is ignored).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ResponseOp {
    pub response_range: Option<RangeResponse>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

impl TxnResponse {
    /// The range answer at `index` of the branch that ran.
    pub fn range(&self, index: usize, op: &str) -> Result<&RangeResponse> {
        self.responses.get(index).and_then(|r| r.response_range.as_ref()).ok_or_else(|| Error::Etcd {
            op: op.to_string(),
            detail: format!("the transaction's answer has no range result at position {index}"),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LeaseGrantResponse {
    #[serde(default, rename = "ID", deserialize_with = "int64")]
    pub id: i64,
    #[serde(default, rename = "TTL", deserialize_with = "int64")]
    pub ttl: i64,
    #[serde(default)]
    pub error: String,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LeaseKeepAliveResponse {
    #[serde(default, rename = "TTL", deserialize_with = "int64")]
    pub ttl: i64,
}

/// One message of a streaming answer (keepalive, watch): a result, or an
/// error that ends the stream.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamItem<T> {
    pub result: Option<T>,
    pub error: Option<GatewayError>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    /// "PUT" is the default, so the gateway leaves it out.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl Event {
    pub fn is_delete(&self) -> bool {
        self.kind.as_deref() == Some("DELETE")
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WatchResponse {
    /// Cancelled by etcd, e.g. compacted past the start revision.
    #[serde(default)]
    pub canceled: bool,
    #[serde(default)]
    pub events: Vec<Event>,
}

/// The error body of a failed call: a gRPC status.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct GatewayError {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: i64,
    /// Older gateways put the code under `grpc_code`.
    #[serde(default)]
    pub grpc_code: i64,
}

impl GatewayError {
    pub fn code(&self) -> i64 {
        if self.code != 0 {
            self.code
        } else {
            self.grpc_code
        }
    }

    pub fn text(&self) -> &str {
        if self.message.is_empty() {
            &self.error
        } else {
            &self.message
        }
    }
}

/// gRPC status codes that etcd uses for a passing condition (no leader,
/// leader changed, overloaded, timed out): the request is retried.
pub(crate) fn transient_code(code: i64) -> bool {
    const DEADLINE_EXCEEDED: i64 = 4;
    const RESOURCE_EXHAUSTED: i64 = 8;
    const ABORTED: i64 = 10;
    const UNAVAILABLE: i64 = 14;
    matches!(code, DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED | ABORTED | UNAVAILABLE)
}

/// gRPC's NOT_FOUND: for lease calls, "requested lease not found".
pub(crate) const NOT_FOUND: i64 = 5;

// ---- request builders ----

/// Range over exactly `key`.
pub(crate) fn range(key: &[u8]) -> Value {
    json!({ "key": b64(key) })
}

/// Every key under `prefix`, with values, in key order.
pub(crate) fn range_under(prefix: &[u8]) -> Value {
    json!({ "key": b64(prefix), "range_end": b64(&prefix_end(prefix)) })
}

/// The keys (no values) under `prefix`.
pub(crate) fn range_keys(prefix: &[u8]) -> Value {
    json!({ "key": b64(prefix), "range_end": b64(&prefix_end(prefix)), "keys_only": true })
}

/// Count `key` (0 or 1).
pub(crate) fn count(key: &[u8]) -> Value {
    json!({ "key": b64(key), "count_only": true })
}

/// Count the keys under `prefix`.
pub(crate) fn count_prefix(prefix: &[u8]) -> Value {
    json!({ "key": b64(prefix), "range_end": b64(&prefix_end(prefix)), "count_only": true })
}

/// The end of the range of keys that start with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Put `key` = `value`, attached to `lease` if non-zero.
pub(crate) fn put(key: &[u8], value: &[u8], lease: i64) -> Value {
    let mut put = json!({ "key": b64(key), "value": b64(value) });
    if lease != 0 {
        put["lease"] = json!(lease.to_string());
    }
    put
}

/// Delete exactly `key`.
pub(crate) fn delete(key: &[u8]) -> Value {
    json!({ "key": b64(key) })
}

/// Delete the keys in `[key, end)`.
pub(crate) fn delete_range(key: &[u8], end: &[u8]) -> Value {
    json!({ "key": b64(key), "range_end": b64(end) })
}

/// Delete every key under `prefix`.
pub(crate) fn delete_prefix(prefix: &[u8]) -> Value {
    json!({ "key": b64(prefix), "range_end": b64(&prefix_end(prefix)) })
}

/// One transaction operation.
pub(crate) enum Op {
    Range(Value),
    Put(Value),
    Delete(Value),
}

impl Op {
    fn to_json(&self) -> Value {
        match self {
            Op::Range(v) => json!({ "request_range": v }),
            Op::Put(v) => json!({ "request_put": v }),
            Op::Delete(v) => json!({ "request_delete_range": v }),
        }
    }
}

/// A comparison of a key's field with a number.
pub(crate) enum Cmp {
    /// The key's create revision (0: the key does not exist).
    Create(i64),
    /// The key's mod revision.
    Mod(i64),
    /// The key's value.
    Value(Vec<u8>),
}

/// `key`'s field `cmp` compared with `result` ("EQUAL", "GREATER", ...).
pub(crate) fn compare(key: &[u8], result: &str, cmp: Cmp) -> Value {
    let mut c = json!({ "key": b64(key), "result": result });
    match cmp {
        Cmp::Create(n) => {
            c["target"] = json!("CREATE");
            c["create_revision"] = json!(n.to_string());
        }
        Cmp::Mod(n) => {
            c["target"] = json!("MOD");
            c["mod_revision"] = json!(n.to_string());
        }
        Cmp::Value(v) => {
            c["target"] = json!("VALUE");
            c["value"] = json!(b64(&v));
        }
    }
    c
}

/// A transaction: if every comparison holds, `success` runs, else `failure`.
pub(crate) fn txn(compares: Vec<Value>, success: &[Op], failure: &[Op]) -> Value {
    json!({
        "compare": compares,
        "success": success.iter().map(Op::to_json).collect::<Vec<_>>(),
        "failure": failure.iter().map(Op::to_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn responses_parse_the_gateway_json_and_reject_garbage() {
        let txt = r#"{"header":{"revision":"5","member_id":"13458989633860879742"},"succeeded":true,
            "responses":[{"response_range":{"header":{"revision":"5"},"kvs":[{"key":"bw==","create_revision":"3",
            "mod_revision":"3","version":"1","value":"bWU="}],"count":"1"}},{"response_put":{"header":{}}}]}"#;
        let r: TxnResponse = serde_json::from_str(txt).unwrap();
        assert!(r.succeeded);
        assert_eq!(r.header.revision, 5);
        let range = r.range(0, "test").unwrap();
        assert_eq!(range.kvs[0].key, b"o");
        assert_eq!(range.kvs[0].value, b"me");
        assert_eq!(range.kvs[0].create_revision, 3);
        assert!(r.range(1, "test").is_err());
        assert!(r.range(2, "test").is_err());
        assert!(serde_json::from_str::<TxnResponse>(r#"{"header":{"revision":"x"}}"#).is_err());
        assert!(serde_json::from_str::<KeyValue>(r#"{"key":"not base64!"}"#).is_err());
    }
}
