//! `format = "delta"`: the same ingest into a Delta table, read back with
//! delta-rs through DataFusion.

use std::fmt::Write;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use datafusion::prelude::SessionContext;

use crate::common::{Env, ingest, request};

fn job(env: &Env, extra: &str) -> floe::pipeline::Pipeline {
    let jobs = format!(
        r#"
[delta]
location = "{}"

[[job]]
name = "readings"
table = "bronze.readings"
format = "delta"
source = {{ path = "data/{{date}}.ndjson", format = "ndjson" }}
event_time = {{ kind = "offset", column = "ts" }}
columns = [
  {{ name = "site_id", type = "string", required = true, from = "site" }},
  {{ name = "value", type = "double", required = true, from = "v" }},
]
{extra}
"#,
        env.path("delta").display()
    );
    env.pipeline(&jobs)
}

/// `days` days of hourly readings for sites A and B, from 2024-03-01; the
/// value tags the run that wrote them.
fn write_days(env: &Env, first: u32, days: u32, tag: f64) {
    for d in first..first + days {
        let mut text = String::new();
        for site in ["A", "B"] {
            for h in 0..24 {
                writeln!(
                    text,
                    r#"{{"ts":"2024-03-{d:02}T{h:02}:00:00+00:00","site":"{site}","v":{tag}}}"#
                )
                .expect("fmt");
            }
        }
        env.write(&format!("data/2024-03-{d:02}.ndjson"), &text);
    }
}

async fn ctx_for(_url: reqwest::Url) -> SessionContext {
    SessionContext::new()
}

/// `ctx` with the Delta table at `url` registered as `name`.
async fn provider(ctx: &SessionContext, name: &str, url: reqwest::Url) -> SessionContext {
    let t = deltalake::DeltaTable::try_from_url(url)
        .await
        .expect("open");
    t.update_datafusion_session(&ctx.state()).expect("session");
    let p = t.table_provider().await.expect("provider");
    ctx.register_table(name, p).expect("register");
    ctx.clone()
}

