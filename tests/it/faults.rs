//! A catalog that drops the answer to a commit and then restarts: the run
//! waits for it, finds its commit by run id and reports it as committed,
//! with the snapshot that is live on `main`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;

use crate::common::{Env, ingest, request, serve};

/// What the proxy does to the next requests.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Forward everything.
    Pass,
    /// Forward the next table commit, drop its answer, then be down for
    /// this long.
    DropNextCommit(Duration),
    /// Drop every connection until then (a catalog restarting).
    DownUntil(Instant),
}

/// A response that breaks the connection mid-answer.
fn broken() -> Response {
    let body = Body::from_stream(futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped"))
    }));
    Response::builder()
        .status(200)
        .header("content-length", "1000")
        .body(body)
        .expect("response")
}

fn is_table_commit(req: &Request) -> bool {
    let path = req.uri().path();
    req.method() == axum::http::Method::POST
        && path.contains("/tables/")
        && !path.ends_with("/tables")
}

/// A proxy in front of `upstream` whose behaviour `mode` sets.
async fn proxy(upstream: String, mode: Arc<Mutex<Mode>>) -> String {
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (http, upstream, mode) = (http.clone(), upstream.clone(), mode.clone());
        async move {
            let now = Instant::now();
            let current = *mode.lock().expect("mode");
            if let Mode::DownUntil(t) = current {
                if now < t {
                    return broken();
                }
                *mode.lock().expect("mode") = Mode::Pass;
            }
            let drop_answer = matches!(current, Mode::DropNextCommit(_)) && is_table_commit(&req);
            let url = format!(
                "{upstream}{}",
                req.uri().path_and_query().map_or("", |p| p.as_str())
            );
            let method = req.method().clone();
            let headers = req.headers().clone();
            let body = axum::body::to_bytes(req.into_body(), 64 << 20)
                .await
                .expect("body");
            let mut out = http.request(method, url).body(body);
            for (k, v) in &headers {
                if k != "host" && k != "content-length" {
                    out = out.header(k, v);
                }
            }
            let answer = out.send().await.expect("upstream answers");
            if drop_answer && let Mode::DropNextCommit(down) = current {
                // The commit reached the catalog; its answer never arrives.
                *mode.lock().expect("mode") = Mode::DownUntil(Instant::now() + down);
                return broken();
            }
            let status = answer.status();
            let bytes = answer.bytes().await.expect("upstream body");
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(bytes))
                .expect("response")
        }
    });
    serve(app).await
}

const JOB: &str = r#"
[[job]]
name = "readings"
table = "bronze.readings"
source = { path = "data/{date}.ndjson", format = "ndjson" }
event_time = { kind = "offset", column = "t" }
columns = [ { name = "v", type = "double" } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_in_a_restart_is_reported_committed() {
    let env = Env::new().await;
    for day in ["2024-01-01", "2024-01-02"] {
        env.write(
            &format!("data/{day}.ndjson"),
            &format!("{{\"t\":\"{day}T00:00:00Z\",\"v\":1}}\n"),
        );
    }
    let mode = Arc::new(Mutex::new(Mode::Pass));
    let uri = proxy(env.catalog.uri(), mode.clone()).await;
    let path = env.write("floe.toml", &format!("[catalog]\nuri = \"{uri}\"\n{JOB}"));
    let p = floe::pipeline::load(&path).expect("pipeline");
    ingest(&p, &request("2024-01-01", "2024-01-01", "first"))
        .await
        .1
        .expect("first run");

    *mode.lock().expect("mode") = Mode::DropNextCommit(Duration::from_secs(3));
    let started = Instant::now();
    let (reports, outcome) = ingest(&p, &request("2024-01-02", "2024-01-02", "second")).await;
    outcome.expect("the run waits for the catalog and finds its commit");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "it waited out the restart"
    );
    let live = env
        .client_with(Default::default())
        .await
        .load_table(&["bronze".to_string()], "readings")
        .await
        .expect("load")
        .expect("table")
        .metadata
        .current_snapshot_id();
    let r = &reports[0];
    assert_eq!(r.status, "committed", "{r:?}");
    assert_eq!(r.snapshot_id, live, "{r:?}");
    assert!(r.commit_attempts >= 1, "{r:?}");
    assert_eq!(r.rows_written, 1, "{r:?}");
}
