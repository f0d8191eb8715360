//! What a failed command prints: the error, then each lower-level cause
//! it kept (`caused by:`), none repeated.

/// A port nothing listens on: binds one, then closes it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

#[test]
fn an_unreachable_catalog_error_shows_its_causes() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("floe.toml"),
        format!(
            r#"
[catalog]
uri = "http://127.0.0.1:{}"

[[job]]
name = "j"
table = "b.j"
source = {{ path = "data/{{date}}.ndjson", format = "ndjson" }}
event_time = {{ kind = "offset", column = "t" }}
columns = [ {{ name = "v", type = "double" }} ]
"#,
            closed_port()
        ),
    )
    .expect("pipeline");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["table", "list", "--pipeline", "floe.toml"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("floe runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("floe: error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    let causes: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("  caused by: "))
        .collect();
    // The connection failure itself lies below the HTTP client's error.
    assert!(
        causes.iter().any(|c| c.to_lowercase().contains("refused")),
        "the refused connection is among the causes: {stderr}"
    );
    for c in &causes {
        assert!(!error.contains(c), "{c:?} repeats the error line: {stderr}");
    }
    let unique: std::collections::BTreeSet<&&str> = causes.iter().collect();
    assert_eq!(unique.len(), causes.len(), "a cause is repeated: {stderr}");
}
