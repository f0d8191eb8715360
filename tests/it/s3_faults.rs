//! The S3 server stopped in the middle of an ingest (Iceberg and Delta) or
//! a compaction: a SeaweedFS S3 server (`weed mini`, from
//! `FLOE_WEED_BIN`) behind a TCP proxy that, at the first upload of a
//! given file (a data file, a manifest, the table metadata), closes every
//! connection and refuses new ones for a while. An outage shorter than
//! the storage retry budget (`FLOE_STORAGE_RETRY_TIMEOUT`) ends in success
//! with the exact rows; a longer one fails the run (exit 2, an error that
//! names the file and the refused connection) and leaves the table as it
//! was, and the next run lands the rows. The catalog's own S3 traffic goes
//! through the same proxy: the whole S3 server is down, not only floe's
//! view of it.
//!
//! Without a `weed` binary (`FLOE_WEED_BIN`, or `weed` on the PATH) the
//! tests say so and pass, unless `CI=true`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_catalog::{S3Options, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::common::{Env, instants_per_day};

const BUCKET: &str = "floe-test";
const ACCESS_KEY: &str = "floe-test-access";
const SECRET_KEY: &str = "floe-test-secret-0123456789";
const REGION: &str = "us-east-1";

/// The `weed` binary, or `None` (after saying so) when there is none and
/// this is not CI.
fn weed_bin() -> Option<PathBuf> {
    let found = std::env::var_os("FLOE_WEED_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            let paths = std::env::var_os("PATH")?;
            std::env::split_paths(&paths)
                .map(|d| d.join("weed"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs the S3 fault tests: set FLOE_WEED_BIN (infra/test.sh does)"
        );
        eprintln!("skipped: no SeaweedFS `weed` binary (set FLOE_WEED_BIN)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// `weed mini` on 127.0.0.1 with one bucket; killed when dropped.
struct Weed {
    child: std::process::Child,
    endpoint: String,
    log: PathBuf,
}

/// Attempts at starting `weed mini` when a port it was given is taken
/// before it binds it (the ports are picked free, then released for it).
const WEED_STARTS: usize = 4;

impl Weed {
    async fn start(bin: &Path, dir: &Path) -> Self {
        for attempt in 1..=WEED_STARTS {
            match Self::start_once(bin, dir, attempt).await {
                Ok(weed) => return weed,
                Err(why) if why.contains("address already in use") && attempt < WEED_STARTS => {
                    eprintln!("weed lost a port to another process (attempt {attempt}); again");
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    async fn start_once(bin: &Path, dir: &Path, attempt: usize) -> Result<Self, String> {
        let data = dir.join(format!("weed-{attempt}"));
        std::fs::create_dir_all(&data).expect("weed dir");
        // The admin server's worker dials admin.port + 10000 whatever
        // admin.port.grpc says: keep the pair consistent.
        let admin = (0..50)
            .map(|_| free_port())
            .find(|p| *p < 55_000 && port_is_free(p + 10_000))
            .expect("a free port pair for the admin server");
        let mut p: Vec<u16> = Vec::with_capacity(8);
        while p.len() < 8 {
            let port = free_port();
            if !p.contains(&port) && port != admin && port != admin + 10_000 {
                p.push(port);
            }
        }
        let log = dir.join(format!("weed-{attempt}.log"));
        let out = std::fs::File::create(&log).expect("weed log");
        let err = out.try_clone().expect("weed log");
        let child = std::process::Command::new(bin)
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-bucket={BUCKET}"))
            .arg("-master.telemetry=false")
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg(format!("-s3.port={}", p[6]))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-admin.port={admin}"))
            .arg(format!("-admin.port.grpc={}", admin + 10_000))
            .args(["-admin.ui=false", "-webdav=false"])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .current_dir(&data)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("weed starts");
        let mut weed = Weed {
            child,
            endpoint: format!("http://127.0.0.1:{}", p[6]),
            log,
        };
        weed.wait_ready().await?;
        Ok(weed)
    }

    /// Until the bucket answers a signed listing (at most 60 s); why not
    /// when weed exits first.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let props = s3_props(&self.endpoint);
        let op = floe::store::s3_operator(BUCKET, &props).expect("operator");
        let started = Instant::now();
        for _ in 0..240 {
            if let Some(status) = self.child.try_wait().expect("weed status") {
                return Err(format!("weed exited with {status}: {}", self.log_tail()));
            }
            let answered = tokio::time::timeout(Duration::from_secs(2), op.list("")).await;
            if matches!(answered, Ok(Ok(_))) {
                eprintln!("weed ready after {:?}", started.elapsed());
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("weed did not serve {BUCKET} in time: {}", self.log_tail());
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3_props(endpoint: &str) -> std::collections::HashMap<String, String> {
    [
        ("s3.endpoint", endpoint),
        ("s3.region", REGION),
        ("s3.path-style-access", "true"),
        ("s3.access-key-id", ACCESS_KEY),
        ("s3.secret-access-key", SECRET_KEY),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A TCP proxy in front of the S3 server. Armed with a path fragment and a
/// duration, it starts an outage at the first `PUT` whose request line
/// names that fragment: the request is not forwarded, every open
/// connection is closed, and the port refuses connections until the
/// outage is over.
struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    /// Path fragment and outage length of the armed trigger.
    trigger: Mutex<Option<(String, Duration)>>,
    /// When the current outage ends (`None`: up).
    down_until: watch::Sender<Option<Instant>>,
    /// Outages so far: when each started and ended.
    outages: Mutex<Vec<(Instant, Instant)>>,
}

impl Shared {
    fn is_down(until: Option<Instant>) -> bool {
        until.is_some_and(|t| Instant::now() < t)
    }
}

impl Proxy {
    async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream address");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let shared = Arc::new(Shared {
            upstream,
            trigger: Mutex::new(None),
            down_until: watch::channel(None).0,
            outages: Mutex::new(Vec::new()),
        });
        let listener = bind(addr).await;
        let task = tokio::spawn(accept_loop(listener, addr, shared.clone()));
        Proxy { addr, shared, task }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `PUT` naming `fragment` starts an outage of `length`.
    fn arm(&self, fragment: &str, length: Duration) {
        *self.shared.trigger.lock().expect("trigger") = Some((fragment.to_string(), length));
    }

    fn outages(&self) -> Vec<(Instant, Instant)> {
        self.shared.outages.lock().expect("outages").clone()
    }

    /// Waits (at most `limit`) until no outage is under way.
    async fn wait_up(&self, limit: Duration) {
        let until = *self.shared.down_until.borrow();
        if let Some(t) = until {
            let wait = t.saturating_duration_since(Instant::now());
            assert!(wait <= limit, "the outage lasts {wait:?} more");
            tokio::time::sleep(wait + Duration::from_millis(300)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener on `addr` that may rebind a port just closed (bounded tries).
async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..100 {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        if socket.bind(addr).is_ok()
            && let Ok(listener) = socket.listen(128)
        {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot listen on {addr}");
}

async fn accept_loop(mut listener: tokio::net::TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    let mut down = shared.down_until.subscribe();
    // Bounded: one round per outage, far more than a test starts.
    for _ in 0..1000 {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((client, _)) = accepted {
                        tokio::spawn(forward(client, shared.clone()));
                    }
                }
                changed = down.changed() => {
                    if changed.is_err() || Shared::is_down(*down.borrow_and_update()) {
                        break;
                    }
                }
            }
        }
        // Down: the port refuses connections until the outage is over.
        drop(listener);
        let until = (*down.borrow()).unwrap_or_else(Instant::now);
        tokio::time::sleep_until(until.into()).await;
        listener = bind(addr).await;
    }
}

/// The request line of a `PUT` in `chunk` naming one of the trigger's
/// fragment.
fn puts(chunk: &[u8], fragment: &str) -> bool {
    let text = String::from_utf8_lossy(chunk);
    text.split("\r\n")
        .any(|line| line.starts_with("PUT /") && line.contains(fragment))
}

async fn forward(mut client: TcpStream, shared: Arc<Shared>) {
    let mut down = shared.down_until.subscribe();
    if Shared::is_down(*down.borrow_and_update()) {
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let (mut up_buf, mut down_buf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        tokio::select! {
            n = client.read(&mut up_buf) => {
                let Ok(n @ 1..) = n else { return };
                let chunk = &up_buf[..n];
                let fired = {
                    let mut trigger = shared.trigger.lock().expect("trigger");
                    match trigger.as_ref() {
                        Some((fragment, length)) if puts(chunk, fragment) => {
                            let length = *length;
                            *trigger = None;
                            Some(length)
                        }
                        _ => None,
                    }
                };
                if let Some(length) = fired {
                    let (from, to) = (Instant::now(), Instant::now() + length);
                    shared.outages.lock().expect("outages").push((from, to));
                    shared.down_until.send_replace(Some(to));
                    return;
                }
                if upstream.write_all(chunk).await.is_err() {
                    return;
                }
            }
            n = upstream.read(&mut down_buf) => {
                let Ok(n @ 1..) = n else { return };
                if client.write_all(&down_buf[..n]).await.is_err() {
                    return;
                }
            }
            changed = down.changed() => {
                if changed.is_err() || Shared::is_down(*down.borrow_and_update()) {
                    return;
                }
            }
        }
    }
}

/// A catalog whose warehouse is on the S3 server behind `proxy`, handing
/// out the proxy's endpoint and the credentials.
async fn catalog_on(proxy: &Proxy) -> Env {
    let endpoint = proxy.endpoint();
    Env::with_config(move |c| {
        c.warehouse = format!("s3://{BUCKET}/wh");
        c.s3 = S3Options {
            endpoint: Some(endpoint),
            region: Some(REGION.into()),
            path_style: true,
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(Secret::new(SECRET_KEY)),
            session_token: None,
            retry: Default::default(),
        };
        c.vend_credentials = true;
    })
    .await
}

const ROWS_PER_DAY: usize = 2000;

/// `floe.toml` with one NDJSON job, and a source file per day of `days`
/// with [`ROWS_PER_DAY`] rows each.
fn pipeline(env: &Env, days: &[&str]) {
    for day in days {
        let mut text = String::new();
        for i in 0..ROWS_PER_DAY {
            let (h, m, s) = (i / 3600, (i / 60) % 60, i % 60);
            text.push_str(&format!(
                "{{\"t\":\"{day}T{h:02}:{m:02}:{s:02}Z\",\"v\":{i}}}\n"
            ));
        }
        env.write(&format!("data/{day}.ndjson"), &text);
    }
    env.write(
        "floe.toml",
        &format!(
            r#"[catalog]
uri = "{}"

[[job]]
name = "readings"
table = "bronze.readings"
source = {{ path = "data/{{date}}.ndjson", format = "ndjson" }}
event_time = {{ kind = "offset", column = "t" }}
columns = [ {{ name = "v", type = "double" }} ]
"#,
            env.catalog.uri()
        ),
    );
}

/// What a `floe` process did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: serde_json::Value,
    took: Duration,
}

impl Run {
    fn job(&self) -> &serde_json::Value {
        &self.report["jobs"][0]
    }
}

/// `floe ingest` of `day` as a process with `vars`, its `--report` read
/// back; see [`floe`].
async fn floe_ingest(
    env: &Env,
    day: &str,
    run_id: &str,
    vars: &[(&str, &str)],
    limit: Duration,
) -> Run {
    let report = format!("report-{run_id}.json");
    let mut run = floe(
        env,
        &[
            "ingest",
            "--pipeline",
            "floe.toml",
            "--from",
            day,
            "--to",
            day,
            "--run-id",
            run_id,
            "--report",
            &report,
        ],
        run_id,
        vars,
        limit,
    )
    .await;
    run.report = std::fs::read_to_string(env.path(&report))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    run
}

/// The floe binary with `args` in the test's folder, with `vars` and
/// no AWS credentials of the test's own environment; killed (and the test
/// failed) when it runs longer than `limit`. `tag` names its output files.
async fn floe(env: &Env, args: &[&str], tag: &str, vars: &[(&str, &str)], limit: Duration) -> Run {
    let (out_path, err_path) = (
        env.path(&format!("stdout-{tag}.txt")),
        env.path(&format!("stderr-{tag}.txt")),
    );
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_floe"));
    command
        .args(args)
        .current_dir(env.dir.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    for (k, v) in vars {
        command.env(k, v);
    }
    let started = Instant::now();
    let mut child = command.spawn().expect("floe starts");
    let mut status = None;
    while started.elapsed() < limit {
        if let Some(s) = child.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "floe {} ({tag}) ran longer than {limit:?}: it hangs\n{}",
            args[0],
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
    };
    let took = started.elapsed();
    eprintln!("floe {} ({tag}): {:?} in {took:?}", args[0], status.code());
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        report: serde_json::Value::Null,
        took,
    }
}

async fn current_snapshot(env: &Env) -> Option<i64> {
    env.client_with(Default::default())
        .await
        .load_table(&["bronze".to_string()], "readings")
        .await
        .expect("load")
        .expect("table")
        .metadata
        .current_snapshot_id()
}

/// Rows per day of the table (a full scan: every file the snapshot names
/// must be there).
async fn rows_per_day(env: &Env) -> Vec<(String, usize)> {
    instants_per_day(&env.scan("bronze", "readings").await)
        .into_iter()
        .map(|(day, ts)| (day, ts.len()))
        .collect()
}

const DAY1: &str = "2024-01-01";
const DAY2: &str = "2024-01-02";

/// Weed, the proxy, the catalog, and day 1 landed without a fault.
async fn landed_day_one(bin: &Path, dir: &Path) -> (Weed, Proxy, Env) {
    let weed = Weed::start(bin, dir).await;
    let proxy = Proxy::start(&weed.endpoint).await;
    let env = catalog_on(&proxy).await;
    pipeline(&env, &[DAY1, DAY2]);
    let first = floe_ingest(&env, DAY1, "day-1", &[], Duration::from_secs(60)).await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    (weed, proxy, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_shorter_than_the_budget_ends_in_success() {
    let Some(bin) = weed_bin() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_weed, proxy, env) = landed_day_one(&bin, dir.path()).await;

    proxy.arm(".parquet", Duration::from_secs(3));
    let run = floe_ingest(&env, DAY2, "day-2", &[], Duration::from_secs(50)).await;
    assert_eq!(proxy.outages().len(), 1, "the outage happened");
    assert_eq!(run.code, Some(0), "it rode out the outage: {}", run.stderr);
    assert!(run.took >= Duration::from_secs(3), "{:?}", run.took);
    let job = run.job();
    let live = current_snapshot(&env).await;
    assert_eq!(job["status"], "committed", "{job}");
    assert_eq!(job["snapshot_id"].as_i64(), live, "{job}");
    assert_eq!(job["rows_written"], ROWS_PER_DAY, "{job}");
    assert!(job["error"].is_null(), "{job}");
    assert_eq!(
        rows_per_day(&env).await,
        vec![(DAY1.into(), ROWS_PER_DAY), (DAY2.into(), ROWS_PER_DAY)]
    );
}

/// An outage at the commit (the manifest upload) that outlasts the fixed
/// retries of iceberg-storage-opendal (1 s, 2 s, 4 s) but not the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_at_the_commit_within_the_budget_ends_in_success() {
    let Some(bin) = weed_bin() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_weed, proxy, env) = landed_day_one(&bin, dir.path()).await;

    proxy.arm(".avro", Duration::from_secs(12));
    let run = floe_ingest(
        &env,
        DAY2,
        "day-2",
        &[("FLOE_STORAGE_RETRY_TIMEOUT", "30s")],
        Duration::from_secs(50),
    )
    .await;
    assert_eq!(proxy.outages().len(), 1, "the outage happened");
    assert_eq!(run.code, Some(0), "it rode out the outage: {}", run.stderr);
    assert!(run.took >= Duration::from_secs(12), "{:?}", run.took);
    let job = run.job();
    assert_eq!(job["status"], "committed", "{job}");
    assert_eq!(job["snapshot_id"].as_i64(), current_snapshot(&env).await);
    assert_eq!(job["rows_written"], ROWS_PER_DAY, "{job}");
    assert_eq!(
        rows_per_day(&env).await,
        vec![(DAY1.into(), ROWS_PER_DAY), (DAY2.into(), ROWS_PER_DAY)]
    );
}

/// An outage as the catalog writes the new table metadata: the catalog's
/// warehouse retries within its own budget (the in-process catalog here
/// has the default), floe's commit waits for its answer (the commit retry
/// policy, should the answer be lost), and the report names the snapshot
/// that is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_as_the_catalog_writes_metadata_ends_in_success() {
    let Some(bin) = weed_bin() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_weed, proxy, env) = landed_day_one(&bin, dir.path()).await;

    proxy.arm(".metadata.json", Duration::from_secs(12));
    let run = floe_ingest(&env, DAY2, "day-2", &[], Duration::from_secs(50)).await;
    assert_eq!(proxy.outages().len(), 1, "the outage happened");
    assert_eq!(run.code, Some(0), "it rode out the outage: {}", run.stderr);
    let job = run.job();
    assert_eq!(job["status"], "committed", "{job}");
    assert_eq!(job["snapshot_id"].as_i64(), current_snapshot(&env).await);
    assert_eq!(job["rows_written"], ROWS_PER_DAY, "{job}");
    assert_eq!(
        rows_per_day(&env).await,
        vec![(DAY1.into(), ROWS_PER_DAY), (DAY2.into(), ROWS_PER_DAY)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_longer_than_the_budget_fails_cleanly_and_changes_nothing() {
    let Some(bin) = weed_bin() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_weed, proxy, env) = landed_day_one(&bin, dir.path()).await;
    let before = current_snapshot(&env).await;
    assert!(before.is_some());

    let outage = Duration::from_secs(30);
    proxy.arm(".parquet", outage);
    let run = floe_ingest(
        &env,
        DAY2,
        "day-2",
        &[
            ("FLOE_STORAGE_RETRY_TIMEOUT", "4s"),
            ("FLOE_COMMIT_OUTCOME_TIMEOUT", "4s"),
        ],
        Duration::from_secs(28),
    )
    .await;
    let outages = proxy.outages();
    assert_eq!(outages.len(), 1, "the outage happened");
    assert!(
        Instant::now() < outages[0].1,
        "the run ended before the outage did"
    );
    assert_eq!(run.code, Some(2), "a clean failure: {}", run.stderr);
    // The budget's backoffs (0.2 s doubling: 6.2 s for 4 s) and some slack.
    assert!(run.took < Duration::from_secs(15), "{:?}", run.took);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let error = run
        .stderr
        .lines()
        .find(|l| l.starts_with("floe: error:"))
        .unwrap_or_else(|| panic!("no error line in {}", run.stderr));
    assert!(
        error.contains("storage") || error.contains("no answer"),
        "the error says the store failed: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Connection refused") && run.stderr.contains(".parquet"),
        "and what it could not write, and why: {}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("the object store did not answer; retrying"),
        "the retries are logged: {}",
        run.stderr
    );
    // 4 s is five backoffs (0.2 s, 0.4 s, 0.8 s, 1.6 s, 3.2 s) per request.
    assert!(
        run.stderr.contains("attempt=5") && !run.stderr.contains("attempt=6"),
        "each request retried within the budget: {}",
        run.stderr
    );
    let job = run.job();
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["snapshot_id"].is_null(), "{job}");
    assert!(job["error"].is_string(), "{job}");

    // After the outage: the table is as it was, and a new run lands the day.
    proxy.wait_up(outage).await;
    assert_eq!(
        current_snapshot(&env).await,
        before,
        "nothing was committed"
    );
    assert_eq!(rows_per_day(&env).await, vec![(DAY1.into(), ROWS_PER_DAY)]);
    let again = floe_ingest(&env, DAY2, "day-2-again", &[], Duration::from_secs(60)).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(again.job()["status"], "committed");
    assert_eq!(
        rows_per_day(&env).await,
        vec![(DAY1.into(), ROWS_PER_DAY), (DAY2.into(), ROWS_PER_DAY)]
    );
}

/// The Delta log's files of `bronze.readings` (its commits).
async fn delta_log(proxy: &Proxy) -> Vec<String> {
    let mut files: Vec<String> = floe::store::list(
        &format!("s3://{BUCKET}/delta/bronze/readings/_delta_log"),
        &s3_props(&proxy.endpoint()),
    )
    .await
    .expect("list the log")
    .into_iter()
    .map(|f| f.uri)
    .collect();
    files.sort();
    files
}

/// Rows per day of the Delta table, read with delta-rs.
async fn delta_rows_per_day(proxy: &Proxy) -> Vec<(String, i64)> {
    use arrow_array::cast::AsArray;
    let settings = floe::pipeline::DeltaSettings {
        location: Some(format!("s3://{BUCKET}/delta")),
        storage_options: Default::default(),
    };
    let table = floe::table::delta::Target::at(
        &settings,
        None,
        &s3_props(&proxy.endpoint()),
        &["bronze".to_string()],
        "readings",
    )
    .expect("target")
    .open()
    .await
    .expect("open");
    let batches = crate::common::delta_sql(
        &table,
        "SELECT CAST(day AS VARCHAR), count(DISTINCT ts_utc) FROM t GROUP BY 1 ORDER BY 1",
    )
    .await;
    let mut out = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let day = arrow_cast::display::array_value_to_string(b.column(0), i).expect("day");
            out.push((
                day,
                b.column(1)
                    .as_primitive::<arrow_array::types::Int64Type>()
                    .value(i),
            ));
        }
    }
    out
}

const CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
];

/// As [`landed_day_one`], with the job writing a Delta table on the bucket
/// (delta-rs takes its credentials from the environment).
async fn landed_delta_day_one(bin: &Path, dir: &Path) -> (Weed, Proxy, Env) {
    let weed = Weed::start(bin, dir).await;
    let proxy = Proxy::start(&weed.endpoint).await;
    let env = catalog_on(&proxy).await;
    pipeline(&env, &[DAY1, DAY2]);
    let text = std::fs::read_to_string(env.path("floe.toml")).expect("pipeline");
    let text = text
        .replace(
            "[[job]]",
            &format!("[delta]\nlocation = \"s3://{BUCKET}/delta\"\n\n[[job]]"),
        )
        .replace(
            "table = \"bronze.readings\"",
            "table = \"bronze.readings\"\nformat = \"delta\"",
        );
    env.write("floe.toml", &text);
    let first = floe_ingest(&env, DAY1, "day-1", &CREDENTIALS, Duration::from_secs(60)).await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    (weed, proxy, env)
}

/// Delta on S3: an outage longer than object_store's default retries (10
/// tries from 100 ms: about 4 s) but within the budget ends in success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_table_on_s3_rides_out_an_outage_within_the_budget() {
    let Some(bin) = weed_bin() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_weed, proxy, env) = landed_delta_day_one(&bin, dir.path()).await;

    proxy.arm(".parquet", Duration::from_secs(12));
    let mut vars = CREDENTIALS.to_vec();
    vars.push(("FLOE_STORAGE_RETRY_TIMEOUT", "30s"));
    let run = floe_ingest(&env, DAY2, "day-2", &vars, Duration::from_secs(50)).await;
    assert_eq!(proxy.outages().len(), 1, "the outage happened");
    assert_eq!(run.code, Some(0), "it rode out the outage: {}", run.stderr);
    assert!(run.took >= Duration::from_secs(12), "{:?}", run.took);
    let job = run.job();
    assert_eq!(job["status"], "committed", "{job}");
    assert_eq!(job["rows_written"], ROWS_PER_DAY, "{job}");
    assert_eq!(
        delta_rows_per_day(&proxy).await,
        vec![
            (DAY1.into(), ROWS_PER_DAY as i64),
            (DAY2.into(), ROWS_PER_DAY as i64)
        ]
    );
}

/// Delta on S3: an outage longer than the budget fails the run, the log
/// gets no commit, and the next run lands the day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_table_on_s3_fails_cleanly_past_the_budget() {
    let Some(bin) = weed_bin() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_weed, proxy, env) = landed_delta_day_one(&bin, dir.path()).await;
    let log = delta_log(&proxy).await;
    assert!(!log.is_empty());

    let outage = Duration::from_secs(30);
    proxy.arm(".parquet", outage);
    let mut vars = CREDENTIALS.to_vec();
    vars.push(("FLOE_STORAGE_RETRY_TIMEOUT", "4s"));
    vars.push(("FLOE_COMMIT_OUTCOME_TIMEOUT", "4s"));
    let run = floe_ingest(&env, DAY2, "day-2", &vars, Duration::from_secs(28)).await;
    assert_eq!(proxy.outages().len(), 1, "the outage happened");
    assert_eq!(run.code, Some(2), "a clean failure: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.took < Duration::from_secs(20), "{:?}", run.took);
    assert!(
        run.stderr.contains("floe: error:") && run.stderr.contains(".parquet"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("retry_timeout: 4s"),
        "delta-rs had the budget: {}",
        run.stderr
    );
    let job = run.job();
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["error"].is_string(), "{job}");

    proxy.wait_up(outage).await;
    assert_eq!(delta_log(&proxy).await, log, "no commit");
    assert_eq!(
        delta_rows_per_day(&proxy).await,
        vec![(DAY1.into(), ROWS_PER_DAY as i64)]
    );
    let again = floe_ingest(
        &env,
        DAY2,
        "day-2-again",
        &CREDENTIALS,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(again.job()["status"], "committed");
    assert_eq!(
        delta_rows_per_day(&proxy).await,
        vec![
            (DAY1.into(), ROWS_PER_DAY as i64),
            (DAY2.into(), ROWS_PER_DAY as i64)
        ]
    );
}

/// Compaction on S3: an outage of 12 s at its first rewritten file, within
/// the budget, ends in success: the same rows in one file per day, and the
/// report says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_rides_out_an_s3_outage_within_the_budget() {
    let Some(bin) = weed_bin() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let weed = Weed::start(&bin, dir.path()).await;
    let proxy = Proxy::start(&weed.endpoint).await;
    let env = catalog_on(&proxy).await;
    let client = crate::maintain::client(&env).await;
    crate::maintain::create(&client, "t").await;
    for i in 0..6i64 {
        crate::maintain::append(&client, "t", (i % 2) as i32, i * 50..i * 50 + 50).await;
    }
    let before = crate::maintain::ids(&env, "t").await;
    assert_eq!(before, (0..300).collect::<Vec<_>>());
    env.write(
        "floe.toml",
        &format!("[catalog]\nuri = \"{}\"\n", env.catalog.uri()),
    );

    proxy.arm(".parquet", Duration::from_secs(12));
    let run = floe(
        &env,
        &[
            "compact",
            "m.t",
            "--pipeline",
            "floe.toml",
            "--min-input-files",
            "2",
            "--json",
        ],
        "compact",
        &[("FLOE_STORAGE_RETRY_TIMEOUT", "30s")],
        Duration::from_secs(50),
    )
    .await;
    assert_eq!(proxy.outages().len(), 1, "the outage happened");
    assert_eq!(run.code, Some(0), "it rode out the outage: {}", run.stderr);
    assert!(run.took >= Duration::from_secs(12), "{:?}", run.took);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON report");
    assert_eq!(report["status"], "compacted", "{report}");
    assert_eq!(report["files_before"], 6, "{report}");
    assert_eq!(report["files_after"], 2, "{report}");
    assert_eq!(report["rows"], 300, "{report}");
    assert_eq!(crate::maintain::ids(&env, "t").await, before);
}
