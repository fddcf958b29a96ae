//! File formats and typing: CSV dialects, gzip, directories, Parquet, exact decimals, and runs
//! that fail mid-stream leaving nothing behind.

use crate::harness::{Fixture, all_rows, csv_sources, job, keys, set};
use datafusion::arrow::array::{Date32Array, Decimal128Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use kalla_recipe::ErrorCode;
use serde_json::json;
use std::io::Write;
use std::sync::Arc;

const SQL: &str = "SELECT i.invoice_id, p.payment_id, i.amount, p.amount AS paid, i.issued FROM invoices i \
    JOIN payments p ON i.ref = p.ref AND tolerance_match(i.amount, p.amount, 0.01)";

fn invoices_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("invoice_id", DataType::Utf8, true),
        Field::new("ref", DataType::Utf8, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new("issued", DataType::Date32, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["I1", "I2", "I3"])),
            Arc::new(StringArray::from(vec!["A", "B", "C"])),
            Arc::new(Decimal128Array::from(vec![1000, 123456, 5]).with_precision_and_scale(12, 2).unwrap()),
            Arc::new(Date32Array::from(vec![20454, 20455, 20456])),
        ],
    )
    .unwrap()
}

const INVOICES_CSV: &str =
    "invoice_id,ref,amount,issued\nI1,A,10.00,2026-01-01\nI2,B,1234.56,2026-01-02\nI3,C,0.05,2026-01-03\n";
const PAYMENTS_CSV: &str = "payment_id,ref,amount\nP1,A,10.01\nP2,B,1234.58\nP3,C,0.04\n";

fn sources(invoices_uri: &str) -> serde_json::Value {
    json!([
        {"alias": "invoices", "uri": invoices_uri, "primary_key": ["invoice_id"],
         "schema": {"amount": "decimal(12,2)", "issued": "date"}},
        {"alias": "payments", "uri": "payments.csv", "primary_key": ["payment_id"], "schema": {"amount": "decimal(12,2)"}}
    ])
}

#[tokio::test]
async fn csv_with_decimal_schema_equals_the_same_data_from_parquet() {
    let f = Fixture::new();
    f.file("invoices.csv", INVOICES_CSV);
    f.file("payments.csv", PAYMENTS_CSV);
    f.parquet("invoices.parquet", &invoices_batch());
    let from_csv = f.run(job(SQL, sources("invoices.csv"))).await.unwrap();
    let from_parquet = f.run(job(SQL, sources("invoices.parquet"))).await.unwrap();
    assert_eq!(from_csv.counts, from_parquet.counts);
    for file in ["matched.parquet", "unmatched_invoices.parquet", "unmatched_payments.parquet"] {
        assert_eq!(all_rows(&from_csv.dir.join(file)), all_rows(&from_parquet.dir.join(file)), "{file}");
    }
    // I1/P1 (0.01 apart) and I3/P3 (0.01 apart) match; I2/P2 (0.02 apart) do not.
    assert_eq!(
        all_rows(&from_csv.dir.join("matched.parquet")),
        vec![
            "invoice_id=I1|payment_id=P1|amount=10.00|paid=10.01|issued=2026-01-01",
            "invoice_id=I3|payment_id=P3|amount=0.05|paid=0.04|issued=2026-01-03",
        ]
    );
}

