//! `for_each` from data: an API job's request series, one per entry, with
//! the entries read at run time from a file (a ticker list, a city list)
//! or from a catalog table's rows, not only written inline.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_cast::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::pipeline::{ForEachFrom, Job, Source, check_for_each};
use crate::rest::RestClient;
use crate::table::read::Location;

/// `job` with its `for_each` entries read, when they come from data (none
/// otherwise).
///
/// # Errors
/// When the file or table cannot be read, gives no entry, or an entry
/// lacks a value or names a template floe fills itself.
pub async fn resolve(job: &Job, client: Option<&RestClient>) -> Result<Option<Job>> {
    let Source::Http(h) = &job.source else {
        return Ok(None);
    };
    let Some(from) = &h.for_each_from else {
        return Ok(None);
    };
    let (entries, what) = match from {
        ForEachFrom::File(path) => (from_file(&job.base_dir.join(path))?, path.clone()),
        ForEachFrom::Table {
            table,
            columns,
            filter,
        } => {
            let client = client.ok_or_else(|| {
                Error::Config(format!(
                    "job {}: for_each reads table {table}, which needs the catalog",
                    job.name
                ))
            })?;
            (
                from_table(client, table, columns, filter.as_deref()).await?,
                format!("table {table}"),
            )
        }
    };
    if entries.is_empty() {
        return Err(Error::Source(format!(
            "job {}: for_each from {what} gave no entries; with none there is nothing to ask",
            job.name
        )));
    }
    check_for_each(&entries).map_err(|e| {
        Error::Config(format!("job {}: for_each from {what}: {e}", job.name)).caused_by(e)
    })?;
    tracing::info!(job = %job.name, entries = entries.len(), from = %what, "for_each entries");
    let mut resolved = job.clone();
    if let Source::Http(h) = &mut resolved.source {
        h.for_each = entries;
    }
    Ok(Some(resolved))
}

/// The entries of a CSV file (a header, then a row per entry) or of a JSON
/// array of objects (scalar values).
fn from_file(path: &Path) -> Result<Vec<BTreeMap<String, String>>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Source(format!("for_each file {shown}: {e}")).caused_by(e))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        return json_entries(&text)
            .map_err(|e| Error::Source(format!("for_each file {shown}: {e}")).caused_by(e));
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| Error::Source(format!("for_each file {shown}: {e}")).caused_by(e))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row =
            row.map_err(|e| Error::Source(format!("for_each file {shown}: {e}")).caused_by(e))?;
        let entry: BTreeMap<String, String> = header
            .iter()
            .cloned()
            .zip(row.iter().map(str::to_string))
            .collect();
        if let Some((k, _)) = entry.iter().find(|(_, v)| v.is_empty()) {
            return Err(Error::Source(format!(
                "for_each file {shown}: line {} has no value for {k:?}",
                i + 2
            )));
        }
        out.push(entry);
    }
    Ok(out)
}

/// A JSON array of objects as entries (strings as they are, numbers and
/// booleans as written).
fn json_entries(text: &str) -> std::result::Result<Vec<BTreeMap<String, String>>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let items = doc.as_array().ok_or("not a JSON array of objects")?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let object = item
                .as_object()
                .ok_or_else(|| format!("entry {i} is not an object"))?;
            object
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(_) | Value::Bool(_) => v.to_string(),
                        _ => return Err(format!("entry {i}: {k:?} is not a string or number")),
                    };
                    Ok((k.clone(), text))
                })
                .collect()
        })
        .collect()
}

/// The `columns` of `table`'s rows (matching `filter`), at its current
/// snapshot, in the table's order.
async fn from_table(
    client: &RestClient,
    table: &str,
    columns: &[String],
    filter: Option<&str>,
) -> Result<Vec<BTreeMap<String, String>>> {
    let source = Location::catalog(table)?
        .load(client, table)
        .await?
        .ok_or_else(|| Error::Source(format!("for_each table {table} does not exist")))?;
    let quoted: Vec<String> = columns
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    let mut sql = format!("SELECT {} FROM {table}", quoted.join(", "));
    if let Some(f) = filter {
        sql.push_str(&format!(" WHERE {f}"));
    }
    let query = |e: datafusion::error::DataFusionError| {
        Error::Source(format!("for_each from table {table}: {e}")).caused_by(e)
    };
    let batches = source.query(None, &sql, query).await?;
    let options = FormatOptions::default();
    let mut out = Vec::new();
    for batch in &batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Source(format!("for_each from table {table}: {e}")).caused_by(e))?;
        for row in 0..batch.num_rows() {
            let mut entry = BTreeMap::new();
            for ((name, column), f) in columns.iter().zip(batch.columns()).zip(&formatters) {
                if column.is_null(row) {
                    return Err(Error::Source(format!(
                        "for_each from table {table}: a row has no {name}"
                    )));
                }
                entry.insert(name.clone(), f.value(row).to_string());
            }
            out.push(entry);
        }
    }
    Ok(out)
}
