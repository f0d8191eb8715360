//! Write-audit-publish: a model's snapshot is committed to a branch of its
//! own (`main` untouched), tested there, and published by fast-forwarding
//! `main` to it. The models of one layer that pass are published together
//! in one multi-table commit (the REST catalog's `transactions/commit`),
//! so readers never see half a refresh of a layer. A snapshot that fails
//! its tests is dropped with its branch and its data files.

use iceberg::TableUpdate;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::rest::{RestClient, TableChange, TransactionOutcome};
use crate::table::snapshot::publish_ref;

/// A snapshot staged on a branch, waiting to be published.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The table as `namespace.table` (for messages).
    pub ident: String,
    /// Namespace levels of the table.
    pub namespace: Vec<String>,
    /// Table name.
    pub table: String,
    /// The table's uuid (guards against a dropped and recreated table).
    pub uuid: Uuid,
    /// The audit branch.
    pub branch: String,
    /// `main` when the snapshot was staged (its parent).
    pub base: Option<i64>,
    /// The staged snapshot.
    pub snapshot_id: i64,
    /// Its new data files (deleted if it is dropped).
    pub files: Vec<String>,
}

impl Pending {
    fn change(&self) -> TableChange {
        let (requirements, updates) =
            publish_ref(self.uuid, &self.branch, self.base, self.snapshot_id);
        TableChange {
            namespace: self.namespace.clone(),
            table: self.table.clone(),
            requirements,
            updates,
        }
    }
}

/// Prefix of every audit branch.
const BRANCH_PREFIX: &str = "floe-audit-";
/// An audit branch older than this was left by a run that died between
/// staging and publishing.
const STALE_AFTER_MS: i64 = 24 * 3600 * 1000;

/// The name of a run's audit branch for a model.
pub fn branch_name(run_id: &str, table: &str) -> String {
    format!("{BRANCH_PREFIX}{run_id}-{table}")
}

/// Removes audit branches a dead run left on `table` (older than a day),
/// so that their snapshots can expire. Failures are logged.
pub async fn drop_stale_branches(
    client: &RestClient,
    namespace: &[String],
    table: &str,
    loaded: &crate::rest::LoadedTable,
) {
    let cutoff = chrono::Utc::now().timestamp_millis() - STALE_AFTER_MS;
    let updates: Vec<TableUpdate> = loaded
        .refs
        .iter()
        .filter(|(name, r)| {
            name.starts_with(BRANCH_PREFIX)
                && loaded
                    .metadata
                    .snapshot_by_id(r.snapshot_id)
                    .is_none_or(|s| s.timestamp_ms() < cutoff)
        })
        .map(|(name, _)| TableUpdate::RemoveSnapshotRef {
            ref_name: name.clone(),
        })
        .collect();
    if updates.is_empty() {
        return;
    }
    tracing::info!(
        table,
        branches = updates.len(),
        "removing audit branches left by dead runs"
    );
    if let Err(e) = client.commit(namespace, table, &[], &updates).await {
        tracing::warn!(table, error = %e, "could not remove stale audit branches");
    }
}

/// Publishes `staged` (one layer) atomically.
///
/// # Errors
/// [`Error::CommitConflict`] when another writer moved `main` of one of the
/// tables since staging (nothing is published; the branches are dropped).
pub async fn publish(client: &RestClient, staged: &[Pending]) -> Result<()> {
    if staged.is_empty() {
        return Ok(());
    }
    let changes: Vec<TableChange> = staged.iter().map(Pending::change).collect();
    let outcome = if let [single] = changes.as_slice() {
        single_commit(client, single).await?
    } else {
        match client.commit_transaction(&changes).await? {
            TransactionOutcome::Unsupported(reason) => {
                tracing::warn!(%reason, "the catalog has no multi-table commit; publishing table by table");
                let mut last = TransactionOutcome::Committed;
                for c in &changes {
                    last = single_commit(client, c).await?;
                    if !matches!(last, TransactionOutcome::Committed) {
                        break;
                    }
                }
                last
            }
            other => other,
        }
    };
    let names = || {
        staged
            .iter()
            .map(|s| s.ident.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // An unknown outcome is settled by the tables themselves, once the
    // catalog answers again (within the commit retry policy's budget).
    let landed = match &outcome {
        TransactionOutcome::Unknown(reason) => {
            let retry = crate::table::retry::Retry::commits()?;
            let landed = retry
                .until_answered("checking an unknown publish", || {
                    all_published(client, staged)
                })
                .await?;
            if landed {
                tracing::info!(%reason, "publish outcome was unknown; the tables show it landed");
            }
            landed
        }
        _ => false,
    };
    match outcome {
        TransactionOutcome::Committed => Ok(()),
        TransactionOutcome::Unknown(_) if landed => Ok(()),
        TransactionOutcome::Conflict(reason) | TransactionOutcome::Unknown(reason) => {
            for s in staged {
                discard(client, s).await;
            }
            Err(Error::CommitConflict(format!(
                "publishing {} failed: {reason}. Another writer changed one of these tables during the transform; nothing was published, run it again",
                names()
            )))
        }
        TransactionOutcome::Unsupported(reason) => Err(Error::Catalog(reason)),
    }
}

async fn single_commit(client: &RestClient, c: &TableChange) -> Result<TransactionOutcome> {
    use crate::rest::CommitOutcome;
    Ok(
        match client
            .commit(&c.namespace, &c.table, &c.requirements, &c.updates)
            .await?
        {
            CommitOutcome::Committed(_) => TransactionOutcome::Committed,
            CommitOutcome::Conflict(r) => TransactionOutcome::Conflict(r),
            CommitOutcome::Unknown(r) => TransactionOutcome::Unknown(r),
        },
    )
}

async fn all_published(client: &RestClient, staged: &[Pending]) -> Result<bool> {
    for s in staged {
        let Some(t) = client.load_table(&s.namespace, &s.table).await? else {
            return Ok(false);
        };
        if t.metadata.current_snapshot_id() != Some(s.snapshot_id) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Drops a staged snapshot: its branch and the snapshot itself, then its
/// data files. Failures are logged (the files are then orphans that
/// `remove-orphans` deletes).
pub async fn discard(client: &RestClient, staged: &Pending) {
    let updates = vec![
        TableUpdate::RemoveSnapshotRef {
            ref_name: staged.branch.clone(),
        },
        TableUpdate::RemoveSnapshots {
            snapshot_ids: vec![staged.snapshot_id],
        },
    ];
    match client
        .commit(&staged.namespace, &staged.table, &[], &updates)
        .await
    {
        Ok(crate::rest::CommitOutcome::Committed(loaded)) => {
            let io = crate::store::table_io(client, &loaded);
            for f in &staged.files {
                if let Err(e) = io.delete(f).await {
                    tracing::debug!(path = %f, error = %e, "could not delete a dropped file");
                }
            }
        }
        Ok(other) => {
            tracing::warn!(table = %staged.ident, ?other, "could not drop the audit branch");
        }
        Err(e) => {
            tracing::warn!(table = %staged.ident, error = %e, "could not drop the audit branch")
        }
    }
}