#[tokio::test]
async fn gzip_csv_and_directories_of_files_are_read_whole() {
    let f = Fixture::new();
    f.file("payments.csv", PAYMENTS_CSV);
    std::fs::create_dir_all(f.data.path().join("inv")).unwrap();
    let lines: Vec<&str> = INVOICES_CSV.lines().collect();
    for (i, chunk) in [&lines[1..2], &lines[2..4]].iter().enumerate() {
        let file = std::fs::File::create(f.data.path().join(format!("inv/part-{i}.csv.gz"))).unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        writeln!(gz, "{}", lines[0]).unwrap();
        for l in chunk.iter() {
            writeln!(gz, "{l}").unwrap();
        }
        gz.finish().unwrap();
    }
    std::fs::write(f.data.path().join("inv/_SUCCESS"), b"").unwrap();
    let o = f.run_once(job(SQL, sources("inv")), false, 2).await.unwrap();
    assert_eq!(o.counts.total["invoices"], 3);
    assert_eq!(keys(&o.dir.join("matched.parquet"), "invoice_id"), set(&["I1", "I3"]));
    assert_eq!(o.summary["audit"]["sources"][0]["files"].as_array().unwrap().len(), 2);
    // DataFusion 55 cannot ship a compressed CSV scan; Kalla refuses to instead of reading
    // gzip bytes as text on the other side.
    let e = f.run_once(job(SQL, sources("inv")), true, 2).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotDistributable, "{e:?}");
}

#[tokio::test]
async fn csv_dialect_options_are_honoured() {
    let f = Fixture::new();
    f.file("invoices.txt", "I1;'A;1';10.00;2026-01-01\nI2;B;NULL;2026-01-02\n");
    f.file("payments.csv", "payment_id,ref,amount\nP1,A;1,10.00\nP2,B,5.00\n");
    let sources = json!([
        {"alias": "invoices", "uri": "invoices.txt", "format": "csv", "primary_key": ["column_1"],
         "csv": {"delimiter": ";", "quote": "'", "has_header": false, "null_value": "NULL"},
         "schema": {"column_3": "decimal(12,2)"}},
        {"alias": "payments", "uri": "payments.csv", "primary_key": ["payment_id"], "schema": {"amount": "decimal(12,2)"}}
    ]);
    let o = f
        .run(job(
            "SELECT i.column_1, p.payment_id, i.column_3 FROM invoices i JOIN payments p ON i.column_2 = p.ref",
            sources,
        ))
        .await
        .unwrap();
    assert_eq!(
        all_rows(&o.dir.join("matched.parquet")),
        vec!["column_1=I1|payment_id=P1|column_3=10.00", "column_1=I2|payment_id=P2|column_3=NULL"]
    );
}

#[tokio::test]
async fn inferred_types_keep_leading_zeros_as_text_and_decimals_exact() {
    let f = Fixture::new();
    f.file("invoices.csv", "invoice_id,ref,amount\n00123,A,10.50\n00124,B,0.25\n");
    f.file("payments.csv", "payment_id,ref,amount\n1,A,10.50\n2,B,0.24\n");
    let sources = csv_sources(&["invoice_id"], &["payment_id"]);
    let o = f
        .run(job("SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.ref = p.ref AND i.amount = p.amount", sources))
        .await
        .unwrap();
    assert_eq!(all_rows(&o.dir.join("matched.parquet")), vec!["invoice_id=00123|payment_id=1"]);
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["00124"]));
}

fn assert_no_output(f: &Fixture, output_path: &str) {
    assert!(!f.out.path().join(output_path).exists(), "a failed run left {output_path}");
    let leftovers: Vec<String> = std::fs::read_dir(f.out.path().join("runs"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "a failed run left {leftovers:?}");
}

#[tokio::test]
async fn a_type_error_mid_stream_fails_the_run_and_leaves_no_output() {
    let f = Fixture::new();
    // Type inference reads the first 1000 records: the bad value sits far past them.
    let mut csv = String::from("invoice_id,ref,qty\n");
    for i in 0..3000 {
        csv.push_str(&format!("I{i},R{i},{}\n", if i == 2500 { "many".to_string() } else { i.to_string() }));
    }
    f.file("invoices.csv", &csv);
    f.file("payments.csv", "payment_id,ref\nP1,R1\n");
    let sources = csv_sources(&["invoice_id"], &["payment_id"]);
    let request =
        job("SELECT i.invoice_id, i.qty, p.payment_id FROM invoices i JOIN payments p ON i.ref = p.ref", sources);
    let output_path = request["output_path"].as_str().unwrap().to_string();
    let e = f.run_once(request, false, 2).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SourceReadFailed, "{e:?}");
    assert!(e.message.contains("many"), "{}", e.message);
    assert_no_output(&f, &output_path);
}

