//! A blocking client for etcd's JSON gateway: POST `/v3/...` on one of the
//! endpoints, with a deadline on every call and failover between endpoints.
//!
//! Retry rule: a transport failure (refused, reset, timed out) or a
//! transient gRPC status (no leader, leader changed, overloaded, timed out)
//! moves to the next endpoint and tries again, with a short back-off after
//! each full round, until the call's deadline; then the call is
//! [`Error::EtcdUnreachable`] naming the last failure. A retried write may
//! already have been applied once: every write the etcd module makes is a
//! transaction guarded by a comparison, written so that running it twice is
//! harmless and its first success can be recognised (see the lock and
//! semaphore modules). Any other answer etcd gives is final.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::wire::{self, GatewayError, StreamItem};
use crate::error::{Error, Result};

/// The largest answer accepted. etcd refuses requests over 1.5 MiB by
/// default, and the module never asks for more than a few keys.
const MAX_BODY: u64 = 8 << 20;
/// The first back-off after every endpoint failed once; doubled each round.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// The longest back-off between rounds.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// The least time one attempt gets, however many endpoints share a call's
/// budget.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);

/// Why one call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Nothing usable came back before the deadline.
    Unreachable { waited: Duration, detail: String },
    /// etcd answered with a final gRPC status.
    Refused { code: i64, message: String },
    /// The answer is not what the call expects.
    Invalid(String),
}

impl CallError {
    /// The crate error for this failure of `op`.
    pub fn into_error(self, client: &Client, op: &str) -> Error {
        match self {
            CallError::Unreachable { waited, detail } => {
                Error::EtcdUnreachable { endpoints: client.endpoints.join(", "), waited, detail }
            }
            CallError::Refused { code, message } => {
                Error::Etcd { op: op.to_string(), detail: format!("etcd refused it (gRPC code {code}): {message}") }
            }
            CallError::Invalid(detail) => Error::Etcd { op: op.to_string(), detail },
        }
    }
}

/// One attempt's failure: worth retrying elsewhere, or final.
enum Attempt {
    Transient(String),
    Final(CallError),
}

