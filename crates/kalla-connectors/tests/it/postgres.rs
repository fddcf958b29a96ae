//! The Postgres scan against a throwaway server: types, partitions, snapshots, hostile names.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::{SessionConfig, SessionContext};
use kalla_connectors::postgres::open_postgres_source;
use kalla_connectors::postgres::snapshot::SnapshotRegistry;
use kalla_recipe::{ErrorCode, JobRequest, Source};
use kalla_testpg::server;
use serde_json::json;
use std::sync::Arc;

/// A validated source for `uri` with an optional `schema`.
fn source(uri: &str, schema: serde_json::Value) -> Source {
    let request = json!({
        "run_id": uuid::Uuid::new_v4().to_string(),
        "match_sql": "SELECT * FROM t",
        "sources": [{"alias": "t", "uri": uri, "schema": schema}],
        "output_path": "out"
    });
    JobRequest::from_value(request).unwrap().validate().unwrap().sources.remove(0)
}

struct Scan {
    ctx: SessionContext,
    registry: Arc<SnapshotRegistry>,
}

/// Opens `uri` as table `t` in a session of `partitions` partitions, snapshots armed.
async fn open(uri: &str, partitions: usize, schema: serde_json::Value) -> Result<Scan, kalla_recipe::KallaError> {
    let run_id = uuid::Uuid::new_v4().to_string();
    let registry = Arc::new(SnapshotRegistry::new(&run_id));
    registry.arm();
    let src = source(uri, schema);
    let opened = open_postgres_source(&src, uri, &run_id, Arc::clone(&registry))
        .await
        .map_err(|e| e.into_kalla("sources[0]"))?;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    ctx.register_table("t", opened.provider).unwrap();
    Ok(Scan { ctx, registry })
}

async fn rows(scan: &Scan, sql: &str) -> Vec<String> {
    let batches = scan.ctx.sql(sql).await.unwrap().collect().await.unwrap();
    render(&batches)
}

fn render(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| if c.is_null(r) { "NULL".to_string() } else { array_value_to_string(c, r).unwrap() })
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

