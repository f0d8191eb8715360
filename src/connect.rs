//! Reaching the catalog a command works through: the pipeline file's
//! `[catalog]`, or floe's own catalog served in-process over the pipeline's
//! `embedded_warehouse`, or a `--catalog URI` from the command line.

use std::path::Path;

use crate::error::{Error, Result};
use crate::pipeline::{self, CatalogSettings, MaintainSettings};
use crate::rest::RestClient;
use crate::secret::Secret;

/// A connected catalog, and the embedded server behind it when there is one.
#[derive(Debug)]
pub struct Connection {
    /// The client.
    pub client: RestClient,
    embedded: Option<floe_catalog::RunningCatalog>,
}

impl Connection {
    /// Connects as `settings` say, serving the embedded catalog first when
    /// they name an `embedded_warehouse`.
    pub async fn open(settings: &CatalogSettings) -> Result<Self> {
        let mut settings = settings.clone();
        let embedded = match &settings.embedded_warehouse {
            Some(folder) => Some(start_embedded(folder).await?),
            None => None,
        };
        if let Some(running) = &embedded {
            settings.uri = running.uri();
        }
        let client = match RestClient::connect(&settings).await {
            Ok(c) => c,
            Err(e) => {
                if let Some(running) = embedded {
                    running.shutdown().await;
                }
                return Err(e);
            }
        };
        Ok(Self { client, embedded })
    }

    /// Stops the embedded catalog, if any.
    pub async fn close(self) {
        if let Some(running) = self.embedded {
            running.shutdown().await;
        }
    }
}

/// Serves the pipeline's embedded catalog, when it names an
/// `embedded_warehouse` (and `serve`), and points the pipeline's catalog
/// URI at it; the caller shuts it down when done.
///
/// # Errors
/// When the catalog cannot start.
pub async fn serve_embedded(
    pipeline: &mut pipeline::Pipeline,
    serve: bool,
) -> Result<Option<floe_catalog::RunningCatalog>> {
    let Some(folder) = pipeline
        .catalog
        .embedded_warehouse
        .clone()
        .filter(|_| serve)
    else {
        return Ok(None);
    };
    let running = start_embedded(&folder).await?;
    pipeline.catalog.uri = running.uri();
    Ok(Some(running))
}

/// The catalog and maintenance settings of a maintenance command:
/// `--catalog URI` when given (with built-in maintenance defaults), else
/// the `[catalog]` and `[maintain]` of the pipeline file.
pub fn settings(
    pipeline_path: &Path,
    catalog_uri: Option<&str>,
) -> Result<(CatalogSettings, MaintainSettings)> {
    if let Some(uri) = catalog_uri {
        let catalog = CatalogSettings {
            uri: uri.to_string(),
            token: std::env::var("FLOE_CATALOG_TOKEN").ok().map(Secret::new),
            credential: std::env::var("FLOE_CATALOG_CREDENTIAL")
                .ok()
                .map(Secret::new),
            ..CatalogSettings::default()
        };
        return Ok((catalog, MaintainSettings::default()));
    }
    if !pipeline_path.exists() {
        return Err(Error::Config(format!(
            "no pipeline file {} to take the catalog from; pass --pipeline FILE or --catalog URI",
            pipeline_path.display()
        )));
    }
    let p = pipeline::load(pipeline_path)?;
    Ok((p.catalog, p.maintain))
}

/// Serves floe's catalog in this process over a local folder, on a free
/// loopback port, until the returned handle is shut down.
pub async fn start_embedded(folder: &str) -> Result<floe_catalog::RunningCatalog> {
    let warehouse = crate::catalog_serve::warehouse_url(folder)?;
    let db_url = floe_catalog::CatalogConfig::default_db_url(&warehouse).ok_or_else(|| {
        Error::Config(format!(
            "embedded_warehouse {folder:?} must be a local folder"
        ))
    })?;
    let config = floe_catalog::CatalogConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        warehouse,
        name: floe_catalog::config::DEFAULT_WAREHOUSE_NAME.to_string(),
        db_url,
        s3: floe_catalog::S3Options::default(),
        vend_credentials: false,
        auth: floe_catalog::AuthConfig::default(),
        max_body_bytes: floe_catalog::config::DEFAULT_MAX_BODY_BYTES,
        limits: Default::default(),
    };
    Ok(floe_catalog::spawn(config).await?)
}
