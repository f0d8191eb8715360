//! Malformed input (issue 16, "Bad data"): what is not valid UTF-8 is kept
//! byte for byte in `<table>__rejects` (`raw_bytes`), also in a rejects
//! table written before that column existed; a JSON object with a key
//! present twice is a reject of its record, naming the key.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, BinaryArray, RecordBatch, StringArray};
use arrow_schema::DataType;
use iceberg::spec::{
    NestedField, PrimitiveType, Schema, SortOrder, Transform, Type, UnboundPartitionSpec,
};

use crate::common::{Env, ingest, request, strings};

/// A job reading `data/{date}.<ext>` (`ndjson` or `csv`) into `table`.
fn job(table: &str, ext: &str, extra: &str) -> String {
    format!(
        r#"
[[job]]
name = "{table}"
table = "bronze.{table}"
source = {{ path = "data/{table}/{{date}}.{ext}", format = "{ext}" }}
event_time = {{ kind = "offset", column = "ts" }}
columns = [
  {{ name = "site_id", type = "string", required = true, from = "site" }},
  {{ name = "value", type = "double", required = true, from = "v" }},
]
reject_threshold = 1.0
{extra}
"#
    )
}

fn write_bytes(env: &Env, rel: &str, bytes: &[u8]) {
    let p = env.path(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, bytes).expect("write");
}

/// The rows of a rejects table as (line, reason, raw, raw_bytes), by line.
fn rejects_of(batches: &[RecordBatch]) -> Vec<(i64, String, String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for b in batches {
        let col = |n: &str| {
            b.column_by_name(n)
                .unwrap_or_else(|| panic!("no column {n} in {:?}", b.schema()))
                .clone()
        };
        let line = arrow_cast::cast(&col("line"), &DataType::Int64).expect("line");
        let line = line
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .expect("i64");
        let text = |n: &str| {
            let c = arrow_cast::cast(&col(n), &DataType::Utf8).expect("utf8");
            let s = c.as_any().downcast_ref::<StringArray>().expect("strings");
            (0..s.len())
                .map(|i| s.value(i).to_string())
                .collect::<Vec<_>>()
        };
        let (reason, raw) = (text("reason"), text("raw"));
        let bytes = arrow_cast::cast(&col("raw_bytes"), &DataType::Binary).expect("binary");
        let bytes = bytes
            .as_any()
            .downcast_ref::<BinaryArray>()
            .expect("binary");
        for i in 0..b.num_rows() {
            out.push((
                line.value(i),
                reason[i].clone(),
                raw[i].clone(),
                (!bytes.is_null(i)).then(|| bytes.value(i).to_vec()),
            ));
        }
    }
    out.sort();
    out
}

/// The rejects table schema floe wrote before `raw_bytes`.
fn old_rejects_schema() -> Schema {
    let f = |id, name: &str, t, req| {
        Arc::new(if req {
            NestedField::required(id, name, Type::Primitive(t))
        } else {
            NestedField::optional(id, name, Type::Primitive(t))
        })
    };
    Schema::builder()
        .with_schema_id(0)
        .with_fields(vec![
            f(1, "_ingest_time", PrimitiveType::Timestamptz, true),
            f(2, "job", PrimitiveType::String, true),
            f(3, "run_id", PrimitiveType::String, true),
            f(4, "source", PrimitiveType::String, true),
            f(5, "line", PrimitiveType::Long, true),
            f(6, "reason", PrimitiveType::String, true),
            f(7, "raw", PrimitiveType::String, false),
        ])
        .build()
        .expect("schema")
}

const CSV_BAD_ROW: &[u8] = b"2024-03-01T02:00:00+00:00,\"B\xff\xfe\",2.0";
const NDJSON_BAD_LINE: &[u8] = b"{\"ts\":\"2024-03-01T02:00:00+00:00\",\"site\":\"B\xc3\",\"v\":2}";

/// A CSV file and an NDJSON file, each with one row that is not UTF-8 and
/// one that is not a number.
fn write_sources(env: &Env) {
    let mut csv = b"ts,site,v\n2024-03-01T01:00:00+00:00,A,1.0\n".to_vec();
    csv.extend_from_slice(CSV_BAD_ROW);
    csv.extend_from_slice(b"\r\n2024-03-01T03:00:00+00:00,C,n/a\n2024-03-01T04:00:00+00:00,D,4\n");
    write_bytes(env, "data/rows/2024-03-01.csv", &csv);
    let mut nd = b"{\"ts\":\"2024-03-01T01:00:00+00:00\",\"site\":\"A\",\"v\":1}\n".to_vec();
    nd.extend_from_slice(NDJSON_BAD_LINE);
    nd.extend_from_slice(
        b"\n{\"ts\":\"2024-03-01T03:00:00+00:00\",\"site\":\"C\",\"v\":\"n/a\"}\n",
    );
    write_bytes(env, "data/lines/2024-03-01.ndjson", &nd);
}