#[tokio::test]
async fn a_decimal_that_would_lose_digits_fails_the_run() {
    let f = Fixture::new();
    f.file("invoices.csv", "invoice_id,ref,amount\nI1,A,10.00\nI2,B,10.005\n");
    f.file("payments.csv", "payment_id,ref\nP1,A\n");
    let sources = json!([
        {"alias": "invoices", "uri": "invoices.csv", "primary_key": ["invoice_id"], "schema": {"amount": "decimal(12,2)"}},
        {"alias": "payments", "uri": "payments.csv", "primary_key": ["payment_id"]}
    ]);
    let request =
        job("SELECT i.invoice_id, i.amount, p.payment_id FROM invoices i JOIN payments p ON i.ref = p.ref", sources);
    let output_path = request["output_path"].as_str().unwrap().to_string();
    let e = f.run_once(request, false, 2).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SourceReadFailed, "{e:?}");
    assert!(e.message.contains("invoices.amount") && e.message.contains("10.005"), "{}", e.message);
    assert_no_output(&f, &output_path);
}

#[tokio::test]
async fn invalid_utf8_past_the_inference_sample_names_file_and_line() {
    let f = Fixture::new();
    let mut bytes = b"invoice_id,ref\n".to_vec();
    for i in 0..3000 {
        bytes.extend_from_slice(format!("I{i},R{i}").as_bytes());
        if i == 2000 {
            bytes.extend_from_slice(&[0xc3, 0x28]); // an invalid two-byte sequence
        }
        bytes.push(b'\n');
    }
    std::fs::write(f.data.path().join("invoices.csv"), bytes).unwrap();
    f.file("payments.csv", "payment_id,ref\nP1,R1\n");
    let request = job(
        "SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.ref = p.ref",
        csv_sources(&["invoice_id"], &["payment_id"]),
    );
    let e = f.run_once(request, false, 2).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SourceReadFailed);
    // Line 1 is the header, so record I2000 is on line 2002.
    assert_eq!(e.message, "source invoices: invoices.csv line 2002 is not valid UTF-8 (input files must be UTF-8)");
}

#[tokio::test]
async fn invalid_utf8_fails_the_run_naming_the_line() {
    let f = Fixture::new();
    let mut bytes = b"invoice_id,ref\nI1,A\nI2,".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b"\n");
    std::fs::write(f.data.path().join("invoices.csv"), bytes).unwrap();
    f.file("payments.csv", "payment_id,ref\nP1,A\n");
    let sources = csv_sources(&["invoice_id"], &["payment_id"]);
    let request = job("SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.ref = p.ref", sources);
    let e = f.run_once(request, false, 2).await.unwrap_err();
    assert!(e.message.contains("invoices.csv") && e.message.contains("line"), "{e:?}");
}

#[tokio::test]
async fn csv_escape_character_is_honoured() {
    let f = Fixture::new();
    f.file("invoices.csv", "invoice_id,ref\nI1,\"R\\\"1\"\nI2,R2\n");
    f.file("payments.csv", "payment_id,ref\nP1,R\"1\n");
    let mut sources = csv_sources(&["invoice_id"], &["payment_id"]);
    sources[0]["csv"] = json!({"escape": "\\"});
    sources[1]["csv"] = json!({"quote": "'"});
    let o = f
        .run(job("SELECT i.invoice_id, p.payment_id, i.ref FROM invoices i JOIN payments p ON i.ref = p.ref", sources))
        .await
        .unwrap();
    assert_eq!(all_rows(&o.dir.join("matched.parquet")), vec!["invoice_id=I1|payment_id=P1|ref=R\"1"]);
}

