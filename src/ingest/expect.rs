//! `[job.expect]`: soft failures found in the delivered rows before anything
//! is committed: rows repeating a (key, `ts_utc`), gaps in a series'
//! cadence, days of the window without rows, and the data tests that look
//! at one row at a time (`not_null` with its tolerated fraction, `regex`,
//! `expression`: a row fails where it is false, null passes).

use std::collections::{HashMap, HashSet};

use arrow_array::{Array, RecordBatch, TimestampMicrosecondArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::{EVENT_TIME_COLUMN, EmptyDays, Expect};

use crate::table::days::MICROS_PER_DAY as DAY_MICROS;
const EXAMPLES: usize = 5;

/// What the checks found (part of the run report).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExpectReport {
    /// Rows repeating a (key, `ts_utc`) already seen.
    pub duplicates: u64,
    /// Missing slots of the cadence, summed over series.
    pub gaps: u64,
    /// Days of the window without rows.
    pub empty_days: Vec<String>,
    /// A few of each, for the log.
    pub examples: Vec<String>,
    /// Slots from this instant on were not checked for gaps: later than
    /// the run's time minus `publication_delay` (an intraday run); none
    /// when the whole window was checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_due_from: Option<String>,
    /// Rows looked at by the data tests.
    #[serde(skip_serializing_if = "is_zero")]
    pub rows: u64,
    /// The data tests (`not_null`, `regex`, `expression`), in that order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestCount>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A data test of `[job.expect]` and the rows that broke it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TestCount {
    /// E.g. `not_null(value, max_fraction 0.01)`.
    pub test: String,
    /// Offending rows (nulls, values that do not match, rows where the
    /// expression is false).
    pub failures: u64,
    /// Offending rows tolerated (a `not_null`'s fraction of the rows).
    pub allowed: u64,
}

/// The data tests, ready to look at batches.
struct Tests {
    regexes: Vec<(String, regex::Regex)>,
    /// The `expression`s, planned per batch in `ctx`.
    expressions: Vec<String>,
    ctx: datafusion::prelude::SessionContext,
}

impl std::fmt::Debug for Tests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tests")
            .field("regexes", &self.regexes)
            .field("expressions", &self.expressions)
            .finish_non_exhaustive()
    }
}

/// Accumulates the rows of a run.
#[derive(Debug)]
pub struct Checker {
    expect: Expect,
    /// Series key text → index.
    keys: HashMap<String, u32>,
    seen: HashSet<(u32, i64)>,
    report: ExpectReport,
    /// Duplicates or a cadence to look for.
    series: bool,
    tests: Tests,
}

impl Checker {
    /// A checker for `expect`, or `None` when it looks at rows not at all
    /// (no duplicates, cadence or data tests to check).
    ///
    /// # Errors
    /// A `regex` pattern that does not compile (checked with the
    /// pipeline already).
    pub fn new(expect: &Expect) -> Result<Option<Self>> {
        let series = expect.max_duplicates.is_some() || expect.cadence.is_some();
        let tested = !expect.not_null.is_empty()
            || !expect.regex.is_empty()
            || !expect.expression.is_empty();
        if !series && !tested {
            return Ok(None);
        }
        let regexes = expect
            .regex
            .iter()
            .map(|(c, p)| {
                regex::Regex::new(p).map(|r| (c.clone(), r)).map_err(|e| {
                    Error::Config(format!("key `expect.regex.{c}`: {p:?}: {e}")).caused_by(e)
                })
            })
            .collect::<Result<_>>()?;
        let tests = expect
            .not_null
            .iter()
            .map(|n| {
                if n.max_fraction == 0.0 {
                    format!("not_null({})", n.column)
                } else {
                    format!("not_null({}, max_fraction {})", n.column, n.max_fraction)
                }
            })
            .chain(
                expect
                    .regex
                    .iter()
                    .map(|(c, p)| format!("regex({c} ~ {p:?})")),
            )
            .chain(
                expect
                    .expression
                    .iter()
                    .map(|e| format!("expression({})", e.trim())),
            )
            .map(|test| TestCount {
                test,
                ..TestCount::default()
            })
            .collect();
        Ok(Some(Self {
            expect: expect.clone(),
            keys: HashMap::new(),
            seen: HashSet::new(),
            report: ExpectReport {
                tests,
                ..ExpectReport::default()
            },
            series,
            tests: Tests {
                regexes,
                expressions: expect.expression.clone(),
                ctx: datafusion::prelude::SessionContext::new(),
            },
        }))
    }

