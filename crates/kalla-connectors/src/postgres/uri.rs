//! `postgres://user:pass@host:port/db?table=t[&schema=s][&sslmode=…][&scan=single]` (SPEC 3.1).
//!
//! The URI names one table or view. Kalla's own parameters are `table` (required), `schema`
//! (default `public`) and `scan` (`ctid`, the default: page ranges where possible; `single`: one
//! partition, the fallback forced). `sslmode` is honoured: `disable`, `prefer` (TLS when the
//! server offers it, certificate not verified), `require` (TLS, certificate not verified, as
//! libpq without a root certificate), `verify-full` (TLS, certificate chain and host name
//! verified against the Mozilla roots, or against `sslrootcert=<file>` when given). Every other
//! parameter is refused rather than ignored.

use crate::error::ConnectorError;
use std::time::Duration;

/// How a source's rows are split into partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// ctid page ranges on tables of Postgres ≥ 14; one partition otherwise.
    Ctid,
    /// Always one partition.
    Single,
}

/// TLS as `sslmode` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// `disable`.
    Disable,
    /// `prefer`: TLS when offered, not verified.
    Prefer,
    /// `require`: TLS, not verified.
    Require,
    /// `verify-full`: TLS, chain and host name verified (optionally against a root file).
    VerifyFull {
        /// `sslrootcert`, when given.
        root_cert: Option<String>,
    },
}

/// A parsed Postgres source location. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgLocation {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password, when given.
    pub password: Option<String>,
    /// Database.
    pub dbname: String,
    /// Schema of the table (`public` unless given).
    pub schema: String,
    /// Table or view name, exactly as in the catalog.
    pub table: String,
    /// TLS mode.
    pub tls: Tls,
    /// Partitioning choice.
    pub scan: ScanMode,
}

impl std::fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidUri { message: message.into() }
}

