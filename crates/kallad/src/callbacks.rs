//! Callbacks to the app (SPEC 6).
//!
//! `progress` is best effort (one try, at most one a second per job). `complete` and `error` are
//! delivered at least once: one attempt after each delay of `--callback-retry`, retried on
//! transport errors and non-2xx answers. Every attempt of one callback carries the same
//! `webhook-id` (the receiver's dedup key), a fresh `webhook-timestamp` and, with
//! `--callback-secret whsec_…`, `webhook-signature: v1,<base64 HMAC-SHA256("{id}.{ts}.{body}")>`
//! (Standard Webhooks). Delivery runs on its own task: a slow or dead receiver never delays a job.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// Parses `--callback-secret`: `whsec_<base64 key>`.
pub(crate) fn parse_secret(text: &str) -> Result<Vec<u8>, String> {
    let encoded = text.strip_prefix("whsec_").ok_or("the callback secret must start with whsec_")?;
    let key = BASE64.decode(encoded).map_err(|e| format!("the callback secret is not base64 after whsec_: {e}"))?;
    if key.is_empty() {
        return Err("the callback secret is empty".into());
    }
    Ok(key)
}

/// Parses `--callback-retry`: comma-separated durations (`0s,5s,30s`).
pub(crate) fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let delays: Vec<Duration> = text
        .split(',')
        .map(|d| humantime::parse_duration(d.trim()).map_err(|e| format!("bad delay {d:?}: {e}")))
        .collect::<Result<_, _>>()?;
    if delays.is_empty() {
        return Err("the retry schedule needs at least one delay".into());
    }
    Ok(delays)
}

/// The `webhook-signature` value for one attempt.
pub(crate) fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Sends callbacks.
#[derive(Debug, Clone)]
pub(crate) struct Callbacks {
    client: reqwest::Client,
    secret: Option<Vec<u8>>,
    schedule: Vec<Duration>,
}

/// The outcome of one attempt, as the status document shows it.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub(crate) number: u32,
    pub(crate) error: Option<String>,
}

impl Callbacks {
    pub(crate) fn new(secret: Option<Vec<u8>>, schedule: Vec<Duration>) -> Result<Callbacks, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Callbacks { client, secret, schedule })
    }

    async fn attempt(&self, url: &str, id: &str, body: &[u8]) -> Result<(), String> {
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(key) = &self.secret {
            request = request.header("webhook-signature", signature(key, id, timestamp, body));
        }
        match request.body(body.to_vec()).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{url} answered {}", r.status())),
            Err(e) => Err(format!("{url}: {}", without_url(&e))),
        }
    }

    /// One best-effort `progress` callback; true when delivered.
    pub(crate) async fn progress(&self, url: &str, id: &str, body: &[u8]) -> bool {
        match self.attempt(url, id, body).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "progress callback not delivered");
                false
            }
        }
    }

    /// Delivers a final callback on the retry schedule; `report` sees every attempt. Returns true
    /// once delivered.
    pub(crate) async fn deliver(&self, url: &str, id: &str, body: &[u8], report: impl Fn(Attempt)) -> bool {
        for (i, delay) in self.schedule.iter().enumerate() {
            tokio::time::sleep(*delay).await;
            let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
            match self.attempt(url, id, body).await {
                Ok(()) => {
                    report(Attempt { number, error: None });
                    return true;
                }
                Err(e) => {
                    tracing::warn!(attempt = number, error = %e, "callback not delivered");
                    report(Attempt { number, error: Some(e) });
                }
            }
        }
        false
    }
}

/// reqwest errors print the URL; callback URLs are the app's, but keep messages short and free
/// of query strings.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_schedules_parse() {
        assert_eq!(parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap().len(), 24);
        assert!(parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(parse_secret("whsec_!!").is_err());
        assert_eq!(
            parse_schedule("0s, 5s,2m").unwrap(),
            vec![Duration::ZERO, Duration::from_secs(5), Duration::from_secs(120)]
        );
        assert!(parse_schedule("0s,soon").is_err());
    }

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
