//! A throwaway PostgreSQL server for tests: one per test binary, started on first use.
//!
//! `initdb` into a temporary directory (as the `postgres` user when running as root, since
//! `initdb` refuses root), trust authentication on 127.0.0.1, a free port. The server runs under
//! a small shell watchdog that stops it (fast shutdown) and removes its directory as soon as the
//! test process is gone, so no server outlives the tests, however they end.
//!
//! Binaries are found through `pg_config --bindir`, then `/usr/lib/postgresql/*/bin`; without
//! them the first test that needs Postgres fails saying what to install.
#![warn(missing_docs)]

pub mod rows;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The user every test connects as (a superuser; trust authentication).
pub const USER: &str = "kalla";

/// A user that must give its password ([`PASSWORD`]; scram-sha-256), for authentication tests.
pub const PASSWORD_USER: &str = "kalla_pw";
/// The password of [`PASSWORD_USER`].
pub const PASSWORD: &str = "pw-s3cret";

/// A running server.
#[derive(Debug)]
pub struct TestPg {
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    /// The test CA's certificate (PEM) that signed the server's certificate for IP 127.0.0.1,
    /// when openssl was there to make them; the server then accepts TLS.
    pub tls_cert: Option<PathBuf>,
}

static SERVER: OnceLock<Result<TestPg, String>> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn bindir() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.sort();
    found.into_iter().rev().find(|d| d.join("initdb").is_file() && d.join("postgres").is_file()).ok_or_else(|| {
        "no PostgreSQL server binaries (initdb, postgres) found; install them: apt-get install -y postgresql".into()
    })
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Runs a command as the postgres user when root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start() -> Result<TestPg, String> {
    let bin = bindir()?;
    // Not a TempDir: the watchdog removes it after the server stopped.
    let dir = tempfile::Builder::new().prefix("kalla-testpg-").tempdir().map_err(|e| e.to_string())?.keep();
    let data = dir.join("data");
    if is_root() {
        let ok =
            Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().map_err(|e| e.to_string())?;
        if !ok.success() {
            return Err("cannot hand the test cluster directory to the postgres user".into());
        }
    }
    let out = as_server_user(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let hba = format!(
        "local all all trust\nhost all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n"
    );
    std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| format!("pg_hba.conf: {e}"))?;
    let port = free_port()?;
    // A test CA and a server certificate it signed for 127.0.0.1, so TLS modes can be tested.
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let ca = dir.join("ca.crt");
    let ext = dir.join("server.ext");
    let openssl = |args: &[&str]| {
        Command::new("openssl")
            .current_dir(&dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let made = std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").is_ok()
        && openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=kalla-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ])
        && openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ])
        && openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
    let tls_cert = if made {
        let _ = Command::new("chmod").arg("600").arg(&key).status();
        if is_root() {
            let _ = Command::new("chown").arg("postgres:postgres").arg(&key).arg(&cert).status();
        }
        Some(ca.clone())
    } else {
        None
    };
    let mut tls_args: Vec<String> = Vec::new();
    if tls_cert.is_some() {
        tls_args.extend(["-c".into(), "ssl=on".into()]);
        tls_args.extend(["-c".into(), format!("ssl_cert_file={}", cert.display())]);
        tls_args.extend(["-c".into(), format!("ssl_key_file={}", key.display())]);
    }
    let server = as_server_user(&bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
            "-c",
            "log_min_messages=fatal",
        ])
        .args(&tls_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("postgres: {e}"))?;
    // The watchdog: stop the server and remove its files once this process is gone.
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -INT {server} 2>/dev/null; \
         for i in $(seq 1 100); do kill -0 {server} 2>/dev/null || break; sleep 0.1; done; rm -rf '{dir}'",
        parent = std::process::id(),
        server = server.id(),
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("watchdog: {e}"))?;
    let pg = TestPg { port, bin, tls_cert };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(pg.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ready {
            pg.psql("postgres", &format!("CREATE ROLE {PASSWORD_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'"));
            return Ok(pg);
        }
        if Instant::now() > deadline {
            return Err("the test PostgreSQL server did not start within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The server of this test binary (started on first use). Panics when it cannot start.
pub fn server() -> &'static TestPg {
    match SERVER.get_or_init(start) {
        Ok(pg) => pg,
        Err(e) => panic!("cannot start the test PostgreSQL server: {e}"),
    }
}

impl TestPg {
    /// Loads a CSV text (header first, no quoting) into a new table `table` with `COPY FROM
    /// STDIN` through psql, each column typed as Kalla's CSV inference types it (a `schema`
    /// entry `{column: "decimal(p,s)"}` wins).
    pub fn load_csv(&self, db: &str, table: &str, csv: &str, schema: &serde_json::Value) {
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        let columns: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let values: Vec<&str> = rows.iter().map(|r| r.get(i).copied().unwrap_or("")).collect();
                format!("\"{name}\" {}", column_type(&values, schema.get(*name).and_then(serde_json::Value::as_str)))
            })
            .collect();
        self.psql(db, &format!("CREATE TABLE {table} ({})", columns.join(", ")));
        let mut child = self
            .psql_command(db)
            .args(["-c", &format!("\\copy {table} FROM STDIN WITH (FORMAT csv, HEADER true)")])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(csv.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "loading {table}");
        self.psql(db, &format!("ANALYZE {table}"));
    }

    /// Creates a fresh database and returns its name.
    pub fn database(&self, prefix: &str) -> String {
        let n = DATABASES.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs SQL with psql (stop on the first error) and returns its unaligned, tuples-only output.
    /// Panics when psql fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_command(db).args(["-c", sql]).output().expect("psql runs");
        assert!(out.status.success(), "psql failed on {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A psql command for `db` with unaligned, tuples-only output and ON_ERROR_STOP.
    pub fn psql_command(&self, db: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", USER, "-d", db]);
        c
    }

    /// A source URI for `table` in `db` (no TLS: the test server has none).
    pub fn uri(&self, db: &str, table: &str) -> String {
        format!("postgres://{USER}:secret@127.0.0.1:{}/{db}?table={table}&sslmode=disable", self.port)
    }

    /// The directory holding the server binaries.
    pub fn bindir(&self) -> &Path {
        &self.bin
    }
}

/// The Postgres type the engine's CSV inference would give a column: integers → int8, plain
/// decimals → numeric(38, widest scale), anything else → text; a `schema` decimal wins.
fn column_type(values: &[&str], declared: Option<&str>) -> String {
    if let Some(d) = declared {
        return d.replace("decimal", "numeric");
    }
    let present: Vec<&&str> = values.iter().filter(|v| !v.is_empty()).collect();
    let integer = |v: &str| {
        let digits = v.strip_prefix('-').unwrap_or(v);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'))
    };
    let decimal = |v: &str| {
        let body = v.strip_prefix('-').unwrap_or(v);
        match body.split_once('.') {
            Some((i, f)) => {
                !i.is_empty()
                    && !f.is_empty()
                    && (i.bytes().chain(f.bytes())).all(|b| b.is_ascii_digit())
                    && (i == "0" || !i.starts_with('0'))
            }
            None => false,
        }
    };
    if !present.is_empty() && present.iter().all(|v| integer(v)) {
        "int8".into()
    } else if !present.is_empty() && present.iter().all(|v| integer(v) || decimal(v)) {
        let scale = present.iter().map(|v| v.split_once('.').map(|(_, f)| f.len()).unwrap_or(0)).max().unwrap_or(0);
        format!("numeric(38,{scale})")
    } else {
        "text".into()
    }
}