impl PgLocation {
    /// Parses a `postgres://` or `postgresql://` URI.
    pub fn parse(uri: &str) -> Result<PgLocation, ConnectorError> {
        let url = url::Url::parse(uri).map_err(|e| invalid(format!("not a valid postgres:// URI: {e}")))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(invalid("the URI must start with postgres:// or postgresql://"));
        }
        let decode = |s: &str| -> Result<String, ConnectorError> {
            percent_decode(s).ok_or_else(|| invalid("the URI has an invalid percent-encoding"))
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => decode(&h.to_string())?,
            None => return Err(invalid("the URI names no host")),
        };
        let user = decode(url.username())?;
        if user.is_empty() {
            return Err(invalid("the URI names no user (postgres://user:password@host/db?table=t)"));
        }
        let password = url.password().map(decode).transpose()?;
        let dbname = decode(url.path().trim_start_matches('/'))?;
        if dbname.is_empty() || dbname.contains('/') {
            return Err(invalid("the URI must name one database: postgres://user@host:5432/db?table=t"));
        }
        let (mut table, mut schema, mut sslmode, mut rootcert, mut scan) = (None, None, None, None, ScanMode::Ctid);
        // Percent-decoding only: `+` stays a plus, as libpq reads it (not a form-encoded space).
        let pairs = url
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                Ok((decode(k)?, decode(v)?))
            })
            .collect::<Result<Vec<(String, String)>, ConnectorError>>()?;
        for (k, v) in pairs {
            match k.as_str() {
                "table" => table = Some(v.to_string()),
                "schema" => schema = Some(v.to_string()),
                "sslmode" => sslmode = Some(v.to_string()),
                "sslrootcert" => rootcert = Some(v.to_string()),
                "scan" => {
                    scan = match v.as_str() {
                        "ctid" => ScanMode::Ctid,
                        "single" => ScanMode::Single,
                        other => return Err(invalid(format!("scan={other:?}: use ctid or single"))),
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "unknown URI parameter {other:?} (known: table, schema, sslmode, sslrootcert, scan)"
                    )));
                }
            }
        }
        let table = table.filter(|t| !t.is_empty()).ok_or_else(|| invalid("the URI needs ?table=<table or view>"))?;
        let tls = match sslmode.as_deref().unwrap_or("prefer") {
            "disable" => Tls::Disable,
            "prefer" | "allow" => Tls::Prefer,
            "require" => Tls::Require,
            "verify-full" => Tls::VerifyFull { root_cert: rootcert.clone() },
            "verify-ca" => {
                return Err(invalid("sslmode=verify-ca is not supported; use verify-full (chain and host name)"));
            }
            other => return Err(invalid(format!("sslmode={other:?} is not a libpq sslmode"))),
        };
        if rootcert.is_some() && !matches!(tls, Tls::VerifyFull { .. }) {
            return Err(invalid("sslrootcert is used only with sslmode=verify-full"));
        }
        Ok(PgLocation {
            host,
            port: url.port().unwrap_or(5432),
            user,
            password,
            dbname,
            schema: schema.filter(|s| !s.is_empty()).unwrap_or_else(|| "public".to_string()),
            table,
            tls,
            scan,
        })
    }

    /// The URI with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let auth = match &self.password {
            Some(_) => format!("{}:***", self.user),
            None => self.user.clone(),
        };
        format!(
            "postgres://{auth}@{}:{}/{}?schema={}&table={}",
            self.host, self.port, self.dbname, self.schema, self.table
        )
    }

    /// One database as the snapshot registry sees it (whatever user reads it: a snapshot can
    /// be imported by any session of the same database).
    pub fn database_key(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }

    /// `host:port`, for the per-host connection cap.
    pub fn host_key(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Connection settings: `application_name=kallad/<run_id>`, `TimeZone=UTC`, UTF-8, read-only
    /// transactions by default.
    pub fn config(&self, application_name: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(application_name)
            .options("-c TimeZone=UTC -c client_encoding=UTF8 -c standard_conforming_strings=on -c default_transaction_read_only=on")
            .connect_timeout(Duration::from_secs(10))
            .keepalives(true);
        if let Some(p) = &self.password {
            c.password(p);
        }
        c.ssl_mode(match self.tls {
            Tls::Disable => tokio_postgres::config::SslMode::Disable,
            Tls::Prefer => tokio_postgres::config::SslMode::Prefer,
            Tls::Require | Tls::VerifyFull { .. } => tokio_postgres::config::SslMode::Require,
        });
        c
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_with_defaults_and_never_show_the_password() {
        let l = PgLocation::parse("postgres://kalla:s%40cret@db.example:6543/ledger?table=Invoices&schema=Acc%20ts")
            .unwrap();
        assert_eq!((l.host.as_str(), l.port, l.user.as_str()), ("db.example", 6543, "kalla"));
        assert_eq!(l.password.as_deref(), Some("s@cret"));
        assert_eq!((l.dbname.as_str(), l.schema.as_str(), l.table.as_str()), ("ledger", "Acc ts", "Invoices"));
        assert_eq!((l.tls.clone(), l.scan), (Tls::Prefer, ScanMode::Ctid));
        assert_eq!(format!("{l:?}"), "postgres://kalla:***@db.example:6543/ledger?schema=Acc ts&table=Invoices");
        let l = PgLocation::parse("postgresql://u@h/db?table=a+b%2Bc&sslmode=disable&scan=single").unwrap();
        assert_eq!(l.table, "a+b+c");
        assert_eq!(
            (l.port, l.schema.as_str(), l.tls.clone(), l.scan),
            (5432, "public", Tls::Disable, ScanMode::Single)
        );
    }

    #[test]
    fn incomplete_or_unknown_uri_parts_are_refused() {
        for bad in [
            "postgres://u@h/db",
            "postgres://h/db?table=t",
            "postgres://u@h/?table=t",
            "postgres://u@h/db?table=t&sslmode=verify-ca",
            "postgres://u@h/db?table=t&sslmode=sometimes",
            "postgres://u@h/db?table=t&fetch=1000",
            "postgres://u@h/db?table=t&scan=fast",
        ] {
            assert!(matches!(PgLocation::parse(bad), Err(ConnectorError::InvalidUri { .. })), "{bad}");
        }
    }
}
