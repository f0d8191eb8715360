//! Reading source files into [`Record`]s, one file at a time and in
//! bounded chunks: NDJSON and CSV stream line by line, Parquet row group by
//! row group; a JSON document is read whole (API responses, not bulk data).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

use super::convert::Record;
use crate::error::{Error, Result};
use crate::pipeline::{Format, SourceConfig};

/// A record that could not even be read as a record (malformed line).
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// The text as read.
    pub raw: String,
    /// Why.
    pub reason: String,
    /// Where.
    pub line: u64,
}

/// Calls `on_record` for every record of `path` (or `on_bad` for text that
/// is not a record). Stops at the first error `on_record` returns.
pub fn read_file(
    path: &Path,
    source: &SourceConfig,
    on_record: &mut dyn FnMut(Record) -> Result<()>,
    on_bad: &mut dyn FnMut(Unreadable),
) -> Result<()> {
    let io = |e: std::io::Error| Error::Source(format!("{}: {e}", path.display()));
    match source.format {
        Format::Ndjson => {
            let reader = BufReader::new(File::open(path).map_err(io)?);
            for (i, line) in reader.lines().enumerate() {
                let line = line.map_err(io)?;
                let number = i as u64 + 1;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(&line) {
                    Ok(Value::Object(fields)) => on_record(Record {
                        fields,
                        raw: line,
                        line: number,
                    })?,
                    Ok(_) => on_bad(Unreadable {
                        raw: line,
                        reason: "line is JSON but not an object".into(),
                        line: number,
                    }),
                    Err(e) => on_bad(Unreadable {
                        raw: line,
                        reason: format!("malformed JSON: {e}"),
                        line: number,
                    }),
                }
            }
            Ok(())
        }
        Format::Json => {
            let text = std::fs::read_to_string(path).map_err(io)?;
            let doc: Value = serde_json::from_str(&text).map_err(|e| {
                Error::Source(format!("{}: malformed JSON document: {e}", path.display()))
            })?;
            let mut node = &doc;
            for key in source
                .records
                .iter()
                .flat_map(|p| p.split('.'))
                .filter(|k| !k.is_empty())
            {
                node = node.get(key).ok_or_else(|| {
                    Error::Source(format!(
                        "{}: no key {key:?} on the records path {:?}",
                        path.display(),
                        source.records
                    ))
                })?;
            }
            let items = node.as_array().ok_or_else(|| {
                Error::Source(format!(
                    "{}: the records path does not lead to an array",
                    path.display()
                ))
            })?;
            for (i, item) in items.iter().enumerate() {
                let number = i as u64 + 1;
                match item {
                    Value::Object(fields) => on_record(Record {
                        fields: fields.clone(),
                        raw: item.to_string(),
                        line: number,
                    })?,
                    other => on_bad(Unreadable {
                        raw: other.to_string(),
                        reason: "record is not an object".into(),
                        line: number,
                    }),
                }
            }
            Ok(())
        }
        Format::Csv => read_csv(path, source, on_record, on_bad),
        Format::Parquet => read_parquet(path, on_record),
    }
}

fn read_csv(
    path: &Path,
    source: &SourceConfig,
    on_record: &mut dyn FnMut(Record) -> Result<()>,
    on_bad: &mut dyn FnMut(Unreadable),
) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(source.delimiter as u8)
        .quote(source.quote as u8)
        .flexible(true)
        .from_path(path)
        .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| {
            Error::Source(format!(
                "{}: cannot read the header row: {e}",
                path.display()
            ))
        })?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut row = csv::StringRecord::new();
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                let raw = row
                    .iter()
                    .collect::<Vec<_>>()
                    .join(&source.delimiter.to_string());
                if row.len() != headers.len() {
                    on_bad(Unreadable {
                        raw,
                        reason: format!(
                            "row has {} fields, the header has {}",
                            row.len(),
                            headers.len()
                        ),
                        line,
                    });
                    continue;
                }
                let fields: Map<String, Value> = headers
                    .iter()
                    .zip(row.iter())
                    .map(|(h, v)| (h.clone(), Value::String(v.to_string())))
                    .collect();
                on_record(Record { fields, raw, line })?;
            }
            Err(e) => on_bad(Unreadable {
                raw: String::new(),
                reason: format!("malformed CSV: {e}"),
                line,
            }),
        }
    }
    Ok(())
}

fn read_parquet(path: &Path, on_record: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|e| {
            Error::Source(format!(
                "{}: not a readable Parquet file: {e}",
                path.display()
            ))
        })?;
    let mut number = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
        for fields in
            rows_of(&batch).map_err(|e| Error::Source(format!("{}: {e}", path.display())))?
        {
            number += 1;
            let raw = Value::Object(fields.clone()).to_string();
            on_record(Record {
                fields,
                raw,
                line: number,
            })?;
        }
    }
    Ok(())
}

/// A batch's rows as field maps; numbers and booleans stay typed, other
/// values (timestamps, dates, decimals) become their display text, which the
/// converter parses like any text source.
fn rows_of(
    batch: &RecordBatch,
) -> std::result::Result<Vec<Map<String, Value>>, arrow_schema::ArrowError> {
    let options =
        FormatOptions::default().with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%S%.f%:z"));
    let schema = batch.schema();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let mut fields = Map::new();
        for (c, f) in formatters.iter().enumerate() {
            let column = batch.column(c);
            let value = if column.is_null(r) {
                Value::Null
            } else {
                let text = f.value(r).to_string();
                match column.data_type() {
                    dt if dt.is_integer() => text
                        .parse::<i64>()
                        .map(Value::from)
                        .unwrap_or(Value::String(text)),
                    dt if dt.is_floating() => text
                        .parse::<f64>()
                        .map(Value::from)
                        .unwrap_or(Value::String(text)),
                    arrow_schema::DataType::Boolean => Value::Bool(text == "true"),
                    _ => Value::String(text),
                }
            };
            fields.insert(schema.field(c).name().clone(), value);
        }
        rows.push(fields);
    }
    Ok(rows)
}