#[tokio::test]
async fn a_local_run_takes_one_partition_per_rows_per_partition_of_its_largest_source() {
    let f = Fixture::new();
    f.parquet("invoices.parquet", &invoices_batch());
    f.parquet("copies.parquet", &invoices_batch());
    let sources = json!([
        {"alias": "invoices", "uri": "invoices.parquet", "primary_key": ["invoice_id"]},
        {"alias": "copies", "uri": "copies.parquet", "primary_key": ["invoice_id"]}
    ]);
    let sql = "SELECT i.invoice_id, c.invoice_id AS copy_id FROM invoices i JOIN copies c ON i.ref = c.ref \
        WHERE i.amount > 1";
    let mut seen = Vec::new();
    for (rows_per_partition, partitions) in [(None, 1), (Some(2), 2), (Some(1), 3)] {
        let o = f.run_scaled(job(sql, sources.clone()), false, 1, rows_per_partition).await.unwrap();
        assert_eq!(o.partitions, partitions, "rows per partition {rows_per_partition:?}");
        assert_eq!(o.counts.matched, 2);
        assert_eq!(o.counts.unmatched["invoices"], Some(1));
        assert_eq!(o.counts.unmatched["copies"], Some(1));
        seen.push(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"));
    }
    assert!(seen.iter().all(|k| k == &set(&["I3"])), "{seen:?}");
}

/// `id,ref` with ids 1..=1000 (what inference reads: `id` is a bigint), then `rows` verbatim.
fn ids_then(rows: &[&str]) -> String {
    let mut csv = String::from("id,ref\n");
    for i in 1..=1000 {
        csv.push_str(&format!("{i},x\n"));
    }
    for r in rows {
        csv.push_str(r);
        csv.push('\n');
    }
    csv
}

#[tokio::test]
async fn a_late_value_that_would_not_read_back_as_the_inferred_integer_fails_naming_file_line_and_column() {
    let cases = [
        ("0012", "has leading zeros"),
        ("+12", "has a leading +"),
        (" 12", "has surrounding spaces"),
        ("-0", "is a negative zero"),
        ("12.5", "is not an integer"),
        ("99999999999999999999", "is out of the bigint range"),
    ];
    for (late, reason) in cases {
        let f = Fixture::new();
        f.file("a.csv", &ids_then(&["7,y", &format!("{late},late")]));
        let sources = json!([{"alias": "a", "uri": "a.csv", "primary_key": ["id"]}]);
        // Planned as is and shipped through the codec, at two partitions (byte ranges of the file).
        for roundtrip in [false, true] {
            let e = f.run_once(job("SELECT id, ref FROM a", sources.clone()), roundtrip, 2).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::SourceReadFailed, "{late:?}: {e:?}");
            assert_eq!(
                e.message,
                format!(
                    "source a: a.csv line 1003, column id: value {late:?} {reason}, so it does not read back as \
                     the bigint the first 1000 records gave the column; declare the column's type in the source's \
                     schema (e.g. \"text\")"
                ),
                "{late:?}"
            );
        }
    }
}

