//! Catalog throughput and latency over real HTTP on 127.0.0.1.
//!
//! `cargo bench -p floe-catalog --bench catalog` starts the server in this
//! process (SQLite store, local warehouse in a temp folder) and measures:
//! 1. commits/s with 1 client, with 8 concurrent clients on one table and
//!    with 8 clients on 8 tables, each commit an
//!    append as Spark or pyiceberg sends it (`add-snapshot` + `set-snapshot-ref`
//!    guarded by `assert-ref-snapshot-id`), 409s retried after a reload;
//! 2. load-table latency p50/p99 on a table with 1,000 snapshots.
//!
//! Figures print as `name: value`; BENCHMARKS.md records them.
//! Env: FLOE_BENCH_COMMITS (default 400 per run), FLOE_BENCH_LOADS (default 500).

use std::time::{Duration, Instant};

use floe_catalog::{AuthConfig, CatalogConfig, S3Options};
use serde_json::{Value, json};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let value = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, value)
    }

    async fn load(&self, table: &str) -> Value {
        self.http
            .get(format!("{}/v1/namespaces/bench/tables/{table}", self.base))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    async fn create_table(&self, name: &str) {
        let (status, body) = self
            .post(
                "/v1/namespaces/bench/tables",
                &json!({"name": name, "schema": {"type": "struct", "schema-id": 0, "fields": [
                    {"id": 1, "name": "ts_utc", "type": "timestamptz", "required": false},
                    {"id": 2, "name": "value", "type": "double", "required": false}]},
                    "partition-spec": {"fields": [{"source-id": 1, "transform": "day", "name": "d"}]}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// One append commit, retried on 409 after a reload. Returns retries.
    async fn append(&self, table: &str, writer: usize, seq: usize) -> usize {
        let mut meta = self.load(table).await["metadata"].clone();
        for retry in 0..1000 {
            let parent = meta["current-snapshot-id"].as_i64();
            let next_seq = meta["last-sequence-number"].as_i64().unwrap_or(0) + 1;
            let id = ((writer as i64) << 40) | ((seq as i64) << 12) | retry as i64;
            let location = meta["location"].as_str().unwrap_or_default();
            let snapshot = json!({
                "snapshot-id": id, "sequence-number": next_seq,
                "timestamp-ms": chrono_ms(), "schema-id": 0,
                "manifest-list": format!("{location}/metadata/snap-{id}.avro"),
                "summary": {"operation": "append", "added-records": "48"},
            });
            let mut snapshot = snapshot;
            if let Some(p) = parent {
                snapshot["parent-snapshot-id"] = json!(p);
            }
            let body = json!({
                "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": parent}],
                "updates": [
                    {"action": "add-snapshot", "snapshot": snapshot},
                    {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": id}
                ]
            });
            let (status, resp) = self
                .post(&format!("/v1/namespaces/bench/tables/{table}"), &body)
                .await;
            match status {
                200 => return retry,
                409 => meta = self.load(table).await["metadata"].clone(),
                other => panic!("commit answered {other}: {resp}"),
            }
        }
        panic!("gave up after 1000 retries");
    }
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `total` appends by `clients` concurrent writers; writer `w` commits to
/// `tables[w % tables.len()]`.
async fn commits(client: &Client, label: &str, tables: &[&str], clients: usize, total: usize) {
    for t in tables {
        client.create_table(t).await;
    }
    let per = total / clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let c = Client {
            http: client.http.clone(),
            base: client.base.clone(),
        };
        let table = tables[w % tables.len()].to_string();
        tasks.push(tokio::spawn(async move {
            let mut retries = 0;
            for s in 0..per {
                retries += c.append(&table, w, s).await;
            }
            retries
        }));
    }
    let mut retries = 0;
    for t in tasks {
        retries += t.await.expect("writer");
    }
    let secs = start.elapsed().as_secs_f64();
    let n = per * clients;
    println!(
        "commits_per_s_{label}: {:.1}  ({n} commits in {secs:.2} s, {retries} retries after 409)",
        n as f64 / secs
    );
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("floe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = CatalogConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        warehouse: format!("file://{}/wh", dir.display()),
        name: "floe".into(),
        db_url: format!("sqlite://{}/catalog.db", dir.display()),
        s3: S3Options::default(),
        vend_credentials: false,
        auth: AuthConfig::default(),
        max_body_bytes: 64 * 1024 * 1024,
        limits: Default::default(),
    };
    let running = floe_catalog::spawn(config).await.expect("catalog starts");
    let client = Client {
        http: reqwest::Client::new(),
        base: running.uri(),
    };
    let (status, _) = client
        .post("/v1/namespaces", &json!({"namespace": ["bench"]}))
        .await;
    assert_eq!(status, 200);

    let total = env_usize("FLOE_BENCH_COMMITS", 400);
    commits(&client, "1_client", &["one_client"], 1, total).await;
    commits(&client, "8_clients_one_table", &["shared"], 8, total).await;
    let own: Vec<String> = (0..8).map(|i| format!("own_{i}")).collect();
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    commits(&client, "8_clients_own_tables", &own, 8, total).await;

    // A table with 1,000 snapshots, then sequential loads.
    client.create_table("history").await;
    for s in 0..1000 {
        client.append("history", 0, s).await;
    }
    let loaded = client.load("history").await;
    let snapshots = loaded["metadata"]["snapshots"]
        .as_array()
        .map_or(0, Vec::len);
    let bytes = loaded.to_string().len();
    let mut times = Vec::new();
    for _ in 0..env_usize("FLOE_BENCH_LOADS", 500) {
        let t = Instant::now();
        let _ = client.load("history").await;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "load_table_1000_snapshots_ms: p50 {:.2}  p99 {:.2}  ({snapshots} snapshots, {} KiB response)",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        bytes / 1024
    );
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
