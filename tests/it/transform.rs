//! `floe transform` end to end: bronze ingested through the in-process
//! catalog, SQL models run into silver and gold, read back.

use std::fmt::Write;

use arrow_array::{Array, Float64Array};
use floe::rest::RestClient;
use floe::transform::{self, ModelReport, TransformRequest};

use crate::common::{Env, ingest, request, rows};

const JOB: &str = r#"
[[job]]
name = "readings"
table = "bronze.readings"
source = { path = "data/{date}.ndjson", format = "ndjson" }
event_time = { kind = "offset", column = "t" }
columns = [
  { name = "site_id", type = "string", required = true, from = "site" },
  { name = "value", type = "double", from = "v" },
]
"#;

const SILVER: &str = r#"/* floe
unique_key = ["ts_utc", "site_id"]
sort = ["site_id", "ts_utc"]
[tests]
not_null = ["site_id", "value"]
relationships = { site_id = "silver.sites.site_id" }
cadence = { key = ["site_id"], interval = "1h" }
*/
SELECT r.ts_utc, r.site_id, r.value * s.factor AS value
FROM bronze.readings AS r
JOIN silver.sites AS s ON s.site_id = r.site_id
"#;

const SITES: &str = r#"/* floe
materialized = "table"
unique_key = ["site_id"]
*/
SELECT DISTINCT site_id, CAST(2.0 AS DOUBLE) AS factor FROM bronze.readings
"#;

const GOLD: &str = r#"/* floe
unique_key = ["ts_utc"]
*/
SELECT date_trunc('day', ts_utc) AS ts_utc, SUM(value) AS total, COUNT(*) AS n
FROM silver.readings
GROUP BY date_trunc('day', ts_utc)
"#;

/// Hourly readings for sites A and B on `day`, value = base + hour.
fn write_day(env: &Env, day: &str, base: f64) {
    let mut text = String::new();
    for site in ["A", "B"] {
        for h in 0..24 {
            writeln!(
                text,
                r#"{{"t":"{day}T{h:02}:00:00Z","site":"{site}","v":{}}}"#,
                base + f64::from(h)
            )
            .expect("fmt");
        }
    }
    env.write(&format!("data/{day}.ndjson"), &text);
}

fn models(env: &Env, silver: &str) -> std::path::PathBuf {
    env.write("sql/silver/readings.sql", silver);
    env.write("sql/silver/sites.sql", SITES);
    env.write("sql/gold/daily.sql", GOLD);
    env.path("sql")
}

fn req(env: &Env, run_id: &str) -> TransformRequest {
    crate::common::transform_request(&env.path("sql"), run_id)
}

async fn client(env: &Env) -> RestClient {
    env.client_with(Default::default()).await
}

fn report<'a>(reports: &'a [ModelReport], model: &str) -> &'a ModelReport {
    reports
        .iter()
        .find(|r| r.model == model)
        .unwrap_or_else(|| panic!("no report for {model}: {reports:?}"))
}

async fn main_snapshot(client: &RestClient, ns: &str, table: &str) -> Option<i64> {
    client
        .load_table(&[ns.to_string()], table)
        .await
        .expect("load")
        .and_then(|t| t.metadata.current_snapshot_id())
}

