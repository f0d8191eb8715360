//! A run never removes a day's rows without being told to: a window day
//! that holds rows in the table and gets none from the source stops the
//! run (exit 1), for both table formats, unless the job (`empty_days =
//! "allow"`) or the run (`--allow-empty`) says the day may be emptied.

use std::collections::BTreeMap;
use std::fmt::Write;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use chrono::{Duration, NaiveDate};

use crate::common::{Env, ingest, instants_per_day, request};

/// Monthly CSV exports read through a glob, one row per site and day.
fn monthly_job(env: &Env, format: &str, expect: &str) -> floe::pipeline::Pipeline {
    let jobs = format!(
        r#"
[delta]
location = "{}"

[[job]]
name = "exports"
table = "bronze.exports"
format = "{format}"
source = {{ path = "data/*.csv", format = "csv" }}
event_time = {{ kind = "date", column = "day" }}
columns = [
  {{ name = "site_id", type = "string", required = true, from = "site" }},
  {{ name = "value", type = "double", from = "value" }},
]
{expect}
"#,
        env.path("delta").display()
    );
    env.pipeline(&jobs)
}

/// `data/<month>.csv` with a row per site and day of the month.
fn write_month(env: &Env, month: &str) {
    let first: NaiveDate = format!("{month}-01").parse().expect("month");
    let mut text = String::from("day,site,value\n");
    let mut day = first;
    while day.format("%Y-%m").to_string() == month {
        for site in ["A", "B"] {
            writeln!(text, "{day},{site},1.5").expect("fmt");
        }
        day += Duration::days(1);
    }
    env.write(&format!("data/{month}.csv"), &text);
}

/// Rows per day (`YYYY-MM-DD`) of `bronze.exports`, in either format.
async fn rows_per_day(env: &Env, format: &str) -> BTreeMap<String, usize> {
    if format == "iceberg" {
        let batches = env.scan("bronze", "exports").await;
        return instants_per_day(&batches)
            .into_iter()
            .map(|(d, v)| (d, v.len()))
            .collect();
    }
    let batches = env
        .delta_sql(
            "bronze/exports",
            "SELECT CAST(day AS VARCHAR), count(*) FROM t GROUP BY 1",
        )
        .await;
    let mut out = BTreeMap::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let d = arrow_cast::display::array_value_to_string(b.column(0), i).expect("day");
            let n = b.column(1).as_primitive::<Int64Type>().value(i);
            out.insert(d, usize::try_from(n).expect("count"));
        }
    }
    out
}

fn month_days(out: &BTreeMap<String, usize>, month: &str) -> usize {
    out.keys().filter(|d| d.starts_with(month)).count()
}

