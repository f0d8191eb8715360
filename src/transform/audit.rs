//! Data tests: each declared test becomes a query returning the offending
//! rows of the staged table (as registered in the session: the staged
//! snapshot, restricted to the days the run wrote). A test passes when its
//! query returns nothing; otherwise it reports how many rows and a sample.

use std::collections::BTreeMap;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use super::model::{Bounds, Cadence, Model, NotNull, SqlTest, interval_seconds};
use crate::error::{Error, Result};

/// Rows shown for a failing test.
const SAMPLE_ROWS: usize = 5;

/// One test's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// E.g. `not_null(site_id)`.
    pub test: String,
    /// Offending rows (0: passed).
    pub failures: u64,
    /// The first offending rows, as a table.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sample: String,
}

/// A test and its query.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Display name.
    pub test: String,
    /// SELECT returning offending rows.
    pub sql: String,
    /// What a failure shows instead of the first offending rows (a
    /// `not_null` with a tolerated fraction shows the fraction).
    pub sample_sql: Option<String>,
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn table_ident(name: &str) -> String {
    name.split('.').map(ident).collect::<Vec<_>>().join(".")
}

fn literal(v: &toml::Value) -> std::result::Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(format!("'{}'", s.replace('\'', "''"))),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("{other} is not a string, number or boolean")),
    }
}

/// A malformed `[tests]` declaration, in words (the caller names the
/// model file).
type Declaration<T> = std::result::Result<T, String>;

/// The checks `model` declares, on `table` (the staged model table's
/// registered name), with `event_time` its event-time column if any.
///
/// # Errors
/// A malformed declaration (naming the model file).
pub fn checks(model: &Model, event_time: Option<&str>) -> Result<Vec<Check>> {
    let bad = |msg: String| Error::Model(format!("{}: [tests] {msg}", model.file()));
    let t = table_ident(&model.name);
    let tests = &model.tests;
    let mut out = not_null_checks(&t, &tests.not_null);
    out.extend(unique_checks(&t, model).map_err(bad)?);
    out.extend(accepted_values_checks(&t, &tests.accepted_values).map_err(bad)?);
    out.extend(range_checks(&t, &tests.range).map_err(bad)?);
    out.extend(regex_checks(&t, &tests.regex).map_err(bad)?);
    out.extend(expression_checks(&t, &tests.expression).map_err(bad)?);
    out.extend(sql_checks(&t, &tests.sql.0).map_err(bad)?);
    out.extend(relationship_checks(&t, &tests.relationships).map_err(bad)?);
    out.extend(row_count_check(&t, tests.min_rows));
    if let Some(cadence) = &tests.cadence {
        out.push(cadence_check(&t, cadence, event_time).map_err(bad)?);
    }
    Ok(out)
}

/// Checks the declarations of the tests that can be checked before
/// anything runs: `not_null` fractions, `regex` patterns, `expression`s
/// and `sql` queries that do not parse.
///
/// # Errors
/// The first malformed declaration, naming the model file.
pub fn validate(model: &Model) -> Result<()> {
    let bad = |msg: String| Error::Model(format!("{}: [tests] {msg}", model.file()));
    let t = table_ident(&model.name);
    let tests = &model.tests;
    regex_checks(&t, &tests.regex).map_err(bad)?;
    expression_checks(&t, &tests.expression).map_err(bad)?;
    sql_checks(&t, &tests.sql.0).map_err(bad)?;
    Ok(())
}

/// `not_null`: the rows where each column is null; with a tolerated
/// fraction, those rows only when their share of the tested rows exceeds
/// it (a failure then shows the share).
fn not_null_checks(t: &str, columns: &[NotNull]) -> Vec<Check> {
    columns
        .iter()
        .map(|n| {
            let c = ident(&n.column);
            if n.max_fraction == 0.0 {
                return Check {
                    test: format!("not_null({})", n.column),
                    sql: format!("SELECT * FROM {t} WHERE {c} IS NULL"),
                    sample_sql: None,
                };
            }
            let max = n.max_fraction;
            Check {
                test: format!("not_null({}, max_fraction {max})", n.column),
                sql: format!(
                    "SELECT * FROM {t} WHERE {c} IS NULL AND (SELECT count(*) - count({c}) FROM {t}) > {max} * (SELECT count(*) FROM {t})"
                ),
                sample_sql: Some(format!(
                    "SELECT count(*) AS rows, count(*) - count({c}) AS nulls, \
                     CAST(count(*) - count({c}) AS DOUBLE) / count(*) AS null_fraction, \
                     {max} AS max_fraction FROM {t}"
                )),
            }
        })
        .collect()
}

