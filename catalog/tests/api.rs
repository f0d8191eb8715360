//! The catalog's REST API exercised in-process through the router (no
//! socket), against a real SQLite database and a real local warehouse.
//! Client-library conformance (pyiceberg, Spark) is tested from Python in
//! `tests/python`.

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use floe_catalog::{AuthConfig, Catalog, CatalogConfig, S3Options, Secret};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Harness {
    router: Router,
    token: Option<String>,
}

fn config(dir: &Path, db: Option<String>) -> CatalogConfig {
    let warehouse = format!("file://{}", dir.join("wh").display());
    CatalogConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        db_url: db.unwrap_or_else(|| format!("sqlite://{}/catalog.db", dir.display())),
        warehouse,
        name: "floe".into(),
        s3: S3Options::default(),
        vend_credentials: false,
        auth: AuthConfig::default(),
        max_body_bytes: 1024 * 1024,
        limits: Default::default(),
    }
}

impl Harness {
    async fn open(config: CatalogConfig) -> Self {
        let catalog = Catalog::open(config).await.expect("catalog opens");
        Self {
            router: catalog.router(),
            token: None,
        }
    }

    async fn new(dir: &Path) -> Self {
        Self::open(config(dir, None)).await
    }

    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Body,
        ctype: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ctype);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("router answers");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body {:?} for {path}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.call_raw(method, path, body, "application/json").await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path} → {status}: {value}");
        value
    }

    /// Sends a request that must fail with `want` and exception `kind`.
    async fn fails(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        want: StatusCode,
        kind: &str,
    ) {
        let (status, value) = self.call(method, path, body).await;
        assert_error(status, &value, want, kind);
    }

    async fn namespace(&self, name: &str) {
        self.ok(
            Method::POST,
            "/v1/namespaces",
            Some(json!({"namespace": [name]})),
        )
        .await;
    }

    async fn table(&self, ns: &str, name: &str) -> Value {
        self.ok(
            Method::POST,
            &format!("/v1/namespaces/{ns}/tables"),
            Some(create_table_body(name)),
        )
        .await
    }
}

