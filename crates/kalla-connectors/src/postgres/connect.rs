//! Connections: TLS as `sslmode` asks, the per-host connection cap, and clean cancellation.

use super::uri::{PgLocation, Tls};
use crate::error::ConnectorError;
use rustls::pki_types::pem::PemObject;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

/// Connections one kallad process opens to one Postgres host at most (readers and snapshot
/// holders together), unless `KALLA_PG_CONNECTIONS_PER_HOST` says otherwise. Readers beyond it
/// wait for a free connection (as long as it takes; cancel and `--job-timeout` still apply). A
/// scan never has more ranges than the cap. Snapshot holders (one per database per job) are
/// not counted.
pub const DEFAULT_CONNECTIONS_PER_HOST: usize = 32;
/// The largest per-host cap `KALLA_PG_CONNECTIONS_PER_HOST` sets.
pub const MAX_CONNECTIONS_PER_HOST: usize = 100_000;

static HOST_PERMITS: LazyLock<Mutex<HashMap<String, Arc<Semaphore>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The per-host cap in force.
pub fn connections_per_host() -> usize {
    std::env::var("KALLA_PG_CONNECTIONS_PER_HOST")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_CONNECTIONS_PER_HOST)
        // A semaphore holds at most `usize::MAX >> 3` permits; no server takes this many.
        .min(MAX_CONNECTIONS_PER_HOST)
}

fn host_semaphore(host: &str) -> Arc<Semaphore> {
    let mut map = HOST_PERMITS.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(map.entry(host.to_string()).or_insert_with(|| Arc::new(Semaphore::new(connections_per_host()))))
}

/// An open connection and its place under the host cap. Dropping it closes the connection; a
/// statement still running is cancelled on the server first (so the backend leaves at once).
pub struct PgConnection {
    client: Client,
    cancel: Option<(tokio_postgres::CancelToken, Tls)>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnection").finish_non_exhaustive()
    }
}

impl std::ops::Deref for PgConnection {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl PgConnection {
    /// Marks the work of this connection done: dropping it no longer cancels anything.
    pub fn done(&mut self) {
        self.cancel = None;
    }
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        if let Some((token, tls)) = self.cancel.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let result = match make_tls(&tls) {
                    Ok(Some(t)) => token.cancel_query(t).await,
                    _ => token.cancel_query(tokio_postgres::NoTls).await,
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "cancelling a Postgres query failed");
                }
            });
        }
    }
}

/// A TLS verifier that accepts any certificate: `sslmode=require`/`prefer` encrypt without
/// verifying, exactly as libpq does without a root certificate.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn make_tls(tls: &Tls) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match tls {
        Tls::Disable => return Ok(None),
        Tls::Prefer | Tls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
        Tls::VerifyFull { root_cert } => {
            let mut roots = rustls::RootCertStore::empty();
            match root_cert {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
                    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                        let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                        roots.add(cert).map_err(|e| format!("sslrootcert {path}: {e}"))?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

/// Opens a connection named `kallad/<run_id>` under the host cap.
pub async fn connect(location: &PgLocation, run_id: &str) -> Result<PgConnection, ConnectorError> {
    let permit = host_semaphore(&location.host_key())
        .acquire_owned()
        .await
        .map_err(|_| ConnectorError::Postgres { message: "the connection cap is closed".into() })?;
    connect_with(location, run_id, Some(permit)).await
}

/// Opens a connection outside the host cap (snapshot holders: one per database per job, so
/// readers waiting for the cap can never starve the transaction they need).
pub async fn connect_uncapped(location: &PgLocation, run_id: &str) -> Result<PgConnection, ConnectorError> {
    connect_with(location, run_id, None).await
}

async fn connect_with(
    location: &PgLocation,
    run_id: &str,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<PgConnection, ConnectorError> {
    let config = location.config(&format!("kallad/{run_id}"));
    let unreachable = |e: tokio_postgres::Error| {
        let message = format!("cannot connect to {}: {}", location.redacted(), describe(&e));
        if is_transient(&e) { ConnectorError::PgUnavailable { message } } else { ConnectorError::Postgres { message } }
    };
    let tls = make_tls(&location.tls).map_err(|message| ConnectorError::Postgres { message })?;
    let client = match tls {
        Some(tls) => {
            let (client, connection) = config.connect(tls).await.map_err(unreachable)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "Postgres connection ended");
                }
            });
            client
        }
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(unreachable)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "Postgres connection ended");
                }
            });
            client
        }
    };
    let cancel = Some((client.cancel_token(), location.tls.clone()));
    Ok(PgConnection { client, cancel, _permit: permit })
}

/// Whether a Postgres error is about the session rather than the request: no answer, a lost
/// connection, or the server ending it (SQLSTATE class 08, `57P01`–`57P03`). A refused login or
/// a missing database is not.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
    }
}

/// A Postgres error as one line: the server's message (with its SQLSTATE) or the client's.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None if e.is_closed() => {
            "the server closed the connection (it restarted, or the backend was terminated)".to_string()
        }
        None => {
            let text = e.to_string();
            match std::error::Error::source(e) {
                Some(cause) => format!("{text}: {cause}"),
                None => text,
            }
        }
    }
}

/// Quotes an identifier for SQL (`"` doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL (`'` doubled; `E''` never used, so backslashes are literal
/// under `standard_conforming_strings`, which Kalla's connections require).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