/// (day, value, rows) of the Delta table, by day.
async fn per_day(env: &Env, table: &str) -> Vec<(String, f64, i64)> {
    let url =
        reqwest::Url::from_directory_path(env.path(&format!("delta/bronze/{table}"))).expect("url");
    let ctx = provider(&ctx_for(url.clone()).await, "t", url).await;
    let batches = ctx
        .sql("SELECT CAST(day AS VARCHAR) AS d, max(value) AS v, count(*) AS n, count(DISTINCT ts_utc) AS k FROM t GROUP BY 1 ORDER BY 1")
        .await
        .expect("sql")
        .collect()
        .await
        .expect("rows");
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let d = arrow_cast::display::array_value_to_string(b.column(0), i).expect("day");
            let v = b
                .column(1)
                .as_primitive::<arrow_array::types::Float64Type>()
                .value(i);
            let n = b.column(2).as_primitive::<Int64Type>().value(i);
            let k = b.column(3).as_primitive::<Int64Type>().value(i);
            assert_eq!(k, 24, "{d}: 24 distinct hours");
            out.push((d, v, n));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_windows_replace_days_and_runs_are_idempotent() {
    let env = Env::new().await;
    let p = job(&env, "");
    write_days(&env, 1, 4, 1.0);
    let (reports, outcome) = ingest(&p, &request("2024-03-01", "2024-03-04", "d1")).await;
    outcome.expect("first run");
    assert_eq!(reports[0].rows_written, 192);
    // Version 0 creates the table, version 1 is the run.
    assert_eq!(reports[0].snapshot_id, Some(1));
    assert_eq!(reports[0].days["2024-03-02"].files, 1);
    assert!(reports[0].bytes_written > 0);
    let days = per_day(&env, "readings").await;
    assert_eq!(
        days.iter().map(|d| d.2).collect::<Vec<_>>(),
        [48, 48, 48, 48]
    );

    // Re-running a sub-window replaces exactly those days.
    write_days(&env, 2, 2, 2.0);
    let (reports, outcome) = ingest(&p, &request("2024-03-02", "2024-03-03", "d2")).await;
    outcome.expect("second run");
    assert_eq!(reports[0].replaced_files, 2);
    let days = per_day(&env, "readings").await;
    let values: Vec<f64> = days.iter().map(|d| d.1).collect();
    assert_eq!(values, [1.0, 2.0, 2.0, 1.0]);
    assert!(days.iter().all(|d| d.2 == 48), "{days:?}: never duplicated");

    // The same run id again: its commit is found, nothing is written.
    let (reports, outcome) = ingest(&p, &request("2024-03-02", "2024-03-03", "d2")).await;
    outcome.expect("retried run");
    assert_eq!(reports[0].status, "already-committed");
    assert_eq!(reports[0].snapshot_id, Some(2));

    // Two runs on disjoint windows at once: both land.
    write_days(&env, 1, 1, 3.0);
    write_days(&env, 4, 1, 4.0);
    let (r3, r4) = (
        request("2024-03-01", "2024-03-01", "d3"),
        request("2024-03-04", "2024-03-04", "d4"),
    );
    let (a, b) = tokio::join!(ingest(&p, &r3), ingest(&p, &r4));
    a.1.expect("first of two");
    b.1.expect("second of two");
    let values: Vec<f64> = per_day(&env, "readings")
        .await
        .iter()
        .map(|d| d.1)
        .collect();
    assert_eq!(values, [3.0, 2.0, 2.0, 4.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_rejects_past_the_threshold_commit_nothing() {
    let env = Env::new().await;
    let p = job(&env, "reject_threshold = 0.01");
    write_days(&env, 1, 1, 1.0);
    ingest(&p, &request("2024-03-01", "2024-03-01", "r1"))
        .await
        .1
        .expect("clean run");
    // A day where a tenth of the values are not numbers.
    let mut text = String::new();
    for h in 0..24 {
        let v = if h % 10 == 0 { "\"n/a\"" } else { "5.0" };
        for site in ["A", "B"] {
            writeln!(
                text,
                r#"{{"ts":"2024-03-01T{h:02}:00:00+00:00","site":"{site}","v":{v}}}"#
            )
            .expect("fmt");
        }
    }
    env.write("data/2024-03-01.ndjson", &text);
    let (reports, outcome) = ingest(&p, &request("2024-03-01", "2024-03-01", "r2")).await;
    let err = outcome.expect_err("over the threshold");
    assert_eq!(err.exit_code(), 1);
    assert_eq!(reports[0].rows_rejected, 6);
    let days = per_day(&env, "readings").await;
    assert_eq!(days, [("2024-03-01".to_string(), 1.0, 48)], "untouched");
    // The rejects are kept beside the table.
    let url =
        reqwest::Url::from_directory_path(env.path("delta/bronze/readings__rejects")).expect("url");
    let ctx = provider(&ctx_for(url.clone()).await, "r", url).await;
    let n = ctx
        .sql("SELECT count(*) FROM r WHERE run_id = 'r2' AND reason <> ''")
        .await
        .expect("sql")
        .collect()
        .await
        .expect("rows");
    assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), 6);

    // Delta jobs refuse what only Iceberg tables do.
    let bad = floe::pipeline::parse(
        &std::fs::read_to_string(env.path("floe.toml"))
            .expect("pipeline")
            .replace("reject_threshold = 0.01", "schema_drift = \"evolve\""),
        &env.path("floe.toml"),
    );
    assert!(
        matches!(bad.as_ref().map_err(floe::Error::kind), Err(floe::Error::Config(m)) if m.contains("evolve")),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_compaction_keeps_the_rows_and_vacuum_keeps_its_safety_check() {
    let env = Env::new().await;
    let p = job(&env, "");
    write_days(&env, 1, 3, 1.0);
    ingest(&p, &request("2024-03-01", "2024-03-03", "m1"))
        .await
        .1
        .expect("ingest");
    // Two more small files for each day, as appends by another writer.
    let url = reqwest::Url::from_directory_path(env.path("delta/bronze/readings")).expect("url");
    for _ in 0..2 {
        let ctx = provider(&ctx_for(url.clone()).await, "t", url.clone()).await;
        let rows = ctx
            .sql("SELECT * FROM t WHERE site_id = 'A'")
            .await
            .expect("sql")
            .collect()
            .await
            .expect("rows");
        let table = deltalake::DeltaTable::try_from_url(url.clone())
            .await
            .expect("open");
        table
            .write(rows)
            .with_save_mode(deltalake::protocol::SaveMode::Append)
            .await
            .expect("append");
    }
    let before = per_day(&env, "readings").await;
    let target = floe::maintain_cmd::delta_table_of(&p, "bronze.readings")
        .expect("resolves")
        .expect("a Delta job's table");
    let files = |dir: &str| {
        std::fs::read_dir(env.path(&format!("delta/bronze/readings/{dir}")))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(files("day=2024-03-02"), 3, "three small files a day");
    let report = floe::table::delta::maintain::compact(&target, 1 << 20, None, &[])
        .await
        .expect("compacts");
    assert_eq!(report.status, "compacted");
    assert_eq!(report.partitions_compacted, 3);
    assert_eq!(report.output_files, 3, "one file a day");
    assert_eq!(per_day(&env, "readings").await, before, "same rows");
    let again = floe::table::delta::maintain::compact(&target, 1 << 20, None, &[])
        .await
        .expect("runs");
    assert_eq!(again.status, "nothing-to-do");
    // Z-order rewrites each day's (already compact) file, keeping the rows.
    let zordered = floe::table::delta::maintain::compact(
        &target,
        1 << 20,
        Some((
            "2024-03-02".parse().expect("day"),
            "2024-03-03".parse().expect("day"),
        )),
        &["site_id".to_string(), "ts_utc".to_string()],
    )
    .await
    .expect("z-orders");
    assert_eq!(zordered.status, "compacted");
    assert_eq!(
        (zordered.input_files, zordered.output_files),
        (2, 2),
        "one file a day: {zordered:?}"
    );
    assert_eq!(per_day(&env, "readings").await, before, "same rows");

    // Vacuum holds to Delta's 7-day deleted-file retention.
    let err =
        floe::table::delta::maintain::vacuum(&target, std::time::Duration::ZERO, false, false)
            .await
            .expect_err("too short a retention");
    assert!(err.to_string().contains("retention"), "{err}");
    let report = floe::table::delta::maintain::vacuum(
        &target,
        std::time::Duration::from_secs(7 * 86_400),
        true,
        false,
    )
    .await
    .expect("vacuums");
    assert_eq!(
        report.status, "nothing-to-do",
        "the compacted files are recent"
    );
    assert_eq!(report.checkpoint, Some(5));
    assert!(
        env.path("delta/bronze/readings/_delta_log/_last_checkpoint")
            .is_file()
    );
    assert_eq!(per_day(&env, "readings").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_runs_define_the_table_once() {
    let env = Env::new().await;
    let p = job(&env, "");
    write_days(&env, 1, 2, 1.0);
    let (r1, r2) = (
        request("2024-03-01", "2024-03-01", "f1"),
        request("2024-03-02", "2024-03-02", "f2"),
    );
    let (a, b) = tokio::join!(ingest(&p, &r1), ingest(&p, &r2));
    a.1.expect("first");
    b.1.expect("second");
    assert_eq!(per_day(&env, "readings").await.len(), 2);
    // One table definition (metaData action) in the whole log.
    let log = env.path("delta/bronze/readings/_delta_log");
    let mut definitions = 0;
    for entry in std::fs::read_dir(&log).expect("log") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("commit");
            definitions += text.lines().filter(|l| l.contains("\"metaData\"")).count();
        }
    }
    assert_eq!(definitions, 1);
}

/// A Delta model reading the Delta bronze table: one partitioned by day
/// (incremental), one whole-table; (model, status, refresh, rows).
async fn transform(
    env: &Env,
    p: &floe::pipeline::Pipeline,
    run: &str,
) -> Vec<floe::transform::ModelReport> {
    let req = floe::transform::TransformRequest {
        models_dir: env.path("sql"),
        select: Vec::new(),
        window: None,
        run_id: run.to_string(),
        dry_run: false,
        concurrency: 1,
        places: floe::places::Places::of(p),
        model_format: floe::pipeline::TableFormat::Delta,
        engine: Default::default(),
        trino: None,
    };
    let client = env.client_with(Default::default()).await;
    let (reports, outcome) = floe::transform::run(&client, &req).await;
    outcome.unwrap_or_else(|e| panic!("transform {run}: {e}\n{reports:#?}"));
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_models_read_delta_upstreams_and_refresh_changed_days() {
    let env = Env::new().await;
    let p = job(&env, "[transform]\nmodels = \"sql\"\nformat = \"delta\"");
    env.write(
        "sql/silver/daily.sql",
        "/* floe\nevent_time = \"ts_utc\"\nunique_key = [\"day\", \"site_id\"]\n[tests]\nnot_null = [\"site_id\"]\n*/\n\
         SELECT d AS ts_utc, CAST(d AS DATE) AS day, site_id, max(value) AS value, count(*) AS n \
         FROM (SELECT date_trunc('day', ts_utc) AS d, site_id, value FROM bronze.readings) AS r GROUP BY d, site_id",
    );
    env.write(
        "sql/gold/sites.sql",
        "/* floe\nmaterialized = \"table\"\nunique_key = [\"site_id\"]\n*/\n\
         SELECT site_id, sum(n) AS n FROM silver.daily GROUP BY site_id",
    );
    write_days(&env, 1, 3, 1.0);
    ingest(&p, &request("2024-03-01", "2024-03-03", "b1"))
        .await
        .1
        .expect("ingest");
    let r = transform(&env, &p, "t1").await;
    assert_eq!(
        r.iter()
            .map(|m| (m.status.as_str(), m.refresh.as_str(), m.rows_written))
            .collect::<Vec<_>>(),
        [("published", "full", 6), ("published", "full", 2)],
        "{r:#?}"
    );

    // Nothing changed: nothing recomputed.
    let r = transform(&env, &p, "t2").await;
    assert!(r.iter().all(|m| m.status == "up-to-date"), "{r:#?}");

    // One bronze day rewritten: the incremental model recomputes that day
    // only; the whole-table model recomputes everything.
    write_days(&env, 2, 1, 5.0);
    ingest(&p, &request("2024-03-02", "2024-03-02", "b2"))
        .await
        .1
        .expect("ingest");
    let r = transform(&env, &p, "t3").await;
    assert_eq!(r[0].refresh, "days");
    assert_eq!(r[0].days, ["2024-03-02"]);
    assert_eq!(r[0].rows_written, 2);
    assert_eq!(r[1].refresh, "full");

    let daily = || async {
        let url = reqwest::Url::from_directory_path(env.path("delta/silver/daily")).expect("url");
        let ctx = provider(&SessionContext::new(), "t", url).await;
        let rows = ctx
            .sql("SELECT CAST(day AS VARCHAR) AS d, max(value) AS v, sum(n) AS n, count(*) AS k FROM t GROUP BY 1 ORDER BY 1")
            .await
            .expect("sql")
            .collect()
            .await
            .expect("rows");
        datafusion::arrow::util::pretty::pretty_format_batches(&rows)
            .expect("fmt")
            .to_string()
    };
    let text = daily().await;
    assert!(text.contains("| 2024-03-01 | 1.0 | 48 | 2 |"), "{text}");
    assert!(text.contains("| 2024-03-02 | 5.0 | 48 | 2 |"), "{text}");
    assert!(text.contains("| 2024-03-03 | 1.0 | 48 | 2 |"), "{text}");

    // Maintenance knows the models' Delta tables too, reports real
    // figures, and keeps the rows.
    assert_eq!(
        floe::maintain_cmd::delta_tables(&p),
        ["bronze.readings", "gold.sites", "silver.daily"]
    );
    let target = floe::maintain_cmd::delta_table_of(&p, "silver.daily")
        .expect("target")
        .expect("a Delta model table");
    let out = floe::maintain::policy::maintain_table(
        &mut floe::table::Table::delta("silver.daily", target),
        &floe::pipeline::MaintainSettings::default(),
        false,
    )
    .await;
    assert_eq!(out.status, "ok", "{out:?}");
    assert_eq!(out.before.data_files, 3, "one file per day: {out:?}");
    assert!(
        out.before.data_bytes > 0 && out.before.small_files == 3,
        "{out:?}"
    );
    assert_eq!(
        out.before.snapshots, 3,
        "create, first run, one-day run: {out:?}"
    );
    assert_eq!(out.after.data_files, 3, "{out:?}");
    assert_eq!(daily().await, text, "maintenance changed the rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_commits_write_checkpoints_on_the_tables_interval() {
    let env = Env::new().await;
    let p = job(
        &env,
        "properties = { \"delta.checkpointInterval\" = \"2\" }",
    );
    write_days(&env, 1, 1, 1.0);
    let log = env.path("delta/bronze/readings/_delta_log");
    let checkpoints = || {
        let mut names: Vec<String> = std::fs::read_dir(&log)
            .expect("log")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".checkpoint."))
            .collect();
        names.sort();
        names
    };
    for (n, run) in ["c1", "c2", "c3"].into_iter().enumerate() {
        let (reports, outcome) = ingest(&p, &request("2024-03-01", "2024-03-01", run)).await;
        outcome.expect("run");
        assert_eq!(reports[0].snapshot_id, Some(n as i64 + 1));
    }
    // Versions 0..=3, every second version checkpointed (delta-rs counts
    // versions from 1: a checkpoint when version + 1 is a multiple).
    assert_eq!(
        checkpoints(),
        [
            "00000000000000000001.checkpoint.parquet",
            "00000000000000000003.checkpoint.parquet"
        ],
        "the table's configuration asks for one every 2 versions"
    );
    let days = per_day(&env, "readings").await;
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].2, 48, "the checkpointed table reads the same rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_files_follow_the_jobs_sort_order() {
    let env = Env::new().await;
    let p = job(&env, "sort = [\"site_id\", \"ts_utc\"]");
    // Rows arrive out of order: sites C, A, B interleaved, hours backwards.
    let mut text = String::new();
    for h in (0..24).rev() {
        for site in ["C", "A", "B"] {
            writeln!(
                text,
                r#"{{"ts":"2024-03-01T{h:02}:00:00+00:00","site":"{site}","v":{h}}}"#
            )
            .expect("fmt");
        }
    }
    env.write("data/2024-03-01.ndjson", &text);
    let (reports, outcome) = ingest(&p, &request("2024-03-01", "2024-03-01", "s1")).await;
    outcome.expect("run");
    assert_eq!(reports[0].rows_written, 72);
    let dir = env.path("delta/bronze/readings/day=2024-03-01");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("day folder") {
        let path = entry.expect("entry").path();
        let file = std::fs::File::open(&path).expect("open");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        let mut keys: Vec<(String, i64)> = Vec::new();
        for batch in reader {
            let batch = batch.expect("batch");
            let sites = batch
                .column_by_name("site_id")
                .expect("site_id")
                .as_string::<i32>()
                .clone();
            let ts = batch
                .column_by_name("ts_utc")
                .expect("ts_utc")
                .as_primitive::<arrow_array::types::TimestampMicrosecondType>()
                .clone();
            for i in 0..batch.num_rows() {
                keys.push((sites.value(i).to_string(), ts.value(i)));
            }
        }
        let mut want = keys.clone();
        want.sort();
        assert_eq!(
            keys,
            want,
            "{} is not sorted by (site_id, ts_utc)",
            path.display()
        );
        seen += keys.len();
    }
    assert_eq!(seen, 72);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_job_expect_sql_reads_the_uncommitted_rows() {
    let env = Env::new().await;
    write_days(&env, 1, 2, 5.0);
    // `{this}` has Delta's `day` column as readers will see it.
    let p = job(
        &env,
        r#"[job.expect]
sql = { name = "day_matches", query = "SELECT * FROM {this} WHERE day <> CAST(ts_utc AS DATE) OR value <> 5" }"#,
    );
    let (reports, outcome) = ingest(&p, &request("2024-03-01", "2024-03-02", "x1")).await;
    outcome.expect("passes");
    let found = reports[0].expect.clone().expect("report");
    assert_eq!(found.tests[0].test, "sql(day_matches)");
    assert_eq!(found.tests[0].failures, 0);
    assert_eq!(per_day(&env, "readings").await.len(), 2);

    write_days(&env, 2, 1, 7.0);
    let (reports, outcome) = ingest(&p, &request("2024-03-02", "2024-03-02", "x2")).await;
    let text = outcome.expect_err("value 7 fails").to_string();
    assert!(
        text.contains("sql(day_matches): 48 offending row(s)"),
        "{text}"
    );
    assert_eq!(reports[0].rows_written, 0);
    let days = per_day(&env, "readings").await;
    assert_eq!(days[1].1, 5.0, "the day before stays: {days:?}");
}
