//! Models: `sql/<layer>/<name>.sql` files, one SELECT each, whose result is
//! the table `<layer>.<name>`. A comment block at the top of the file,
//! starting with `/* floe`, holds the model's settings in TOML:
//!
//! ```sql
//! /* floe
//! materialized = "incremental"      # or "table" (full replace every run)
//! format = "delta"                   # or "iceberg" (default: [transform] format)
//! engine = "trino"                   # or "datafusion" (default: [transform] engine)
//! event_time = "ts_utc"              # partitions by day(ts_utc)
//! unique_key = ["ts_utc", "site_id"]
//! sort = ["site_id", "ts_utc"]
//! lookback = "7d"                    # rows read up to 7 days from their own day
//! [tests]
//! not_null = ["ts_utc", "site_id", { column = "temp", max_fraction = 0.01 }]
//! regex = { site_id = '^[A-Z]{3}$' }
//! expression = ["temp > -90"]
//! sql = { name = "no_future", query = "SELECT * FROM {this} WHERE ts_utc > now()" }
//! cadence = { key = ["site_id"], interval = "30m" }
//! */
//! SELECT ...
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::pipeline::{Engine, TableFormat};
pub use crate::pipeline::{NotNull, SqlTest, SqlTests};

/// How a model's table is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Materialized {
    /// Only the days whose upstream data changed are recomputed and
    /// overwritten (needs an event time).
    Incremental,
    /// The whole table is recomputed and replaced.
    Table,
}

/// A column's allowed range (`range = { col = { min = 0, max = 10 } }`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// Smallest allowed value (inclusive).
    pub min: Option<f64>,
    /// Largest allowed value (inclusive).
    pub max: Option<f64>,
}

/// An expected cadence of the event time per key and UTC day.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cadence {
    /// Columns identifying one series (e.g. `["site_id"]`; empty for one series).
    #[serde(default)]
    pub key: Vec<String>,
    /// The expected interval (`30m`, `1h`).
    pub interval: String,
    /// The largest gap tolerated (default: the interval, i.e. none missing),
    /// counting from the day's start and to its end.
    pub max_gap: Option<String>,
}

/// Data tests run on the staged result before it is published.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tests {
    /// Columns that must not be null (or only up to a fraction of rows).
    #[serde(default)]
    pub not_null: Vec<NotNull>,
    /// A regular expression per column that its non-null values must
    /// match (anywhere, unless anchored with `^...$`).
    #[serde(default)]
    pub regex: BTreeMap<String, String>,
    /// SQL booleans every row must satisfy (a row fails where one is
    /// false; null passes, as dbt's `expression_is_true`).
    #[serde(default)]
    pub expression: Vec<String>,
    /// Custom SQL tests (queries returning failing rows).
    #[serde(default)]
    pub sql: SqlTests,
    /// Column sets that must be unique (the unique key is always tested).
    #[serde(default)]
    pub unique: Vec<Vec<String>>,
    /// Allowed values per column (nulls are left to `not_null`).
    #[serde(default)]
    pub accepted_values: BTreeMap<String, Vec<toml::Value>>,
    /// Allowed ranges per column.
    #[serde(default)]
    pub range: BTreeMap<String, Bounds>,
    /// Foreign keys: `column = "layer.model.column"` (or another table).
    #[serde(default)]
    pub relationships: BTreeMap<String, String>,
    /// Fewest rows the refreshed part must have (default 1; 0 turns it off).
    pub min_rows: Option<u64>,
    /// The event time's cadence.
    pub cadence: Option<Cadence>,
}