/// `regex`: per column, the rows whose non-null value (as text) does not
/// match the pattern (Rust `regex` syntax, as DataFusion's `regexp_like`;
/// unanchored unless written `^...$`).
fn regex_checks(t: &str, patterns: &BTreeMap<String, String>) -> Declaration<Vec<Check>> {
    let mut out = Vec::new();
    for (c, pattern) in patterns {
        if let Err(e) = regex::Regex::new(pattern) {
            return Err(format!(
                "regex.{c} = {pattern:?} is not a valid pattern: {e}"
            ));
        }
        let c_id = ident(c);
        out.push(Check {
            test: format!("regex({c} ~ {pattern:?})"),
            sql: format!(
                "SELECT * FROM {t} WHERE {c_id} IS NOT NULL AND NOT regexp_like(CAST({c_id} AS VARCHAR), '{}')",
                pattern.replace('\'', "''")
            ),
            sample_sql: None,
        });
    }
    Ok(out)
}

/// `expression`: per SQL boolean, the rows where it is false (a null
/// passes, as in dbt's `expression_is_true`).
fn expression_checks(t: &str, expressions: &[String]) -> Declaration<Vec<Check>> {
    let mut out = Vec::new();
    for expr in expressions {
        let text = crate::pipeline::check_expression(expr)?;
        out.push(Check {
            test: format!("expression({text})"),
            sql: format!("SELECT * FROM {t} WHERE NOT ({text})"),
            sample_sql: None,
        });
    }
    Ok(out)
}

/// `sql`: custom queries returning the failing rows, `{this}` standing
/// for the model's tested rows; each must be one SELECT naming `{this}`.
fn sql_checks(t: &str, tests: &[SqlTest]) -> Declaration<Vec<Check>> {
    tests
        .iter()
        .map(|test| {
            Ok(Check {
                test: format!("sql({})", test.name.trim()),
                sql: test.query_on(t)?,
                sample_sql: None,
            })
        })
        .collect()
}

/// `unique`, led by the model's unique key: the repeated values of each
/// column set.
fn unique_checks(t: &str, model: &Model) -> Declaration<Vec<Check>> {
    let mut uniques = model.tests.unique.clone();
    if !model.unique_key.is_empty() && !uniques.contains(&model.unique_key) {
        uniques.insert(0, model.unique_key.clone());
    }
    let mut out = Vec::new();
    for cols in &uniques {
        if cols.is_empty() {
            return Err("unique needs at least one column".into());
        }
        let list: Vec<String> = cols.iter().map(|c| ident(c)).collect();
        let list = list.join(", ");
        out.push(Check {
            test: format!("unique({})", cols.join(", ")),
            sql: format!(
                "SELECT {list}, count(*) AS duplicates FROM {t} GROUP BY {list} HAVING count(*) > 1"
            ),
            sample_sql: None,
        });
    }
    Ok(out)
}

/// `accepted_values`: per column, the values outside its list (nulls are
/// left to `not_null`).
fn accepted_values_checks(
    t: &str,
    accepted: &BTreeMap<String, Vec<toml::Value>>,
) -> Declaration<Vec<Check>> {
    let mut out = Vec::new();
    for (c, values) in accepted {
        if values.is_empty() {
            return Err(format!("accepted_values.{c} lists no value"));
        }
        let list: Vec<String> = values
            .iter()
            .map(literal)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("accepted_values.{c}: {e}"))?;
        let c_id = ident(c);
        out.push(Check {
            test: format!("accepted_values({c})"),
            sql: format!(
                "SELECT {c_id}, count(*) AS rows FROM {t} WHERE {c_id} IS NOT NULL AND {c_id} NOT IN ({}) GROUP BY {c_id}",
                list.join(", ")
            ),
            sample_sql: None,
        });
    }
    Ok(out)
}