fn check_lossless(rejects: &[(i64, String, String, Option<Vec<u8>>)], bad_line: i64, bad: &[u8]) {
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    let utf8 = usize::from(!rejects[0].1.contains("UTF-8"));
    let (line, reason, raw, bytes) = &rejects[utf8];
    assert_eq!(*line, bad_line, "{rejects:?}");
    assert!(reason.contains("UTF-8"), "{rejects:?}");
    assert_eq!(bytes.as_deref(), Some(bad), "the exact bytes are kept");
    assert_eq!(*raw, String::from_utf8_lossy(bad), "raw is the lossy text");
    // A reject that is valid UTF-8 has its text in `raw` only.
    let (_, reason, raw, bytes) = &rejects[1 - utf8];
    assert!(reason.contains("n/a"), "{reason}");
    assert!(raw.contains("n/a"), "{raw}");
    assert_eq!(*bytes, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_are_not_utf8_keep_their_bytes_in_iceberg_rejects() {
    let env = Env::new().await;
    write_sources(&env);
    let p = env.pipeline(&format!(
        "{}{}",
        job("rows", "csv", ""),
        job("lines", "ndjson", "")
    ));
    // The NDJSON job's rejects table exists already, from before
    // `raw_bytes`: it gains the column and keeps its rows.
    let client = env.client_with(Default::default()).await;
    let bronze = ["bronze".to_string()];
    client.ensure_namespace(&bronze).await.expect("namespace");
    let spec = UnboundPartitionSpec::builder()
        .add_partition_field(1, "_ingest_time_day", Transform::Day)
        .expect("spec")
        .build();
    client
        .create_table(
            &bronze,
            "lines__rejects",
            &old_rejects_schema(),
            &spec,
            &SortOrder::unsorted_order(),
            &HashMap::new(),
        )
        .await
        .expect("old rejects table");
    let (reports, outcome) = ingest(&p, &request("2024-03-01", "2024-03-01", "u1")).await;
    outcome.expect("ingest");
    assert_eq!(
        reports.iter().map(|r| r.rows_rejected).collect::<Vec<_>>(),
        [2, 2]
    );
    let csv = rejects_of(&env.scan("bronze", "rows__rejects").await);
    check_lossless(&csv, 3, CSV_BAD_ROW);
    let nd = rejects_of(&env.scan("bronze", "lines__rejects").await);
    check_lossless(&nd, 2, NDJSON_BAD_LINE);
    // A second run appends to the evolved table.
    ingest(&p, &request("2024-03-01", "2024-03-01", "u2"))
        .await
        .1
        .expect("again");
    assert_eq!(
        strings(&env.scan("bronze", "lines__rejects").await, "run_id").len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_are_not_utf8_keep_their_bytes_in_delta_rejects() {
    let env = Env::new().await;
    write_sources(&env);
    let delta = format!("[delta]\nlocation = \"{}\"\n", env.path("delta").display());
    let p = env.pipeline(&format!(
        "{delta}{}{}",
        job("rows", "csv", "format = \"delta\""),
        job("lines", "ndjson", "format = \"delta\"")
    ));
    // The NDJSON job's rejects table exists already, from before
    // `raw_bytes`, with one row.
    let target = floe::maintain_cmd::delta_table_of(&p, "bronze.lines")
        .expect("resolves")
        .expect("a Delta job's table");
    let old =
        Arc::new(floe::table::schema::arrow_schema(&old_rejects_schema()).expect("arrow schema"));
    let old_row = RecordBatch::try_new(
        old.as_ref().clone(),
        vec![
            Arc::new(arrow_array::TimestampMicrosecondArray::from(vec![0]).with_timezone("+00:00")),
            Arc::new(StringArray::from(vec!["lines"])),
            Arc::new(StringArray::from(vec!["old"])),
            Arc::new(StringArray::from(vec!["f"])),
            Arc::new(arrow_array::Int64Array::from(vec![1])),
            Arc::new(StringArray::from(vec!["why"])),
            Arc::new(StringArray::from(vec!["x"])),
        ],
    )
    .expect("batch");
    floe::table::delta::append_rejects(&target, old_row)
        .await
        .expect("old rejects table");
    let (reports, outcome) = ingest(&p, &request("2024-03-01", "2024-03-01", "u1")).await;
    outcome.expect("ingest");
    assert_eq!(
        reports.iter().map(|r| r.rows_rejected).collect::<Vec<_>>(),
        [2, 2]
    );
    let read = |table: &str| {
        let url = reqwest::Url::from_directory_path(env.path(&format!("delta/bronze/{table}")))
            .expect("url");
        async move {
            let t = deltalake::DeltaTable::try_from_url(url)
                .await
                .expect("open");
            let ctx = datafusion::prelude::SessionContext::new();
            t.update_datafusion_session(&ctx.state()).expect("session");
            ctx.register_table("r", t.table_provider().await.expect("provider"))
                .expect("register");
            ctx.sql("SELECT * FROM r WHERE run_id = 'u1'")
                .await
                .expect("sql")
                .collect()
                .await
                .expect("rows")
        }
    };
    check_lossless(&rejects_of(&read("rows__rejects").await), 3, CSV_BAD_ROW);
    check_lossless(
        &rejects_of(&read("lines__rejects").await),
        2,
        NDJSON_BAD_LINE,
    );
}

/// (line, reason, raw) of the rejects of `table`.
async fn reasons(env: &Env, table: &str) -> Vec<(i64, String, String)> {
    rejects_of(&env.scan("bronze", &format!("{table}__rejects")).await)
        .into_iter()
        .map(|(line, reason, raw, _)| (line, reason, raw))
        .collect()
}

fn duplicate_named(rejects: &[(i64, String, String)], line: i64, key: &str) {
    let r = rejects
        .iter()
        .find(|r| r.0 == line)
        .unwrap_or_else(|| panic!("no reject on line {line}: {rejects:?}"));
    assert!(
        r.1.contains(&format!("duplicate key \"{key}\"")),
        "{rejects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_present_twice_rejects_its_ndjson_line_and_json_record() {
    let env = Env::new().await;
    env.write(
        "data/lines/2024-03-01.ndjson",
        concat!(
            "{\"ts\":\"2024-03-01T01:00:00Z\",\"site\":\"A\",\"v\":1}\n",
            "{\"ts\":\"2024-03-01T02:00:00Z\",\"site\":\"B\",\"v\":2,\"v\":20}\n",
            "{\"ts\":\"2024-03-01T03:00:00Z\",\"site\":\"C\",\"v\":3,\"x\":{\"k\":1,\"k\":2}}\n",
            "{\"ts\":\"2024-03-01T04:00:00Z\",\"site\":\"D\",\"v\":4}\n",
        ),
    );
    env.write(
        "data/docs/2024-03-01.json",
        r#"{"meta": {"n": 3}, "items": [
            {"ts": "2024-03-01T01:00:00Z", "site": "A", "v": 1},
            {"ts": "2024-03-01T02:00:00Z", "site": "B", "site": "b", "v": 2},
            {"ts": "2024-03-01T03:00:00Z", "site": "C", "v": 3}
        ]}"#,
    );
    let p = env.pipeline(&format!(
        "{}{}",
        job("lines", "ndjson", "schema_drift = \"ignore\""),
        job("docs", "json", "").replace(
            "format = \"json\" }",
            "format = \"json\", records = \"items\" }"
        )
    ));
    let (reports, outcome) = ingest(&p, &request("2024-03-01", "2024-03-01", "d1")).await;
    outcome.expect("ingest");
    let figures: Vec<(u64, u64)> = reports
        .iter()
        .map(|r| (r.rows_written, r.rows_rejected))
        .collect();
    assert_eq!(figures, [(2, 2), (2, 1)], "{:?}", reports[0].sample_rejects);
    let lines = reasons(&env, "lines").await;
    duplicate_named(&lines, 2, "v");
    duplicate_named(&lines, 3, "k");
    let docs = reasons(&env, "docs").await;
    duplicate_named(&docs, 2, "site");
    // The record as the source sent it: both values.
    assert!(
        docs[0].2.contains("\"B\"") && docs[0].2.contains("\"b\""),
        "{docs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_present_twice_rejects_its_api_record() {
    let server = crate::http::Server::start(|_| {
        crate::http::Reply::Json(
            200,
            r#"{"items": [
                {"t": "2024-06-01T00:00:00Z", "v": 0},
                {"t": "2024-06-01T01:00:00Z", "v": 1, "v": 10},
                {"t": "2024-06-01T02:00:00Z", "v": 2}
            ]}"#
            .into(),
        )
    })
    .await;
    let env = Env::new().await;
    let p = env.pipeline(&format!(
        r#"
[[job]]
name = "hourly"
table = "bronze.hourly"
event_time = {{ kind = "offset", column = "t" }}
columns = [{{ name = "v", type = "long", required = true }}]
reject_threshold = 1.0
source = {{ api = "json", url = "{}/v1/series?day={{date}}", records = "items" }}
"#,
        server.base
    ));
    let (reports, outcome) = ingest(&p, &request("2024-06-01", "2024-06-01", "h1")).await;
    outcome.expect("ingest");
    assert_eq!(
        (reports[0].rows_written, reports[0].rows_rejected),
        (2, 1),
        "{:?}",
        reports[0].sample_rejects
    );
    let reasons: Vec<&str> = reports[0]
        .sample_rejects
        .iter()
        .map(|r| r.reason.as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("duplicate key \"v\"")),
        "{reasons:?}"
    );
}
