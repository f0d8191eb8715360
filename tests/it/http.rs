//! HTTP API sources against an in-process server on 127.0.0.1 that answers
//! in each API's format and misbehaves on purpose: 429 with Retry-After,
//! 500s, a body cut off mid-stream, a request that outlives its timeout, and
//! rate limits or errors in 200 bodies. The table must come out exactly
//! right, retries bounded, failures loud; `--replay` rebuilds the same table
//! with no request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::{Array, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use floe::pipeline::ZoneName;

use crate::common::{Env, ingest, instants_per_day, request, rows};

/// What the fixture server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: HeaderMap,
    /// 1-based number of the request.
    pub n: usize,
}

/// How the fixture server answers.
pub enum Reply {
    Json(u16, String),
    RetryAfter(u16, u64, String),
    /// Sends the first half of the body, then drops the connection.
    Cut(String),
    /// Answers after `Duration` (longer than the client's timeout).
    Slow(Duration, String),
    /// 302 to this URL.
    Redirect(String),
}

type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub struct Server {
    pub base: String,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub async fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let script: Script = Arc::new(script);
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (hits.clone(), seen.clone());
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (script, hits, seen) = (script.clone(), h.clone(), s.clone());
            async move {
                let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                let query = req
                    .uri()
                    .query()
                    .and_then(|q| reqwest::Url::parse(&format!("http://x/?{q}")).ok())
                    .map(|u| u.query_pairs().into_owned().collect::<BTreeMap<_, _>>())
                    .unwrap_or_default();
                let at = Seen {
                    path: req.uri().path().to_string(),
                    query,
                    headers: req.headers().clone(),
                    n,
                };
                seen.lock().expect("lock").push(at.clone());
                answer(script(&at)).await
            }
        });
        Self {
            base: crate::common::serve(app).await,
            hits,
            seen,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn answer(reply: Reply) -> Response {
    let json = |status: u16, body: String| {
        (
            StatusCode::from_u16(status).expect("status"),
            [("content-type", "application/json")],
            body,
        )
            .into_response()
    };
    match reply {
        Reply::Json(status, body) => json(status, body),
        Reply::RetryAfter(status, secs, body) => {
            let mut r = json(status, body);
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("header"));
            r
        }
        Reply::Cut(body) => {
            let half = Bytes::from(body[..body.len() / 2].to_string());
            let parts: Vec<Result<Bytes, std::io::Error>> =
                vec![Ok(half), Err(std::io::Error::other("connection lost"))];
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(futures::StreamExt::then(
                    futures::stream::iter(parts),
                    // The half goes out with the headers before the cut.
                    |p| async move {
                        if p.is_err() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        p
                    },
                )))
                .expect("response")
        }
        Reply::Redirect(to) => (StatusCode::FOUND, [("location", to)], "").into_response(),
        Reply::Slow(delay, body) => {
            tokio::time::sleep(delay).await;
            json(200, body)
        }
    }
}

fn london() -> ZoneName {
    ZoneName::try_from("Europe/London".to_string()).expect("zone")
}

/// Demand of a settlement period, as the fixture serves it.
fn demand(date: NaiveDate, period: i64) -> f64 {
    use chrono::Datelike;
    20_000.0 + f64::from(date.ordinal()) * 10.0 + period as f64
}