#[tokio::test]
async fn late_values_in_the_inferred_form_are_read_and_other_files_of_a_directory_are_checked_too() {
    let f = Fixture::new();
    f.file("ok/a.csv", &ids_then(&["-5,late", "0,late", "9223372036854775807,late"]));
    let sources = json!([{"alias": "a", "uri": "ok", "primary_key": ["id"]}]);
    let o = f.run(job("SELECT id FROM a WHERE id <= 0 OR id > 1000", sources)).await.unwrap();
    assert_eq!(keys(&o.dir.join("matched.parquet"), "id"), set(&["-5", "0", "9223372036854775807"]));
    assert_eq!(o.summary["audit"]["checks"]["a"]["duplicate_keys"], 0);

    // A second file is read with the first file's types: its values are held to them too.
    f.file("dir/part-1.csv", &ids_then(&[]));
    f.file("dir/part-2.csv", "id,ref\n2000,z\n0012,late\n");
    let sources = json!([{"alias": "a", "uri": "dir", "primary_key": ["id"], "csv": {"null_value": "NULL"}}]);
    let e = f.run_once(job("SELECT id FROM a", sources), true, 2).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SourceReadFailed);
    assert!(
        e.message.starts_with("source a: dir/part-2.csv line 3, column id: value \"0012\" has leading zeros"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_late_decimal_or_double_that_inference_would_have_taken_for_text_fails() {
    let f = Fixture::new();
    let mut csv = String::from("id,amount,rate\n");
    for i in 1..=1000 {
        csv.push_str(&format!("{i},{i}.25,{i}e-3\n"));
    }
    f.file("a.csv", &format!("{csv}1001,0012.50,1e-3\n"));
    f.file("b.csv", &format!("{csv}1001,12.50,+1e-3\n"));
    for (file, column, value, reason, type_name) in [
        ("a.csv", "amount", "0012.50", "has leading zeros", "decimal(38,2)"),
        ("b.csv", "rate", "+1e-3", "has a leading +", "double"),
    ] {
        let sources = json!([{"alias": "a", "uri": file, "primary_key": ["id"]}]);
        let e = f.run_once(job("SELECT id, amount, rate FROM a", sources), false, 2).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::SourceReadFailed, "{e:?}");
        assert_eq!(
            e.message,
            format!(
                "source a: {file} line 1002, column {column}: value {value:?} {reason}, so it does not read back as \
                 the {type_name} the first 1000 records gave the column; declare the column's type in the source's \
                 schema (e.g. \"text\")"
            )
        );
    }
}

#[tokio::test]
async fn a_negative_zero_in_the_inference_sample_keeps_the_column_as_text() {
    let f = Fixture::new();
    f.file("a.csv", "id,ref\n0,x\n-0,y\n");
    let sources = json!([{"alias": "a", "uri": "a.csv", "primary_key": ["id"]}]);
    let o = f.run(job("SELECT id, ref FROM a", sources)).await.unwrap();
    assert_eq!(all_rows(&o.dir.join("matched.parquet")), vec!["id=-0|ref=y", "id=0|ref=x"]);
    let checks = &o.summary["audit"]["checks"]["a"];
    assert_eq!((checks["total_keys"].as_u64(), checks["duplicate_keys"].as_u64()), (Some(2), Some(0)));
}

#[tokio::test]
async fn a_csv_header_naming_a_column_twice_is_refused_naming_it() {
    let f = Fixture::new();
    f.file("dup/a.csv", "id,ref,id\n1,x,2\n");
    let sources = json!([{"alias": "a", "uri": "dup/a.csv", "primary_key": ["ref"]}]);
    let e = f.plan(job("SELECT ref FROM a", sources), 2).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SourceReadFailed, "{e:?}");
    assert_eq!(e.field.as_deref(), Some("sources[0].uri"));
    assert_eq!(
        e.message,
        "dup/a.csv: the header names column \"id\" twice (fields 1 and 3); column names must be unique"
    );
}

/// A Parquet source as Arrow writers other than Kalla's make them: a `date64` column and string
/// columns (read by Kalla as string views).
fn dated_batch() -> RecordBatch {
    use datafusion::arrow::array::Date64Array;
    let schema = Arc::new(Schema::new(vec![
        Field::new("invoice_id", DataType::Utf8, true),
        Field::new("ref", DataType::Utf8, true),
        Field::new("due", DataType::Date64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["I1", "I2", "I3"])),
            Arc::new(StringArray::from(vec![Some("A"), Some("A"), None])),
            // 2026-01-01, 1969-12-31 (before the epoch), NULL.
            Arc::new(Date64Array::from(vec![Some(1_767_225_600_000), Some(-86_400_000), None])),
        ],
    )
    .unwrap()
}

/// The Arrow schema a Parquet file declares (its embedded `ARROW:schema`, as readers take it),
/// the Parquet logical type of each leaf column, and its rows.
fn written(path: &std::path::Path) -> (Schema, Vec<Option<String>>, Vec<String>) {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let schema = builder.schema().as_ref().clone();
    let logical =
        builder.parquet_schema().columns().iter().map(|c| c.logical_type_ref().map(|t| format!("{t:?}"))).collect();
    (schema, logical, all_rows(path))
}

