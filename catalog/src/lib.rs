//! floe's Iceberg REST catalog server.
//!
//! A real catalog that pyiceberg, Spark, Trino and floe itself use over the
//! REST protocol (`shared/reference/iceberg-rest-catalog-open-api.yaml`):
//! namespaces, tables, commits with compare-and-swap semantics, multi-table
//! transactions, OAuth2 client credentials. Table metadata files live in the
//! warehouse (a local folder or S3); which file is current lives in a SQL
//! database (SQLite by default, PostgreSQL optional) laid out like Iceberg's
//! JDBC catalog.
//!
//! ```no_run
//! # async fn run(config: floe_catalog::CatalogConfig) -> Result<(), floe_catalog::StartError> {
//! let running = floe_catalog::spawn(config).await?;
//! println!("catalog at {}", running.uri());
//! running.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! This crate does not depend on the floe writer; the two talk over HTTP.

pub mod api;
pub mod commit;
pub mod config;
pub mod error;
mod guard;
pub mod ident;
pub mod storage;
pub mod store;
pub mod warehouse;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{
    AuthConfig, CatalogConfig, ConnectionLimits, S3Options, Secret, redact, remember_secret,
};
pub use error::ApiError;

use api::{AppState, TokenIssuer};
use store::Store;
use warehouse::Warehouse;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The warehouse location is unusable.
    #[error("invalid warehouse: {0}")]
    Warehouse(String),
    /// The pointer database could not be opened.
    #[error("cannot open the catalog database: {0}")]
    Database(#[from] store::StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// An opened catalog: database connected, warehouse reachable.
#[derive(Debug, Clone)]
pub struct Catalog {
    state: Arc<AppState>,
}

impl Catalog {
    /// Opens the warehouse and the database (creating its tables).
    ///
    /// # Errors
    /// When the warehouse URL is invalid or the database cannot be opened.
    pub async fn open(config: CatalogConfig) -> Result<Self, StartError> {
        let warehouse =
            Warehouse::open(&config.warehouse, &config.s3).map_err(StartError::Warehouse)?;
        if let Some(dir) = warehouse.root().strip_prefix("file://") {
            std::fs::create_dir_all(dir)
                .map_err(|e| StartError::Warehouse(format!("cannot create {dir}: {e}")))?;
        }
        let store = Store::connect(&config.db_url, &config.name).await?;
        Ok(Self {
            state: Arc::new(AppState {
                store,
                warehouse,
                config,
                tokens: TokenIssuer::default(),
            }),
        })
    }

    /// The HTTP router, for serving or for in-process tests (`oneshot`).
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// The warehouse root URL.
    pub fn warehouse_root(&self) -> &str {
        self.state.warehouse.root()
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes
    /// in-flight requests and closes the database.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = guard::Guarded::new(listener, self.state.config.limits);
        // The peer address reaches the token endpoint (per-address backoff).
        let app = self
            .router()
            .into_make_service_with_connect_info::<guard::Peer>();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        self.state.store.close().await;
        result
    }
}

/// A catalog serving in the background of this process.
#[derive(Debug)]
pub struct RunningCatalog {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningCatalog {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the URI clients use.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests, closes the database.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "catalog server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "catalog server task failed"),
        }
    }
}

/// Opens the catalog, binds `config.listen` and serves in a background task.
///
/// # Errors
/// As [`Catalog::open`], or when the address cannot be bound.
pub async fn spawn(config: CatalogConfig) -> Result<RunningCatalog, StartError> {
    let addr = config.listen;
    let catalog = Catalog::open(config).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(catalog.serve(listener, async {
        let _ = stopped.await;
    }));
    Ok(RunningCatalog { addr, stop, task })
}