/// The CKAN `datastore_search_sql` fixture: the dates in the WHERE clause,
/// then LIMIT/OFFSET, over half-hourly settlement periods in UK local time.
fn ckan_records(sql: &str) -> Vec<serde_json::Value> {
    let dates: Vec<NaiveDate> = sql
        .split('\'')
        .filter_map(|s| s.parse::<NaiveDate>().ok())
        .collect();
    let number_after = |word: &str| -> usize {
        sql.split_whitespace()
            .skip_while(|w| *w != word)
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (limit, offset) = (number_after("LIMIT"), number_after("OFFSET"));
    let clock = floe::event_time::PeriodClock {
        zone: london().0,
        minutes: 30,
    };
    let mut all = Vec::new();
    let mut id = 0;
    for day in dates[0].iter_days().take_while(|d| *d <= dates[1]) {
        for period in 1..=clock.periods_in_day(day).expect("periods") {
            id += 1;
            all.push(serde_json::json!({
                "_id": id,
                "_full_text": "'noise'",
                "SETTLEMENT_DATE": format!("{day}T00:00:00"),
                "SETTLEMENT_PERIOD": period,
                "ND": demand(day, period),
            }));
        }
    }
    all.into_iter().skip(offset).take(limit).collect()
}

fn ckan_body(records: Vec<serde_json::Value>) -> String {
    serde_json::json!({
        "help": "https://api.neso.energy/api/3/action/help_show?name=datastore_search_sql",
        "success": true,
        "result": {
            "records": records,
            "fields": [
                {"id": "_id", "type": "int"},
                {"id": "SETTLEMENT_DATE", "type": "timestamp"},
                {"id": "SETTLEMENT_PERIOD", "type": "int4"},
                {"id": "ND", "type": "int4"}
            ]
        }
    })
    .to_string()
}

fn ckan_job(base: &str, extra: &str) -> String {
    format!(
        r#"
[[job]]
name = "demand"
table = "bronze.demand"
event_time = {{ kind = "period", date_column = "SETTLEMENT_DATE", period_column = "SETTLEMENT_PERIOD", zone = "Europe/London" }}
columns = [
  {{ name = "settlement_date", type = "date", required = true, from = "SETTLEMENT_DATE" }},
  {{ name = "settlement_period", type = "int", required = true, from = "SETTLEMENT_PERIOD" }},
  {{ name = "demand_mw", type = "double", required = true, from = "ND" }},
]
sort = ["ts_utc"]
{extra}

[job.source]
api = "ckan"
url = "{base}/api/3/action/datastore_search_sql"
params = {{ sql = "SELECT * FROM \"demand\" WHERE \"SETTLEMENT_DATE\" >= '{{from}}' AND \"SETTLEMENT_DATE\" <= '{{to}}' ORDER BY \"_id\" LIMIT {{limit}} OFFSET {{offset}}" }}
pagination = {{ kind = "offset", limit = 40 }}
pad_days = 1
concurrency = 2
rate_limit = "50/s"
timeout = "1s"
retries = 3
backoff = "20ms"
max_backoff = "100ms"

[job.expect]
cadence = "30m"
"#
    )
}

/// (ts_utc, demand, _hash, _source) of every row, sorted.
fn contents(batches: &[RecordBatch]) -> Vec<(i64, String, String, String)> {
    let mut out = Vec::new();
    for b in batches {
        let col = |n: &str| b.column_by_name(n).expect("column").clone();
        let ts = col("ts_utc");
        let ts = ts
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("ts");
        let d = col("demand_mw");
        let d = d.as_any().downcast_ref::<Float64Array>().expect("demand");
        let h = col("_hash");
        let src = col("_source");
        let text = |a: &dyn Array, i: usize| {
            arrow_cast::display::ArrayFormatter::try_new(a, &Default::default())
                .expect("formatter")
                .value(i)
                .to_string()
        };
        for i in 0..b.num_rows() {
            out.push((
                ts.value(i),
                d.value(i).to_string(),
                text(h.as_ref(), i),
                src.as_any()
                    .downcast_ref::<StringArray>()
                    .expect("source")
                    .value(i)
                    .to_string(),
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ckan_pages_survive_faults_and_replay_sends_no_request() {
    let server = Server::start(|s| {
        let body = ckan_body(ckan_records(s.query.get("sql").map_or("", String::as_str)));
        match s.n {
            1 => Reply::RetryAfter(
                429,
                1,
                r#"{"success": false, "error": "Too Many Requests"}"#.into(),
            ),
            3 => Reply::Json(500, "<html>Internal Server Error</html>".into()),
            5 => Reply::Cut(body),
            7 => Reply::Slow(Duration::from_secs(3), body),
            _ => Reply::Json(200, body),
        }
    })
    .await;
    let env = Env::new().await;
    let p = env.pipeline(&ckan_job(&server.base, ""));
    let (reports, outcome) = ingest(&p, &request("2024-03-30", "2024-04-01", "r1")).await;
    outcome.expect("the faults are retried");
    let r = &reports[0];
    let http = r.http.as_ref().expect("http report");
    // Three UTC days, each asked as its local dates ±1 (142 records, pages
    // of 40): 12 pages, plus one failed attempt per fault.
    assert_eq!(
        (http.pages, http.retries, http.requests),
        (12, 4, 16),
        "{http:?}"
    );
    assert_eq!(server.hits(), 16);
    assert_eq!(http.manifests.len(), 3);
    assert_eq!(
        http.raw_files.len(),
        14,
        "every body received whole is landed (the 429 and 500 ones too)"
    );
    for f in &http.raw_files {
        let path = f.strip_prefix("file://").expect("local");
        assert!(std::path::Path::new(path).is_file(), "{f}");
        assert!(f.contains("/raw/demand/dt=2024-"), "{f}");
    }

    let batches = env.scan("bronze", "demand").await;
    let per_day = instants_per_day(&batches);
    assert_eq!(per_day.len(), 3);
    for (day, instants) in &per_day {
        let mut distinct = instants.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 48, "{day}: every UTC half-hour once");
        assert_eq!(instants.len(), 48, "{day}: no duplicates");
    }
    // Every row carries the demand of its own settlement period.
    let clock = floe::event_time::PeriodClock {
        zone: london().0,
        minutes: 30,
    };
    let mut expected = BTreeMap::new();
    for day in "2024-03-29"
        .parse::<NaiveDate>()
        .expect("date")
        .iter_days()
        .take(5)
    {
        for period in 1..=clock.periods_in_day(day).expect("periods") {
            expected.insert(clock.to_utc(day, period).expect("utc"), demand(day, period));
        }
    }
    let first = contents(&batches);
    assert_eq!(first.len(), 144);
    for (ts, d, _, _) in &first {
        assert_eq!(d.parse::<f64>().ok(), expected.get(ts).copied(), "at {ts}");
    }

    // Replay: the same table, not one request.
    let before = server.hits();
    let mut req = request("2024-03-30", "2024-04-01", "r2");
    req.replay = true;
    let (reports, outcome) = ingest(&p, &req).await;
    outcome.expect("replays");
    assert_eq!(server.hits(), before, "replay sends no request");
    let http = reports[0].http.as_ref().expect("http report");
    assert!(http.replayed && http.requests == 0 && http.raw_files.is_empty());
    let again = contents(&env.scan("bronze", "demand").await);
    assert_eq!(
        again, first,
        "replay rebuilds the same rows, hashes and sources"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_bounded_and_loud_and_commit_nothing() {
    let env = Env::new().await;
    // 503 forever: 1 + 3 retries, then the run fails naming the URL.
    let server = Server::start(|_| Reply::Json(503, "busy".into())).await;
    let p = env.pipeline(&ckan_job(&server.base, ""));
    let (_, outcome) = ingest(&p, &request("2024-03-30", "2024-03-30", "f1")).await;
    let err = outcome.expect_err("gives up").to_string();
    assert!(
        err.contains("gave up after 4 attempts") && err.contains("503"),
        "{err}"
    );
    assert_eq!(server.hits(), 4, "bounded");
    let client = env.client_with(Default::default()).await;
    let table = client
        .load_table(&["bronze".to_string()], "demand")
        .await
        .expect("load");
    assert!(
        table.is_none_or(|t| t.metadata.current_snapshot().is_none()),
        "nothing committed"
    );

    // A Retry-After beyond max_retry_after gives up at once.
    let server = Server::start(|_| Reply::RetryAfter(429, 3600, "slow down".into())).await;
    let p = env.pipeline(&ckan_job(&server.base, ""));
    let (_, outcome) = ingest(&p, &request("2024-03-30", "2024-03-30", "f2")).await;
    let err = outcome.expect_err("gives up").to_string();
    assert!(err.contains("asks to wait 3600s"), "{err}");
    assert_eq!(server.hits(), 1);

    // An error body is not retried.
    let server = Server::start(|_| {
        Reply::Json(
            200,
            r#"{"success": false, "error": {"message": "Resource not found"}}"#.into(),
        )
    })
    .await;
    let p = env.pipeline(&ckan_job(&server.base, ""));
    let (reports, outcome) = ingest(&p, &request("2024-03-30", "2024-03-30", "f3")).await;
    let err = outcome.expect_err("fails").to_string();
    assert!(err.contains("Resource not found"), "{err}");
    assert_eq!(server.hits(), 1);
    assert_eq!(reports[0].http.as_ref().map(|h| h.error_bodies), Some(1));

    // Truncated every time: the body error is retried, then reported.
    let server = Server::start(|s| {
        Reply::Cut(ckan_body(ckan_records(
            s.query.get("sql").map_or("", String::as_str),
        )))
    })
    .await;
    let p = env.pipeline(&ckan_job(&server.base, ""));
    let (_, outcome) = ingest(&p, &request("2024-03-30", "2024-03-30", "f4")).await;
    let err = outcome.expect_err("fails").to_string();
    assert!(err.contains("broke off"), "{err}");
    assert_eq!(server.hits(), 4);

    // An empty answer for a day would empty it: the contract stops the run
    // (exit code 1) before anything is written.
    let server = Server::start(|_| Reply::Json(200, ckan_body(Vec::new()))).await;
    let p = env.pipeline(&ckan_job(&server.base, ""));
    let (reports, outcome) = ingest(&p, &request("2024-03-30", "2024-03-30", "f5")).await;
    let err = outcome.expect_err("empty day");
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("no rows for 2024-03-30"), "{err}");
    assert_eq!(reports[0].http.as_ref().map(|h| h.empty_responses), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cadence_gaps_and_duplicate_keys_break_the_contract() {
    // Generic JSON, paged by next link: site b misses 01:00 and repeats 02:00.
    let server = Server::start(|s| {
        let page: usize = s.query.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
        let mut rows = Vec::new();
        for site in ["a", "b"] {
            for hour in 0..24 {
                rows.push(serde_json::json!({
                    "site": site,
                    "time": format!("2024-05-01T{hour:02}:00:00Z"),
                    "value": hour,
                }));
            }
        }
        rows.retain(|r| !(r["site"] == "b" && r["time"] == "2024-05-01T01:00:00Z"));
        rows.push(serde_json::json!({"site": "b", "time": "2024-05-01T02:00:00Z", "value": 99}));
        let chunk: Vec<_> = rows.chunks(20).nth(page).map(<[_]>::to_vec).unwrap_or_default();
        let next = (page + 1) * 20 < rows.len();
        Reply::Json(
            200,
            serde_json::json!({
                "data": chunk,
                "links": { "next": if next { serde_json::Value::from(format!("/obs?page={}", page + 1)) } else { serde_json::Value::Null } }
            })
            .to_string(),
        )
    })
    .await;
    let env = Env::new().await;
    let job = |limits: &str| {
        format!(
            r#"
[[job]]
name = "obs"
table = "bronze.obs"
event_time = {{ kind = "offset", column = "time" }}
columns = [
  {{ name = "site", type = "string", required = true }},
  {{ name = "value", type = "long" }},
]
source = {{ api = "json", url = "{}/obs", records = "data", pagination = {{ kind = "next", path = "links.next" }}, backoff = "10ms", max_backoff = "10ms" }}
expect = {{ key = ["site"], cadence = "1h"{limits} }}
"#,
            server.base
        )
    };
    let p = env.pipeline(&job(""));
    let (reports, outcome) = ingest(&p, &request("2024-05-01", "2024-05-01", "c1")).await;
    let err = outcome.expect_err("broken contract");
    let msg = err.to_string();
    assert_eq!(err.exit_code(), 1);
    assert!(
        msg.contains("1 duplicate rows") && msg.contains("1 missing intervals"),
        "{msg}"
    );
    assert!(
        msg.contains("gap: key (\"b\") at 2024-05-01T01:00:00Z"),
        "{msg}"
    );
    assert_eq!(reports[0].http.as_ref().map(|h| h.pages), Some(3));
    let p = env.pipeline(&job(", max_gaps = 1, max_duplicates = 1"));
    let (reports, outcome) = ingest(&p, &request("2024-05-01", "2024-05-01", "c2")).await;
    outcome.expect("within the limits");
    let found = reports[0].expect.as_ref().expect("expect report");
    assert_eq!((found.gaps, found.duplicates), (1, 1));
    assert_eq!(rows(&env.scan("bronze", "obs").await), 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intraday_run_counts_only_the_slots_already_due() {
    // An hourly series published an hour late: at 10:20 the API has the
    // rows up to 09:00.
    let server = Server::start(|_| {
        let rows: Vec<_> = (0..10)
            .map(|hour| serde_json::json!({"time": format!("2024-05-01T{hour:02}:00:00Z"), "value": hour}))
            .collect();
        Reply::Json(200, serde_json::json!({ "data": rows }).to_string())
    })
    .await;
    let env = Env::new().await;
    let job = |expect: &str| {
        format!(
            r#"
[[job]]
name = "obs"
table = "bronze.obs"
event_time = {{ kind = "offset", column = "time" }}
columns = [ {{ name = "value", type = "long" }} ]
source = {{ api = "json", url = "{}/obs", records = "data" }}
expect = {{ cadence = "1h"{expect} }}
"#,
            server.base
        )
    };
    let at = |time: &str| {
        chrono::DateTime::parse_from_rfc3339(time)
            .expect("time")
            .to_utc()
    };
    let run = |now: &str, id: &str| floe::ingest::IngestRequest {
        now: at(now),
        max_records: None,
        ..request("2024-05-01", "2024-05-01", id)
    };
    let delayed = env.pipeline(&job(", publication_delay = \"1h\""));
    let (reports, outcome) = ingest(&delayed, &run("2024-05-01T10:20:00Z", "i1")).await;
    outcome.expect("every slot due so far is there");
    let found = reports[0].expect.as_ref().expect("expect report");
    assert_eq!(found.gaps, 0, "{:?}", found.examples);
    assert_eq!(found.not_due_from.as_deref(), Some("2024-05-01T09:20:00Z"));
    assert_eq!(rows(&env.scan("bronze", "obs").await), 10);

    // Without the delay the 10:00 row is due at 10:20 and missing.
    let prompt = env.pipeline(&job(""));
    let (_, outcome) = ingest(&prompt, &run("2024-05-01T10:20:00Z", "i2")).await;
    let err = outcome.expect_err("10:00 is due");
    assert!(err.to_string().contains("1 missing intervals"), "{err}");

    // The next day every slot of the day is due: 14 are missing.
    let (_, outcome) = ingest(&delayed, &run("2024-05-02T06:00:00Z", "i3")).await;
    let err = outcome.expect_err("the whole day is due");
    assert!(err.to_string().contains("14 missing intervals"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_each_entries_come_from_a_file_or_a_catalog_table() {
    // One price per ticker and day.
    let server = Server::start(|s| {
        let symbol = s.query.get("symbol").cloned().unwrap_or_default();
        let rows: Vec<_> = ["2024-05-01", "2024-05-02"]
            .iter()
            .map(|d| serde_json::json!({"date": d, "close": symbol.len()}))
            .collect();
        Reply::Json(200, serde_json::json!({ "data": rows }).to_string())
    })
    .await;
    let env = Env::new().await;
    let prices = |for_each: &str| {
        format!(
            r#"
[[job]]
name = "prices"
table = "bronze.prices"
event_time = {{ kind = "date", column = "date" }}
columns = [
  {{ name = "symbol", type = "string", required = true }},
  {{ name = "close", type = "double" }},
]
source = {{ api = "json", url = "{}/prices", params = {{ symbol = "{{symbol}}" }}, records = "data", for_each = {for_each} }}
"#,
            server.base
        )
    };
    // From a CSV file beside the pipeline.
    env.write(
        "tickers.csv",
        "symbol,name\nIBM,International\nMSFT,Microsoft\n",
    );
    let p = env.pipeline(&prices(r#"{ file = "tickers.csv" }"#));
    let (_, outcome) = ingest(&p, &request("2024-05-01", "2024-05-02", "f1")).await;
    outcome.expect("both tickers");
    let batches = env.scan("bronze", "prices").await;
    let mut seen = crate::common::strings(&batches, "symbol");
    seen.sort();
    assert_eq!(seen, ["IBM", "IBM", "MSFT", "MSFT"]);

    // From a reference table of the catalog, filtered.
    env.write(
        "data/tickers.csv",
        "symbol,active\nAAPL,true\nNVDA,true\nGONE,false\n",
    );
    let reference = r#"
[[job]]
name = "tickers"
table = "ref.tickers"
source = { path = "data/tickers.csv", format = "csv" }
columns = [
  { name = "symbol", type = "string", required = true },
  { name = "active", type = "boolean" },
]
"#;
    let p = env.pipeline(reference);
    let (_, outcome) = ingest(&p, &request("2024-05-01", "2024-05-01", "t1")).await;
    outcome.expect("the ticker list");
    let p = env.pipeline(&prices(
        r#"{ table = "ref.tickers", columns = ["symbol"], where = "active" }"#,
    ));
    let (_, outcome) = ingest(&p, &request("2024-05-01", "2024-05-02", "f2")).await;
    outcome.expect("the active tickers");
    let batches = env.scan("bronze", "prices").await;
    let mut seen = crate::common::strings(&batches, "symbol");
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        ["AAPL", "NVDA"],
        "the window's days hold the active tickers only"
    );

    // An empty list is an error, not a run that asks nothing.
    env.write("tickers.csv", "symbol\n");
    let p = env.pipeline(&prices(r#"{ file = "tickers.csv" }"#));
    let (_, outcome) = ingest(&p, &request("2024-05-01", "2024-05-02", "f3")).await;
    let err = outcome.expect_err("no entries");
    assert!(err.to_string().contains("gave no entries"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_entry_is_skipped_and_its_rows_are_kept() {
    // Closes per ticker and day; from the second run on, GONE is refused.
    let run = Arc::new(AtomicUsize::new(1));
    let r = run.clone();
    let server = Server::start(move |s| {
        let symbol = s.query.get("symbol").cloned().unwrap_or_default();
        let n = r.load(Ordering::SeqCst);
        if symbol == "GONE" && n > 1 {
            return Reply::Json(400, r#"{"error": "unknown symbol"}"#.into());
        }
        let rows: Vec<_> = ["2024-05-01", "2024-05-02"]
            .iter()
            .map(|d| serde_json::json!({"date": d, "close": (n * 100 + symbol.len()) as f64}))
            .collect();
        Reply::Json(200, serde_json::json!({ "data": rows }).to_string())
    })
    .await;
    let env = Env::new().await;
    let job = |on_error: &str, symbol_column: bool| {
        format!(
            r#"
[[job]]
name = "prices"
table = "bronze.prices"
event_time = {{ kind = "date", column = "date" }}
columns = [
  {}
  {{ name = "close", type = "double" }},
]
schema_drift = "ignore"
source = {{ api = "json", url = "{}/prices", params = {{ symbol = "{{symbol}}" }}, records = "data", retries = 0, backoff = "10ms", max_backoff = "10ms", for_each = [{{ symbol = "IBM" }}, {{ symbol = "GONE" }}, {{ symbol = "MSFT" }}]{on_error} }}
"#,
            if symbol_column {
                r#"{ name = "symbol", type = "string", required = true },"#
            } else {
                ""
            },
            server.base
        )
    };
    let closes = |batches: &[RecordBatch]| {
        let mut out: Vec<(String, f64)> = Vec::new();
        for b in batches {
            let sym = b
                .column_by_name("symbol")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .expect("symbol");
            let close = b
                .column_by_name("close")
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                .expect("close");
            for i in 0..b.num_rows() {
                out.push((sym.value(i).to_string(), close.value(i)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        out
    };
    let skip = env.pipeline(&job(", on_entry_error = \"skip\"", true));
    let (_, outcome) = ingest(&skip, &request("2024-05-01", "2024-05-02", "s1")).await;
    outcome.expect("every ticker answers");
    let before = env.scan("bronze", "prices").await;
    assert_eq!(closes(&before).len(), 6);
    let gone_before: Vec<_> = closes(&before)
        .into_iter()
        .filter(|(s, _)| s == "GONE")
        .collect();

    // The default: one refused ticker fails the run, nothing committed.
    run.store(2, Ordering::SeqCst);
    let strict = env.pipeline(&job("", true));
    let (_, outcome) = ingest(&strict, &request("2024-05-01", "2024-05-02", "s2")).await;
    assert_eq!(outcome.expect_err("GONE is refused").exit_code(), 2);
    assert_eq!(closes(&env.scan("bronze", "prices").await), closes(&before));

    // Skipped: the others land, GONE's rows stay as they were, exit 3.
    let (reports, outcome) = ingest(&skip, &request("2024-05-01", "2024-05-02", "s3")).await;
    let err = outcome.expect_err("partial");
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.to_string().contains("symbol=GONE"), "{err}");
    let r = &reports[0];
    assert_eq!(r.status, "partial");
    assert_eq!(r.rows_kept, 2);
    let failed = &r.http.as_ref().expect("http").failed_entries;
    assert!(
        !failed.is_empty()
            && failed
                .iter()
                .all(|f| f.entry["symbol"] == "GONE" && f.error.contains("400")),
        "{failed:?}"
    );
    let after = closes(&env.scan("bronze", "prices").await);
    assert_eq!(after.len(), 6);
    assert!(
        after
            .iter()
            .filter(|(s, _)| s != "GONE")
            .all(|(s, c)| *c == 200.0 + s.len() as f64),
        "the others are the second run's: {after:?}"
    );
    let gone_after: Vec<_> = after.into_iter().filter(|(s, _)| s == "GONE").collect();
    assert_eq!(gone_after, gone_before, "GONE's rows were kept");

    // Skipping needs a column that tells an entry's rows apart.
    let env = Env::new().await;
    let blind = env.pipeline(&job(", on_entry_error = \"skip\"", false));
    let (_, outcome) = ingest(&blind, &request("2024-05-01", "2024-05-02", "s4")).await;
    let err = outcome.expect_err("no key column");
    assert!(err.to_string().contains("on_entry_error"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_day_filter_asks_the_neighbouring_days() {
    // CKAN datastore_search filtered on a local date (+10:00): a UTC day
    // takes hours from two local days.
    let server = Server::start(|s| {
        let filters: serde_json::Value =
            serde_json::from_str(s.query.get("filters").map_or("{}", String::as_str))
                .unwrap_or_default();
        let mut records = Vec::new();
        for day in filters["DATE"].as_array().into_iter().flatten() {
            let day = day.as_str().unwrap_or_default();
            for hour in 0..24 {
                records.push(serde_json::json!({"DATE": day, "time": format!("{day}T{hour:02}:00:00+10:00"), "mw": hour}));
            }
        }
        Reply::Json(
            200,
            serde_json::json!({"success": true, "result": {"records": records, "total": records.len()}})
                .to_string(),
        )
    })
    .await;
    let env = Env::new().await;
    let job = |pad: u32| {
        format!(
            r#"
[[job]]
name = "nem"
table = "bronze.nem{pad}"
event_time = {{ kind = "offset", column = "time" }}
columns = [ {{ name = "mw", type = "double" }}, {{ name = "local_date", type = "string", from = "DATE" }} ]
source = {{ api = "ckan", url = "{}/api/3/action/datastore_search", params = {{ filters = '{{"DATE": [{{dates}}]}}' }}, pagination = {{ kind = "none" }}, chunk = "day", pad_days = {pad} }}
"#,
            server.base
        )
    };
    let padded = env.pipeline(&job(1));
    let (_, outcome) = ingest(&padded, &request("2024-01-02", "2024-01-02", "p1")).await;
    outcome.expect("padded");
    assert_eq!(
        rows(&env.scan("bronze", "nem1").await),
        24,
        "every UTC hour of the day"
    );
    let seen = server.seen.lock().expect("lock").clone();
    assert!(
        seen.iter().any(|s| s
            .query
            .get("filters")
            .is_some_and(|f| f.contains("\"2024-01-01\",\"2024-01-02\",\"2024-01-03\""))),
        "the request asked the neighbouring days"
    );
    let bare = env.pipeline(&job(0));
    let (_, outcome) = ingest(&bare, &request("2024-01-02", "2024-01-02", "p2")).await;
    outcome.expect("unpadded");
    assert_eq!(
        rows(&env.scan("bronze", "nem0").await),
        14,
        "without padding the day is short"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_meteo_per_site_and_alpha_vantage_rate_limit_bodies() {
    let server = Server::start(|s| match s.path.as_str() {
        "/v1/archive" => {
            let start: NaiveDate = s.query["start_date"].parse().expect("date");
            let end: NaiveDate = s.query["end_date"].parse().expect("date");
            let lat: f64 = s.query["latitude"].parse().expect("lat");
            let mut time = Vec::new();
            let mut temp = Vec::new();
            for day in start.iter_days().take_while(|d| *d <= end) {
                for h in 0..24 {
                    time.push(format!("{day}T{h:02}:00"));
                    temp.push(lat + f64::from(h) / 10.0);
                }
            }
            Reply::Json(
                200,
                serde_json::json!({
                    "latitude": lat, "longitude": -1.5, "generationtime_ms": 0.2,
                    "utc_offset_seconds": 0, "timezone": s.query["timezone"], "timezone_abbreviation": "GMT",
                    "elevation": 50.0,
                    "hourly_units": {"time": "iso8601", "temperature_2m": "°C"},
                    "hourly": {"time": time, "temperature_2m": temp}
                })
                .to_string(),
            )
        }
        _ if s.n <= 2 => Reply::Json(
            200,
            r#"{"Information": "Thank you for using Alpha Vantage! Please consider spreading out your free API requests more sparingly (1 request per second)."}"#.into(),
        ),
        _ => {
            let mut series = serde_json::Map::new();
            for (date, close) in [("2024-04-26", "170.1"), ("2024-04-19", "165.2"), ("2024-04-12", "160.3"), ("2024-03-28", "150.0")] {
                series.insert(
                    date.into(),
                    serde_json::json!({"1. open": "1.0", "2. high": "2.0", "3. low": "0.5", "4. close": close, "5. adjusted close": close, "6. volume": "1000", "7. dividend amount": "0.0000"}),
                );
            }
            Reply::Json(
                200,
                serde_json::json!({
                    "Meta Data": {"1. Information": "Weekly Adjusted Prices and Volumes", "2. Symbol": "IBM", "3. Last Refreshed": "2024-04-26", "4. Time Zone": "US/Eastern"},
                    "Weekly Adjusted Time Series": series
                })
                .to_string(),
            )
        }
    })
    .await;
    let env = Env::new().await;
    let p = env.pipeline(&format!(
        r#"
[[job]]
name = "prices"
table = "bronze.prices"
event_time = {{ kind = "date", column = "date" }}
columns = [
  {{ name = "symbol", type = "string", required = true }},
  {{ name = "adjusted_close", type = "double", required = true }},
  {{ name = "volume", type = "long" }},
]
schema_drift = "ignore"
expect = {{ empty_days = "allow" }}
source = {{ api = "alpha_vantage", url = "{base}/query", params = {{ function = "TIME_SERIES_WEEKLY_ADJUSTED", symbol = "IBM" }}, chunk = "window", concurrency = 1, backoff = "50ms", max_backoff = "50ms" }}

[[job]]
name = "weather"
table = "bronze.weather"
event_time = {{ kind = "offset", column = "time" }}
columns = [
  {{ name = "site_id", type = "string", required = true, from = "site" }},
  {{ name = "temperature_c", type = "double", from = "temperature_2m" }},
  {{ name = "latitude", type = "double" }},
  {{ name = "elevation_m", type = "double", from = "elevation" }},
]
source = {{ api = "open_meteo", url = "{base}/v1/archive", params = {{ latitude = "{{lat}}", longitude = "-1.5", start_date = "{{from}}", end_date = "{{to}}", hourly = "temperature_2m" }}, chunk = "7d", for_each = [{{ site = "leeds", lat = "53.8" }}, {{ site = "york", lat = "53.9" }}] }}
"#,
        base = server.base
    ));
    let (reports, outcome) = ingest(&p, &request("2024-04-01", "2024-04-30", "m1")).await;
    outcome.expect("both jobs land");
    let prices = &reports[0];
    let http = prices.http.as_ref().expect("http");
    assert_eq!(
        (http.error_bodies, http.retries, http.requests),
        (2, 2, 3),
        "{http:?}"
    );
    let batches = env.scan("bronze", "prices").await;
    let mut days: Vec<String> = instants_per_day(&batches).into_keys().collect();
    days.sort();
    assert_eq!(
        days,
        ["2024-04-12", "2024-04-19", "2024-04-26"],
        "weeks of the window only"
    );
    assert_eq!(prices.rows_outside_window, 1);

    let weather = &reports[1];
    // 30 days in 7-day ranges (5) for 2 sites.
    assert_eq!(weather.http.as_ref().map(|h| h.pages), Some(10));
    let batches = env.scan("bronze", "weather").await;
    assert_eq!(rows(&batches), 30 * 24 * 2);
    let seen = server.seen.lock().expect("lock").clone();
    let asked: Vec<&Seen> = seen.iter().filter(|s| s.path == "/v1/archive").collect();
    assert!(asked.iter().all(|s| s.query["timezone"] == "GMT"));
    assert!(asked.iter().all(|s| {
        s.headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("floe/"))
    }));
    assert!(
        asked
            .iter()
            .any(|s| s.query["start_date"] == "2024-04-29" && s.query["end_date"] == "2024-04-30")
    );
    let sites = crate::common::strings(&batches, "site_id");
    assert_eq!(sites.iter().filter(|s| *s == "york").count(), 720);
    // The answer's location, beside the hourly arrays, is on every row.
    let mut located = std::collections::BTreeSet::new();
    for b in &batches {
        let lat = b
            .column_by_name("latitude")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .expect("latitude");
        let elevation = b
            .column_by_name("elevation_m")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .expect("elevation");
        assert_eq!(lat.null_count() + elevation.null_count(), 0);
        for i in 0..b.num_rows() {
            located.insert(format!("{}@{}", lat.value(i), elevation.value(i)));
        }
    }
    assert_eq!(
        located.into_iter().collect::<Vec<_>>(),
        ["53.8@50", "53.9@50"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_pages_follow_the_cursor_and_dry_runs_send_nothing() {
    // Three pages chained by an opaque cursor; the last has none.
    let server = Server::start(|s| {
        let (rows, next) = match s.query.get("cursor").map(String::as_str) {
            None => (0..10, Some("c1")),
            Some("c1") => (10..20, Some("c2")),
            Some("c2") => (20..24, None),
            Some(other) => {
                return Reply::Json(400, format!("{{\"error\": \"bad cursor {other}\"}}"));
            }
        };
        let items: Vec<_> = rows
            .map(|h| serde_json::json!({"t": format!("2024-06-01T{h:02}:00:00Z"), "v": h}))
            .collect();
        Reply::Json(
            200,
            serde_json::json!({"items": items, "meta": {"next_cursor": next}}).to_string(),
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
expect = {{ cadence = "1h" }}
source = {{ api = "json", url = "{}/v1/series?day={{date}}", records = "items", pagination = {{ kind = "cursor", param = "cursor", path = "meta.next_cursor" }} }}
"#,
        server.base
    ));
    let mut dry = request("2024-06-01", "2024-06-01", "d1");
    dry.dry_run = true;
    let (reports, outcome) = ingest(&p, &dry).await;
    outcome.expect("plans");
    assert_eq!(server.hits(), 0, "a dry run sends nothing");
    assert_eq!(
        reports[0].files_read,
        [format!("{}/v1/series?day=2024-06-01", server.base)]
    );
    let (reports, outcome) = ingest(&p, &request("2024-06-01", "2024-06-01", "k1")).await;
    outcome.expect("lands");
    assert_eq!(server.hits(), 3);
    assert_eq!(reports[0].rows_written, 24);
    let cursors: Vec<Option<String>> = server
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|s| s.query.get("cursor").cloned())
        .collect();
    assert_eq!(cursors, [None, Some("c1".into()), Some("c2".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_elsewhere_and_paging_that_does_not_advance_stop_the_run() {
    let elsewhere = Server::start(|_| Reply::Json(200, "[]".into())).await;
    let target = format!("{}/stolen", elsewhere.base);
    let redirecting = Server::start(move |_| Reply::Redirect(target.clone())).await;
    let env = Env::new().await;
    let job = |url: &str, paging: &str| {
        format!(
            r#"
[[job]]
name = "j"
table = "bronze.j"
event_time = {{ kind = "offset", column = "t" }}
columns = [{{ name = "v", type = "long" }}]
source = {{ api = "json", url = "{url}", records = "items"{paging}, backoff = "10ms", max_backoff = "10ms" }}
"#
        )
    };
    let p = env.pipeline(&job(&format!("{}/data", redirecting.base), ""));
    let (_, outcome) = ingest(&p, &request("2024-06-01", "2024-06-01", "x1")).await;
    let err = outcome.expect_err("not followed").to_string();
    assert!(err.contains("redirect to another origin"), "{err}");
    assert_eq!(
        (redirecting.hits(), elsewhere.hits()),
        (1, 0),
        "no retry, nothing sent elsewhere"
    );

    // A server that ignores the cursor returns the same page forever.
    let stuck = Server::start(|_| {
        Reply::Json(
            200,
            r#"{"items": [{"t": "2024-06-01T00:00:00Z", "v": 1}], "next": "abc"}"#.into(),
        )
    })
    .await;
    let p = env.pipeline(&job(
        &format!("{}/data", stuck.base),
        r#", pagination = { kind = "cursor", param = "cursor", path = "next" }"#,
    ));
    let (_, outcome) = ingest(&p, &request("2024-06-01", "2024-06-01", "x2")).await;
    let err = outcome.expect_err("stuck").to_string();
    assert!(err.contains("paging does not advance"), "{err}");
    assert_eq!(stuck.hits(), 2);
}

/// `format = ["iceberg", "delta"]`: the Iceberg half fetches and lands the
/// bodies; the Delta half writes the same rows from those bodies without a
/// request of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_format_api_job_fetches_once_and_writes_both_tables() {
    let server = Server::start(|s| {
        Reply::Json(
            200,
            ckan_body(ckan_records(s.query.get("sql").map_or("", String::as_str))),
        )
    })
    .await;
    let env = Env::new().await;
    let jobs = ckan_job(&server.base, "format = [\"iceberg\", \"delta\"]")
        .replace("sort = [\"ts_utc\"]\n", "");
    let p = env.pipeline(&format!(
        "[delta]\nlocation = \"{}\"\n{jobs}",
        env.path("delta").display()
    ));
    let (reports, outcome) = ingest(&p, &request("2024-03-30", "2024-04-01", "two")).await;
    outcome.expect("both halves");
    assert_eq!(reports.len(), 2, "one report per format");
    let (iceberg, delta) = (&reports[0], &reports[1]);
    assert_eq!(
        (iceberg.format, delta.format),
        (
            floe::pipeline::TableFormat::Iceberg,
            floe::pipeline::TableFormat::Delta
        )
    );
    assert_eq!(
        (iceberg.status.as_str(), delta.status.as_str()),
        ("committed", "committed")
    );
    let fetched = iceberg.http.as_ref().expect("http").requests;
    assert!(fetched > 0);
    assert_eq!(
        server.hits() as u64,
        fetched,
        "the Delta half sent no request"
    );
    let replayed = delta.http.as_ref().expect("http");
    assert!(replayed.replayed && replayed.requests == 0, "{replayed:?}");
    assert_eq!(
        replayed.landing,
        iceberg.http.as_ref().expect("http").landing
    );
    assert_eq!(iceberg.rows_written, delta.rows_written);
    assert_eq!(delta.rows_written, 3 * 48, "48 UTC half-hours a day");

    // The same rows in both tables.
    let ctx = datafusion::prelude::SessionContext::new();
    let table = deltalake::DeltaTable::try_from_url(
        reqwest::Url::from_directory_path(env.path("delta/bronze/demand")).expect("url"),
    )
    .await
    .expect("open");
    table
        .update_datafusion_session(&ctx.state())
        .expect("session");
    ctx.register_table("d", table.table_provider().await.expect("provider"))
        .expect("register");
    let delta_rows = ctx
        .sql("SELECT CAST(ts_utc AS BIGINT) AS t, demand_mw FROM d ORDER BY t")
        .await
        .expect("sql")
        .collect()
        .await
        .expect("rows");
    let iceberg_rows = env.scan("bronze", "demand").await;
    let text = |b: &[RecordBatch]| {
        datafusion::arrow::util::pretty::pretty_format_batches(b)
            .expect("fmt")
            .to_string()
    };
    let mut want: Vec<(i64, f64)> = Vec::new();
    for b in &iceberg_rows {
        let ts = b
            .column_by_name("ts_utc")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .expect("ts");
        let v = b
            .column_by_name("demand_mw")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .expect("demand");
        for i in 0..b.num_rows() {
            want.push((ts.value(i), v.value(i)));
        }
    }
    want.sort_by_key(|w| w.0);
    let mut got: Vec<(i64, f64)> = Vec::new();
    for b in &delta_rows {
        let t = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .expect("t");
        let v = b
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("v");
        for i in 0..b.num_rows() {
            got.push((t.value(i), v.value(i)));
        }
    }
    assert_eq!(got, want, "{}", text(&delta_rows));
}
