//! Incremental equals full: a model refreshed for its changed days
//! publishes exactly what a full refresh publishes, or floe refuses it at
//! plan time, naming what reads across days.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use arrow_array::RecordBatch;
use floe::transform::{self, ModelReport};

use crate::common::{Env, ingest, request};

async fn run_models(env: &Env, models: &Path, run_id: &str) -> Vec<ModelReport> {
    let client = env.client_with(Default::default()).await;
    let (reports, outcome) =
        transform::run(&client, &crate::common::transform_request(models, run_id)).await;
    if let Err(e) = outcome {
        panic!("transform {run_id}: {e}; {reports:#?}");
    }
    reports
}

/// Every row of a table as text (columns by name), sorted.
fn table_text(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in batches {
        let schema = b.schema();
        let mut order: Vec<usize> = (0..b.num_columns()).collect();
        order.sort_by_key(|i| schema.field(*i).name().clone());
        for r in 0..b.num_rows() {
            let cells: Vec<String> = order
                .iter()
                .map(|i| {
                    format!(
                        "{}={}",
                        schema.field(*i).name(),
                        arrow_cast::display::array_value_to_string(b.column(*i), r)
                            .expect("display")
                    )
                })
                .collect();
            rows.push(cells.join(","));
        }
    }
    rows.sort();
    rows
}

async fn tables(env: &Env, names: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for name in names {
        let (ns, table) = name.split_once('.').expect("layer.name");
        out.insert(name.clone(), table_text(&env.scan(ns, table).await));
    }
    out
}

/// The energy example's pipeline pointed at `env`'s catalog and the
/// example's data, and the example's models folder.
fn energy_pipeline(env: &Env) -> (floe::pipeline::Pipeline, std::path::PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("examples/energy");
    let text = std::fs::read_to_string(example.join("floe.toml")).expect("example");
    let jobs = &text[text.find("[[job]]").expect("jobs")..];
    let jobs = jobs.replace(
        "path = \"data/",
        &format!("path = \"{}/data/", example.display()),
    );
    (env.pipeline(&jobs), root.join("sql"))
}

/// Every model of the example, refreshed incrementally after a second
/// ingest, equals the same models computed once over all the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_model_refreshes_incrementally_as_fully() {
    let models: Vec<String> =
        transform::model::discover(&Path::new(env!("CARGO_MANIFEST_DIR")).join("sql"))
            .expect("models")
            .into_iter()
            .map(|m| m.name)
            .collect();

    let stepwise = Env::new().await;
    let (p, sql) = energy_pipeline(&stepwise);
    ingest(&p, &request("2024-03-29", "2024-03-31", "a1"))
        .await
        .1
        .expect("first ingest");
    run_models(&stepwise, &sql, "t1").await;
    ingest(&p, &request("2024-03-31", "2024-04-01", "a2"))
        .await
        .1
        .expect("second ingest");
    let reports = run_models(&stepwise, &sql, "t2").await;
    let refreshed: Vec<&ModelReport> = reports.iter().filter(|r| r.refresh == "days").collect();
    assert!(
        !refreshed.is_empty(),
        "some model refreshed by days: {reports:#?}"
    );

    let whole = Env::new().await;
    let (p, sql) = energy_pipeline(&whole);
    ingest(&p, &request("2024-03-29", "2024-04-01", "b1"))
        .await
        .1
        .expect("one ingest");
    run_models(&whole, &sql, "t1").await;

    let (a, b) = (
        tables(&stepwise, &models).await,
        tables(&whole, &models).await,
    );
    for name in &models {
        assert!(!b[name].is_empty(), "{name} has rows");
        assert_eq!(a[name], b[name], "{name}: incremental differs from full");
    }
}

const PRICES_JOB: &str = r#"
[[job]]
name = "prices"
table = "bronze.prices"
source = { path = "data/{date}.csv", format = "csv" }
event_time = { kind = "date", column = "date" }
columns = [
  { name = "symbol", type = "string", required = true },
  { name = "close", type = "double", required = true },
]
"#;

/// Daily closes for two symbols; `bump` is added to the closes of day
/// `bumped`.
fn write_prices(env: &Env, days: std::ops::RangeInclusive<u32>, bumped: u32, bump: f64) {
    for d in days {
        let mut text = String::from("date,symbol,close\n");
        for (i, symbol) in ["AAA", "BBB"].iter().enumerate() {
            let mut close = 100.0 + f64::from(d) * (1.0 + i as f64);
            if d == bumped {
                close += bump;
            }
            writeln!(text, "2024-01-{d:02},{symbol},{close}").expect("fmt");
        }
        env.write(&format!("data/2024-01-{d:02}.csv"), &text);
    }
}

fn model(env: &Env, header: &str, select: &str) -> std::path::PathBuf {
    env.write(
        "sql/gold/returns.sql",
        &format!("/* floe\nmaterialized = \"incremental\"\n{header}\n*/\n{select}\n"),
    );
    env.path("sql")
}

