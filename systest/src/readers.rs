//! Reading what the edge stored: Parquet with the arrow crate, and through Python's readers
//! (pyarrow, DuckDB), which are not ours.

use std::path::Path;
use std::process::Command;

/// Reads every `.parquet` file below `dir`, but for hidden directories (`_delta_log`, the
/// table's transaction log, whose checkpoints are Parquet too).
pub fn read_parquet_tree(dir: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let p = entry.unwrap().path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"_"))
            {
                continue;
            }
            out.extend(read_parquet_tree(&p));
        } else if p.extension().is_some_and(|e| e == "parquet") {
            out.extend(read_parquet_file(&p));
        }
    }
    out
}

/// The batches of one Parquet file.
pub fn read_parquet_file(p: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    let f = std::fs::File::open(p).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// The values of string column `name` over `batches` (null as "").
pub fn strings(batches: &[arrow::record_batch::RecordBatch], name: &str) -> Vec<String> {
    use arrow::array::{Array, AsArray};
    batches
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name(name).unwrap().as_string::<i32>().clone();
            (0..col.len())
                .map(|i| {
                    if col.is_null(i) {
                        String::new()
                    } else {
                        col.value(i).to_owned()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Installs pyarrow and duckdb from PyPI when they are missing.
pub fn ensure_python_readers() {
    let have = |m: &str| {
        Command::new("python3")
            .args(["-c", &format!("import {m}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    let all = || have("pyarrow") && have("duckdb") && have("deltalake");
    if all() {
        return;
    }
    let st = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "pyarrow",
            "duckdb",
            "deltalake",
        ])
        .status()
        .expect("python3 runs");
    assert!(
        st.success() && all(),
        "this test needs pyarrow, duckdb and deltalake: python3 -m pip install pyarrow duckdb deltalake"
    );
}

/// Runs a Python `script` with `lake` as its argument; its stdout is JSON.
pub fn python(script: &str, lake: &std::path::Path) -> serde_json::Value {
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(lake)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

/// Every value of an Int64 column, nulls as None.
pub fn ints(batches: &[arrow::record_batch::RecordBatch], name: &str) -> Vec<Option<i64>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    batches
        .iter()
        .flat_map(|b| {
            let col = b
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            (0..col.len())
                .map(|i| (!col.is_null(i)).then(|| col.value(i)))
                .collect::<Vec<_>>()
        })
        .collect()
}