fn create_table_body(name: &str) -> Value {
    json!({
        "name": name,
        "schema": {"type": "struct", "schema-id": 0, "fields": [
            {"id": 1, "name": "ts_utc", "type": "timestamptz", "required": false},
            {"id": 2, "name": "site_id", "type": "string", "required": false},
            {"id": 3, "name": "value", "type": "double", "required": false}
        ]},
        "partition-spec": {"fields": [{"source-id": 1, "transform": "day", "name": "ts_utc_day"}]},
        "properties": {"owner": "tests"}
    })
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, kind: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["code"], want.as_u16(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn set_property(key: &str, value: &str) -> Value {
    json!({"requirements": [], "updates": [{"action": "set-properties", "updates": {key: value}}]})
}

#[tokio::test]
async fn config_health_and_unknown_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    let cfg = h.ok(Method::GET, "/v1/config?warehouse=floe", None).await;
    assert!(cfg["endpoints"].as_array().is_some_and(|e| !e.is_empty()));
    h.fails(
        Method::GET,
        "/v1/config?warehouse=other",
        None,
        StatusCode::NOT_FOUND,
        "NotFoundException",
    )
    .await;
    assert_eq!(h.ok(Method::GET, "/healthz", None).await["status"], "ok");
    h.fails(
        Method::GET,
        "/v1/nope",
        None,
        StatusCode::NOT_FOUND,
        "NotFoundException",
    )
    .await;
    h.fails(
        Method::PUT,
        "/v1/namespaces",
        None,
        StatusCode::METHOD_NOT_ALLOWED,
        "BadRequestException",
    )
    .await;
}

#[tokio::test]
async fn namespace_lifecycle_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.namespace("a").await;
    h.fails(
        Method::POST,
        "/v1/namespaces",
        Some(json!({"namespace": ["a"]})),
        StatusCode::CONFLICT,
        "AlreadyExistsException",
    )
    .await;
    h.fails(
        Method::POST,
        "/v1/namespaces",
        Some(json!({"namespace": ["x", "y"]})),
        StatusCode::NOT_FOUND,
        "NoSuchNamespaceException",
    )
    .await;
    h.ok(
        Method::POST,
        "/v1/namespaces",
        Some(json!({"namespace": ["a", "b"]})),
    )
    .await;
    let children = h.ok(Method::GET, "/v1/namespaces?parent=a", None).await;
    assert_eq!(children["namespaces"], json!([["a", "b"]]));
    let (status, _) = h.call(Method::HEAD, "/v1/namespaces/a%1Fb", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    h.fails(
        Method::DELETE,
        "/v1/namespaces/a",
        None,
        StatusCode::CONFLICT,
        "NamespaceNotEmptyException",
    )
    .await;
    let updated = h
        .ok(
            Method::POST,
            "/v1/namespaces/a/properties",
            Some(json!({"updates": {"k": "v"}, "removals": ["gone"]})),
        )
        .await;
    assert_eq!(
        updated,
        json!({"updated": ["k"], "removed": [], "missing": ["gone"]})
    );
    h.fails(
        Method::POST,
        "/v1/namespaces/a/properties",
        Some(json!({"updates": {"k": "v"}, "removals": ["k"]})),
        StatusCode::UNPROCESSABLE_ENTITY,
        "UnprocessableEntityException",
    )
    .await;
    // A namespace without a location of its own reports its folder.
    let props = h.ok(Method::GET, "/v1/namespaces/a", None).await["properties"].clone();
    assert_eq!(props["k"], "v");
    let location = props["location"].as_str().expect("location");
    assert!(
        location.starts_with("file://") && location.ends_with("/a"),
        "{location}"
    );
    let nested = h.ok(Method::GET, "/v1/namespaces/a%1Fb", None).await;
    assert_eq!(
        nested["properties"]["location"].as_str(),
        Some(format!("{location}/b").as_str())
    );
    h.ok(Method::DELETE, "/v1/namespaces/a%1Fb", None).await;
    h.ok(Method::DELETE, "/v1/namespaces/a", None).await;
    h.fails(
        Method::GET,
        "/v1/namespaces/a",
        None,
        StatusCode::NOT_FOUND,
        "NoSuchNamespaceException",
    )
    .await;
}

#[tokio::test]
async fn pagination_returns_every_table_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.namespace("n").await;
    for i in 0..5 {
        h.table("n", &format!("t{i}")).await;
    }
    let mut names = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = h
            .ok(
                Method::GET,
                &format!("/v1/namespaces/n/tables?pageSize=2&pageToken={token}"),
                None,
            )
            .await;
        for id in page["identifiers"].as_array().expect("identifiers") {
            names.push(id["name"].as_str().expect("name").to_string());
        }
        match page["next-page-token"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert_eq!(names, ["t0", "t1", "t2", "t3", "t4"]);
}

#[tokio::test]
async fn bad_input_is_a_4xx_error_model_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.namespace("n").await;
    let created = h.table("n", "t").await;
    let before = created["metadata-location"].clone();
    let cases: Vec<(Method, &str, Body, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/v1/namespaces/n/tables/t",
            Body::from("{not json"),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
        (
            Method::POST,
            "/v1/namespaces/n/tables/t",
            Body::from("[]"),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
        (
            Method::POST,
            "/v1/namespaces/n/tables/t",
            Body::from(r#"{"namespace":"flat-string"}"#),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
        (
            Method::POST,
            "/v1/namespaces/n/tables/t",
            Body::from(r#"{"updates":[{"action":"drop-everything"}]}"#),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
        (
            Method::POST,
            "/v1/namespaces/n/tables/t",
            Body::from(vec![b' '; 2 * 1024 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "BadRequestException",
        ),
        (
            Method::POST,
            "/v1/namespaces/n/tables/t",
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
        (
            Method::POST,
            "/v1/namespaces/n/tables/missing",
            Body::from(set_property("a", "b").to_string()),
            StatusCode::NOT_FOUND,
            "NoSuchTableException",
        ),
        (
            Method::POST,
            "/v1/namespaces/n/tables/t",
            Body::from(
                r#"{"requirements":[{"type":"assert-table-uuid","uuid":"00000000-0000-0000-0000-000000000000"}],"updates":[]}"#,
            ),
            StatusCode::CONFLICT,
            "CommitFailedException",
        ),
        (
            Method::POST,
            "/v1/namespaces/n/tables/t",
            Body::from(
                r#"{"requirements":[],"updates":[{"action":"set-location","location":"file:///etc"}]}"#,
            ),
            StatusCode::FORBIDDEN,
            "ForbiddenException",
        ),
        (
            Method::POST,
            "/v1/namespaces/n/tables",
            Body::from(create_table_body("a.b").to_string()),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
        (
            Method::POST,
            "/v1/namespaces/n/tables",
            Body::from(create_table_body(&"x".repeat(300)).to_string()),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
        (
            Method::POST,
            "/v1/namespaces",
            Body::from(r#"{"namespace":[".."]}"#),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
        (
            Method::POST,
            "/v1/namespaces",
            Body::from(r#"{"namespace":["a\u0001"]}"#),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
        (
            Method::GET,
            "/v1/namespaces/n/tables/t?snapshots=some",
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
        (
            Method::GET,
            "/v1/namespaces?pageSize=-1",
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
        (
            Method::POST,
            "/v1/namespaces/n/register",
            Body::from(r#"{"name":"r","metadata-location":"file:///etc/passwd"}"#),
            StatusCode::FORBIDDEN,
            "ForbiddenException",
        ),
        (
            Method::POST,
            "/v1/transactions/commit",
            Body::from(r#"{"table-changes":[{"requirements":[],"updates":[]}]}"#),
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        ),
    ];
    for (method, path, body, want, kind) in cases {
        let (status, value) = h.call_raw(method, path, body, "application/json").await;
        assert_error(status, &value, want, kind);
    }
    let mut with_location = create_table_body("outside");
    with_location["location"] = json!("file:///tmp/elsewhere");
    let (status, value) = h
        .call(Method::POST, "/v1/namespaces/n/tables", Some(with_location))
        .await;
    assert_error(status, &value, StatusCode::FORBIDDEN, "ForbiddenException");
    let after = h.ok(Method::GET, "/v1/namespaces/n/tables/t", None).await;
    assert_eq!(
        after["metadata-location"], before,
        "a rejected request changed the table"
    );
}

#[tokio::test]
async fn stale_commit_fails_and_requirements_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.namespace("n").await;
    let t = h.table("n", "t").await;
    let schema_id = t["metadata"]["current-schema-id"].clone();
    let body = |k: &str| {
        json!({"requirements": [{"type": "assert-current-schema-id", "current-schema-id": schema_id}],
               "updates": [{"action": "set-properties", "updates": {k: "1"}},
                           {"action": "add-schema", "schema": {"type": "struct", "schema-id": 1, "fields": [
                               {"id": 1, "name": "ts_utc", "type": "timestamptz", "required": false},
                               {"id": 2, "name": "site_id", "type": "string", "required": false},
                               {"id": 3, "name": "value", "type": "double", "required": false},
                               {"id": 4, "name": k, "type": "int", "required": false}]}},
                           {"action": "set-current-schema", "schema-id": -1}]})
    };
    h.ok(
        Method::POST,
        "/v1/namespaces/n/tables/t",
        Some(body("first")),
    )
    .await;
    let (status, value) = h
        .call(
            Method::POST,
            "/v1/namespaces/n/tables/t",
            Some(body("second")),
        )
        .await;
    assert_error(
        status,
        &value,
        StatusCode::CONFLICT,
        "CommitFailedException",
    );
    let loaded = h.ok(Method::GET, "/v1/namespaces/n/tables/t", None).await;
    assert_eq!(loaded["metadata"]["properties"]["first"], "1");
    assert!(loaded["metadata"]["properties"].get("second").is_none());
    assert_eq!(
        loaded["metadata"]["metadata-log"].as_array().map(Vec::len),
        Some(1)
    );
}

/// Eight writers race on one table; every commit either wins the pointer
/// swap or gets 409 and retries. No property (update) may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_lose_no_update() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.namespace("n").await;
    h.table("n", "t").await;
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let router = h.router.clone();
        tasks.push(tokio::spawn(async move {
            let h = Harness {
                router,
                token: None,
            };
            let mut conflicts = 0;
            for i in 0..10 {
                let key = format!("w{writer}-{i}");
                let mut done = false;
                for _attempt in 0..200 {
                    let (status, body) = h
                        .call(
                            Method::POST,
                            "/v1/namespaces/n/tables/t",
                            Some(set_property(&key, "x")),
                        )
                        .await;
                    match status {
                        StatusCode::OK => {
                            done = true;
                            break;
                        }
                        StatusCode::CONFLICT => {
                            conflicts += 1;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
                assert!(done, "writer {writer} gave up on {key}");
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let loaded = h.ok(Method::GET, "/v1/namespaces/n/tables/t", None).await;
    let props = loaded["metadata"]["properties"]
        .as_object()
        .expect("properties");
    let written = props.keys().filter(|k| k.starts_with('w')).count();
    assert_eq!(written, 80, "lost updates: {props:?}");
}

#[tokio::test]
async fn multi_table_transaction_is_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.namespace("n").await;
    h.table("n", "a").await;
    let b = h.table("n", "b").await;
    let uuid_b = b["metadata"]["table-uuid"].clone();
    let change = |name: &str, req: Value| {
        json!({"identifier": {"namespace": ["n"], "name": name}, "requirements": req,
               "updates": [{"action": "set-properties", "updates": {"tx": "1"}}]})
    };
    let failing = json!({"table-changes": [
        change("a", json!([])),
        change("b", json!([{"type": "assert-table-uuid", "uuid": "00000000-0000-0000-0000-000000000001"}])),
    ]});
    h.fails(
        Method::POST,
        "/v1/transactions/commit",
        Some(failing),
        StatusCode::CONFLICT,
        "CommitFailedException",
    )
    .await;
    for t in ["a", "b"] {
        let loaded = h
            .ok(Method::GET, &format!("/v1/namespaces/n/tables/{t}"), None)
            .await;
        assert!(
            loaded["metadata"]["properties"].get("tx").is_none(),
            "{t} changed"
        );
    }
    let passing = json!({"table-changes": [
        change("a", json!([])),
        change("b", json!([{"type": "assert-table-uuid", "uuid": uuid_b}])),
    ]});
    let (status, body) = h
        .call(Method::POST, "/v1/transactions/commit", Some(passing))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for t in ["a", "b"] {
        let loaded = h
            .ok(Method::GET, &format!("/v1/namespaces/n/tables/{t}"), None)
            .await;
        assert_eq!(loaded["metadata"]["properties"]["tx"], "1", "{t} unchanged");
    }
}

#[tokio::test]
async fn stage_create_then_commit_creates_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.namespace("n").await;
    let mut body = create_table_body("staged");
    body["stage-create"] = json!(true);
    let staged = h
        .ok(Method::POST, "/v1/namespaces/n/tables", Some(body))
        .await;
    assert!(staged.get("metadata-location").is_none(), "{staged}");
    let (status, _) = h
        .call(Method::HEAD, "/v1/namespaces/n/tables/staged", None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "staging must not create the table"
    );
    let m = &staged["metadata"];
    let commit = json!({
        "requirements": [{"type": "assert-create"}],
        "updates": [
            {"action": "assign-uuid", "uuid": m["table-uuid"]},
            {"action": "upgrade-format-version", "format-version": 2},
            {"action": "add-schema", "schema": m["schemas"][0]},
            {"action": "set-current-schema", "schema-id": -1},
            {"action": "add-spec", "spec": m["partition-specs"][0]},
            {"action": "set-default-spec", "spec-id": -1},
            {"action": "add-sort-order", "sort-order": m["sort-orders"][0]},
            {"action": "set-default-sort-order", "sort-order-id": -1},
            {"action": "set-location", "location": m["location"]},
            {"action": "set-properties", "updates": m["properties"]}
        ]
    });
    let created = h
        .ok(
            Method::POST,
            "/v1/namespaces/n/tables/staged",
            Some(commit.clone()),
        )
        .await;
    assert_eq!(created["metadata"]["table-uuid"], m["table-uuid"]);
    assert_eq!(
        created["metadata"]["partition-specs"][0]["fields"][0]["transform"],
        "day"
    );
    h.fails(
        Method::POST,
        "/v1/namespaces/n/tables/staged",
        Some(commit),
        StatusCode::CONFLICT,
        "CommitFailedException",
    )
    .await;
}

#[tokio::test]
async fn rename_register_and_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.namespace("n").await;
    h.namespace("m").await;
    let t = h.table("n", "t").await;
    let location = t["metadata"]["location"]
        .as_str()
        .expect("location")
        .to_string();
    let rename = json!({"source": {"namespace": ["n"], "name": "t"},
                        "destination": {"namespace": ["m"], "name": "u"}});
    h.ok(Method::POST, "/v1/tables/rename", Some(rename.clone()))
        .await;
    h.fails(
        Method::POST,
        "/v1/tables/rename",
        Some(rename),
        StatusCode::NOT_FOUND,
        "NoSuchTableException",
    )
    .await;
    let moved = h.ok(Method::GET, "/v1/namespaces/m/tables/u", None).await;
    let meta_location = moved["metadata-location"]
        .as_str()
        .expect("location")
        .to_string();
    // Drop without purge keeps the files, so the table can be registered again.
    h.ok(Method::DELETE, "/v1/namespaces/m/tables/u", None)
        .await;
    h.ok(
        Method::POST,
        "/v1/namespaces/n/register",
        Some(json!({"name": "again", "metadata-location": meta_location})),
    )
    .await;
    let folder = location.strip_prefix("file://").expect("local");
    assert!(Path::new(folder).join("metadata").exists());
    h.ok(
        Method::DELETE,
        "/v1/namespaces/n/tables/again?purgeRequested=True",
        None,
    )
    .await;
    assert!(
        !Path::new(folder).join("metadata").exists(),
        "purge left {folder}"
    );
    // The purged metadata file is gone for good, cached or not.
    h.fails(
        Method::POST,
        "/v1/namespaces/n/register",
        Some(json!({"name": "ghost", "metadata-location": meta_location})),
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
    let (status, _) = h
        .call(Method::HEAD, "/v1/namespaces/n/tables/ghost", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tables_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    restart_keeps_everything(config(dir.path(), None)).await;
}

/// Runs when FLOE_TEST_POSTGRES_URL names a database (the test command
/// starts one); otherwise says so and passes.
#[tokio::test]
async fn tables_survive_a_restart_on_postgres() {
    let Ok(url) = std::env::var("FLOE_TEST_POSTGRES_URL") else {
        eprintln!("skipped: set FLOE_TEST_POSTGRES_URL to test the PostgreSQL store");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), Some(url));
    // Each run gets its own catalog_name, so runs never see each other's rows.
    cfg.name = format!("restart-{}", uuid_like());
    restart_keeps_everything(cfg).await;
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

async fn restart_keeps_everything(cfg: CatalogConfig) {
    let h = Harness::open(cfg.clone()).await;
    h.namespace("n").await;
    h.table("n", "t").await;
    h.ok(
        Method::POST,
        "/v1/namespaces/n/tables/t",
        Some(set_property("k", "v")),
    )
    .await;
    let before = h.ok(Method::GET, "/v1/namespaces/n/tables/t", None).await;
    drop(h);
    let h = Harness::open(cfg).await;
    assert_eq!(
        h.ok(Method::GET, "/v1/namespaces", None).await["namespaces"],
        json!([["n"]])
    );
    let after = h.ok(Method::GET, "/v1/namespaces/n/tables/t", None).await;
    assert_eq!(after["metadata-location"], before["metadata-location"]);
    assert_eq!(after["metadata"]["properties"]["k"], "v");
}

#[tokio::test]
async fn bearer_token_and_oauth_client_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), None);
    cfg.auth = AuthConfig {
        token: Some(Secret::new("static-token")),
        client: Some(("client".into(), Secret::new("secret"))),
        token_ttl: Duration::from_secs(60),
    };
    let mut h = Harness::open(cfg).await;
    h.fails(
        Method::GET,
        "/v1/namespaces",
        None,
        StatusCode::UNAUTHORIZED,
        "NotAuthorizedException",
    )
    .await;
    h.token = Some("wrong".into());
    let (status, _) = h.call(Method::GET, "/v1/namespaces", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    h.token = Some("static-token".into());
    h.ok(Method::GET, "/v1/namespaces", None).await;
    h.token = None;
    let form = |secret: &str| {
        Body::from(format!(
            "grant_type=client_credentials&client_id=client&client_secret={secret}&scope=catalog"
        ))
    };
    let ctype = "application/x-www-form-urlencoded";
    let (status, body) = h
        .call_raw(Method::POST, "/v1/oauth/tokens", form("nope"), ctype)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = h
        .call_raw(Method::POST, "/v1/oauth/tokens", form("secret"), ctype)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.token = body["access_token"].as_str().map(str::to_string);
    h.ok(Method::GET, "/v1/namespaces", None).await;

    // Guessing costs time: past three wrong secrets in a row, a client's
    // attempts are refused unchecked (429 with Retry-After) until its
    // backoff has passed; the right secret then works again.
    let mut refused = 0;
    for _ in 0..10 {
        let (status, body) = h
            .call_raw(Method::POST, "/v1/oauth/tokens", form("guess"), ctype)
            .await;
        match status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["error"], "slow_down", "{body}");
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(refused >= 6, "{refused} of 10 guesses were slowed down");
    let (status, _) = h
        .call_raw(Method::POST, "/v1/oauth/tokens", form("secret"), ctype)
        .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "blocked, even for the right secret"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body) = h
        .call_raw(Method::POST, "/v1/oauth/tokens", form("secret"), ctype)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Regression tests from the code review of the first version.
#[tokio::test]
async fn uuids_stay_and_locations_are_normalised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.namespace("n").await;
    h.table("n", "t").await;
    let reassign = json!({"requirements": [], "updates": [
        {"action": "assign-uuid", "uuid": "00000000-0000-0000-0000-0000000000aa"}]});
    h.fails(
        Method::POST,
        "/v1/namespaces/n/tables/t",
        Some(reassign),
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
    let bare = format!("{}/wh/n/moved", dir.path().display());
    let moved = h
        .ok(
            Method::POST,
            "/v1/namespaces/n/tables/t",
            Some(json!({"requirements": [], "updates": [{"action": "set-location", "location": bare}]})),
        )
        .await;
    assert_eq!(moved["metadata"]["location"], format!("file://{bare}"));
}

#[tokio::test]
async fn purge_never_deletes_outside_the_table_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.namespace("n").await;
    let t = h.table("n", "t").await;
    let victim = dir.path().join("precious.txt");
    std::fs::write(&victim, "keep me").expect("write");
    let snapshot_id = 1;
    let location = t["metadata"]["location"].as_str().expect("location");
    let commit = json!({"requirements": [], "updates": [
        {"action": "add-snapshot", "snapshot": {"snapshot-id": snapshot_id, "sequence-number": 1,
            "timestamp-ms": now_ms(), "manifest-list": format!("{location}/metadata/missing.avro"),
            "summary": {"operation": "append"}}},
        {"action": "set-statistics", "snapshot-id": snapshot_id, "statistics": {
            "snapshot-id": snapshot_id, "statistics-path": format!("file://{}", victim.display()),
            "file-size-in-bytes": 7, "file-footer-size-in-bytes": 1, "blob-metadata": []}}]});
    h.ok(Method::POST, "/v1/namespaces/n/tables/t", Some(commit))
        .await;
    h.ok(
        Method::DELETE,
        "/v1/namespaces/n/tables/t?purgeRequested=true",
        None,
    )
    .await;
    assert!(
        victim.exists(),
        "purge deleted a file outside the table folder"
    );
    let folder = location.strip_prefix("file://").expect("local");
    assert!(!Path::new(folder).exists(), "purge left the table folder");
}

#[tokio::test]
async fn reserved_keys_and_case_sensitive_namespaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.fails(
        Method::POST,
        "/v1/namespaces",
        Some(json!({"namespace": ["x"], "properties": {"exists": "no"}})),
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
    h.namespace("A").await;
    h.namespace("a").await;
    h.ok(
        Method::POST,
        "/v1/namespaces",
        Some(json!({"namespace": ["a", "b"]})),
    )
    .await;
    h.fails(
        Method::POST,
        "/v1/namespaces/A/properties",
        Some(json!({"removals": ["exists"]})),
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
    // `A` has no children even though `a.b` exists.
    h.ok(Method::DELETE, "/v1/namespaces/A", None).await;
}

#[tokio::test]
async fn oauth_token_exchange_refreshes_a_live_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), None);
    cfg.auth = AuthConfig {
        token: None,
        client: Some(("client".into(), Secret::new("secret"))),
        token_ttl: Duration::from_secs(60),
    };
    let mut h = Harness::open(cfg).await;
    let ctype = "application/x-www-form-urlencoded";
    let form = Body::from("grant_type=client_credentials&client_id=client&client_secret=secret");
    let (_, body) = h
        .call_raw(Method::POST, "/v1/oauth/tokens", form, ctype)
        .await;
    let first = body["access_token"].as_str().expect("token").to_string();
    let exchange = |subject: &str| {
        Body::from(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={subject}\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
        ))
    };
    let (status, body) = h
        .call_raw(Method::POST, "/v1/oauth/tokens", exchange("forged"), ctype)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = h
        .call_raw(Method::POST, "/v1/oauth/tokens", exchange(&first), ctype)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.token = body["access_token"].as_str().map(str::to_string);
    h.ok(Method::GET, "/v1/namespaces", None).await;
}

#[tokio::test]
async fn file_paths_in_properties_stay_in_the_warehouse_and_field_ids_are_sound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new(dir.path()).await;
    h.namespace("n").await;
    // write.data.path (and any *.path or location property) is confined
    // like a table location, on create and on set-properties.
    for key in [
        "write.data.path",
        "write.metadata.path",
        "write.object-storage.path",
    ] {
        let mut body = create_table_body("paths");
        body["properties"] = json!({ key: "file:///tmp/elsewhere" });
        h.fails(
            Method::POST,
            "/v1/namespaces/n/tables",
            Some(body),
            StatusCode::FORBIDDEN,
            "ForbiddenException",
        )
        .await;
    }
    let inside = format!("file://{}/wh/n/data", dir.path().display());
    let mut body = create_table_body("inside");
    body["properties"] = json!({ "write.data.path": inside });
    h.ok(Method::POST, "/v1/namespaces/n/tables", Some(body))
        .await;
    h.table("n", "t").await;
    h.fails(
        Method::POST,
        "/v1/namespaces/n/tables/t",
        Some(set_property("write.data.path", "file:///tmp/elsewhere")),
        StatusCode::FORBIDDEN,
        "ForbiddenException",
    )
    .await;
    // Field ids must not be negative nor repeat (a create reassigns them:
    // Iceberg Java sends them from 0).
    for ids in [[-1, 2, 3], [1, 2, 2], [0, 0, 1]] {
        let mut body = create_table_body("ids");
        for (i, id) in ids.iter().enumerate() {
            body["schema"]["fields"][i]["id"] = json!(id);
        }
        body.as_object_mut()
            .expect("object")
            .remove("partition-spec");
        let (status, value) = h
            .call(Method::POST, "/v1/namespaces/n/tables", Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{ids:?}: {value}");
    }
}

/// A client that stalls cannot hold the server: a quiet connection is
/// closed after the read timeout, and connections past the limit wait
/// for a place instead of piling up.
#[tokio::test]
async fn stalled_clients_are_closed_and_connections_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), None);
    cfg.limits = floe_catalog::ConnectionLimits {
        max_connections: 2,
        read_timeout: Duration::from_millis(400),
    };
    let running = floe_catalog::spawn(cfg).await.expect("serves");
    let addr = running.addr();
    let stall = || async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // Half a request header, then nothing.
        s.write_all(b"GET /v1/config HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        s
    };
    let (mut a, _b) = (stall().await, stall().await);
    // Both places are taken: a complete request waits for one to free up.
    let started = std::time::Instant::now();
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"GET /v1/config HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut answer))
        .await
        .expect("answered within the bound")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the third connection waited for a place ({:?})",
        started.elapsed()
    );
    // The stalled connection was closed by the server.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), a.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a stalled connection stays open");
    running.shutdown().await;
}
