//! Test fixtures: an in-process catalog per test, pipeline files in a temp
//! folder, and a reader for what landed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use arrow_array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use floe::ingest::{IngestRequest, JobReport};
use floe::pipeline::{self, CatalogSettings};
use floe::rest::RestClient;
use floe::table::snapshot::TableHandle;
use floe_catalog::{AuthConfig, CatalogConfig, RunningCatalog, S3Options};
use futures::TryStreamExt;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub catalog: RunningCatalog,
}

impl Env {
    pub async fn new() -> Self {
        Self::with_auth(AuthConfig::default()).await
    }

    /// A catalog that requires `auth`.
    pub async fn with_auth(auth: AuthConfig) -> Self {
        Self::with_config(|config| config.auth = auth).await
    }

    /// A catalog on a local-folder warehouse in the test's folder, with
    /// `adjust` applied to its configuration (an S3 warehouse, auth).
    pub async fn with_config(adjust: impl FnOnce(&mut CatalogConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = CatalogConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            warehouse: format!("file://{}/wh", dir.path().display()),
            name: "floe".into(),
            db_url: format!("sqlite://{}/catalog.db", dir.path().display()),
            s3: S3Options::default(),
            vend_credentials: false,
            auth: AuthConfig::default(),
            max_body_bytes: 16 * 1024 * 1024,
            limits: Default::default(),
        };
        adjust(&mut config);
        let catalog = floe_catalog::spawn(config).await.expect("catalog starts");
        Self { dir, catalog }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    /// Writes `floe.toml` with the catalog section and `jobs`.
    pub fn pipeline(&self, jobs: &str) -> pipeline::Pipeline {
        self.pipeline_with(jobs, "")
    }

    /// As [`Env::pipeline`], with extra `[catalog]` lines.
    pub fn pipeline_with(&self, jobs: &str, catalog_lines: &str) -> pipeline::Pipeline {
        let text = format!(
            "[catalog]\nuri = \"{}\"\n{catalog_lines}\n\n{jobs}",
            self.catalog.uri()
        );
        let path = self.write("floe.toml", &text);
        pipeline::load(&path).expect("pipeline parses")
    }

    pub async fn client_with(&self, settings: CatalogSettings) -> RestClient {
        let settings = CatalogSettings {
            uri: self.catalog.uri(),
            ..settings
        };
        RestClient::connect(&settings)
            .await
            .expect("client connects")
    }

    /// Every row of a table as batches.
    pub async fn scan(&self, ns: &str, table: &str) -> Vec<RecordBatch> {
        self.scan_with(ns, table, CatalogSettings::default()).await
    }

    pub async fn scan_with(
        &self,
        ns: &str,
        table: &str,
        settings: CatalogSettings,
    ) -> Vec<RecordBatch> {
        let client = self.client_with(settings).await;
        let loaded = client
            .load_table(&[ns.to_string()], table)
            .await
            .expect("load")
            .expect("table exists");
        let handle = TableHandle {
            namespace: vec![ns.to_string()],
            name: table.to_string(),
            io: floe::store::table_io(&client, &loaded),
        };
        let t = handle.table(&loaded).expect("table");
        let scan = t.scan().select_all().build().expect("scan");
        scan.to_arrow()
            .await
            .expect("stream")
            .try_collect()
            .await
            .expect("batches")
    }
}

/// Serves `app` on 127.0.0.1 (a free port) in the background; its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A transform of every model in `models`, changed days only.
pub fn transform_request(
    models: &std::path::Path,
    run_id: &str,
) -> floe::transform::TransformRequest {
    floe::transform::TransformRequest {
        models_dir: models.to_path_buf(),
        select: Vec::new(),
        window: None,
        run_id: run_id.to_string(),
        dry_run: false,
        concurrency: 2,
        places: Default::default(),
        model_format: Default::default(),
        engine: Default::default(),
        trino: None,
    }
}

pub fn request(from: &str, to: &str, run_id: &str) -> IngestRequest {
    IngestRequest {
        from: from.parse().expect("date"),
        to: to.parse().expect("date"),
        dry_run: false,
        replay: false,
        allow_empty: false,
        now: chrono::Utc::now(),
        max_records: None,
        run_id: run_id.to_string(),
    }
}

pub async fn ingest(
    p: &pipeline::Pipeline,
    req: &IngestRequest,
) -> (Vec<JobReport>, floe::Result<()>) {
    floe::ingest::run(p, &[], req).await
}

/// UTC day (YYYY-MM-DD) → distinct `ts_utc` values of that day.
pub fn instants_per_day(batches: &[RecordBatch]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for b in batches {
        let ts = b
            .column_by_name("ts_utc")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .expect("ts_utc");
        for v in ts.iter().flatten() {
            let day = chrono::DateTime::from_timestamp_micros(v)
                .expect("ts")
                .date_naive()
                .to_string();
            out.entry(day).or_default().push(v);
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

pub fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).expect("column");
            let s = c.as_any().downcast_ref::<StringArray>().expect("strings");
            (0..s.len())
                .map(|i| s.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The rows `sql` selects from the Delta table `table`, registered as `t`.
pub async fn delta_sql(table: &deltalake::DeltaTable, sql: &str) -> Vec<RecordBatch> {
    let ctx = datafusion::prelude::SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .expect("session");
    ctx.register_table("t", table.table_provider().await.expect("provider"))
        .expect("register");
    ctx.sql(sql)
        .await
        .expect("sql")
        .collect()
        .await
        .expect("rows")
}

impl Env {
    /// The rows `sql` selects from the Delta table at `delta/<rel>` (as
    /// `t`).
    pub async fn delta_sql(&self, rel: &str, sql: &str) -> Vec<RecordBatch> {
        let url =
            reqwest::Url::from_directory_path(self.path(&format!("delta/{rel}"))).expect("url");
        let table = deltalake::DeltaTable::try_from_url(url)
            .await
            .expect("open");
        delta_sql(&table, sql).await
    }
}