/// The gateway client of one session.
pub(crate) struct Client {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    /// The endpoint that answered last; calls start there.
    preferred: AtomicUsize,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// Turns `host:port` or `http://host:port[/]` into `http://host:port`.
fn endpoint_url(endpoint: &str) -> Result<String> {
    let e = endpoint.trim().trim_end_matches('/');
    let invalid =
        |detail: &str| Error::InvalidArgument { name: format!("etcd endpoint {endpoint:?}"), detail: detail.into() };
    if e.starts_with("https://") {
        return Err(invalid("TLS is not supported by this client; reach etcd over http:// (e.g. on a private network or through a local TLS proxy)"));
    }
    let hostport = e.strip_prefix("http://").unwrap_or(e);
    if hostport.is_empty() || hostport.contains('/') || hostport.contains("://") || !hostport.contains(':') {
        return Err(invalid("write an endpoint as host:port or http://host:port, e.g. http://127.0.0.1:2379"));
    }
    Ok(format!("http://{hostport}"))
}

impl Client {
    /// A client for `endpoints`; no network traffic yet.
    pub fn new(endpoints: &[String], connect_timeout: Duration, request_timeout: Duration) -> Result<Client> {
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument {
                name: "etcd endpoints".into(),
                detail: "give at least one endpoint, e.g. http://127.0.0.1:2379".into(),
            });
        }
        let endpoints = endpoints.iter().map(|e| endpoint_url(e)).collect::<Result<Vec<_>>>()?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(connect_timeout))
            .timeout_global(Some(request_timeout))
            .max_idle_connections_per_host(8)
            .build();
        Ok(Client {
            agent: ureq::Agent::new_with_config(config),
            endpoints,
            preferred: AtomicUsize::new(0),
            connect_timeout,
            request_timeout,
        })
    }

    /// The endpoints, for messages.
    pub fn endpoints(&self) -> String {
        self.endpoints.join(", ")
    }

    /// How long one call may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The deadline of a call that starts now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    /// POSTs `body` to `path` and parses the answer, with the client's
    /// request timeout; the crate error names `op`.
    pub fn call<T: DeserializeOwned>(&self, path: &str, body: &Value, op: &str) -> Result<T> {
        self.call_until(path, body, self.deadline()).map_err(|e| e.into_error(self, op))
    }

    /// POSTs `body` to `path`, retrying as the module docs say, until
    /// `deadline`.
    pub fn call_until<T: DeserializeOwned>(&self, path: &str, body: &Value, deadline: Instant) -> Result<T, CallError> {
        let text = self.with_failover(deadline, |endpoint, timeout| {
            let mut response = self.post(endpoint, path, body, timeout)?;
            let status = response.status().as_u16();
            let text = response
                .body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_string()
                .map_err(|e| Attempt::Transient(format!("{endpoint}: reading the answer: {e}")))?;
            if status == 200 {
                Ok(text)
            } else {
                Err(refusal(endpoint, status, &text))
            }
        })?;
        serde_json::from_str(&text)
            .map_err(|e| CallError::Invalid(format!("etcd's answer does not parse ({e}): {}", clip(&text))))
    }

    /// Opens the streaming call `path` (watch, keepalive) and hands each
    /// result to `on_item` until it returns `Some`, the stream ends, or
    /// `until` passes. `Ok(None)`: the stream ended or timed out without an
    /// answer; the caller re-checks and calls again. A failure to open the
    /// stream is retried on the other endpoints until `until`.
    pub fn stream<T: DeserializeOwned, R>(
        &self,
        path: &str,
        body: &Value,
        until: Instant,
        mut on_item: impl FnMut(T) -> Option<R>,
    ) -> Result<Option<R>, CallError> {
        let opened = self.with_failover(until, |endpoint, timeout| {
            let response = self.post(endpoint, path, body, timeout)?;
            let status = response.status().as_u16();
            if status != 200 {
                let mut text = String::new();
                let _ = response.into_body().into_with_config().limit(MAX_BODY).reader().read_to_string(&mut text);
                return Err(refusal(endpoint, status, &text));
            }
            Ok(response)
        });
        let response = match opened {
            Ok(r) => r,
            // Out of time before a stream opened: the caller's wait is over.
            Err(CallError::Unreachable { .. }) if Instant::now() >= until => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut lines = BufReader::new(response.into_body().into_with_config().limit(MAX_BODY).reader());
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                // The end of the stream, or its timeout: either way, over.
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
            if line.trim().is_empty() {
                continue;
            }
            let item: StreamItem<T> = serde_json::from_str(&line)
                .map_err(|e| CallError::Invalid(format!("etcd's stream item does not parse ({e}): {}", clip(&line))))?;
            if let Some(err) = item.error {
                if wire::transient_code(err.code()) {
                    return Ok(None);
                }
                return Err(CallError::Refused { code: err.code(), message: err.text().to_string() });
            }
            if let Some(result) = item.result {
                if let Some(r) = on_item(result) {
                    return Ok(Some(r));
                }
            }
        }
    }

    /// One POST to `endpoint`, bounded by `timeout`.
    fn post(
        &self,
        endpoint: &str,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, Attempt> {
        let url = format!("{endpoint}{path}");
        self.agent
            .post(&url)
            .config()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(self.connect_timeout.min(timeout)))
            .build()
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .map_err(|e| match e {
                ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
                    Attempt::Final(CallError::Invalid(format!("bad request to {url}: {e}")))
                }
                e => Attempt::Transient(format!("{endpoint}: {e}")),
            })
    }

    /// Runs `attempt` on one endpoint after another, starting with the
    /// preferred one, until it succeeds, fails finally, or `deadline`
    /// passes.
    fn with_failover<T>(
        &self,
        deadline: Instant,
        mut attempt: impl FnMut(&str, Duration) -> Result<T, Attempt>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let n = self.endpoints.len();
        let share = (self.request_timeout / n as u32).max(MIN_ATTEMPT);
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::from("no attempt was made: the deadline had passed");
        let mut tried = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Unreachable { waited: started.elapsed(), detail: last });
            }
            let index = self.preferred.load(Ordering::Relaxed) % n;
            match attempt(&self.endpoints[index], left.min(share)) {
                Ok(v) => return Ok(v),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Transient(why)) => last = why,
            }
            // Relaxed: the index is only a hint for where to start.
            let _ = self.preferred.compare_exchange(index, (index + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
            tried += 1;
            if tried % n == 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                std::thread::sleep(backoff.min(left));
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// A non-200 answer: transient (retry elsewhere) or final.
fn refusal(endpoint: &str, status: u16, text: &str) -> Attempt {
    match serde_json::from_str::<GatewayError>(text) {
        Ok(err) if wire::transient_code(err.code()) => {
            Attempt::Transient(format!("{endpoint}: {} (gRPC code {})", err.text(), err.code()))
        }
        Ok(err) if err.code() != 0 => {
            Attempt::Final(CallError::Refused { code: err.code(), message: err.text().to_string() })
        }
        // Not a gateway error: a proxy, or not etcd at all. A 5xx may pass.
        _ if status >= 500 => Attempt::Transient(format!("{endpoint}: HTTP {status}: {}", clip(text))),
        _ => Attempt::Final(CallError::Invalid(format!(
            "{endpoint} answered HTTP {status} ({}); is it an etcd 3.4+ client URL with the gRPC gateway on?",
            clip(text)
        ))),
    }
}

/// At most 200 characters of `text`, for error messages.
fn clip(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised_and_https_is_refused() {
        assert_eq!(endpoint_url("127.0.0.1:2379").unwrap(), "http://127.0.0.1:2379");
        assert_eq!(endpoint_url("http://localhost:2379/").unwrap(), "http://localhost:2379");
        assert!(endpoint_url("https://127.0.0.1:2379").is_err());
        assert!(endpoint_url("localhost").is_err());
        assert!(endpoint_url("http://h:1/v3").is_err());
        assert!(Client::new(&[], Duration::from_secs(1), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn refusals_sort_into_transient_and_final() {
        let no_leader = r#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#;
        assert!(matches!(refusal("e", 503, no_leader), Attempt::Transient(_)));
        let not_found = r#"{"error":"etcdserver: requested lease not found","code":5}"#;
        assert!(matches!(refusal("e", 404, not_found), Attempt::Final(CallError::Refused { code: 5, .. })));
        assert!(matches!(refusal("e", 502, "bad gateway"), Attempt::Transient(_)));
        assert!(matches!(refusal("e", 404, "<html>"), Attempt::Final(CallError::Invalid(_))));
    }
}
