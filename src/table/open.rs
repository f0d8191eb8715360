//! [`Table`]: one table of either format, opened by the command layer, with
//! the maintenance operations the verbs need. Nothing above this module
//! asks which format a table is.

use std::collections::HashMap;
use std::time::Duration;

use deltalake::table::config::TablePropertiesExt;

use super::delta::{self, maintain as delta_ops};
use super::iceberg::{self, Target};
use super::maintenance::{
    CompactOptions, CompactReport, ExpireOptions, ExpireReport, OrphanOptions, OrphanReport,
    TableStatus,
};
use super::props::DEFAULT_TARGET_FILE_SIZE;
use crate::error::{Error, Result};
use crate::pipeline::TableFormat;
use crate::rest::RestClient;

/// A table of either format.
#[derive(Debug)]
pub enum Table {
    /// An Iceberg table through the REST catalog.
    Iceberg {
        /// The catalog it is in.
        client: RestClient,
        /// The table as loaded.
        target: Box<Target>,
    },
    /// A Delta table at its location.
    Delta {
        /// `namespace.name`.
        ident: String,
        /// Where it is.
        target: delta::Target,
    },
}

impl Table {
    /// The Iceberg table `ident` of `client`'s catalog.
    ///
    /// # Errors
    /// When it does not exist or the catalog fails.
    pub async fn iceberg(client: &RestClient, ident: &str) -> Result<Self> {
        Ok(Self::Iceberg {
            client: client.clone(),
            target: Box::new(Target::open(client, ident).await?),
        })
    }

    /// The Delta table `ident` at `target`.
    pub fn delta(ident: &str, target: delta::Target) -> Self {
        Self::Delta {
            ident: ident.to_string(),
            target,
        }
    }

    /// `namespace.name`.
    pub fn ident(&self) -> &str {
        match self {
            Self::Iceberg { target, .. } => &target.ident,
            Self::Delta { ident, .. } => ident,
        }
    }

    /// The table format.
    pub fn format(&self) -> TableFormat {
        match self {
            Self::Iceberg { .. } => TableFormat::Iceberg,
            Self::Delta { .. } => TableFormat::Delta,
        }
    }

    /// Whether the table has been written (a Delta table a pipeline names
    /// may not have been yet; an Iceberg table, once opened, exists).
    ///
    /// # Errors
    /// When the table cannot be read.
    pub async fn written(&self) -> Result<bool> {
        match self {
            Self::Iceberg { .. } => Ok(true),
            Self::Delta { target, .. } => Ok(target.open().await?.version().is_some()),
        }
    }

