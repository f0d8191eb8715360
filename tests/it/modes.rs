//! Write modes: `mode = "append"` keeps every run's rows (told apart by
//! `_ingest_time`, the run's time), once per run id, in both formats.

use std::fmt::Write;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;

use crate::common::{Env, ingest, request};

/// A forecast issued each run: the same slots with new values.
fn forecast_job(env: &Env, format: &str) -> floe::pipeline::Pipeline {
    env.pipeline(&format!(
        r#"
[delta]
location = "{}"

[[job]]
name = "forecast"
table = "bronze.forecast"
format = "{format}"
mode = "append"
source = {{ path = "data/{{date}}.csv", format = "csv" }}
event_time = {{ kind = "offset", column = "time" }}
columns = [ {{ name = "temp", type = "double", from = "temp" }} ]
"#,
        env.path("delta").display()
    ))
}

fn write_forecast(env: &Env, issue: f64) {
    let mut text = String::from("time,temp\n");
    for hour in 0..24 {
        writeln!(
            text,
            "2024-06-04T{hour:02}:00:00Z,{}",
            issue + f64::from(hour)
        )
        .expect("fmt");
    }
    env.write("data/2024-06-04.csv", &text);
}

/// (rows, distinct `_ingest_time`s) of the table, in either format.
async fn counts(env: &Env, format: &str) -> (i64, i64) {
    if format == "iceberg" {
        let batches = env.scan("bronze", "forecast").await;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut times = std::collections::BTreeSet::new();
        for b in &batches {
            let col = b
                .column_by_name("_ingest_time")
                .expect("_ingest_time")
                .as_primitive::<arrow_array::types::TimestampMicrosecondType>();
            times.extend((0..col.len()).map(|i| col.value(i)));
        }
        return (rows as i64, times.len() as i64);
    }
    let batches = env
        .delta_sql(
            "bronze/forecast",
            "SELECT count(*), count(DISTINCT _ingest_time) FROM t",
        )
        .await;
    let b = &batches[0];
    (
        b.column(0).as_primitive::<Int64Type>().value(0),
        b.column(1).as_primitive::<Int64Type>().value(0),
    )
}

