//! No `Debug` of a settings type, client or loaded table, and no error,
//! shows a credential floe holds.

use floe::rest::RestClient;
use floe_catalog::{AuthConfig, Secret};

use crate::common::Env;

const PLANTED: [&str; 3] = ["client-s3cret-7f3a", "bearer-tok-91c2", "s3-key-5d0e"];

fn assert_clean(what: &str, text: &str) {
    for secret in PLANTED {
        assert!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_debug_or_error_shows_a_secret() {
    let env = Env::with_auth(AuthConfig {
        token: Some(Secret::new(PLANTED[1])),
        client: Some(("floe".into(), Secret::new(PLANTED[0]))),
        token_ttl: std::time::Duration::from_secs(60),
    })
    .await;
    let job = r#"
[[job]]
name = "j"
table = "bronze.j"
source = { path = "data/{date}.ndjson", format = "ndjson" }
event_time = { kind = "offset", column = "t" }
columns = [ { name = "v", type = "double" } ]
"#;
    let p = env.pipeline_with(
        job,
        &format!(
            "credential = \"floe:{}\"\nproperties = {{ \"s3.secret-access-key\" = \"{}\", \"s3.session-token\" = \"{}\" }}",
            PLANTED[0], PLANTED[2], PLANTED[1]
        ),
    );
    assert_clean("Pipeline", &format!("{p:?}"));
    assert_clean("CatalogSettings", &format!("{:?}", p.catalog));

    let client = RestClient::connect(&p.catalog).await.expect("connects");
    assert_clean("RestClient", &format!("{client:?}"));
    client
        .ensure_namespace(&["bronze".to_string()])
        .await
        .expect("namespace");
    let mut bearer = p.catalog.clone();
    bearer.credential = None;
    bearer.token = Some(Secret::new(PLANTED[1]));
    let client = RestClient::connect(&bearer).await.expect("token works");
    assert_clean("RestClient with a token", &format!("{client:?}"));

    // Refused credentials: the error names the problem, not the secret.
    for (token, credential) in [
        (Some(format!("{}x", PLANTED[1])), None),
        (None, Some(format!("floe:{}x", PLANTED[0]))),
        (None, Some(PLANTED[0].to_string())),
    ] {
        let mut wrong = p.catalog.clone();
        wrong.token = token.map(Secret::new);
        wrong.credential = credential.map(Secret::new);
        let err = RestClient::connect(&wrong).await.expect_err("refused");
        assert_clean("a refused connection's error", &format!("{err} / {err:?}"));
    }
    let (_, outcome) =
        crate::common::ingest(&p, &crate::common::request("2024-01-01", "2024-01-01", "r")).await;
    if let Err(e) = outcome {
        assert_clean("an ingest error", &format!("{e} / {e:?}"));
    }
}

/// Runs the floe binary with `args` in `dir` at `FLOE_LOG=trace`, with
/// planted credentials in the environment; its stdout and stderr.
fn floe_at_trace(dir: &std::path::Path, args: &[&str], wait: std::time::Duration) -> String {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(args)
        .current_dir(dir)
        .env("FLOE_LOG", "trace")
        .env("AWS_ACCESS_KEY_ID", "AKIDPLAIN")
        .env("AWS_SECRET_ACCESS_KEY", "env-s3cret-4b7d")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("floe starts");
    let started = std::time::Instant::now();
    while started.elapsed() < wait {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut text = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut text)
        .expect("read");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut text)
        .expect("read");
    text
}

#[test]
fn no_log_line_at_any_level_shows_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("floe.toml"),
        r#"
[catalog]
embedded_warehouse = "wh"
properties = { "s3.secret-access-key" = "file-s3cret-9c1e", "s3.access-key-id" = "AKIDFILE", "s3.region" = "us-east-1", "s3.endpoint" = "http://127.0.0.1:9", "s3.path-style-access" = "true" }

[[job]]
name = "j"
table = "b.j"
source = { path = "s3://bucket/data/{date}.ndjson", format = "ndjson" }
event_time = { kind = "offset", column = "t" }
columns = [ { name = "v", type = "double" } ]
"#,
    )
    .expect("pipeline");
    let ingest = floe_at_trace(
        dir.path(),
        &[
            "ingest",
            "--pipeline",
            "floe.toml",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-01",
        ],
        std::time::Duration::from_secs(60),
    );
    assert!(
        ingest.contains("StaticCredentialProvider") || ingest.contains("s3://bucket"),
        "the run reached the S3 source: {ingest}"
    );
    for secret in ["file-s3cret-9c1e", "env-s3cret-4b7d"] {
        assert!(!ingest.contains(secret), "ingest log shows {secret}");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
        .to_string();
    let serve = floe_at_trace(
        dir.path(),
        &[
            "catalog",
            "serve",
            "--warehouse",
            "served",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token",
            "serve-tok-3e8a",
            "--client-id",
            "floe",
            "--client-secret",
            "serve-s3cret-71f0",
        ],
        std::time::Duration::from_secs(4),
    );
    assert!(serve.contains("catalog ready"), "{serve}");
    for secret in ["serve-tok-3e8a", "serve-s3cret-71f0", "env-s3cret-4b7d"] {
        assert!(!serve.contains(secret), "catalog serve log shows {secret}");
    }
}

/// Credentials in a file source's URL fetch it, and are recorded nowhere:
/// not in `_source`, the report, nor an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_a_source_url_are_not_recorded() {
    let env = Env::new().await;
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        // user:url-pa55-6d2c, as reqwest sends the URL's user info.
        let expected = "Basic dXNlcjp1cmwtcGE1NS02ZDJj";
        if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected) {
            (
                axum::http::StatusCode::OK,
                "{\"t\":\"2024-01-01T00:00:00Z\",\"v\":1}\n".to_string(),
            )
        } else {
            (axum::http::StatusCode::UNAUTHORIZED, String::new())
        }
    });
    let base = crate::common::serve(app).await;
    let url = base.replacen("http://", "http://user:url-pa55-6d2c@", 1);
    let job = format!(
        r#"
[[job]]
name = "j"
table = "bronze.j"
source = {{ path = "{url}/data/{{date}}.ndjson?apikey=q-k3y-8e1f&day={{date}}", format = "ndjson" }}
event_time = {{ kind = "offset", column = "t" }}
columns = [ {{ name = "v", type = "double" }} ]
"#
    );
    let p = env.pipeline(&job);
    let (reports, outcome) =
        crate::common::ingest(&p, &crate::common::request("2024-01-01", "2024-01-01", "r")).await;
    outcome.expect("the credentials fetch the file");
    let report = serde_json::to_string(&reports).expect("json");
    for secret in ["url-pa55-6d2c", "q-k3y-8e1f"] {
        assert!(
            !report.contains(secret),
            "the report shows {secret}: {report}"
        );
    }
    let batches = env.scan("bronze", "j").await;
    let sources = crate::common::strings(&batches, "_source");
    assert!(!sources.is_empty());
    for source in &sources {
        for secret in ["url-pa55-6d2c", "q-k3y-8e1f"] {
            assert!(
                !source.contains(secret),
                "_source shows {secret}: {sources:?}"
            );
        }
        assert!(
            source.starts_with("http://127.0.0.1") && source.contains("day="),
            "{sources:?}"
        );
    }
}