    /// The table's properties (a Delta table's configuration).
    ///
    /// # Errors
    /// When a Delta table cannot be read.
    pub async fn properties(&self) -> Result<HashMap<String, String>> {
        match self {
            Self::Iceberg { target, .. } => Ok(target.loaded.metadata.properties().clone()),
            Self::Delta { target, .. } => {
                let table = target.open().await?;
                Ok(table
                    .snapshot()
                    .map(|s| {
                        s.metadata()
                            .configuration()
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default())
            }
        }
    }

    /// The shortest age at which the format lets removed or unreferenced
    /// files be deleted (a Delta table's deleted-file retention, which
    /// protects readers of older versions); none for Iceberg.
    ///
    /// # Errors
    /// When a Delta table cannot be read.
    pub async fn min_retention(&self) -> Result<Option<Duration>> {
        match self {
            Self::Iceberg { .. } => Ok(None),
            Self::Delta { target, .. } => {
                let table = target.open().await?;
                Ok(table
                    .snapshot()
                    .ok()
                    .map(|s| s.table_config().deleted_file_retention_duration()))
            }
        }
    }

    /// The table's health; orphan candidates (Iceberg) are counted only
    /// with a window.
    ///
    /// # Errors
    /// When the table cannot be read.
    pub async fn status(
        &self,
        orphans_window: Option<Duration>,
        target_file_size: Option<u64>,
    ) -> Result<TableStatus> {
        match self {
            Self::Iceberg { client, target } => {
                iceberg::status::status(client, target, orphans_window).await
            }
            Self::Delta { ident, target } => {
                let size = target_file_size.unwrap_or(DEFAULT_TARGET_FILE_SIZE as u64);
                delta_ops::status(target, ident, size).await
            }
        }
    }

    /// Rewrites small files into files of the target size; readers see the
    /// same rows.
    ///
    /// # Errors
    /// When an option does not apply to the format, or the rewrite fails.
    pub async fn compact(&mut self, opts: &CompactOptions) -> Result<CompactReport> {
        match self {
            Self::Iceberg { client, target } => {
                if !opts.zorder.is_empty() {
                    return Err(Error::Config(format!(
                        "--zorder is for Delta tables; {} is an Iceberg table (use --sort with its sort order)",
                        target.ident
                    )));
                }
                let mut opts = opts.clone();
                if let Some((from, to)) = opts.days {
                    opts.filter = opts.filter.and(iceberg::filter::Filter::days(from, to));
                }
                let mut report = iceberg::compact::compact(client, target, &opts).await?;
                report.engine = "floe".into();
                Ok(report)
            }
            Self::Delta { ident, target } => {
                if !opts.filter.all.is_empty() || opts.sort {
                    return Err(Error::Config(format!(
                        "--where and --sort are for Iceberg tables; the Delta table {ident} is compacted whole or by --from/--to days"
                    )));
                }
                let size = opts
                    .target_file_size
                    .unwrap_or(DEFAULT_TARGET_FILE_SIZE as u64);
                let mut report = if opts.dry_run {
                    delta_ops::plan_compact(target, size, opts.days).await?
                } else {
                    delta_ops::compact(target, size, opts.days, &opts.zorder).await?
                };
                report.table = ident.clone();
                report.engine = "floe".into();
                Ok(report)
            }
        }
    }

    /// Plans a compaction for another engine to do ([`iceberg::handover`]).
    ///
    /// # Errors
    /// A Delta table, a table partitioned other than by one day field, or
    /// when its manifests cannot be read.
    pub async fn plan_handover(
        &self,
        opts: &CompactOptions,
    ) -> Result<iceberg::handover::Handover> {
        match self {
            Self::Iceberg { target, .. } => iceberg::handover::plan(target, opts).await,
            Self::Delta { ident, .. } => Err(Error::Config(format!(
                "{ident} is a Delta table; compaction by another engine takes Iceberg tables of the catalog"
            ))),
        }
    }

    /// Checks what the other engine committed for `handover` (putting
    /// `main` back when a check fails) and reports it.
    ///
    /// # Errors
    /// As [`iceberg::handover::check`].
    pub async fn check_handover(
        &mut self,
        handover: &iceberg::handover::Handover,
    ) -> Result<CompactReport> {
        match self {
            Self::Iceberg { client, target } => {
                iceberg::handover::check(client, target, handover).await
            }
            Self::Delta { ident, .. } => Err(Error::Config(format!(
                "{ident} is a Delta table; compaction by another engine takes Iceberg tables of the catalog"
            ))),
        }
    }

    /// Whether [`Table::expire`] has anything to do with `opts`: snapshots
    /// past the retention (Iceberg); always for Delta, whose vacuum finds
    /// out itself.
    pub fn expire_due(&self, opts: &ExpireOptions) -> bool {
        match self {
            Self::Iceberg { target, .. } => !iceberg::expire::select(
                &target.loaded.metadata,
                &target.loaded.refs,
                opts,
                chrono::Utc::now().timestamp_millis(),
            )
            .is_empty(),
            Self::Delta { .. } => true,
        }
    }

    /// Removes old snapshots and the files only they referenced (Delta:
    /// checkpoints, drops expired log entries and vacuums files the log
    /// removed longer ago than `opts.older_than`).
    ///
    /// # Errors
    /// When the commit or a listing fails, or (Delta) the age is shorter
    /// than the table's deleted-file retention.
    pub async fn expire(&mut self, opts: &ExpireOptions) -> Result<ExpireReport> {
        match self {
            Self::Iceberg { client, target } => iceberg::expire::expire(client, target, opts).await,
            Self::Delta { ident, target } => {
                let started = std::time::Instant::now();
                let v = delta_ops::vacuum(target, opts.older_than, false, opts.dry_run).await?;
                Ok(ExpireReport {
                    table: ident.clone(),
                    format: TableFormat::Delta,
                    status: v.status,
                    data_files_deleted: v.files_deleted.len() as u64,
                    checkpoint: v.checkpoint.and_then(|c| i64::try_from(c).ok()),
                    log_entries_removed: v.log_entries_removed as u64,
                    duration_ms: started.elapsed().as_millis(),
                    ..ExpireReport::default()
                })
            }
        }
    }

    /// Deletes files under the table that nothing references and that are
    /// older than `opts.older_than` (Delta: a full vacuum).
    ///
    /// # Errors
    /// When listing or reading metadata fails, or (Delta) the age is
    /// shorter than the table's deleted-file retention.
    pub async fn remove_orphans(&self, opts: &OrphanOptions) -> Result<OrphanReport> {
        match self {
            Self::Iceberg { client, target } => {
                iceberg::orphans::remove(client, target, opts).await
            }
            Self::Delta { ident, target } => {
                let started = std::time::Instant::now();
                let v = delta_ops::vacuum(target, opts.older_than, true, opts.dry_run).await?;
                Ok(OrphanReport {
                    table: ident.clone(),
                    format: TableFormat::Delta,
                    status: v.status,
                    orphans: v.files_deleted,
                    duration_ms: started.elapsed().as_millis(),
                    ..OrphanReport::default()
                })
            }
        }
    }

    /// Reads the table again (after a change of its own).
    ///
    /// # Errors
    /// When the catalog fails.
    pub async fn reload(&mut self) -> Result<()> {
        match self {
            Self::Iceberg { client, target } => target.reload(client).await,
            Self::Delta { .. } => Ok(()),
        }
    }
}
