//! `floe ingest` end to end.

use std::fmt::Write;

use arrow_array::Array;
use chrono::{Duration, NaiveDate};

use crate::common::{Env, ingest, instants_per_day, request, rows, strings};

const PERIOD_JOB: &str = r#"
[[job]]
name = "demand"
table = "bronze.demand"
source = { path = "data/{date}.ndjson", format = "ndjson" }
event_time = { kind = "period", date_column = "SETTLEMENT_DATE", period_column = "SETTLEMENT_PERIOD", zone = "Europe/London" }
columns = [
  { name = "site_id", type = "string", required = true, from = "site" },
  { name = "demand_mw", type = "double", from = "demand" },
  { name = "settlement_date", type = "string", from = "SETTLEMENT_DATE" },
]
sort = ["site_id", "ts_utc"]
"#;

/// Writes one NDJSON file per day with `periods(day)` settlement periods
/// for sites A and B.
fn write_days(env: &Env, from: &str, days: i64, periods: impl Fn(NaiveDate) -> i64) {
    let start: NaiveDate = from.parse().expect("date");
    for d in 0..days {
        let day = start + Duration::days(d);
        let mut text = String::new();
        for site in ["A", "B"] {
            for p in 1..=periods(day) {
                writeln!(
                    text,
                    r#"{{"SETTLEMENT_DATE":"{day}","SETTLEMENT_PERIOD":{p},"site":"{site}","demand":{}}}"#,
                    1000 + p
                )
                .expect("fmt");
            }
        }
        env.write(&format!("data/{day}.ndjson"), &text);
    }
}