#[tokio::test]
async fn every_mapped_type_round_trips_with_its_edge_values() {
    let pg = server();
    let db = pg.database("types");
    pg.psql(
        &db,
        r#"CREATE TYPE mood AS ENUM ('sad', 'happy');
        CREATE TABLE "Mixed Case" (
          id int4, b bool, i2 int2, i8 int8, f4 float4, f8 float8,
          n numeric(12,2), n38 numeric(38,0), n50 numeric(50,5), nneg numeric(5,-2), nsmall numeric(3,5),
          txt text, vc varchar(10), ch char(5), nm name, js json, jb jsonb, m mood, u uuid,
          by bytea, d date, ts timestamp, tz timestamptz, t time, iv interval, ai int4[], at text[]);
        INSERT INTO "Mixed Case" VALUES
          (1, true, -32768, 9223372036854775807, 1.5, -2.25,
           1234567890.12, 99999999999999999999999999999999999999, 123456789012345678901234567890123456789012345.67891,
           1234500, 0.00123,
           'héllo ✓', 'abc', 'ab', 'pg_name', '{"a": 1}', '{"b": [1, 2]}', 'happy',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff00'::bytea, '2026-02-28', '2026-02-28 13:14:15.123456',
           '2026-02-28 13:14:15.5+02', '23:59:59.999999', '1 year 2 mons 3 days 04:05:06.000007',
           '{1,NULL,3}', '{"x","y z"}'),
          (2, false, 0, -1, 'NaN', 'Infinity', -0.01, 0, 0, 0, 0, '', '', '', '', 'null', 'null', 'sad',
           '00000000-0000-0000-0000-000000000000', ''::bytea, '1970-01-01', '1970-01-01 00:00:00',
           '1970-01-01 00:00:00+00', '00:00:00', '-1 day', '{}', '{}'),
          (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
        INSERT INTO "Mixed Case" (id, txt) VALUES (4, repeat('long ', 20000));"#,
    );
    let scan = open(&pg.uri(&db, "Mixed%20Case"), 2, json!({})).await.unwrap();
    let got = rows(&scan, "SELECT * FROM t WHERE id < 4 ORDER BY id").await;
    assert_eq!(
        got,
        vec![
            "1|true|-32768|9223372036854775807|1.5|-2.25|1234567890.12|99999999999999999999999999999999999999|\
             123456789012345678901234567890123456789012345.67891|1234500|0.00123|héllo ✓|abc|ab|pg_name|{\"a\": 1}|\
             {\"b\": [1, 2]}|happy|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|00ff00|2026-02-28|2026-02-28T13:14:15.123456|\
             2026-02-28T11:14:15.500Z|23:59:59.999999|14 mons 3 days 4 hours 5 mins 6.000007000 secs|[1, , 3]|[x, y z]",
            "2|false|0|-1|NaN|inf|-0.01|0|0.00000|0|0.00000|||||null|null|sad|00000000-0000-0000-0000-000000000000||\
             1970-01-01|1970-01-01T00:00:00|1970-01-01T00:00:00Z|00:00:00|-1 days|[]|[]",
            "3|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL",
        ]
    );
    let long = rows(&scan, "SELECT length(txt) FROM t WHERE id = 4").await;
    assert_eq!(long, vec!["100000"]);
    let types = rows(&scan, "SELECT arrow_typeof(n), arrow_typeof(n50), arrow_typeof(nneg), arrow_typeof(nsmall), arrow_typeof(tz), arrow_typeof(ai) FROM t LIMIT 1").await;
    assert_eq!(
        types,
        vec![
            "Decimal128(12, 2)|Decimal256(50, 5)|Decimal128(7, 0)|Decimal128(5, 5)|Timestamp(µs, \"UTC\")|List(Int32)"
        ]
    );
    drop(scan.registry);
}

#[tokio::test]
async fn values_that_cannot_be_exact_fail_naming_the_column() {
    let pg = server();
    let db = pg.database("bad");
    pg.psql(
        &db,
        "CREATE TABLE nan (id int, amount numeric(10,2)); INSERT INTO nan VALUES (1, 'NaN');
         CREATE TABLE inf (id int, day date); INSERT INTO inf VALUES (1, 'infinity');
         CREATE TABLE tsinf (id int, at timestamptz); INSERT INTO tsinf VALUES (1, '-infinity');
         CREATE TABLE free (id int, amount numeric); INSERT INTO free VALUES (1, 0.12345678901);
         CREATE TABLE grid (id int, cells int[]); INSERT INTO grid VALUES (1, '{{1,2},{3,4}}');
         CREATE TABLE geo (id int, spot point);
         CREATE TYPE public.date AS (x int); CREATE TABLE shadow (id int, day public.date);
         CREATE TABLE shadows (id int, days public.date[]);
         CREATE EXTENSION citext; CREATE TABLE ci (id int, k citext); INSERT INTO ci VALUES (1, 'Ab');
         CREATE TABLE midnight (id int, at time); INSERT INTO midnight VALUES (1, '24:00:00');",
    );
    for (table, column, needle) in [
        ("nan", "amount", "NaN"),
        ("inf", "day", "infinite date"),
        ("tsinf", "at", "infinite timestamp"),
        ("free", "amount", "lose digits"),
        ("grid", "cells", "2 dimensions"),
        ("midnight", "at", "24:00:00"),
    ] {
        let scan = open(&pg.uri(&db, table), 1, json!({})).await.unwrap();
        let err = scan.ctx.sql("SELECT * FROM t").await.unwrap().collect().await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("column {column}")) && text.contains(needle), "{table}: {text}");
    }
    // An unconstrained numeric given a wide enough scale reads exactly.
    let scan = open(&pg.uri(&db, "free"), 1, json!({"amount": "decimal(38,11)"})).await.unwrap();
    assert_eq!(rows(&scan, "SELECT amount FROM t").await, vec!["0.12345678901"]);
    // A type Kalla does not read is refused when the source is opened, naming the column.
    let e = open(&pg.uri(&db, "geo"), 1, json!({})).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::UnsupportedSource);
    assert!(e.message.contains("\"spot\"") && e.message.contains("point"), "{}", e.message);
    // citext is an extension's type, in the schema it was installed in: read as text.
    let scan = open(&pg.uri(&db, "ci"), 1, json!({})).await.unwrap();
    assert_eq!(rows(&scan, "SELECT k FROM t").await, vec!["Ab"]);
    // A user's type named like a built-in one is not read as the built-in one.
    for (table, column) in [("shadow", "day"), ("shadows", "days")] {
        let e = open(&pg.uri(&db, table), 1, json!({})).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::UnsupportedSource, "{table}");
        assert!(
            e.message.contains(&format!("\"{column}\"")) && e.message.contains("type public.date is not supported"),
            "{table}: {}",
            e.message
        );
    }
}