async fn missing_file_keeps_its_month(format: &str) {
    let env = Env::new().await;
    write_month(&env, "2024-01");
    write_month(&env, "2024-02");
    let p = monthly_job(&env, format, "");
    let (_, outcome) = ingest(&p, &request("2024-01-01", "2024-02-29", "first")).await;
    outcome.expect("first run");
    let before = rows_per_day(&env, format).await;
    assert_eq!(before.len(), 60, "{format}: every day of both months");

    // February's export is gone: the same window must not delete February.
    std::fs::remove_file(env.path("data/2024-02.csv")).expect("rm");
    let (reports, outcome) = ingest(&p, &request("2024-01-01", "2024-02-29", "second")).await;
    let err = outcome.expect_err("a day with rows got none: the run stops");
    assert_eq!(err.exit_code(), 1, "{format}: {err}");
    let text = err.to_string();
    assert!(text.contains("2024-02-01..2024-02-29"), "{format}: {text}");
    assert!(text.contains("data/*.csv"), "{format}: {text}");
    assert!(text.contains("2024-01.csv"), "{format}: {text}");
    assert_eq!(reports[0].status, "failed");
    assert_eq!(rows_per_day(&env, format).await, before, "{format}");

    // Days never written may stay empty: the window reaches into March,
    // which no source and no earlier run has.
    write_month(&env, "2024-02");
    let (reports, outcome) = ingest(&p, &request("2024-02-01", "2024-03-05", "third")).await;
    outcome.expect("empty days that held nothing are fine");
    assert!(reports[0].emptied_days.is_empty());
    std::fs::remove_file(env.path("data/2024-02.csv")).expect("rm");

    // Told to, the run empties February and says so.
    let mut allowed = request("2024-01-01", "2024-02-29", "fourth");
    allowed.allow_empty = true;
    let (reports, outcome) = ingest(&p, &allowed).await;
    outcome.expect("--allow-empty");
    assert_eq!(reports[0].emptied_days.len(), 29, "{format}");
    assert_eq!(reports[0].emptied_days[0], "2024-02-01");
    let after = rows_per_day(&env, format).await;
    assert_eq!(month_days(&after, "2024-01"), 31);
    assert_eq!(month_days(&after, "2024-02"), 0, "{format}");

    // The job's own setting says the same.
    write_month(&env, "2024-02");
    let (_, outcome) = ingest(&p, &request("2024-02-01", "2024-02-29", "fifth")).await;
    outcome.expect("February back");
    std::fs::remove_file(env.path("data/2024-02.csv")).expect("rm");
    let p = monthly_job(&env, format, "[job.expect]\nempty_days = \"allow\"");
    let (reports, outcome) = ingest(&p, &request("2024-02-01", "2024-02-29", "sixth")).await;
    outcome.expect("empty_days = allow");
    assert_eq!(reports[0].emptied_days.len(), 29);
    assert_eq!(reports[0].expect.as_ref().map(|x| x.duplicates), Some(0));
    assert_eq!(month_days(&rows_per_day(&env, format).await, "2024-02"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_monthly_file_does_not_delete_its_month() {
    missing_file_keeps_its_month("iceberg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_monthly_file_does_not_delete_its_delta_month() {
    missing_file_keeps_its_month("delta").await;
}

/// A source file that is there but holds no row of a day is the same as a
/// missing one: what counts is rows, not files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_lost_some_days_keeps_them() {
    let env = Env::new().await;
    write_month(&env, "2024-01");
    let p = monthly_job(&env, "iceberg", "");
    let (_, outcome) = ingest(&p, &request("2024-01-01", "2024-01-31", "first")).await;
    outcome.expect("first run");
    // The export now lacks the 10th to the 12th and the 20th.
    let text = std::fs::read_to_string(env.path("data/2024-01.csv")).expect("read");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            !["2024-01-10", "2024-01-11", "2024-01-12", "2024-01-20"]
                .iter()
                .any(|d| l.starts_with(d))
        })
        .collect();
    env.write("data/2024-01.csv", &(kept.join("\n") + "\n"));
    let (_, outcome) = ingest(&p, &request("2024-01-01", "2024-01-31", "second")).await;
    let err = outcome.expect_err("days with rows got none");
    let text = err.to_string();
    assert!(
        text.contains("2024-01-10..2024-01-12, 2024-01-20"),
        "{text}"
    );
    assert_eq!(rows_per_day(&env, "iceberg").await.len(), 31);
}

/// Daily readings of `value` as text (the first run's contract reads it as
/// a double, so `bad` rows are rejects).
fn write_readings(env: &Env, bad: bool) {
    let mut text = String::from("day,site,value,note\n");
    for d in 1..=3 {
        for site in ["A", "B"] {
            let value = if bad { "n/a" } else { "2.5" };
            writeln!(text, "2024-05-0{d},{site},{value},ok").expect("fmt");
        }
    }
    env.write("data/readings.csv", &text);
}

fn readings_job(env: &Env, columns: &str, drift: &str) -> floe::pipeline::Pipeline {
    env.pipeline(&format!(
        r#"
[[job]]
name = "readings"
table = "bronze.readings"
source = {{ path = "data/readings.csv", format = "csv" }}
event_time = {{ kind = "date", column = "day" }}
schema_drift = "{drift}"
columns = [
  {{ name = "site_id", type = "string", required = true, from = "site" }},
  {columns}
]
"#
    ))
}

async fn table_exists(env: &Env, ns: &str, table: &str) -> bool {
    env.client_with(Default::default())
        .await
        .load_table(&[ns.to_string()], table)
        .await
        .expect("load")
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_run_leaves_no_table_behind() {
    let env = Env::new().await;
    write_readings(&env, true);
    let p = readings_job(&env, r#"{ name = "value", type = "double" },"#, "ignore");
    let (_, outcome) = ingest(&p, &request("2024-05-01", "2024-05-03", "first")).await;
    let err = outcome.expect_err("every value is a reject");
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(!table_exists(&env, "bronze", "readings").await);
    // The rejects stay, as the evidence.
    assert!(table_exists(&env, "bronze", "readings__rejects").await);

    // The fixed contract then runs as a first run.
    let p = readings_job(&env, r#"{ name = "value", type = "string" },"#, "ignore");
    let (_, outcome) = ingest(&p, &request("2024-05-01", "2024-05-03", "second")).await;
    outcome.expect("the fixed contract");
    assert_eq!(
        crate::common::rows(&env.scan("bronze", "readings").await),
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_never_held_data_is_adopted() {
    let env = Env::new().await;
    write_readings(&env, false);
    // A first run that died after creating the table with another contract.
    let old = readings_job(&env, r#"{ name = "value", type = "double" },"#, "ignore");
    let job = &old.jobs[0];
    let client = env.client_with(Default::default()).await;
    client.ensure_namespace(&job.namespace).await.expect("ns");
    let schema = floe::table::schema::table_schema(job).expect("schema");
    client
        .create_table(
            &job.namespace,
            &job.table,
            &schema,
            &floe::table::schema::job_spec(job, &schema).expect("spec"),
            &floe::table::schema::sort_order(job, &schema).expect("order"),
            &Default::default(),
        )
        .await
        .expect("create");

    let p = readings_job(
        &env,
        r#"{ name = "value", type = "string" }, { name = "note", type = "string" },"#,
        "ignore",
    );
    let (_, outcome) = ingest(&p, &request("2024-05-01", "2024-05-03", "run")).await;
    outcome.expect("the empty table is adopted");
    let batches = env.scan("bronze", "readings").await;
    assert_eq!(crate::common::strings(&batches, "value")[0], "2.5");
    assert_eq!(crate::common::strings(&batches, "note")[0], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolve_adds_the_contract_s_new_columns() {
    let env = Env::new().await;
    write_readings(&env, false);
    let p = readings_job(&env, r#"{ name = "value", type = "double" },"#, "ignore");
    ingest(&p, &request("2024-05-01", "2024-05-02", "first"))
        .await
        .1
        .expect("first");
    let grown = r#"{ name = "value", type = "double" }, { name = "note", type = "string" },"#;
    // Without evolve, a grown contract is an error naming the column.
    let p = readings_job(&env, grown, "ignore");
    let err = ingest(&p, &request("2024-05-01", "2024-05-03", "second"))
        .await
        .1
        .expect_err("contract changed");
    assert!(err.to_string().contains("note"), "{err}");
    // With it, the column is added and filled from then on.
    let p = readings_job(&env, grown, "evolve");
    ingest(&p, &request("2024-05-03", "2024-05-03", "third"))
        .await
        .1
        .expect("evolved");
    let batches = env.scan("bronze", "readings").await;
    assert_eq!(crate::common::rows(&batches), 6);
    let notes: usize = batches
        .iter()
        .map(|b| {
            let c = b.column_by_name("note").expect("note column");
            c.len() - arrow_array::Array::null_count(c)
        })
        .sum();
    assert_eq!(notes, 2, "the new column is filled for the new day");
}