async fn every_run_is_kept_once(format: &str) {
    let env = Env::new().await;
    let p = forecast_job(&env, format);
    let at = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .expect("time")
            .to_utc()
    };
    let run = |id: &str, now: &str| floe::ingest::IngestRequest {
        now: at(now),
        max_records: None,
        ..request("2024-06-04", "2024-06-04", id)
    };
    write_forecast(&env, 10.0);
    let (_, outcome) = ingest(&p, &run("sunday", "2024-06-02T06:00:00Z")).await;
    outcome.expect("first issue");
    assert_eq!(counts(&env, format).await, (24, 1));

    write_forecast(&env, 20.0);
    let (reports, outcome) = ingest(&p, &run("monday", "2024-06-03T06:00:00Z")).await;
    outcome.expect("second issue");
    assert_eq!(reports[0].replaced_files, 0, "an append replaces nothing");
    assert_eq!(counts(&env, format).await, (48, 2), "both issues are kept");

    // The same run again (a retry): nothing appended twice.
    let (reports, outcome) = ingest(&p, &run("monday", "2024-06-03T07:00:00Z")).await;
    outcome.expect("retry");
    assert_eq!(reports[0].status, "already-committed");
    assert_eq!(counts(&env, format).await, (48, 2));

    // A run whose source has nothing for the day appends nothing and
    // removes nothing (no day needs guarding).
    env.write("data/2024-06-04.csv", "time,temp\n");
    let (_, outcome) = ingest(&p, &run("tuesday", "2024-06-04T06:00:00Z")).await;
    outcome.expect("an empty append");
    assert_eq!(counts(&env, format).await, (48, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iceberg_append_keeps_every_run_once() {
    every_run_is_kept_once("iceberg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_append_keeps_every_run_once() {
    every_run_is_kept_once("delta").await;
}

/// A facilities list: reference data without an event time.
fn facilities_job(env: &Env, format: &str, extra: &str) -> floe::pipeline::Pipeline {
    env.pipeline(&format!(
        r#"
[delta]
location = "{}"

[[job]]
name = "facilities"
table = "bronze.facilities"
format = "{format}"
source = {{ path = "data/facilities.csv", format = "csv" }}
columns = [
  {{ name = "code", type = "string", required = true }},
  {{ name = "capacity_mw", type = "double" }},
]
expect = {{ key = ["code"] }}
{extra}
"#,
        env.path("delta").display()
    ))
}

/// (code, capacity) rows of the facilities table, sorted, in either format.
async fn facilities(env: &Env, format: &str) -> Vec<(String, f64)> {
    let batches = if format == "iceberg" {
        env.scan("bronze", "facilities").await
    } else {
        env.delta_sql("bronze/facilities", "SELECT code, capacity_mw FROM t")
            .await
    };
    let mut out = Vec::new();
    for b in &batches {
        assert!(
            b.column_by_name("ts_utc").is_none(),
            "reference data has no event time"
        );
        let code = b.column_by_name("code").expect("code");
        let code = arrow_cast::cast(code, &arrow_schema::DataType::Utf8).expect("text");
        let code = code.as_string::<i32>();
        let cap = b
            .column_by_name("capacity_mw")
            .expect("capacity")
            .as_primitive::<arrow_array::types::Float64Type>();
        for i in 0..b.num_rows() {
            out.push((code.value(i).to_string(), cap.value(i)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn reference_data_is_replaced_whole(format: &str) {
    let env = Env::new().await;
    let p = facilities_job(&env, format, "");
    env.write(
        "data/facilities.csv",
        "code,capacity_mw\nBANKS,100\nCOAL1,600\nSOLAR2,50\n",
    );
    let (reports, outcome) = ingest(&p, &request("2024-06-04", "2024-06-04", "r1")).await;
    outcome.expect("first list");
    assert_eq!(facilities(&env, format).await.len(), 3);
    assert_eq!(
        reports[0].days.keys().collect::<Vec<_>>(),
        ["table"],
        "no day in the report of reference data"
    );

    // The next list closed a plant and changed one: the table is the list.
    env.write(
        "data/facilities.csv",
        "code,capacity_mw\nBANKS,120\nSOLAR2,50\n",
    );
    let (_, outcome) = ingest(&p, &request("2024-06-05", "2024-06-05", "r2")).await;
    outcome.expect("second list");
    assert_eq!(
        facilities(&env, format).await,
        [("BANKS".to_string(), 120.0), ("SOLAR2".to_string(), 50.0)]
    );

    // An empty list would empty the table: refused, nothing committed.
    env.write("data/facilities.csv", "code,capacity_mw\n");
    let (_, outcome) = ingest(&p, &request("2024-06-06", "2024-06-06", "r3")).await;
    let err = outcome.expect_err("would empty the table");
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(err.to_string().contains("whole table"), "{err}");
    assert_eq!(facilities(&env, format).await.len(), 2);
    let allowed = floe::ingest::IngestRequest {
        allow_empty: true,
        ..request("2024-06-06", "2024-06-06", "r4")
    };
    let (_, outcome) = ingest(&p, &allowed).await;
    outcome.expect("emptied on purpose");
    assert!(facilities(&env, format).await.is_empty());

    // A key repeated in the list breaks [job.expect].
    env.write(
        "data/facilities.csv",
        "code,capacity_mw\nBANKS,1\nBANKS,2\n",
    );
    let (_, outcome) = ingest(&p, &request("2024-06-07", "2024-06-07", "r5")).await;
    let err = outcome.expect_err("a duplicate key");
    assert!(err.to_string().contains("1 duplicate rows"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceberg_reference_data_is_replaced_whole() {
    reference_data_is_replaced_whole("iceberg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_reference_data_is_replaced_whole() {
    reference_data_is_replaced_whole("delta").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_data_takes_no_partition_or_cadence() {
    let env = Env::new().await;
    for (extra, key) in [
        ("partition = [\"code\"]", "partition"),
        ("[job.expect]\ncadence = \"1h\"", "expect"),
    ] {
        let text = format!(
            r#"
[[job]]
name = "facilities"
table = "bronze.facilities"
source = {{ path = "data/facilities.csv", format = "csv" }}
columns = [ {{ name = "code", type = "string" }} ]
{extra}
"#
        );
        env.write("floe.toml", &text);
        let err = floe::pipeline::load(&env.path("floe.toml")).expect_err(key);
        assert!(err.to_string().contains(key), "{err}");
    }
}

/// A slowly changing dimension: a facility list whose history is kept.
async fn history_is_kept(format: &str) {
    let env = Env::new().await;
    let mut p = facilities_job(&env, format, "mode = \"scd2\"\nunique_key = [\"code\"]");
    // A second value column (absent from the files: always null), so a
    // change is told by more than one column.
    let owner: floe::pipeline::Column =
        toml::from_str("name = \"owner\"\ntype = \"string\"").expect("column");
    p.jobs[0].columns.push(owner);
    let at = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .expect("time")
            .to_utc()
    };
    let run = |id: &str, now: &str| floe::ingest::IngestRequest {
        now: at(now),
        max_records: None,
        ..request("2024-06-04", "2024-06-04", id)
    };
    env.write(
        "data/facilities.csv",
        "code,capacity_mw\nBANKS,100\nCOAL1,600\nSOLAR2,50\n",
    );
    let (_, outcome) = ingest(&p, &run("d1", "2024-06-01T00:00:00Z")).await;
    outcome.expect("first list");
    // BANKS grew, COAL1 closed, SOLAR2 unchanged, WIND3 opened.
    env.write(
        "data/facilities.csv",
        "code,capacity_mw\nBANKS,120\nSOLAR2,50\nWIND3,300\n",
    );
    let (_, outcome) = ingest(&p, &run("d2", "2024-06-02T00:00:00Z")).await;
    outcome.expect("second list");
    let versions = history(&env, format).await;
    let day = |t: Option<i64>| {
        t.map(|t| {
            chrono::DateTime::from_timestamp_micros(t)
                .expect("t")
                .date_naive()
                .to_string()
        })
    };
    let shown: Vec<(String, f64, Option<String>, Option<String>)> = versions
        .into_iter()
        .map(|(code, cap, from, to)| (code, cap, day(Some(from)), day(to)))
        .collect();
    let d1 = Some("2024-06-01".to_string());
    let d2 = Some("2024-06-02".to_string());
    assert_eq!(
        shown,
        [
            ("BANKS".to_string(), 100.0, d1.clone(), d2.clone()),
            ("BANKS".to_string(), 120.0, d2.clone(), None),
            ("COAL1".to_string(), 600.0, d1.clone(), d2.clone()),
            ("SOLAR2".to_string(), 50.0, d1.clone(), None),
            ("WIND3".to_string(), 300.0, d2.clone(), None),
        ]
    );
    // The same list again changes nothing.
    let (_, outcome) = ingest(&p, &run("d3", "2024-06-03T00:00:00Z")).await;
    outcome.expect("same list");
    assert_eq!(history(&env, format).await.len(), 5);
    // A repeated key is refused.
    env.write(
        "data/facilities.csv",
        "code,capacity_mw\nBANKS,1\nBANKS,2\n",
    );
    let (_, outcome) = ingest(&p, &run("d4", "2024-06-04T00:00:00Z")).await;
    let err = outcome.expect_err("a repeated key");
    assert!(err.to_string().contains("unique_key"), "{err}");
}

/// (code, capacity, _valid_from, _valid_to) of every version, sorted.
async fn history(env: &Env, format: &str) -> Vec<(String, f64, i64, Option<i64>)> {
    let batches = if format == "iceberg" {
        env.scan("bronze", "facilities").await
    } else {
        env.delta_sql("bronze/facilities", "SELECT * FROM t").await
    };
    let mut out = Vec::new();
    for b in &batches {
        let code = arrow_cast::cast(
            b.column_by_name("code").expect("code"),
            &arrow_schema::DataType::Utf8,
        )
        .expect("text");
        let code = code.as_string::<i32>();
        let cap = b
            .column_by_name("capacity_mw")
            .expect("capacity")
            .as_primitive::<arrow_array::types::Float64Type>();
        let from = b
            .column_by_name("_valid_from")
            .expect("_valid_from")
            .as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        let to = b
            .column_by_name("_valid_to")
            .expect("_valid_to")
            .as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            out.push((
                code.value(i).to_string(),
                cap.value(i),
                from.value(i),
                (!to.is_null(i)).then(|| to.value(i)),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceberg_scd2_keeps_history() {
    history_is_kept("iceberg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_scd2_keeps_history() {
    history_is_kept("delta").await;
}

/// `mode = "merge"` over files: each run's rows replace the table's rows
/// with the same key, in whichever day they were; the rest stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_replaces_rows_by_key_in_the_days_it_touches() {
    let env = Env::new().await;
    let p = env.pipeline(
        r#"
[[job]]
name = "orders"
table = "bronze.orders"
mode = "merge"
unique_key = ["id"]
source = { path = "data/changes.ndjson", format = "ndjson" }
event_time = { kind = "offset", column = "at" }
columns = [
  { name = "id", type = "long", required = true },
  { name = "amount", type = "decimal(8, 2)" },
]
"#,
    );
    let changes = |lines: &[(i64, &str, &str)]| {
        let mut text = String::new();
        for (id, at, amount) in lines {
            writeln!(text, r#"{{"id":{id},"at":"{at}","amount":"{amount}"}}"#).expect("fmt");
        }
        env.write("data/changes.ndjson", &text);
    };
    let table = || async {
        let mut rows: Vec<(i64, String, String)> = Vec::new();
        for b in env.scan("bronze", "orders").await {
            let ids = b
                .column_by_name("id")
                .expect("id")
                .as_primitive::<Int64Type>()
                .clone();
            let ts = b.column_by_name("ts_utc").expect("ts");
            let amount = b.column_by_name("amount").expect("amount");
            for i in 0..b.num_rows() {
                rows.push((
                    ids.value(i),
                    arrow_cast::display::array_value_to_string(ts, i).expect("ts"),
                    arrow_cast::display::array_value_to_string(amount, i).expect("amount"),
                ));
            }
        }
        rows.sort();
        rows
    };
    changes(&[
        (1, "2024-05-01T10:00:00Z", "1.00"),
        (2, "2024-05-01T11:00:00Z", "2.00"),
        (3, "2024-05-02T10:00:00Z", "3.00"),
    ]);
    let (_, outcome) = ingest(&p, &request("2024-05-01", "2024-05-03", "m1")).await;
    outcome.expect("first merge");
    // A late change to order 1 (May 1) arrives with a new order on May 3;
    // the window names May 3 only, yet May 1's row is replaced there.
    changes(&[
        (1, "2024-05-01T10:00:00Z", "1.50"),
        (4, "2024-05-03T09:00:00Z", "4.00"),
    ]);
    let (reports, outcome) = ingest(&p, &request("2024-05-01", "2024-05-03", "m2")).await;
    outcome.expect("second merge");
    assert_eq!(reports[0].merged_days, ["2024-05-01", "2024-05-03"]);
    assert_eq!(
        table().await,
        [
            (1, "2024-05-01T10:00:00Z".into(), "1.50".into()),
            (2, "2024-05-01T11:00:00Z".into(), "2.00".into()),
            (3, "2024-05-02T10:00:00Z".into(), "3.00".into()),
            (4, "2024-05-03T09:00:00Z".into(), "4.00".into()),
        ]
    );
    // A row that moves to another day leaves its old day.
    changes(&[(2, "2024-05-02T08:00:00Z", "2.00")]);
    let (reports, outcome) = ingest(&p, &request("2024-05-01", "2024-05-03", "m3")).await;
    outcome.expect("third merge");
    assert_eq!(reports[0].merged_days, ["2024-05-01", "2024-05-02"]);
    let rows = table().await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[1], (2, "2024-05-02T08:00:00Z".into(), "2.00".into()));
    // A key twice in one run is refused: which row wins is unknown.
    changes(&[
        (5, "2024-05-01T10:00:00Z", "5.00"),
        (5, "2024-05-01T12:00:00Z", "6.00"),
    ]);
    let (_, outcome) = ingest(&p, &request("2024-05-01", "2024-05-03", "m4")).await;
    let err = outcome.expect_err("a repeated key").to_string();
    assert!(err.contains("repeats a unique_key"), "{err}");
    assert_eq!(table().await.len(), 4);
}
