//! Reading Parquet outputs back in tests: every row as a comparable string.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// Every batch of a Parquet file.
pub fn read(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().map(|b| b.unwrap()).collect()
}

/// One value as text: NULL as `NULL`, list items sorted.
pub fn cell(a: &ArrayRef, i: usize) -> String {
    match a.data_type() {
        DataType::List(_) | DataType::LargeList(_) => {
            let mut items: Vec<String> = match a.data_type() {
                DataType::List(_) => {
                    let l = a.as_list::<i32>().value(i);
                    (0..l.len()).map(|j| cell(&l, j)).collect()
                }
                _ => {
                    let l = a.as_list::<i64>().value(i);
                    (0..l.len()).map(|j| cell(&l, j)).collect()
                }
            };
            items.sort();
            format!("[{}]", items.join(","))
        }
        _ if a.is_null(i) => "NULL".to_string(),
        _ => array_value_to_string(a, i).unwrap(),
    }
}

/// Every row of a Parquet file as `col=value|…` strings, sorted (list items sorted too).
pub fn all_rows(path: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for b in read(path) {
        let names: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
        for i in 0..b.num_rows() {
            rows.push(
                names.iter().zip(b.columns()).map(|(n, c)| format!("{n}={}", cell(c, i))).collect::<Vec<_>>().join("|"),
            );
        }
    }
    rows.sort();
    rows
}