#[tokio::test]
async fn parquet_outputs_write_dates_as_dates_and_strings_as_plain_strings() {
    let f = Fixture::new();
    f.parquet("invoices.parquet", &dated_batch());
    f.file("payments.csv", "payment_id,ref\nP1,A\nP2,Z\n");
    let sources = json!([
        {"alias": "invoices", "uri": "invoices.parquet", "primary_key": ["invoice_id"]},
        {"alias": "payments", "uri": "payments.csv", "primary_key": ["payment_id"]}
    ]);
    let sql = "SELECT p.payment_id, array_agg(i.invoice_id) AS invoice_ids, min(i.due) AS due \
        FROM invoices i JOIN payments p ON i.ref = p.ref GROUP BY p.payment_id";
    let o = f.run(job(sql, sources)).await.unwrap();
    let (schema, logical, rows) = written(&o.dir.join("matched.parquet"));
    let types: Vec<DataType> = schema.fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(
        types,
        vec![DataType::Utf8, DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))), DataType::Date32]
    );
    assert_eq!(logical, vec![Some("String".into()), Some("String".into()), Some("Date".into())]);
    assert_eq!(rows, vec!["payment_id=P1|invoice_ids=[I1,I2]|due=1969-12-31"]);
    // The anti join read the list of keys back: I3 is the one invoice unmatched.
    let (schema, logical, rows) = written(&o.dir.join("unmatched_invoices.parquet"));
    let types: Vec<DataType> = schema.fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(types, vec![DataType::Utf8, DataType::Utf8, DataType::Date32]);
    assert_eq!(logical, vec![Some("String".into()), Some("String".into()), Some("Date".into())]);
    assert_eq!(rows, vec!["invoice_id=I3|ref=NULL|due=NULL"]);
    assert_eq!(all_rows(&o.dir.join("unmatched_payments.parquet")), vec!["payment_id=P2|ref=Z"]);
}

#[tokio::test]
async fn a_date64_holding_a_time_of_day_fails_the_run_rather_than_losing_it() {
    use datafusion::arrow::array::Date64Array;
    let f = Fixture::new();
    let batch = dated_batch();
    let mut columns = batch.columns().to_vec();
    columns[2] = Arc::new(Date64Array::from(vec![Some(1_767_225_600_000), Some(1_767_225_600_001), None]));
    f.parquet("invoices.parquet", &RecordBatch::try_new(batch.schema(), columns).unwrap());
    let sources = json!([{"alias": "invoices", "uri": "invoices.parquet", "primary_key": ["invoice_id"]}]);
    let request = job("SELECT invoice_id, due FROM invoices", sources);
    let output_path = request["output_path"].as_str().unwrap().to_string();
    let e = f.run_once(request, false, 2).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SourceReadFailed, "{e:?}");
    assert_eq!(
        e.message,
        "column due: the date64 value 1767225600001 (milliseconds since 1970-01-01) is not a whole day; \
         dates are written as dates, and this one would lose its time of day"
    );
    assert_no_output(&f, &output_path);
}

/// A scan of several CSV files reads fields by position: a file whose header orders the columns
/// differently would put its `ref` values under `amount`. The header of every file must be the
/// first file's.
#[tokio::test]
async fn a_csv_directory_whose_files_disagree_on_their_header_is_refused_naming_the_file() {
    let f = Fixture::new();
    f.file("inv/a.csv", "invoice_id,ref,amount\nI1,A,10.00\n");
    f.file("inv/b.csv", "invoice_id,amount,ref\nI2,20.00,B\n");
    let sources = json!([{"alias": "invoices", "uri": "inv", "primary_key": ["invoice_id"]}]);
    let e = f.plan(job("SELECT invoice_id FROM invoices", sources.clone()), 2).await.unwrap_err();
    assert_eq!((e.code, e.field.as_deref()), (ErrorCode::SourceReadFailed, Some("sources[0].uri")), "{e:?}");
    assert_eq!(
        e.message,
        "inv/b.csv: its header is invoice_id,amount,ref where the first file's is invoice_id,ref,amount; \
         every file of a directory source must have the columns of its first file (inv/a.csv)"
    );
    // The same header in every file reads both.
    f.file("inv/b.csv", "invoice_id,ref,amount\nI2,B,20.00\n");
    let o = f.run_once(job("SELECT invoice_id FROM invoices", sources), false, 2).await.unwrap();
    assert_eq!(o.counts.total["invoices"], 2);
}