const LAG: &str = "SELECT ts_utc, symbol, close, close / LAG(close) OVER (PARTITION BY symbol ORDER BY ts_utc) - 1 AS ret FROM bronze.prices";
const SELF_JOIN: &str = "SELECT t.ts_utc, t.symbol, t.close - y.close AS change FROM bronze.prices AS t JOIN bronze.prices AS y ON y.symbol = t.symbol AND y.ts_utc = t.ts_utc - INTERVAL '1 day'";
const SHIFTED: &str = "SELECT ts_utc + INTERVAL '1 day' AS ts_utc, symbol, close AS previous_close FROM bronze.prices";

/// Runs `select` stepwise (days 1-12, then day 8 alone, changed) and whole,
/// returning both results (or the stepwise run's error). The days after
/// the changed one depend on it through the model's reach.
async fn stepwise_and_whole(
    header: &str,
    select: &str,
) -> Result<(Vec<String>, Vec<String>), String> {
    let stepwise = Env::new().await;
    let p = stepwise.pipeline(PRICES_JOB);
    let sql = model(&stepwise, header, select);
    write_prices(&stepwise, 1..=12, 99, 0.0);
    ingest(&p, &request("2024-01-01", "2024-01-12", "a1"))
        .await
        .1
        .expect("ingest");
    let client = stepwise.client_with(Default::default()).await;
    let (_, outcome) = transform::run(&client, &crate::common::transform_request(&sql, "t1")).await;
    outcome.map_err(|e| e.to_string())?;
    write_prices(&stepwise, 8..=8, 8, 5.0);
    ingest(&p, &request("2024-01-08", "2024-01-08", "a2"))
        .await
        .1
        .expect("ingest");
    let reports = run_models(&stepwise, &sql, "t2").await;
    assert_eq!(reports[0].refresh, "days", "{reports:#?}");

    let whole = Env::new().await;
    let p = whole.pipeline(PRICES_JOB);
    let sql = model(&whole, header, select);
    write_prices(&whole, 1..=12, 8, 5.0);
    ingest(&p, &request("2024-01-01", "2024-01-12", "b1"))
        .await
        .1
        .expect("ingest");
    run_models(&whole, &sql, "t1").await;
    Ok((
        table_text(&stepwise.scan("gold", "returns").await),
        table_text(&whole.scan("gold", "returns").await),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_over_days_needs_a_lookback_and_then_equals_full() {
    let err = stepwise_and_whole("", LAG)
        .await
        .expect_err("refused without a lookback");
    assert!(err.contains("lag"), "{err}");
    assert!(err.contains("lookback"), "{err}");
    assert!(err.contains("returns.sql"), "{err}");

    let (stepwise, whole) = stepwise_and_whole("lookback = \"3d\"", LAG)
        .await
        .expect("with a lookback");
    assert_eq!(stepwise, whole);
    // Every day after the first has its return.
    assert_eq!(whole.iter().filter(|r| r.contains("ret=,")).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifted_self_joins_and_times_need_a_lookback() {
    for select in [SELF_JOIN, SHIFTED] {
        let err = stepwise_and_whole("", select)
            .await
            .expect_err("refused without a lookback");
        assert!(err.contains("bronze.prices"), "{err}");
        let (stepwise, whole) = stepwise_and_whole("lookback = \"1d\"", select)
            .await
            .expect("with a lookback");
        assert!(!whole.is_empty());
        assert_eq!(stepwise, whole, "{select}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_no_lookback_bounds_is_refused() {
    for select in [
        // A running total over all history.
        "SELECT ts_utc, symbol, SUM(close) OVER (PARTITION BY symbol ORDER BY ts_utc) AS total FROM bronze.prices",
        // A rank across every day.
        "SELECT ts_utc, symbol, RANK() OVER (PARTITION BY symbol ORDER BY close) AS r FROM bronze.prices",
        // The latest time per symbol.
        "SELECT symbol, MAX(ts_utc) AS ts_utc FROM bronze.prices GROUP BY symbol",
        // A scalar subquery over all days.
        "SELECT ts_utc, symbol, close - (SELECT AVG(close) FROM bronze.prices) AS d FROM bronze.prices",
    ] {
        let err = stepwise_and_whole("lookback = \"7d\"", select)
            .await
            .expect_err("refused");
        assert!(err.contains("materialized = \"table\""), "{select}: {err}");
    }
    // Day-local models need nothing: grouped by day, partitioned by time.
    for select in [
        "SELECT date_trunc('day', ts_utc) AS ts_utc, COUNT(*) AS n, SUM(close) AS total FROM bronze.prices GROUP BY 1",
        "SELECT ts_utc, symbol, close / SUM(close) OVER (PARTITION BY ts_utc) AS share FROM bronze.prices",
        "SELECT p.ts_utc, p.symbol FROM bronze.prices AS p WHERE p.close > (SELECT AVG(q.close) FROM bronze.prices AS q WHERE q.ts_utc = p.ts_utc)",
    ] {
        let (stepwise, whole) = stepwise_and_whole("", select).await.expect(select);
        assert!(!whole.is_empty(), "{select}");
        assert_eq!(stepwise, whole, "{select}");
    }
}