/// A table of `n` rows: id, a text key, an amount with cents, a date.
fn big_table(db: &str, n: u64) {
    server().psql(
        db,
        &format!(
            "CREATE TABLE big (id int8 PRIMARY KEY, ref text, amount numeric(12,2), day date);
             INSERT INTO big SELECT g, 'R' || g, (g % 100000) / 100.0, DATE '2026-01-01' + (g % 365)::int
             FROM generate_series(1, {n}) g; ANALYZE big;"
        ),
    );
}

#[tokio::test]
async fn a_million_rows_read_in_any_partitioning_equal_postgres_own_answer() {
    let pg = server();
    let db = pg.database("million");
    big_table(&db, 1_000_000);
    // Dead tuples: deletes and updates leave holes and moved rows across pages.
    pg.psql(&db, "DELETE FROM big WHERE id % 10 = 3; UPDATE big SET amount = amount + 1 WHERE id % 7 = 0;");
    let truth = pg.psql(&db, "SELECT count(*), sum(amount), sum(id) FROM big");
    for (partitions, scan) in [(1, "ctid"), (2, "ctid"), (7, "ctid"), (16, "ctid"), (7, "single")] {
        let uri = format!("{}&scan={scan}", pg.uri(&db, "big"));
        let s = open(&uri, partitions, json!({})).await.unwrap();
        let plan = s.ctx.sql("SELECT * FROM t").await.unwrap().create_physical_plan().await.unwrap();
        let expected_partitions = if scan == "single" { 1 } else { partitions };
        assert_eq!(
            plan.properties().output_partitioning().partition_count(),
            expected_partitions,
            "{scan} {partitions}"
        );
        let got = rows(&s, "SELECT count(*), sum(amount), sum(id) FROM t").await;
        let refs: Vec<String> = rows(&s, "SELECT ref FROM t ORDER BY id").await;
        assert_eq!(refs.len(), 900_000);
        let parts: Vec<&str> = truth.split('|').collect();
        assert_eq!(got, vec![format!("{}|{}|{}", parts[0], parts[1], parts[2])], "{scan} {partitions}");
        let distinct: std::collections::BTreeSet<&String> = refs.iter().collect();
        assert_eq!(distinct.len(), 900_000, "{scan} {partitions}: a row was read twice");
    }
}

#[tokio::test]
async fn views_and_partitioned_tables_fall_back_to_one_partition() {
    let pg = server();
    let db = pg.database("fallback");
    big_table(&db, 20_000);
    pg.psql(
        &db,
        "CREATE VIEW big_view AS SELECT * FROM big WHERE id <= 15000;
         CREATE TABLE parted (id int8, amount numeric(12,2)) PARTITION BY RANGE (id);
         CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (1000);
         CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM (1000) TO (3000);
         INSERT INTO parted SELECT g, g / 10.0 FROM generate_series(0, 2999) g;",
    );
    // sslmode=prefer, the default (the test server offers TLS).
    let prefer = |table: &str| pg.uri(&db, table).replace("&sslmode=disable", "");
    for (table, count) in [("big_view", "15000"), ("parted", "3000")] {
        let s = open(&prefer(table), 4, json!({})).await.unwrap();
        let plan = s.ctx.sql("SELECT * FROM t").await.unwrap().create_physical_plan().await.unwrap();
        assert_eq!(plan.properties().output_partitioning().partition_count(), 1, "{table}");
        assert_eq!(rows(&s, "SELECT count(*) FROM t").await, vec![count.to_string()]);
    }
}