impl Tests {
    /// The tables (`namespace.table`) the relationships tests look keys up
    /// in, other than `own` (the model's table).
    pub fn relationship_tables(&self, own: &str) -> std::collections::BTreeSet<String> {
        self.relationships
            .values()
            .filter_map(|t| t.rsplit_once('.').map(|(table, _)| table.to_string()))
            .filter(|t| t != own)
            .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    materialized: Option<Materialized>,
    format: Option<TableFormat>,
    engine: Option<Engine>,
    event_time: Option<String>,
    lookback: Option<String>,
    #[serde(default)]
    unique_key: Vec<String>,
    #[serde(default)]
    sort: Vec<String>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
    #[serde(default)]
    tests: Tests,
}

/// A model read from its file.
#[derive(Debug, Clone)]
pub struct Model {
    /// `layer.name`, also the target table.
    pub name: String,
    /// The layer (the folder: `silver`, `gold`, ...).
    pub layer: String,
    /// The file.
    pub path: PathBuf,
    /// The whole file (the header is a comment, so line numbers of SQL
    /// errors are the file's).
    pub sql: String,
    /// Refresh mode (default: incremental when there is an event time).
    pub materialized: Option<Materialized>,
    /// `iceberg` or `delta` (default: the pipeline's `[transform] format`).
    pub format: Option<TableFormat>,
    /// `datafusion` or `trino` (default: the pipeline's `[transform] engine`).
    pub engine: Option<Engine>,
    /// The timestamptz column whose day partitions the table (default
    /// `ts_utc` when the result has it).
    pub event_time: Option<String>,
    /// How many days a result row's inputs may lie from its own day
    /// (`lookback`, rounded up to whole days): an incremental refresh
    /// recomputes that many days around the changed ones, reading that
    /// many more (none: each day from that day's rows alone).
    pub lookback_days: Option<i32>,
    /// Columns unique together (tested).
    pub unique_key: Vec<String>,
    /// Sort order within each data file.
    pub sort: Vec<String>,
    /// Table properties set when the table is created.
    pub properties: BTreeMap<String, String>,
    /// Data tests.
    pub tests: Tests,
}

impl Model {
    /// Namespace and table name of the target.
    pub fn target(&self) -> (Vec<String>, String) {
        let (ns, name) = self.name.split_once('.').unwrap_or(("", &self.name));
        (vec![ns.to_string()], name.to_string())
    }