fn london_periods(day: NaiveDate) -> i64 {
    match day.to_string().as_str() {
        "2024-03-31" => 46,
        "2024-10-27" => 50,
        _ => 48,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_change_days_have_46_and_50_distinct_half_hours() {
    let env = Env::new().await;
    // Files for the local days around each window: the windows' first and
    // last UTC days take hours from the neighbouring local days.
    write_days(&env, "2024-03-29", 5, london_periods);
    write_days(&env, "2024-10-25", 5, london_periods);
    let p = env.pipeline(PERIOD_JOB);
    for (from, to) in [("2024-03-30", "2024-04-01"), ("2024-10-26", "2024-10-28")] {
        let (reports, outcome) = ingest(&p, &request(from, to, &format!("run-{from}"))).await;
        outcome.expect("ingest succeeds");
        assert_eq!(
            reports[0].rows_rejected, 0,
            "{:?}",
            reports[0].sample_rejects
        );
    }
    let batches = env.scan("bronze", "demand").await;
    // Every UTC day of both windows is complete: 48 half-hours, each once per
    // site, none missing.
    let days = instants_per_day(&batches);
    assert_eq!(days.len(), 6, "{:?}", days.keys().collect::<Vec<_>>());
    for (day, instants) in &days {
        let mut distinct = instants.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 48, "{day}");
        assert_eq!(instants.len(), 96, "{day}: each half-hour once per site");
        for pair in distinct.windows(2) {
            assert_eq!(pair[1] - pair[0], 30 * 60 * 1_000_000, "{day}: a gap");
        }
    }
    // Per local settlement date, the clock-change days carry 46 and 50
    // distinct UTC half-hours.
    let dates = strings(&batches, "settlement_date");
    let ts: Vec<i64> = instants_in_order(&batches);
    let mut per_date: std::collections::BTreeMap<String, std::collections::BTreeSet<i64>> =
        Default::default();
    for (d, t) in dates.into_iter().zip(ts) {
        per_date.entry(d).or_default().insert(t);
    }
    assert_eq!(per_date["2024-03-31"].len(), 46);
    assert_eq!(per_date["2024-10-27"].len(), 50);
    assert_eq!(per_date["2024-03-30"].len(), 48);
}

fn instants_in_order(batches: &[arrow_array::RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name("ts_utc")
                .and_then(|c| {
                    c.as_any()
                        .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
                })
                .expect("ts_utc")
                .clone();
            c.iter().flatten().collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerunning_a_window_replaces_it() {
    let env = Env::new().await;
    write_days(&env, "2024-01-01", 3, |_| 48);
    let p = env.pipeline(PERIOD_JOB);
    let (_, outcome) = ingest(&p, &request("2024-01-01", "2024-01-03", "first")).await;
    outcome.expect("first run");
    let before = env.scan("bronze", "demand").await;
    let (reports, outcome) = ingest(&p, &request("2024-01-02", "2024-01-02", "second")).await;
    outcome.expect("second run");
    assert_eq!(
        reports[0].replaced_files, 1,
        "the day's one file is replaced"
    );
    let after = env.scan("bronze", "demand").await;
    assert_eq!(rows(&before), 3 * 96);
    assert_eq!(
        rows(&after),
        3 * 96,
        "re-running a day must not duplicate it"
    );
    assert_eq!(instants_per_day(&before), instants_per_day(&after));
    // The same run id again: detected as landed, nothing new committed.
    let (reports, outcome) = ingest(&p, &request("2024-01-02", "2024-01-02", "second")).await;
    outcome.expect("repeat");
    assert_eq!(reports[0].status, "already-committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_on_disjoint_windows_both_land() {
    let env = Env::new().await;
    write_days(&env, "2024-01-01", 6, |_| 48);
    let p = env.pipeline(PERIOD_JOB);
    // Create the table first so both runs race on commits, not on creation.
    ingest(&p, &request("2024-01-01", "2024-01-01", "seed"))
        .await
        .1
        .expect("seed");
    let a = request("2024-01-02", "2024-01-03", "a");
    let b = request("2024-01-04", "2024-01-06", "b");
    let ((_, ra), (_, rb)) = tokio::join!(ingest(&p, &a), ingest(&p, &b));
    ra.expect("run a");
    rb.expect("run b");
    let days = instants_per_day(&env.scan("bronze", "demand").await);
    assert_eq!(days.len(), 6, "{:?}", days.keys().collect::<Vec<_>>());
    assert!(days.values().all(|v| v.len() == 96));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_past_the_threshold_commit_nothing_to_the_target() {
    let env = Env::new().await;
    write_days(&env, "2024-01-01", 1, |_| 48);
    let p = env.pipeline(PERIOD_JOB);
    ingest(&p, &request("2024-01-01", "2024-01-01", "good"))
        .await
        .1
        .expect("good run");
    let mut bad = std::fs::read_to_string(env.path("data/2024-01-01.ndjson")).expect("read");
    bad.push_str("{not json\n");
    bad.push_str(
        r#"{"SETTLEMENT_DATE":"2024-01-01","SETTLEMENT_PERIOD":49,"site":"A","demand":1}"#,
    );
    bad.push('\n');
    bad.push_str(
        r#"{"SETTLEMENT_DATE":"2024-01-01","SETTLEMENT_PERIOD":3,"site":"A","demand":"n/a"}"#,
    );
    bad.push('\n');
    bad.push_str(r#"{"SETTLEMENT_DATE":"2024-01-01","SETTLEMENT_PERIOD":4,"demand":5}"#);
    bad.push('\n');
    env.write("data/2024-01-01.ndjson", &bad);
    let (reports, outcome) = ingest(&p, &request("2024-01-01", "2024-01-01", "bad")).await;
    let err = outcome.expect_err("over the threshold");
    assert_eq!(err.exit_code(), 1, "{err}");
    assert_eq!(reports[0].rows_rejected, 4);
    let rows_after = env.scan("bronze", "demand").await;
    assert_eq!(rows(&rows_after), 96, "the target must keep the good run");
    let rejects = env.scan("bronze", "demand__rejects").await;
    let reasons = strings(&rejects, "reason");
    assert_eq!(reasons.len(), 4);
    for needle in [
        "malformed JSON",
        "period 49 does not exist",
        "is not a number",
        "required field site",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no reject says {needle:?}: {reasons:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_with_local_times_and_unknown_fields() {
    let env = Env::new().await;
    env.write(
        "drop/readings.csv",
        "when;station;temp\n2024-03-31 00:30;X;5.5\n2024-03-31 01:30;X;6.0\n2024-03-31 02:30;X;6.5\n\"2024-10-27 01:30\";X;7\n",
    );
    let job = r#"
[[job]]
name = "weather"
table = "bronze.weather"
source = { path = "drop/*.csv", format = "csv", delimiter = ";" }
event_time = { kind = "local", column = "when", zone = "Europe/London" }
columns = [
  { name = "station", type = "string", required = true },
  { name = "temp", type = "double" },
]
reject_threshold = 0.5
"#;
    let p = env.pipeline(job);
    let (reports, outcome) = ingest(&p, &request("2024-03-31", "2024-10-27", "csv")).await;
    outcome.expect("ingest");
    let r = &reports[0];
    // 01:30 on 2024-03-31 does not exist in London; 01:30 on 2024-10-27 is ambiguous.
    assert_eq!(
        (r.rows_read, r.rows_written, r.rows_rejected),
        (4, 2, 2),
        "{r:?}"
    );
    let mut bad = p.clone();
    bad.jobs[0].columns.retain(|c| c.name != "temp");
    let (_, outcome) = ingest(&bad, &request("2024-03-31", "2024-10-27", "drift")).await;
    let msg = outcome.expect_err("unknown field").to_string();
    assert!(msg.contains("unknown source field \"temp\""), "{msg}");
    // The error gives the line to add (a CSV cell is text).
    assert!(
        msg.contains(r#"{ name = "temp", type = "string" }"#),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_json_field_is_explained_with_the_column_to_add() {
    let env = Env::new().await;
    write_days(&env, "2024-01-01", 1, |_| 2);
    let mut p = env.pipeline(PERIOD_JOB);
    p.jobs[0].columns.retain(|c| c.name != "demand_mw");
    let (_, outcome) = ingest(&p, &request("2024-01-01", "2024-01-01", "drift")).await;
    let msg = outcome.expect_err("unknown field").to_string();
    assert!(
        msg.contains(r#"unknown source field "demand""#)
            && msg.contains(r#"{ name = "demand", type = "long" }"#)
            && msg.contains("schema_drift"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_day_file_fails_before_anything_is_written() {
    let env = Env::new().await;
    write_days(&env, "2024-01-01", 1, |_| 48);
    let p = env.pipeline(PERIOD_JOB);
    let (_, outcome) = ingest(&p, &request("2024-01-01", "2024-01-02", "gap")).await;
    let msg = outcome.expect_err("missing file").to_string();
    assert!(msg.contains("2024-01-02.ndjson"), "{msg}");
    assert!(
        !env.path("wh/bronze").exists(),
        "nothing may be created for a failed plan"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_sources_take_the_columnar_path_with_exact_rejects() {
    use std::sync::Arc;

    use arrow_array::{RecordBatch, StringArray, TimestampMicrosecondArray};
    let env = Env::new().await;
    let base = chrono::DateTime::parse_from_rfc3339("2024-01-10T00:00:00Z")
        .expect("ts")
        .timestamp_micros();
    let half_hour = 30 * 60 * 1_000_000;
    let ts: Vec<i64> = (0..96).map(|i| base + i * half_hour).collect(); // two days
    let mut values: Vec<Option<String>> = (0..96).map(|i| Some(format!("{}.5", i))).collect();
    values[3] = Some("not-a-number".into());
    let mut sites: Vec<Option<&str>> = vec![Some("S1"); 96];
    sites[7] = None;
    let batch = RecordBatch::try_from_iter([
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")) as _,
        ),
        ("site", Arc::new(StringArray::from(sites)) as _),
        ("value", Arc::new(StringArray::from(values)) as _),
    ])
    .expect("batch");
    let path = env.path("pq/readings.parquet");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let file = std::fs::File::create(&path).expect("create");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    let job = r#"
[[job]]
name = "pq"
table = "bronze.pq"
source = { path = "pq/*.parquet", format = "parquet" }
event_time = { kind = "offset", column = "ts" }
columns = [
  { name = "site_id", type = "string", required = true, from = "site" },
  { name = "value", type = "double" },
]
reject_threshold = 0.5
"#;
    let p = env.pipeline(job);
    // Only the first day is in the window: 48 rows, 2 of them bad.
    let (reports, outcome) = ingest(&p, &request("2024-01-10", "2024-01-10", "pq")).await;
    outcome.expect("ingest");
    let r = &reports[0];
    assert_eq!(
        (
            r.rows_read,
            r.rows_written,
            r.rows_rejected,
            r.rows_outside_window
        ),
        (96, 46, 2, 48),
        "{r:?}"
    );
    let reasons: Vec<&str> = r.sample_rejects.iter().map(|x| x.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|x| x.contains("value") && x.contains("not-a-number")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|x| x.contains("required field site")),
        "{reasons:?}"
    );
    let lines: Vec<u64> = r.sample_rejects.iter().map(|x| x.line).collect();
    assert_eq!(lines, [4, 8], "rejects carry their 1-based row number");
    let landed = env.scan("bronze", "pq").await;
    assert_eq!(rows(&landed), 46);
}

/// Serves `dir` over HTTP on 127.0.0.1 (GET and HEAD), counting requests.
async fn serve_folder(
    dir: std::path::PathBuf,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/files/{name}",
            get(
                |State((dir, hits)): State<(std::path::PathBuf, Arc<AtomicUsize>)>,
                 Path(name): Path<String>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    match std::fs::read(dir.join(name)) {
                        Ok(bytes) => Ok(bytes),
                        Err(_) => Err(StatusCode::NOT_FOUND),
                    }
                },
            ),
        )
        .with_state((dir, hits.clone()));
    (format!("{}/files", crate::common::serve(app).await), hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sources_are_fetched_and_a_missing_day_stops_the_run() {
    let env = Env::new().await;
    write_days(&env, "2024-01-01", 2, |_| 48);
    let (base, hits) = serve_folder(env.path("data")).await;
    let job = PERIOD_JOB.replace("data/{date}.ndjson", &format!("{base}/{{date}}.ndjson"));
    let p = env.pipeline(&job);
    let (reports, outcome) = ingest(&p, &request("2024-01-01", "2024-01-02", "http")).await;
    outcome.expect("ingest over http");
    assert_eq!(reports[0].rows_written, 2 * 96);
    assert!(
        reports[0]
            .files_read
            .iter()
            .all(|u| u.starts_with("http://127.0.0.1"))
    );
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    let sources = strings(&env.scan("bronze", "demand").await, "_source");
    assert!(
        sources.iter().all(|s| s.starts_with(&base)),
        "{:?}",
        sources.first()
    );
    let (_, outcome) = ingest(&p, &request("2024-01-02", "2024-01-03", "http-gap")).await;
    let msg = outcome.expect_err("a missing day").to_string();
    assert!(msg.contains("2024-01-03.ndjson"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_drift_evolve_adds_nullable_columns_before_writing() {
    let env = Env::new().await;
    write_days(&env, "2024-01-01", 1, |_| 48);
    let job = PERIOD_JOB.replace(
        "sort = [\"site_id\", \"ts_utc\"]",
        "schema_drift = \"evolve\"",
    );
    let p = env.pipeline(&job);
    ingest(&p, &request("2024-01-01", "2024-01-01", "base"))
        .await
        .1
        .expect("base run");
    // The next day's records carry two fields the contract does not name.
    let mut text = String::new();
    for period in 1..=48 {
        writeln!(
            text,
            r#"{{"SETTLEMENT_DATE":"2024-01-02","SETTLEMENT_PERIOD":{period},"site":"A","demand":1,"frequency_hz":50.01,"flag":"ok"}}"#
        )
        .expect("fmt");
    }
    env.write("data/2024-01-02.ndjson", &text);
    let (_, outcome) = ingest(&p, &request("2024-01-02", "2024-01-02", "drift")).await;
    outcome.expect("evolving run");
    let batches = env.scan("bronze", "demand").await;
    let schema = batches[0].schema();
    let freq = schema.field_with_name("frequency_hz").expect("new column");
    assert_eq!(freq.data_type(), &arrow_schema::DataType::Float64);
    assert!(freq.is_nullable());
    assert_eq!(
        schema
            .field_with_name("flag")
            .expect("new column")
            .data_type(),
        &arrow_schema::DataType::Utf8
    );
    let flags = batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("flag").expect("flag");
            let s = c
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .expect("strings");
            (0..s.len())
                .map(|i| s.is_valid(i).then(|| s.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    assert_eq!(
        flags.iter().filter(|f| f.as_deref() == Some("ok")).count(),
        48
    );
    assert_eq!(
        flags.iter().filter(|f| f.is_none()).count(),
        96,
        "old rows read as null"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_oauth_catalog_and_table_codec() {
    use floe_catalog::{AuthConfig, Secret};
    let env = Env::with_auth(AuthConfig {
        token: None,
        client: Some(("floe".into(), Secret::new("s3cret"))),
        token_ttl: std::time::Duration::from_secs(60),
    })
    .await;
    let mut records = Vec::new();
    for h in 0..24 {
        records.push(format!(
            r#"{{"t":{},"station":"X","temp":{h}}}"#,
            1_704_067_200 + h * 3600
        ));
    }
    env.write(
        "api/2024-01-01.json",
        &format!(
            r#"{{"meta":{{}},"result":{{"records":[{}]}}}}"#,
            records.join(",")
        ),
    );
    let job = r#"
[[job]]
name = "api"
table = "bronze.api"
source = { path = "api/{date}.json", format = "json", records = "result.records" }
event_time = { kind = "epoch_seconds", column = "t" }
columns = [ { name = "station", type = "string", required = true }, { name = "temp", type = "long" } ]
properties = { "write.parquet.compression-codec" = "snappy" }
"#;
    let wrong = env.pipeline_with(job, "credential = \"floe:nope\"");
    let (_, outcome) = ingest(&wrong, &request("2024-01-01", "2024-01-01", "denied")).await;
    let msg = outcome.expect_err("wrong secret").to_string();
    assert!(msg.contains("refused the client credentials"), "{msg}");
    let p = env.pipeline_with(job, "credential = \"floe:s3cret\"");
    let (reports, outcome) = ingest(&p, &request("2024-01-01", "2024-01-01", "api")).await;
    outcome.expect("ingest through an OAuth2 catalog");
    assert_eq!(reports[0].rows_written, 24);
    let settings = floe::pipeline::CatalogSettings {
        credential: Some("floe:s3cret".into()),
        ..Default::default()
    };
    assert_eq!(rows(&env.scan_with("bronze", "api", settings).await), 24);
    // The table's codec property decides the data files' compression.
    let file = walk(&env.path("wh"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a data file");
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&file).expect("open"))
            .expect("parquet");
    use parquet::file::reader::FileReader;
    let codec = reader.metadata().row_group(0).column(0).compression();
    assert_eq!(codec, parquet::basic::Compression::SNAPPY);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_can_write_through_its_own_catalog() {
    let env = Env::new().await;
    let other = Env::new().await;
    write_days(&env, "2024-01-01", 1, |_| 48);
    let second = PERIOD_JOB
        .replace("name = \"demand\"", "name = \"copy\"")
        .replace(
            "table = \"bronze.demand\"",
            &format!(
                "table = \"bronze.demand\"\ncatalog = {{ uri = \"{}\" }}",
                other.catalog.uri()
            ),
        );
    let p = env.pipeline(&format!("{PERIOD_JOB}\n{second}"));
    let (reports, outcome) = ingest(&p, &request("2024-01-01", "2024-01-01", "two")).await;
    outcome.expect("both jobs");
    assert_eq!(reports.len(), 2);
    assert_eq!(rows(&env.scan("bronze", "demand").await), 96);
    assert_eq!(
        rows(&other.scan("bronze", "demand").await),
        96,
        "the second job's catalog"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_partition_fields_follow_the_day_and_windows_still_replace() {
    let env = Env::new().await;
    write_days(&env, "2024-01-01", 3, |_| 48);
    let job = PERIOD_JOB.replace(
        "sort = [\"site_id\", \"ts_utc\"]",
        "sort = [\"site_id\", \"ts_utc\"]\npartition = [\"day(ts_utc)\", \"site_id\", \"bucket(4, settlement_date)\"]",
    );
    let p = env.pipeline(&job);
    let (reports, outcome) = ingest(&p, &request("2024-01-01", "2024-01-03", "first")).await;
    outcome.expect("first run");
    // Two sites a day, one settlement date per local day (the first UTC
    // hour of each day comes from the previous local date): files per
    // (day, site, bucket).
    assert!(reports[0].data_files >= 6, "{:?}", reports[0].data_files);
    let client = env.client_with(Default::default()).await;
    let loaded = client
        .load_table(&["bronze".to_string()], "demand")
        .await
        .expect("load")
        .expect("table");
    let spec = loaded.metadata.default_partition_spec();
    let names: Vec<&str> = spec.fields().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["ts_utc_day", "site_id", "settlement_date_bucket"]);
    let before = env.scan("bronze", "demand").await;
    assert_eq!(rows(&before), 3 * 96);

    let (reports, outcome) = ingest(&p, &request("2024-01-02", "2024-01-02", "second")).await;
    outcome.expect("second run");
    assert!(
        reports[0].replaced_files >= 2,
        "{}",
        reports[0].replaced_files
    );
    let after = env.scan("bronze", "demand").await;
    assert_eq!(
        rows(&after),
        3 * 96,
        "re-running a day must not duplicate it"
    );
    assert_eq!(instants_per_day(&before), instants_per_day(&after));

    let bad = env.write(
        "bad.toml",
        &format!(
            "[catalog]\nuri = \"{}\"\n{}",
            env.catalog.uri(),
            PERIOD_JOB.replace(
                "sort = [\"site_id\", \"ts_utc\"]",
                "partition = [\"site_id\", \"day(ts_utc)\"]"
            )
        ),
    );
    let err = floe::pipeline::load(&bad).expect_err("day must come first");
    assert!(err.to_string().contains("must be \"day(ts_utc)\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_object_answer_is_one_record_read_by_paths() {
    // A company overview: one object, nested fields, no event time.
    let env = Env::new().await;
    env.write(
        "data/overview.json",
        r#"{"status": "ok", "company": {"symbol": "IBM", "listing": {"exchange": "NYSE"}, "units": [{"capacity": 5.5}, {"capacity": 7}]}}"#,
    );
    let p = env.pipeline(
        r#"
[[job]]
name = "overview"
table = "bronze.overview"
source = { path = "data/overview.json", format = "json", records = "company" }
columns = [
  { name = "symbol", type = "string", required = true },
  { name = "exchange", type = "string", from = "listing.exchange" },
  { name = "first_capacity", type = "double", from = "units[0].capacity" },
  { name = "second_capacity", type = "double", from = "units[1].capacity" },
]
"#,
    );
    let (reports, outcome) = ingest(&p, &request("2024-06-04", "2024-06-04", "o1")).await;
    outcome.expect("one record");
    assert_eq!(reports[0].rows_written, 1);
    let batches = env.scan("bronze", "overview").await;
    assert_eq!(strings(&batches, "exchange"), ["NYSE"]);
    let value = |name: &str| {
        batches[0]
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<arrow_array::Float64Array>())
            .map(|a| a.value(0))
    };
    assert_eq!(
        (value("first_capacity"), value("second_capacity")),
        (Some(5.5), Some(7.0))
    );
}

/// Each row of `column`, as Arrow prints it (`{lat: 1.5, tags: [a]}`).
fn shown(batches: &[arrow_array::RecordBatch], column: &str) -> Vec<String> {
    let options = arrow_cast::display::FormatOptions::default().with_null("null");
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).expect("column");
            let f = arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options)
                .expect("formatter");
            (0..c.len())
                .map(|i| f.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

const NESTED_JOB: &str = r#"
[[job]]
name = "plants"
table = "bronze.plants"
source = { path = "data/plants.{ext}", format = "{format}" }
event_time = { kind = "offset", column = "at" }
sort = ["code"]
reject_threshold = 0.5
columns = [
  { name = "code", type = "string", required = true },
  { name = "location", type = "struct<lat: double, lon: double>" },
  { name = "units", type = "list<struct<id: int, mw: double, fuel: string>>" },
  { name = "tags", type = "map<string, long>" },
  { name = "hours", type = "list<timestamptz>" },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_json_lands_as_struct_list_and_map_columns() {
    let env = Env::new().await;
    env.write(
        "data/plants.ndjson",
        concat!(
            r#"{"code": "A", "at": "2024-06-04T01:00:00Z", "location": {"lat": 51.5, "lon": "-0.1"}, "units": [{"id": 1, "mw": 5.5, "fuel": "gas"}, {"id": "2", "mw": 7}], "tags": {"x": 1}, "hours": ["2024-06-04T00:00:00+02:00"]}"#,
            "\n",
            r#"{"code": "B", "at": "2024-06-04T02:00:00Z", "location": null, "units": [], "tags": {}}"#,
            "\n",
            r#"{"code": "C", "at": "2024-06-04T03:00:00Z", "location": {"lat": "north"}}"#,
            "\n",
            r#"{"code": "D", "at": "2024-06-04T04:00:00Z", "units": {"id": 1}}"#,
            "\n",
        ),
    );
    let job = NESTED_JOB
        .replace("{ext}", "ndjson")
        .replace("{format}", "ndjson");
    let p = env.pipeline(&job);
    let (reports, outcome) = ingest(&p, &request("2024-06-04", "2024-06-04", "n1")).await;
    outcome.expect("nested rows land");
    assert_eq!(reports[0].rows_written, 2, "{:?}", reports[0]);
    let reasons: Vec<&str> = reports[0]
        .sample_rejects
        .iter()
        .map(|r| r.reason.as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("field location.lat: \"north\" is not a number")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("field units: {\"id\":1} is not a list")),
        "{reasons:?}"
    );
    let batches = env.scan("bronze", "plants").await;
    assert_eq!(
        shown(&batches, "location"),
        ["{lat: 51.5, lon: -0.1}", "null"]
    );
    assert_eq!(
        shown(&batches, "units"),
        [
            "[{id: 1, mw: 5.5, fuel: gas}, {id: 2, mw: 7.0, fuel: null}]",
            "[]"
        ]
    );
    assert_eq!(shown(&batches, "tags"), ["{x: 1}", "{}"]);
    assert_eq!(shown(&batches, "hours"), ["[2024-06-03T22:00:00Z]", "null"]);

    // The same table takes the next run (its nested ids come from the
    // catalog), and a CSV cell holding JSON text is read as JSON.
    env.write(
        "data/plants.csv",
        "code,at,location,units,tags\nE,2024-06-04T05:00:00Z,\"{\"\"lat\"\": 1, \"\"lon\"\": 2}\",\"[{\"\"id\"\": 3}]\",\n",
    );
    let p = env.pipeline(
        &NESTED_JOB
            .replace("{ext}", "csv")
            .replace("{format}", "csv"),
    );
    let (reports, outcome) = ingest(&p, &request("2024-06-04", "2024-06-04", "n2")).await;
    outcome.expect("csv with JSON text");
    assert_eq!(reports[0].rows_written, 1, "{:?}", reports[0]);
    let batches = env.scan("bronze", "plants").await;
    assert_eq!(shown(&batches, "location"), ["{lat: 1.0, lon: 2.0}"]);
    assert_eq!(
        shown(&batches, "units"),
        ["[{id: 3, mw: null, fuel: null}]"]
    );

    // A key the type does not declare fails the run, naming it and the
    // line to add; with schema_drift = "ignore" it is dropped.
    env.write(
        "data/plants.ndjson",
        r#"{"code": "F", "at": "2024-06-04T06:00:00Z", "units": [{"id": 1, "unit_kind": "ccgt"}]}"#,
    );
    let p = env.pipeline(&job);
    let (_, outcome) = ingest(&p, &request("2024-06-04", "2024-06-04", "n3")).await;
    let err = outcome.expect_err("unknown nested key").to_string();
    assert!(
        err.contains("unknown key units[0].unit_kind")
            && err.contains("add `unit_kind: string` to the struct at units[0]"),
        "{err}"
    );
    let ignore = job.replace(
        "sort = [\"code\"]",
        "sort = [\"code\"]\nschema_drift = \"ignore\"",
    );
    let (_, outcome) = ingest(
        &env.pipeline(&ignore),
        &request("2024-06-04", "2024-06-04", "n4"),
    )
    .await;
    outcome.expect("dropped with ignore");
    let batches = env.scan("bronze", "plants").await;
    assert_eq!(
        shown(&batches, "units"),
        ["[{id: 1, mw: null, fuel: null}]"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_column_evolves_into_an_existing_table() {
    let env = Env::new().await;
    env.write(
        "data/p.ndjson",
        r#"{"code": "A", "at": "2024-06-04T01:00:00Z"}"#,
    );
    let base = r#"
[[job]]
name = "p"
table = "bronze.p"
source = { path = "data/p.ndjson", format = "ndjson" }
event_time = { kind = "offset", column = "at" }
schema_drift = "evolve"
columns = [
  { name = "code", type = "string" },
]
"#;
    let (_, outcome) = ingest(
        &env.pipeline(base),
        &request("2024-06-04", "2024-06-04", "e1"),
    )
    .await;
    outcome.expect("first run");
    env.write(
        "data/p.ndjson",
        r#"{"code": "A", "at": "2024-06-04T01:00:00Z", "loc": {"lat": 1.5, "tags": ["x"]}}"#,
    );
    let declared = base.replace(
        "{ name = \"code\", type = \"string\" },",
        "{ name = \"code\", type = \"string\" },\n  { name = \"loc\", type = \"struct<lat: double, tags: list<string>>\" },",
    );
    let (_, outcome) = ingest(
        &env.pipeline(&declared),
        &request("2024-06-04", "2024-06-04", "e2"),
    )
    .await;
    outcome.expect("the declared nested column is added");
    let batches = env.scan("bronze", "p").await;
    assert_eq!(shown(&batches, "loc"), ["{lat: 1.5, tags: [x]}"]);
    // Its fields have ids of their own, above every other column's.
    let client = env.client_with(Default::default()).await;
    let table = client
        .load_table(&["bronze".to_string()], "p")
        .await
        .expect("load")
        .expect("table");
    let schema = table.metadata.current_schema();
    let mut ids: Vec<i32> = ["code", "loc", "loc.lat", "loc.tags", "loc.tags.element"]
        .iter()
        .map(|n| schema.field_by_name(n).map(|f| f.id).expect(n))
        .collect();
    let loc = ids[1];
    assert!(ids[2..].iter().all(|id| *id > loc), "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "ids are distinct");
}