#[tokio::test]
async fn a_partitioned_read_sees_one_snapshot_of_every_table_of_the_database() {
    let pg = server();
    let db = pg.database("snap");
    big_table(&db, 50_000);
    pg.psql(&db, "CREATE TABLE ledger AS SELECT id, amount FROM big; ANALYZE ledger;");
    let run_id = uuid::Uuid::new_v4().to_string();
    let registry = Arc::new(SnapshotRegistry::new(&run_id));
    registry.arm();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    for table in ["big", "ledger"] {
        let uri = pg.uri(&db, table);
        let opened =
            open_postgres_source(&source(&uri, json!({})), &uri, &run_id, Arc::clone(&registry)).await.unwrap();
        ctx.register_table(table, opened.provider).unwrap();
    }
    // Planning exports the snapshot (once for the database) ...
    let big = ctx.sql("SELECT count(*), sum(amount) FROM big").await.unwrap().create_physical_plan().await.unwrap();
    let ledger =
        ctx.sql("SELECT count(*), sum(amount) FROM ledger").await.unwrap().create_physical_plan().await.unwrap();
    assert_eq!(registry.audit().await.len(), 1);
    // ... then another connection changes both tables together, and deletes and inserts.
    pg.psql(
        &db,
        "BEGIN; DELETE FROM big WHERE id <= 10000; UPDATE ledger SET amount = amount + 1000;
         INSERT INTO big SELECT g, 'N' || g, 1, DATE '2026-01-01' FROM generate_series(100001, 130000) g; COMMIT;",
    );
    let task = ctx.task_ctx();
    let big_rows = render(&datafusion::physical_plan::collect(big, Arc::clone(&task)).await.unwrap());
    let ledger_rows = render(&datafusion::physical_plan::collect(ledger, task).await.unwrap());
    // Both read as they were before the change.
    assert_eq!(big_rows, ledger_rows);
    assert_eq!(big_rows, vec!["50000|12500250.00"]);
    // A new job sees the change.
    let fresh = open(&pg.uri(&db, "ledger"), 4, json!({})).await.unwrap();
    assert_eq!(rows(&fresh, "SELECT count(*), sum(amount) FROM t").await, vec!["50000|62500250.00"]);
}