    /// Looks at a batch about to be written.
    ///
    /// # Errors
    /// A key column missing, or an expression that cannot be evaluated
    /// on the batch (an unknown column, a type error).
    pub fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        self.observe_tests(batch)?;
        if self.series {
            self.observe_series(batch)?;
        }
        Ok(())
    }

    /// Counts the offending rows of each data test in `batch`.
    fn observe_tests(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.report.tests.is_empty() {
            return Ok(());
        }
        self.report.rows += batch.num_rows() as u64;
        let column = |c: &str| {
            batch
                .column_by_name(c)
                .ok_or_else(|| Error::Storage(format!("a batch without the column {c}")))
        };
        let mut counts = Vec::with_capacity(self.report.tests.len());
        for n in &self.expect.not_null {
            counts.push(column(&n.column)?.null_count() as u64);
        }
        let options = FormatOptions::default();
        for (c, re) in &self.tests.regexes {
            let values = column(c)?;
            let f = ArrayFormatter::try_new(values.as_ref(), &options)
                .map_err(|e| Error::Storage(format!("formatting {c}: {e}")).caused_by(e))?;
            let mut n = 0u64;
            for row in (0..values.len()).filter(|r| values.is_valid(*r)) {
                let text = f.value(row).to_string();
                if !re.is_match(&text) {
                    n += 1;
                    if self.report.examples.len() < EXAMPLES {
                        self.report
                            .examples
                            .push(format!("regex: {c} = {text:?} does not match"));
                    }
                }
            }
            counts.push(n);
        }
        for e in &self.tests.expressions {
            counts.push(false_rows(&self.tests.ctx, e, batch)?);
        }
        for (t, n) in self.report.tests.iter_mut().zip(counts) {
            t.failures += n;
        }
        Ok(())
    }

    /// Tracks each series' timestamps: duplicates now, gaps at the end.
    fn observe_series(&mut self, batch: &RecordBatch) -> Result<()> {
        // A job without an event time has no ts_utc: its key alone must
        // be unique.
        let ts = batch
            .column_by_name(EVENT_TIME_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>());
        let options = FormatOptions::default();
        let columns: Vec<&dyn Array> =
            self.expect
                .key
                .iter()
                .map(|k| {
                    batch.column_by_name(k).map(|c| c.as_ref()).ok_or_else(|| {
                        Error::Storage(format!("a batch without the key column {k}"))
                    })
                })
                .collect::<Result<_>>()?;
        let formatters = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(*c, &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Storage(format!("formatting key columns: {e}")).caused_by(e))?;
        let mut key = String::new();
        for row in 0..batch.num_rows() {
            key.clear();
            // Each value as a JSON string (null as null), so that no two
            // different keys print alike.
            for (i, (f, c)) in formatters.iter().zip(&columns).enumerate() {
                if i > 0 {
                    key.push(',');
                }
                if c.is_null(row) {
                    key.push_str("null");
                } else {
                    key.push_str(&serde_json::Value::String(f.value(row).to_string()).to_string());
                }
            }
            let next = self.keys.len() as u32;
            let id = *self.keys.entry(key.clone()).or_insert(next);
            let t = ts.map_or(0, |ts| ts.value(row));
            if !self.seen.insert((id, t)) {
                self.report.duplicates += 1;
                if self.report.examples.len() < EXAMPLES {
                    self.report.examples.push(format!(
                        "duplicate: {} at {}",
                        shown(&key),
                        instant(t)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Counts gaps over the window `[start, end)` (microseconds) up to
    /// `due` (the run's time minus the publication delay: later slots may
    /// not be published yet) and puts `empty_days` in; returns the report.
    pub fn finish(
        mut self,
        start: i64,
        end: i64,
        due: i64,
        empty_days: Vec<String>,
    ) -> ExpectReport {
        self.report.empty_days = empty_days;
        let rows = self.report.rows;
        for (t, n) in self.report.tests.iter_mut().zip(&self.expect.not_null) {
            // The largest whole number of rows within the fraction.
            t.allowed = (n.max_fraction * rows as f64).floor() as u64;
        }
        let Some(cadence) = self.expect.cadence else {
            return self.report;
        };
        if due < end {
            self.report.not_due_from = Some(instant(due.max(start)));
        }
        let step = i64::try_from(cadence.as_micros()).unwrap_or(i64::MAX);
        let mut per_key: HashMap<u32, Vec<i64>> = HashMap::new();
        for (id, t) in &self.seen {
            per_key.entry(*id).or_default().push(*t);
        }
        let names: HashMap<u32, &String> = self.keys.iter().map(|(k, v)| (*v, k)).collect();
        let mut ids: Vec<u32> = per_key.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(times) = per_key.get_mut(&id) else {
                continue;
            };
            times.sort_unstable();
            // Slots on the UTC-midnight grid when the cadence divides a day;
            // otherwise on the grid of the series' first row.
            let phase = if DAY_MICROS % step == 0 {
                0
            } else {
                times[0].rem_euclid(step)
            };
            let first_slot = start + (phase - start).rem_euclid(step);
            let present: HashSet<i64> = times.iter().copied().collect();
            // Slots up to the series' last row are due whatever the time
            // (a forecast's future rows); later ones only once `due`.
            let last = times.last().copied().unwrap_or(start);
            let series_end = end.min(due.max(last.saturating_add(1)));
            let mut slot = first_slot;
            while slot < series_end {
                if !present.contains(&slot) {
                    self.report.gaps += 1;
                    if self.report.examples.len() < EXAMPLES {
                        let key = names.get(&id).map_or("", |k| k.as_str());
                        self.report.examples.push(format!(
                            "gap: {} at {}",
                            shown(key),
                            instant(slot)
                        ));
                    }
                }
                slot += step;
            }
        }
        self.report
    }
}

/// The rows of `batch` where `expression` is false (null passes).
fn false_rows(
    ctx: &datafusion::prelude::SessionContext,
    expression: &str,
    batch: &RecordBatch,
) -> Result<u64> {
    use datafusion::common::DFSchema;
    let bad = |e: datafusion::error::DataFusionError| {
        Error::Config(format!(
            "key `expect.expression`: {:?} cannot be evaluated on the delivered rows: {e}",
            expression.trim()
        ))
        .caused_by(e)
    };
    let schema = DFSchema::try_from(batch.schema().as_ref().clone()).map_err(bad)?;
    let expr = ctx.parse_sql_expr(expression, &schema).map_err(bad)?;
    let physical = ctx.create_physical_expr(expr, &schema).map_err(bad)?;
    let values = physical
        .evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(bad)?;
    let values = values
        .as_any()
        .downcast_ref::<arrow_array::BooleanArray>()
        .ok_or_else(|| {
            Error::Config(format!(
                "key `expect.expression`: {:?} is not a boolean but {}",
                expression.trim(),
                values.data_type()
            ))
        })?;
    Ok(values.false_count() as u64)
}

fn shown(key: &str) -> String {
    if key.is_empty() {
        "the series".into()
    } else {
        format!("key ({key})")
    }
}

fn instant(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(
        || micros.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// The contract's verdict: `Err` naming what is over its limit.
pub fn verdict(job: &str, expect: &Expect, report: &ExpectReport) -> Result<()> {
    let mut broken = Vec::new();
    if let Some(max) = expect.max_duplicates
        && report.duplicates > max
    {
        broken.push(format!(
            "{} duplicate rows (at most {max} allowed)",
            report.duplicates
        ));
    }
    if expect.cadence.is_some() && report.gaps > expect.max_gaps {
        broken.push(format!(
            "{} missing intervals (at most {} allowed)",
            report.gaps, expect.max_gaps
        ));
    }
    for t in report.tests.iter().filter(|t| t.failures > t.allowed) {
        if t.allowed > 0 || t.test.contains("max_fraction") {
            broken.push(format!(
                "{}: {} null(s) in {} rows (a fraction of {:.4})",
                t.test,
                t.failures,
                report.rows,
                t.failures as f64 / report.rows.max(1) as f64
            ));
        } else {
            broken.push(format!("{}: {} offending row(s)", t.test, t.failures));
        }
    }
    if expect.empty_days == EmptyDays::Fail && !report.empty_days.is_empty() {
        broken.push(format!(
            "no rows for {} (a window overwrite would empty those days; set expect.empty_days = \"allow\" to accept that)",
            report.empty_days.join(", ")
        ));
    }
    if broken.is_empty() {
        return Ok(());
    }
    let examples = if report.examples.is_empty() {
        String::new()
    } else {
        format!("; e.g. {}", report.examples.join("; "))
    };
    Err(Error::Contract(format!(
        "job {job}: {}{examples}; nothing was committed to the table",
        broken.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use arrow_array::StringArray;
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    fn batch(rows: &[(&str, i64)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("site", DataType::Utf8, false),
            Field::new(
                EVENT_TIME_COLUMN,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]);
        let sites = StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let ts = TimestampMicrosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())
            .with_timezone("UTC");
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(sites), Arc::new(ts)]).expect("batch")
    }

    #[test]
    fn duplicates_and_gaps_are_counted_per_series() {
        let expect = Expect {
            key: vec!["site".into()],
            cadence: Some(Duration::from_secs(6 * 3600)),
            max_gaps: 0,
            max_duplicates: Some(0),
            empty_days: EmptyDays::Fail,
            publication_delay: Duration::ZERO,
            not_null: Vec::new(),
            regex: Default::default(),
            expression: Vec::new(),
            sql: Vec::new(),
        };
        let h = 3_600_000_000i64;
        let mut c = Checker::new(&expect).expect("valid").expect("checks rows");
        // Site a: every 6 hours, one repeated; site b misses 12:00.
        c.observe(&batch(&[
            ("a", 0),
            ("a", 6 * h),
            ("a", 12 * h),
            ("a", 18 * h),
        ]))
        .expect("observe");
        c.observe(&batch(&[
            ("a", 6 * h),
            ("b", 0),
            ("b", 6 * h),
            ("b", 18 * h),
        ]))
        .expect("observe");
        let report = c.finish(0, DAY_MICROS, DAY_MICROS, Vec::new());
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.gaps, 1);
        assert!(
            report
                .examples
                .iter()
                .any(|e| e.contains("gap: key (\"b\") at 1970-01-01T12:00:00Z"))
        );
        let err = verdict("j", &expect, &report).expect_err("over the limits");
        assert!(err.to_string().contains("1 duplicate rows"), "{err}");
        let lenient = Expect {
            max_gaps: 1,
            max_duplicates: Some(1),
            ..expect
        };
        assert!(verdict("j", &lenient, &report).is_ok());
    }

    #[test]
    fn slots_not_due_yet_are_not_gaps() {
        let expect = Expect {
            key: Vec::new(),
            cadence: Some(Duration::from_secs(3600)),
            max_gaps: 0,
            max_duplicates: Some(0),
            empty_days: EmptyDays::Fail,
            publication_delay: Duration::from_secs(3600),
            not_null: Vec::new(),
            regex: Default::default(),
            expression: Vec::new(),
            sql: Vec::new(),
        };
        let h = 3_600_000_000i64;
        let hours: Vec<(&str, i64)> = (0..10).map(|i| ("a", i * h)).collect();
        let checked = |due: i64| {
            let mut c = Checker::new(&expect).expect("valid").expect("checks rows");
            c.observe(&batch(&hours)).expect("observe");
            c.finish(0, DAY_MICROS, due, Vec::new())
        };
        // A run at 10:20 with a one-hour delay: slots up to 09:00 are due.
        let intraday = checked(10 * h + h / 3 - h);
        assert_eq!(intraday.gaps, 0, "{:?}", intraday.examples);
        assert_eq!(
            intraday.not_due_from.as_deref(),
            Some("1970-01-01T09:20:00Z")
        );
        // The same rows checked the next day: 14 hours are missing.
        let next_day = checked(DAY_MICROS + h);
        assert_eq!(next_day.gaps, 14);
        assert_eq!(next_day.not_due_from, None);
        // Rows past the run's time (a forecast): the slots before the last
        // row are due, so a hole there is a gap.
        let mut c = Checker::new(&expect).expect("valid").expect("checks rows");
        c.observe(&batch(&hours)).expect("observe");
        c.observe(&batch(&[("a", 20 * h)])).expect("observe");
        let forecast = c.finish(0, DAY_MICROS, 10 * h, Vec::new());
        assert_eq!(forecast.gaps, 10, "{:?}", forecast.examples);
    }
}
