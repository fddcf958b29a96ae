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
    // Not the decoder's message: it quotes a byte of the secret and where it is.
    let key = BASE64.decode(encoded).map_err(|_| "the callback secret is not valid base64 after whsec_")?;
    if key.is_empty() {
        return Err("the callback secret is empty".into());
    }
    Ok(key)
}

/// Parses `--callback-retry`: comma-separated durations (`0s,5s,30s`).
pub(crate) fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let delays: Vec<Duration> = text
        .split(',')
        .map(|d| crate::engine_args::duration_flag(d.trim()).map_err(|e| format!("bad delay {d:?}: {e}")))
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
    secret: Option<crate::secret::Secret<Vec<u8>>>,
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
        Ok(Callbacks { client, secret: secret.map(crate::secret::Secret), schedule })
    }

    async fn attempt(&self, url: &str, id: &str, body: &[u8]) -> Result<(), String> {
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(crate::secret::Secret(key)) = &self.secret {
            request = request.header("webhook-signature", signature(key, id, timestamp, body));
        }
        match request.body(body.to_vec()).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{} answered {}", shown(url), r.status())),
            Err(e) => Err(format!("{}: {}", shown(url), without_url(&e))),
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

/// `{callback_url}/{kind}` (SPEC 6): the segment goes at the end of the URL's path, before any
/// query string (`https://app/hook?t=1` → `https://app/hook/complete?t=1`).
pub(crate) fn endpoint(url: &str, kind: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.cannot_be_a_base() => {
            if let Ok(mut segments) = parsed.path_segments_mut() {
                segments.pop_if_empty().push(kind);
            }
            parsed.to_string()
        }
        _ => format!("{}/{kind}", url.trim_end_matches('/')),
    }
}

/// A callback URL as messages (the status document's `last_error`, the journal, logs) show it:
/// scheme, host, port and the last path segment (the callback's kind), never the user,
/// password, the rest of the path, the query or the fragment, any of which can carry the
/// receiver's credentials (some webhook services put a token in the path).
fn shown(url: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(url) else { return "the callback URL".to_string() };
    let host = parsed.host_str().unwrap_or("?");
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let segments: Vec<&str> = parsed.path_segments().map(|s| s.filter(|x| !x.is_empty()).collect()).unwrap_or_default();
    let path = match segments.as_slice() {
        [] => String::new(),
        [only] => format!("/{only}"),
        [.., last] => format!("/…/{last}"),
    };
    format!("{}://{host}{port}{path}", parsed.scheme())
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
        assert_eq!(
            parse_secret("whsec_MfKQ9r8G!YqrTwjU").unwrap_err(),
            "the callback secret is not valid base64 after whsec_"
        );
        assert_eq!(
            parse_schedule("0s, 5s,2m").unwrap(),
            vec![Duration::ZERO, Duration::from_secs(5), Duration::from_secs(120)]
        );
        assert!(parse_schedule("0s,soon").is_err());
    }

    #[test]
    fn callback_endpoints_go_before_the_query_string() {
        assert_eq!(endpoint("http://app:3000/api/worker", "complete"), "http://app:3000/api/worker/complete");
        assert_eq!(endpoint("http://app:3000/api/worker/", "error"), "http://app:3000/api/worker/error");
        assert_eq!(endpoint("http://app:3000", "progress"), "http://app:3000/progress");
        assert_eq!(endpoint("https://app/hook?token=t1&x=2", "complete"), "https://app/hook/complete?token=t1&x=2");
    }

    /// A receiver answering 500 to a URL carrying credentials in its user info, path and query:
    /// the error (shown in the status document and the journal, logged) names the receiver
    /// without them.
    #[tokio::test]
    async fn a_failed_callback_names_its_receiver_without_credentials() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 64 * 1024];
            let n = conn.read(&mut request).await.unwrap();
            conn.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&request[..n]).to_string()
        });
        let callbacks = Callbacks::new(None, vec![Duration::ZERO]).unwrap();
        let url = endpoint(&format!("http://hook:S3cret@127.0.0.1:{port}/k/T0kenInPath?token=T0ken"), "complete");
        let e = callbacks.attempt(&url, "id", b"{}").await.unwrap_err();
        assert_eq!(e, format!("http://127.0.0.1:{port}/…/complete answered 500 Internal Server Error"));
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /k/T0kenInPath/complete?token=T0ken HTTP/1.1"), "{request}");
        // Nothing listens there any more: the connection error names the receiver the same way.
        let e = callbacks.attempt(&url, "id", b"{}").await.unwrap_err();
        assert_eq!(e, format!("http://127.0.0.1:{port}/…/complete: connection failed"));
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