fn totals(batches: &[arrow_array::RecordBatch]) -> Vec<f64> {
    let mut out: Vec<f64> = batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name("total")
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
                .expect("total");
            (0..c.len()).map(move |i| c.value(i))
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_run_in_order_then_only_changed_days_are_recomputed() {
    let env = Env::new().await;
    for day in ["2024-05-01", "2024-05-02", "2024-05-03"] {
        write_day(&env, day, 10.0);
    }
    let p = env.pipeline(JOB);
    let (_, r) = ingest(&p, &request("2024-05-01", "2024-05-03", "i1")).await;
    r.expect("ingest");
    models(&env, SILVER);
    let c = client(&env).await;

    let (reports, outcome) = transform::run(&c, &req(&env, "t1")).await;
    outcome.expect("first transform");
    let order: Vec<&str> = reports.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(order, ["silver.sites", "silver.readings", "gold.daily"]);
    assert!(
        reports.iter().all(|r| r.status == "published"),
        "{reports:?}"
    );
    assert!(reports.iter().all(|r| r.refresh == "full"));
    // sum over a day of 2 sites x (10 + h) x factor 2
    let day_total = 2.0 * 2.0 * (24.0 * 10.0 + 276.0);
    assert_eq!(totals(&env.scan("gold", "daily").await), vec![day_total; 3]);

    // Nothing changed: nothing to do, no snapshot.
    let before = main_snapshot(&c, "gold", "daily").await;
    let (reports, outcome) = transform::run(&c, &req(&env, "t2")).await;
    outcome.expect("second transform");
    assert!(
        reports.iter().all(|r| r.status == "up-to-date"),
        "{reports:?}"
    );
    assert_eq!(main_snapshot(&c, "gold", "daily").await, before);

    // One bronze day changes: the dimension is recomputed but identical
    // (not committed), silver and gold rewrite that day only.
    write_day(&env, "2024-05-02", 20.0);
    let (_, r) = ingest(&p, &request("2024-05-02", "2024-05-02", "i2")).await;
    r.expect("re-ingest");
    let (reports, outcome) = transform::run(&c, &req(&env, "t3")).await;
    outcome.expect("incremental transform");
    assert_eq!(report(&reports, "silver.sites").status, "unchanged");
    for model in ["silver.readings", "gold.daily"] {
        let r = report(&reports, model);
        assert_eq!(r.status, "published", "{r:?}");
        assert_eq!(r.refresh, "days", "{r:?}");
        assert_eq!(r.days, vec!["2024-05-02".to_string()], "{r:?}");
    }
    assert_eq!(report(&reports, "silver.readings").rows_written, 48);
    let changed = 2.0 * 2.0 * (24.0 * 20.0 + 276.0);
    assert_eq!(
        totals(&env.scan("gold", "daily").await),
        vec![day_total, day_total, changed]
    );
    let gold = c
        .load_table(&["gold".to_string()], "daily")
        .await
        .expect("load")
        .expect("gold");
    let summary = &gold
        .metadata
        .current_snapshot()
        .expect("snapshot")
        .summary()
        .additional_properties;
    assert_eq!(summary["floe.transform.days"], "2024-05-02");
    assert_eq!(summary["deleted-data-files"], "1");
    assert_eq!(summary["added-data-files"], "1");
    assert!(
        gold.refs.keys().all(|r| r == "main"),
        "audit branches left: {:?}",
        gold.refs.keys()
    );

    // A test added to the dimension (its rows unchanged) runs: an edited
    // model is not "unchanged", and its failing test keeps main as it was.
    let sites_before = main_snapshot(&c, "silver", "sites").await;
    env.write(
        "sql/silver/sites.sql",
        &SITES.replace(
            "unique_key = [\"site_id\"]",
            "unique_key = [\"site_id\"]\n[tests]\naccepted_values = { site_id = [\"A\"] }",
        ),
    );
    let (reports, outcome) = transform::run(&c, &req(&env, "t4")).await;
    assert!(outcome.is_err(), "{reports:?}");
    let sites = report(&reports, "silver.sites");
    assert_eq!(sites.status, "tests-failed", "{sites:?}");
    assert_eq!(main_snapshot(&c, "silver", "sites").await, sites_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_leaves_main_untouched_and_skips_downstream() {
    let env = Env::new().await;
    for day in ["2024-05-01", "2024-05-02"] {
        write_day(&env, day, 10.0);
    }
    let p = env.pipeline(JOB);
    let (_, r) = ingest(&p, &request("2024-05-01", "2024-05-02", "i1")).await;
    r.expect("ingest");
    models(&env, SILVER);
    let c = client(&env).await;
    transform::run(&c, &req(&env, "t1"))
        .await
        .1
        .expect("first transform");
    let silver_before = main_snapshot(&c, "silver", "readings").await;
    let gold_before = main_snapshot(&c, "gold", "daily").await;

    // A day with a missing hour for site B: the cadence test fails.
    let mut text = String::new();
    for site in ["A", "B"] {
        for h in (0..24).filter(|h| !(site == "B" && *h == 7)) {
            writeln!(
                text,
                r#"{{"t":"2024-05-02T{h:02}:00:00Z","site":"{site}","v":1}}"#
            )
            .expect("fmt");
        }
    }
    env.write("data/2024-05-02.ndjson", &text);
    let (_, r) = ingest(&p, &request("2024-05-02", "2024-05-02", "i2")).await;
    r.expect("re-ingest");
    let (reports, outcome) = transform::run(&c, &req(&env, "t2")).await;
    let err = outcome.expect_err("the cadence test fails");
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(text.contains("silver.readings"), "{text}");
    assert!(
        text.contains("cadence(ts_utc every 1h per [site_id]"),
        "{text}"
    );
    assert!(text.contains("| B "), "sample rows expected: {text}");
    assert_eq!(report(&reports, "silver.readings").status, "tests-failed");
    assert_eq!(report(&reports, "gold.daily").status, "skipped");
    assert_eq!(main_snapshot(&c, "silver", "readings").await, silver_before);
    assert_eq!(main_snapshot(&c, "gold", "daily").await, gold_before);
    let silver = c
        .load_table(&["silver".to_string()], "readings")
        .await
        .expect("load")
        .expect("silver");
    assert!(silver.refs.keys().all(|r| r == "main"), "{:?}", silver.refs);
    assert_eq!(rows(&env.scan("silver", "readings").await), 96);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_errors_name_the_file_line_and_column() {
    let env = Env::new().await;
    write_day(&env, "2024-05-01", 1.0);
    let p = env.pipeline(JOB);
    ingest(&p, &request("2024-05-01", "2024-05-01", "i1"))
        .await
        .1
        .expect("ingest");
    let c = client(&env).await;
    let file = env.write(
        "sql/silver/broken.sql",
        "/* floe\nmaterialized = \"table\"\n*/\nSELECT site_id,\n       no_such_column\nFROM bronze.readings\n",
    );
    let err = transform::run(&c, &req(&env, "t1"))
        .await
        .1
        .expect_err("unknown column");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}:5:8", file.display())),
        "expected file:line:column in {text}"
    );
    assert_eq!(err.exit_code(), 2);

    env.write(
        "sql/silver/broken.sql",
        "SELECT site_id\nFROM bronze.readings\nWHERE site_id = = 'A'\n",
    );
    let err = transform::run(&c, &req(&env, "t2"))
        .await
        .1
        .expect_err("syntax error");
    let text = err.to_string();
    assert!(text.contains(&format!("{}:", file.display())), "{text}");
    assert!(text.contains(&format!("{}:3:17", file.display())), "{text}");
    assert!(
        c.load_table(&["silver".to_string()], "broken")
            .await
            .expect("load")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_and_bad_references_are_refused() {
    let env = Env::new().await;
    let c = client(&env).await;
    env.write("sql/silver/a.sql", "SELECT * FROM silver.b");
    env.write("sql/silver/b.sql", "SELECT * FROM silver.a");
    let err = transform::run(&c, &req(&env, "t1"))
        .await
        .1
        .expect_err("cycle");
    assert!(err.to_string().contains("silver.a, silver.b"), "{err}");

    std::fs::remove_file(env.path("sql/silver/b.sql")).expect("rm");
    env.write("sql/silver/a.sql", "SELECT * FROM bronze.nothing_here");
    let err = transform::run(&c, &req(&env, "t2"))
        .await
        .1
        .expect_err("missing table");
    assert!(err.to_string().contains("bronze.nothing_here"), "{err}");

    env.write("sql/silver/a.sql", "SELECT * FROM nothing_here");
    let err = transform::run(&c, &req(&env, "t3"))
        .await
        .1
        .expect_err("bare name");
    assert!(err.to_string().contains("needs its namespace"), "{err}");
}