/// `range`: per column, the rows below its `min` or above its `max`.
fn range_checks(t: &str, ranges: &BTreeMap<String, Bounds>) -> Declaration<Vec<Check>> {
    let mut out = Vec::new();
    for (c, bounds) in ranges {
        let c_id = ident(c);
        let mut conds = Vec::new();
        if let Some(min) = bounds.min {
            conds.push(format!("{c_id} < {min}"));
        }
        if let Some(max) = bounds.max {
            conds.push(format!("{c_id} > {max}"));
        }
        if conds.is_empty() {
            return Err(format!("range.{c} needs min or max"));
        }
        out.push(Check {
            test: format!("range({c})"),
            sql: format!("SELECT * FROM {t} WHERE {}", conds.join(" OR ")),
            sample_sql: None,
        });
    }
    Ok(out)
}

/// `relationships`: per column, the rows whose value the target
/// `namespace.table.column` does not hold.
fn relationship_checks(
    t: &str,
    relationships: &BTreeMap<String, String>,
) -> Declaration<Vec<Check>> {
    let mut out = Vec::new();
    for (c, target) in relationships {
        let parts: Vec<&str> = target.split('.').collect();
        let [ns, table, column] = parts.as_slice() else {
            return Err(format!(
                "relationships.{c} = {target:?}: expected \"namespace.table.column\""
            ));
        };
        let c_id = ident(c);
        out.push(Check {
            test: format!("relationships({c} -> {target})"),
            sql: format!(
                "SELECT * FROM {t} AS child WHERE child.{c_id} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {} AS parent WHERE parent.{} = child.{c_id})",
                table_ident(&format!("{ns}.{table}")),
                ident(column)
            ),
            sample_sql: None,
        });
    }
    Ok(out)
}

/// `min_rows` (default 1, 0 turns it off): the row count when it is
/// lower.
fn row_count_check(t: &str, min_rows: Option<u64>) -> Option<Check> {
    let min_rows = min_rows.unwrap_or(1);
    (min_rows > 0).then(|| Check {
        test: format!("row_count >= {min_rows}"),
        sql: format!("SELECT count(*) AS row_count FROM {t} HAVING count(*) < {min_rows}"),
        sample_sql: None,
    })
}

/// `cadence`: see [`cadence_sql`]; it needs the model's event time.
fn cadence_check(t: &str, cadence: &Cadence, event_time: Option<&str>) -> Declaration<Check> {
    let time =
        event_time.ok_or_else(|| "cadence needs the model's event_time column".to_string())?;
    let interval =
        interval_seconds(&cadence.interval).map_err(|e| format!("cadence.interval: {e}"))?;
    let max_gap = match &cadence.max_gap {
        Some(g) => interval_seconds(g).map_err(|e| format!("cadence.max_gap: {e}"))?,
        None => interval,
    };
    Ok(Check {
        test: format!(
            "cadence({} every {} per [{}], max gap {}s)",
            time,
            cadence.interval,
            cadence.key.join(", "),
            max_gap
        ),
        sql: cadence_sql(t, time, &cadence.key, interval, max_gap),
        sample_sql: None,
    })
}

