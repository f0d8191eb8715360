//! floe: a lakehouse table writer.
//!
//! One binary that ingests external data into day-partitioned, UTC-keyed
//! Iceberg tables through an Iceberg REST catalog, transforms them with
//! DataFusion SQL models (tested before they are published), and
//! maintains them. It ships its own catalog server
//! (`floe catalog serve`, the `floe-catalog` crate).

pub mod catalog_serve;
pub mod cli;
pub mod connect;
pub mod duration;
pub mod error;
pub mod event_time;
pub mod ingest;
pub mod ingest_cmd;
pub mod maintain;
pub mod maintain_cmd;
pub mod pipeline;
pub mod places;
pub mod rest;
pub mod secret;
pub mod sigv4;
pub mod store;
pub mod table;
pub mod table_cmd;
pub mod transform;
pub mod transform_cmd;
pub mod trino;

pub use error::{Error, Result};

use cli::{CatalogCommand, Cli, Command};

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    // Read where the stores are opened; a bad value fails here, first.
    store::storage_retry()?;
    match cli.command {
        Command::Catalog(CatalogCommand::Serve(args)) => catalog_serve::run(&args).await,
        Command::Ingest(args) => ingest_cmd::run(&args).await,
        Command::Compact(args) => maintain_cmd::compact_cmd(&args).await,
        Command::ExpireSnapshots(args) => maintain_cmd::expire_cmd(&args).await,
        Command::RemoveOrphans(args) => maintain_cmd::orphans_cmd(&args).await,
        Command::Status(args) => maintain_cmd::status_cmd(&args).await,
        Command::Maintain(args) => maintain_cmd::maintain_cmd(&args).await,
        Command::Transform(args) => transform_cmd::transform_cmd(&args).await,
        Command::Run(args) => transform_cmd::run_cmd(&args).await,
        Command::Table(args) => table_cmd::run(&args).await,
    }
}