/// A scan of several Parquet files maps columns by name: a later file without `ref` would be read
/// with NULL refs (its invoices never matching), and one storing `amount` at another scale would be
/// cast to the first file's. Both are refused; a string column stored with wider offsets is the
/// same column.
#[tokio::test]
async fn a_parquet_directory_whose_files_disagree_on_their_columns_is_refused_naming_the_file() {
    use datafusion::arrow::array::LargeStringArray;
    let f = Fixture::new();
    f.parquet("inv/a.parquet", &invoices_batch());
    let batch = invoices_batch();
    let sources = json!([{"alias": "invoices", "uri": "inv", "primary_key": ["invoice_id"]}]);
    let refused =
        |message: &str| (ErrorCode::SourceReadFailed, Some("sources[0].uri".to_string()), message.to_string());
    let tail = "; every file of a directory source must have the columns of its first file (inv/a.parquet)";

    f.parquet("inv/b.parquet", &batch.project(&[0, 2, 3]).unwrap());
    let e = f.plan(job("SELECT invoice_id FROM invoices", sources.clone()), 2).await.unwrap_err();
    assert_eq!((e.code, e.field, e.message), refused(&format!("inv/b.parquet: it has no column ref{tail}")));

    let rescaled = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("invoice_id", DataType::Utf8, true),
            Field::new("ref", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(12, 3), true),
            Field::new("issued", DataType::Date32, true),
        ])),
        vec![
            batch.column(0).clone(),
            batch.column(1).clone(),
            Arc::new(Decimal128Array::from(vec![10005, 1, 2]).with_precision_and_scale(12, 3).unwrap()),
            batch.column(3).clone(),
        ],
    )
    .unwrap();
    f.parquet("inv/b.parquet", &rescaled);
    let e = f.plan(job("SELECT invoice_id FROM invoices", sources.clone()), 2).await.unwrap_err();
    assert_eq!(
        (e.code, e.field, e.message),
        refused(&format!(
            "inv/b.parquet: its column amount is decimal(12,3) where the first file's is decimal(12,2){tail}"
        ))
    );

    let mut extra = batch.schema().fields().iter().cloned().collect::<Vec<_>>();
    extra.push(Arc::new(Field::new("note", DataType::Utf8, true)));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec!["x", "y", "z"])));
    f.parquet("inv/b.parquet", &RecordBatch::try_new(Arc::new(Schema::new(extra)), columns).unwrap());
    let e = f.plan(job("SELECT invoice_id FROM invoices", sources.clone()), 2).await.unwrap_err();
    assert_eq!(
        (e.code, e.field, e.message),
        refused(&format!("inv/b.parquet: it has the columns note the first file lacks{tail}"))
    );

    let wide = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("invoice_id", DataType::LargeUtf8, true),
            Field::new("ref", DataType::LargeUtf8, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("issued", DataType::Date32, true),
        ])),
        vec![
            Arc::new(LargeStringArray::from(vec!["I4", "I5", "I6"])),
            Arc::new(LargeStringArray::from(vec!["D", "E", "F"])),
            batch.column(2).clone(),
            batch.column(3).clone(),
        ],
    )
    .unwrap();
    f.parquet("inv/b.parquet", &wide);
    let o = f.run_once(job("SELECT invoice_id FROM invoices", sources), false, 2).await.unwrap();
    assert_eq!(o.counts.total["invoices"], 6);
}