/// Per key and UTC day with at least one row (the event time being a
/// microsecond timestamp, as Iceberg's are): the largest gap between
/// consecutive distinct timestamps, counting from the day's start (as if
/// one interval before it) and to its end; offending when above `max_gap`.
fn cadence_sql(t: &str, time: &str, key: &[String], interval: i64, max_gap: i64) -> String {
    const DAY_US: i64 = crate::table::days::MICROS_PER_DAY;
    let keys: Vec<String> = key.iter().map(|k| ident(k)).collect();
    let key_list = keys.iter().map(|k| format!("{k}, ")).collect::<String>();
    let interval_us = interval * 1_000_000;
    let part = format!("PARTITION BY {key_list}day0");
    format!(
        "WITH s AS (SELECT DISTINCT {key_list}CAST({time_id} AS BIGINT) AS us FROM {t} WHERE {time_id} IS NOT NULL), \
         d AS (SELECT {key_list}us, us - (((us % {DAY_US}) + {DAY_US}) % {DAY_US}) AS day0 FROM s), \
         g AS (SELECT {key_list}day0, us, \
               us - COALESCE(LAG(us) OVER ({part} ORDER BY us), day0 - {interval_us}) AS gap, \
               CASE WHEN LEAD(us) OVER ({part} ORDER BY us) IS NULL THEN day0 + {DAY_US} - us ELSE 0 END AS tail \
               FROM d) \
         SELECT {key_list}to_timestamp_micros(day0) AS day, count(*) AS observed, {expected} AS expected, \
                greatest(max(gap), max(tail)) / 1000000 AS largest_gap_s \
         FROM g GROUP BY {key_list}day0 \
         HAVING greatest(max(gap), max(tail)) > {max_gap_us} \
         ORDER BY day",
        time_id = ident(time),
        expected = DAY_US / interval_us,
        max_gap_us = max_gap * 1_000_000,
    )
}

/// Plans `checks` in `ctx` (where the model's table is an empty table of
/// its result's columns), so that a test naming an unknown column or
/// comparing what cannot be compared stops the model before anything is
/// computed or written.
///
/// # Errors
/// The first test that does not plan, naming the model file and test.
pub async fn plan(ctx: &SessionContext, model: &Model, checks: &[Check]) -> Result<()> {
    for check in checks {
        for sql in std::iter::once(&check.sql).chain(&check.sample_sql) {
            if let Err(e) = ctx.sql(sql).await {
                return Err(Error::Model(format!(
                    "{}: [tests] {} does not apply to the model's result: {}",
                    model.file(),
                    check.test,
                    e.find_root()
                ))
                .caused_by(e));
            }
        }
    }
    Ok(())
}

/// Runs `checks` in `ctx`, returning every outcome.
///
/// # Errors
/// When a test query fails to run (naming the model and test).
pub async fn run(
    ctx: &SessionContext,
    model: &Model,
    checks: &[Check],
) -> Result<Vec<TestOutcome>> {
    let mut out = Vec::with_capacity(checks.len());
    for check in checks {
        let fail = |e: datafusion::error::DataFusionError| {
            Error::Model(format!(
                "{}: test {} could not run: {e}",
                model.file(),
                check.test
            ))
            .caused_by(e)
        };
        let count = ctx
            .sql(&format!("SELECT count(*) AS n FROM ({})", check.sql))
            .await
            .map_err(fail)?
            .collect()
            .await
            .map_err(fail)?;
        let failures = count
            .first()
            .filter(|b| b.num_rows() > 0)
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .map(|a| a.value(0))
            })
            .unwrap_or(0) as u64;
        let sample = if failures == 0 {
            String::new()
        } else {
            let shown = match &check.sample_sql {
                Some(sql) => sql.clone(),
                None => format!("SELECT * FROM ({}) LIMIT {SAMPLE_ROWS}", check.sql),
            };
            let rows = ctx
                .sql(&shown)
                .await
                .map_err(fail)?
                .collect()
                .await
                .map_err(fail)?;
            pretty_format_batches(&rows)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        out.push(TestOutcome {
            test: check.test.clone(),
            failures,
            sample,
        });
    }
    Ok(out)
}

/// The error text of a model whose tests failed (none when all passed):
/// each failing test with its count and a sample.
pub fn failures(model: &Model, outcomes: &[TestOutcome]) -> Option<String> {
    let failed: Vec<&TestOutcome> = outcomes.iter().filter(|o| o.failures > 0).collect();
    if failed.is_empty() {
        return None;
    }
    let mut msg = format!(
        "model {} ({}): {} of {} test(s) failed; its table was not changed",
        model.name,
        model.file(),
        failed.len(),
        outcomes.len()
    );
    for f in &failed {
        let sample: Vec<String> = f.sample.lines().map(|l| format!("    {l}")).collect();
        msg.push_str(&format!(
            "\n  {}: {} offending row(s), e.g.\n{}",
            f.test,
            f.failures,
            sample.join("\n")
        ));
    }
    Some(msg)
}