#[tokio::test]
async fn hostile_identifiers_are_quoted_and_bad_credentials_or_hosts_are_refused() {
    let pg = server();
    let db = pg.database("hostile");
    pg.psql(
        &db,
        r#"CREATE SCHEMA "we""ird;s"; CREATE TABLE "we""ird;s"."t'a\b; DROP TABLE x" ("co""l;" int, "ü ber" text);
           INSERT INTO "we""ird;s"."t'a\b; DROP TABLE x" VALUES (1, 'o''k\'), (2, NULL);"#,
    );
    let uri = format!(
        "postgres://kalla@127.0.0.1:{}/{db}?schema=we%22ird%3Bs&table=t%27a%5Cb%3B%20DROP%20TABLE%20x&sslmode=disable",
        pg.port
    );
    let s = open(&uri, 2, json!({})).await.unwrap();
    assert_eq!(rows(&s, "SELECT * FROM t ORDER BY 1").await, vec!["1|o'k\\", "2|NULL"]);
    // Wrong password.
    let uri =
        format!("postgres://{}:wrong@127.0.0.1:{}/{db}?table=x&sslmode=disable", kalla_testpg::PASSWORD_USER, pg.port);
    let e = open(&uri, 1, json!({})).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::SourceUnreachable);
    assert!(e.message.contains("password authentication failed"), "{}", e.message);
    assert!(!e.message.contains("wrong"), "{}", e.message);
    // Nobody listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = open(&format!("postgres://u:p@127.0.0.1:{closed}/db?table=x&sslmode=disable"), 1, json!({}))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::SourceUnreachable);
    // A table that does not exist.
    let e = open(&pg.uri(&db, "nope"), 1, json!({})).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::SourceNotFound);
    // A table the user may not read.
    pg.psql(&db, "CREATE ROLE reader LOGIN; CREATE TABLE private (id int);");
    let e = open(&format!("postgres://reader@127.0.0.1:{}/{db}?table=private&sslmode=disable", pg.port), 1, json!({}))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::SourceUnreachable);
    assert!(e.message.contains("permission denied: user reader may not SELECT from public.private"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_read_fails_the_read_clearly() {
    let pg = server();
    let db = pg.database("killed");
    // 120 MB of COPY output: far more than socket buffers hold, so the backends are still
    // sending when they are terminated.
    pg.psql(&db, "CREATE TABLE big AS SELECT g AS id, repeat('x', 2000) AS pad FROM generate_series(1, 60000) g");
    let s = open(&pg.uri(&db, "big"), 2, json!({})).await.unwrap();
    let mut stream = s.ctx.sql("SELECT * FROM t").await.unwrap().execute_stream().await.unwrap();
    use futures::StreamExt;
    assert!(stream.next().await.unwrap().unwrap().num_rows() > 0);
    pg.psql(
        &db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'kallad/%' \
         AND backend_type = 'client backend' AND query LIKE 'COPY%' AND datname = current_database()",
    );
    let mut failure = None;
    while let Some(next) = stream.next().await {
        if let Err(e) = next {
            failure = Some(e.to_string());
            break;
        }
    }
    let failure = failure.expect("the read ended without an error after its backends were killed");
    // Depending on timing the client sees the server's message or only the closed socket.
    assert!(
        failure.contains("source t: the server closed the connection")
            || failure.contains("source t: terminating connection due to administrator command"),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_scan_ends_its_backends_within_a_second() {
    let pg = server();
    let db = pg.database("cancel");
    // 120 MB of COPY output, so the backends are still sending when the scan is dropped.
    pg.psql(&db, "CREATE TABLE big AS SELECT g AS id, repeat('x', 2000) AS pad FROM generate_series(1, 60000) g");
    let s = open(&pg.uri(&db, "big"), 4, json!({})).await.unwrap();
    let mut stream = s.ctx.sql("SELECT * FROM t").await.unwrap().execute_stream().await.unwrap();
    use futures::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.num_rows() > 0);
    let count = || {
        pg.psql(&db, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'kallad/%' AND backend_type = 'client backend'")
    };
    assert_ne!(count(), "0");
    drop(stream);
    drop(s);
    let started = std::time::Instant::now();
    while count() != "0" {
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "backends still there after 1 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn filters_that_translate_exactly_run_in_postgres_with_hostile_values_quoted() {
    let pg = server();
    let db = pg.database("pushdown");
    pg.psql(
        &db,
        r#"CREATE TABLE t (id int8, name text, amount numeric(12,2), day date, at timestamptz, score float8);
           INSERT INTO t VALUES
             (1, 'o''k\; DROP TABLE t; --', 10.00, '2026-01-01', '2026-01-01 00:00:00+00', 1.5),
             (2, 'B', 10.01, '2026-01-02', '2026-01-01 23:59:59.999999+00', 'NaN'),
             (3, 'a', 99.99, '2026-02-01', '2026-02-01 12:00:00+00', -0.0),
             (4, NULL, NULL, NULL, NULL, NULL),
             (5, 'é', 0.00, '2025-12-31', '2025-12-31 23:00:00-02', 2.5);"#,
    );
    let s = open(&pg.uri(&db, "t"), 2, json!({})).await.unwrap();
    for (filter, expected) in [
        ("name = 'o''k\\; DROP TABLE t; --'", vec!["1"]),
        ("name > 'B'", vec!["1", "3", "5"]),
        ("name < 'a'", vec!["2"]),
        ("amount >= 10.01 AND amount <= 99.99", vec!["2", "3"]),
        ("amount BETWEEN 0 AND 10", vec!["1", "5"]),
        ("day IN (DATE '2026-01-02', DATE '2025-12-31')", vec!["2", "5"]),
        ("at > '2026-01-01T00:59:59Z'", vec!["2", "3", "5"]),
        ("name IS NULL OR id = 3", vec!["3", "4"]),
        ("NOT (id <> 2)", vec!["2"]),
        ("score > 1.0", vec!["1", "2", "5"]),
    ] {
        let sql = format!("SELECT id FROM t WHERE {filter} ORDER BY id");
        assert_eq!(rows(&s, &sql).await, expected, "{filter}");
    }
    // The translatable filters reach the COPY query; float comparisons stay in DataFusion.
    let plan = |sql: &str| {
        let ctx = s.ctx.clone();
        let sql = sql.to_string();
        async move {
            let p = ctx.sql(&sql).await.unwrap().create_physical_plan().await.unwrap();
            datafusion::physical_plan::displayable(p.as_ref()).indent(true).to_string()
        }
    };
    let shown = plan("SELECT id FROM t WHERE amount >= 10.01 AND name = 'x'").await;
    assert!(shown.contains("pushed=(\"amount\" >= 10.01::numeric) AND (\"name\" COLLATE \"C\" = 'x')"), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
    let shown = plan("SELECT id FROM t WHERE score > 1.0").await;
    assert!(!shown.contains("pushed="), "{shown}");
}

#[tokio::test]
async fn a_job_locks_its_tables_and_refuses_a_table_changed_since_submission() {
    let pg = server();
    let db = pg.database("locks");
    pg.psql(&db, "CREATE TABLE t (id int8, amount int8); INSERT INTO t VALUES (1, 100), (2, 200);");
    let s = open(&pg.uri(&db, "t"), 2, json!({})).await.unwrap();
    let plan = s.ctx.sql("SELECT sum(amount) FROM t").await.unwrap().create_physical_plan().await.unwrap();
    // The job holds ACCESS SHARE: TRUNCATE (which would empty the table for the job's snapshot)
    // has to wait for it.
    let out = pg.psql_command(&db).args(["-c", "SET lock_timeout = '300ms'; TRUNCATE t"]).output().unwrap();
    assert!(!out.status.success(), "TRUNCATE ran while a job read the table");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lock timeout"), "{}", String::from_utf8_lossy(&out.stderr));
    let got = render(&datafusion::physical_plan::collect(plan, s.ctx.task_ctx()).await.unwrap());
    assert_eq!(got, vec!["300"]);
    drop(s);

    // A column whose type changed between submission and run fails the job instead of being
    // decoded with the old type (float8 bits read as int8).
    let s = open(&pg.uri(&db, "t"), 1, json!({})).await.unwrap();
    pg.psql(&db, "ALTER TABLE t ALTER COLUMN amount TYPE float8");
    let err = s.ctx.sql("SELECT amount FROM t").await.unwrap().collect().await.unwrap_err().to_string();
    assert!(err.contains("changed since the job was submitted (column amount int8 is now amount float8)"), "{err}");
}

#[tokio::test]
async fn sslmode_require_encrypts_and_verify_full_checks_the_certificate() {
    let pg = server();
    let cert = pg.tls_cert.as_ref().expect("the test server has a certificate (openssl is needed to make one)");
    let db = pg.database("tls");
    pg.psql(&db, "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);");
    let base = pg.uri(&db, "t").replace("&sslmode=disable", "");
    let encrypted = |uri: String| async move {
        let s = open(&uri, 1, json!({})).await?;
        let rows = rows(&s, "SELECT count(*) FROM t").await;
        Ok::<_, kalla_recipe::KallaError>(rows)
    };
    // require: encrypted, certificate not verified (self-signed is fine).
    assert_eq!(encrypted(format!("{base}&sslmode=require")).await.unwrap(), vec!["2"]);
    // verify-full against the server's own certificate as root: verified.
    let root = format!("{base}&sslmode=verify-full&sslrootcert={}", cert.display());
    assert_eq!(encrypted(root).await.unwrap(), vec!["2"]);
    // verify-full against the public roots: a self-signed certificate is refused.
    let e = encrypted(format!("{base}&sslmode=verify-full")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SourceUnreachable);
    assert!(e.message.to_lowercase().contains("certificate"), "{}", e.message);
    // The sessions were really encrypted: Postgres saw TLS connections from kallad.
    let s = open(&format!("{base}&sslmode=require"), 1, json!({})).await.unwrap();
    let mut stream = s.ctx.sql("SELECT * FROM t").await.unwrap().execute_stream().await.unwrap();
    use futures::StreamExt;
    while stream.next().await.is_some() {}
    let tls = pg.psql(&db, "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE ssl AND application_name LIKE 'kallad/%'");
    assert_ne!(tls, "0", "no TLS session from kallad");
}