    /// Where the model is, for messages: the file path.
    pub fn file(&self) -> String {
        self.path.display().to_string()
    }
}

/// Reads every `<dir>/<layer>/<name>.sql`, sorted by name.
///
/// # Errors
/// When the folder cannot be read, a name is not a plain identifier, or a
/// header is not valid TOML (naming the file and line).
pub fn discover(dir: &Path) -> Result<Vec<Model>> {
    let read_dir = |d: &Path| {
        std::fs::read_dir(d).map_err(|e| {
            Error::Config(format!(
                "cannot read the models folder {}: {e}",
                d.display()
            ))
            .caused_by(e)
        })
    };
    let mut models = Vec::new();
    for layer in read_dir(dir)? {
        let layer =
            layer.map_err(|e| Error::Config(format!("{}: {e}", dir.display())).caused_by(e))?;
        if !layer.path().is_dir() {
            continue;
        }
        for file in read_dir(&layer.path())? {
            let path = file
                .map_err(|e| {
                    Error::Config(format!("{}: {e}", layer.path().display())).caused_by(e)
                })?
                .path();
            if path.extension().and_then(|e| e.to_str()) == Some("sql") {
                models.push(load(&path)?);
            }
        }
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    if models.is_empty() {
        return Err(Error::Config(format!(
            "no models in {}: expected <layer>/<name>.sql files",
            dir.display()
        )));
    }
    Ok(models)
}

/// Reads one model file.
///
/// # Errors
/// As [`discover`].
pub fn load(path: &Path) -> Result<Model> {
    let file = path.display().to_string();
    let sql = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read model {file}: {e}")).caused_by(e))?;
    let stem = |p: &Path| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
            .unwrap_or_default()
    };
    let name = stem(path);
    let layer = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    for part in [&layer, &name] {
        if !is_identifier(part) {
            return Err(Error::Config(format!(
                "{file}: model names are <layer>/<name>.sql with lower-case letters, digits and _; {part:?} is not"
            )));
        }
    }
    let header = parse_header(&sql, &file)?;
    if header.materialized == Some(Materialized::Incremental)
        && header.event_time.as_deref() == Some("")
    {
        return Err(Error::Config(format!(
            "{file}: an incremental model needs an event_time"
        )));
    }
    let lookback_days = header
        .lookback
        .as_deref()
        .map(|text| {
            if header.materialized == Some(Materialized::Table) {
                return Err(format!(
                    "lookback applies to incremental models; {file} is materialized = \"table\""
                ));
            }
            let seconds = interval_seconds(text).map_err(|e| format!("{file}: lookback {e}"))?;
            i32::try_from((seconds + 86_399) / 86_400)
                .map_err(|_| format!("{file}: lookback {text:?} is too long"))
        })
        .transpose()
        .map_err(Error::Config)?;
    Ok(Model {
        name: format!("{layer}.{name}"),
        layer,
        path: path.to_path_buf(),
        sql,
        materialized: header.materialized,
        format: header.format,
        engine: header.engine,
        event_time: header.event_time,
        lookback_days,
        unique_key: header.unique_key,
        sort: header.sort,
        properties: header.properties,
        tests: header.tests,
    })
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// The TOML inside a leading `/* floe ... */` block (none: defaults).
fn parse_header(sql: &str, file: &str) -> Result<Header> {
    let trimmed = sql.trim_start();
    let header = trimmed
        .strip_prefix("/*")
        .and_then(|rest| rest.trim_start_matches([' ', '\t']).strip_prefix("floe"));
    let Some(body) = header else {
        // A header further down would be silently ignored: refuse it.
        if let Some(at) = sql.find("/* floe").or_else(|| sql.find("/*floe")) {
            let line = sql[..at].matches('\n').count() + 1;
            return Err(Error::Config(format!(
                "{file}:{line}: the /* floe header must open the file (nothing before it, not even a comment)"
            )));
        }
        return Ok(Header::default());
    };
    let end = body
        .find("*/")
        .ok_or_else(|| Error::Config(format!("{file}: the /* floe header is never closed")))?;
    let toml_text = &body[..end];
    // Line of the header's first TOML line within the file.
    let offset = sql.len() - body.len();
    let first_line = sql[..offset].matches('\n').count() + 1;
    toml::from_str::<Header>(toml_text).map_err(|e| {
        let (line, text) = e
            .span()
            .map(|s| {
                let before = &toml_text[..s.start];
                let start = before.rfind('\n').map_or(0, |i| i + 1);
                let end = toml_text[s.start..]
                    .find('\n')
                    .map_or(toml_text.len(), |i| s.start + i);
                (
                    first_line + before.matches('\n').count(),
                    toml_text[start..end].trim().to_string(),
                )
            })
            .unwrap_or((first_line, String::new()));
        let at = if text.is_empty() {
            String::new()
        } else {
            format!(" (in `{text}`)")
        };
        Error::Config(format!(
            "{file}:{line}: model header: {}{at}",
            e.message().trim_end()
        ))
    })
}

/// A positive whole number of seconds written as a duration (`30m`, `1h`,
/// `1d`; see [`crate::duration::parse_duration`]).
///
/// # Errors
/// A message naming the accepted forms.
pub fn interval_seconds(text: &str) -> std::result::Result<i64, String> {
    let d = crate::duration::parse_duration(text)?;
    if d.is_zero() || d.subsec_nanos() != 0 {
        return Err(format!(
            "{text:?} must be a positive whole number of seconds"
        ));
    }
    i64::try_from(d.as_secs()).map_err(|_| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parses_and_errors_name_the_file_line() {
        let ok = "/* floe\nmaterialized = \"table\"\nunique_key = [\"a\"]\n[tests]\nnot_null = [\"a\"]\n*/\nSELECT 1 AS a";
        let h = parse_header(ok, "m.sql").expect("header");
        assert_eq!(h.materialized, Some(Materialized::Table));
        assert_eq!(h.tests.not_null[0].column, "a");
        let bad = "-- x\n/* floe\nmaterialized = \"table\"\nfoo = 1\n*/\nSELECT 1";
        let bad = bad.trim_start_matches("-- x\n");
        let e = parse_header(bad, "m.sql")
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("m.sql:3"), "{e}");
        assert!(e.contains("foo"), "{e}");
        assert!(parse_header("SELECT 1", "m.sql").is_ok());
        assert!(parse_header("/* floe\nmaterialized = 1", "m.sql").is_err());
        let typed = parse_header("/* floe\nunique_key = \"a\"\n*/\nSELECT 1", "m.sql")
            .expect_err("wrong type")
            .to_string();
        assert!(
            typed.contains("m.sql:2") && typed.contains("unique_key"),
            "{typed}"
        );
        let late = parse_header("-- note\n/* floe\nsort = []\n*/\nSELECT 1", "m.sql")
            .expect_err("header after a comment")
            .to_string();
        assert!(
            late.contains("m.sql:2") && late.contains("must open the file"),
            "{late}"
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(interval_seconds("30m"), Ok(1800));
        assert_eq!(interval_seconds("1h"), Ok(3600));
        assert!(interval_seconds("30").is_err());
        assert!(interval_seconds("0m").is_err());
        assert_eq!(interval_seconds("1w"), Ok(604_800));
        assert!(interval_seconds("5y").is_err());
        assert!(interval_seconds("500ms").is_err());
    }
}
