//! `floe maintain`: for each table, read its health, decide from a policy
//! what it needs (compaction of partitions with many small files, expiry of
//! snapshots past the retention, removal of orphans past the window), do
//! only that, and report before/after figures as JSON and, optionally, as a
//! Prometheus textfile for node_exporter.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::pipeline::{CompactEngine, MaintainSettings};
use crate::table::Table;
use crate::table::maintenance::{
    CompactOptions, CompactReport, ExpireOptions, ExpireReport, OrphanOptions, OrphanReport,
    TableStatus,
};

/// Table property that turns maintenance off for a table.
pub const ENABLED_PROPERTY: &str = "floe.maintain.enabled";
/// Table property naming who compacts the table (`floe` or `trino`).
pub const COMPACT_ENGINE_PROPERTY: &str = "floe.compact.engine";

/// What maintenance does to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// False: the table is skipped.
    pub enabled: bool,
    /// Compaction output size (None: the table's own target).
    pub target_file_size: Option<u64>,
    /// Small files a partition needs to be compacted.
    pub min_input_files: usize,
    /// Snapshot age past which snapshots expire.
    #[serde(serialize_with = "as_secs")]
    pub expire_older_than: Duration,
    /// Snapshots of `main` always kept.
    pub retain_last: usize,
    /// Age past which unreferenced files are deleted.
    #[serde(serialize_with = "as_secs")]
    pub orphans_older_than: Duration,
    /// Who rewrites the small files.
    pub compact_engine: CompactEngine,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

impl Policy {
    /// The policy for a table: built-in defaults, then the pipeline's
    /// `[maintain]`, then the table's properties.
    pub fn resolve(settings: &MaintainSettings, props: &HashMap<String, String>) -> Result<Self> {
        let duration = |what: &str, v: &str| {
            parse_duration(v).map_err(|e| Error::Config(format!("{what}: {e}")).caused_by(e))
        };
        let number = |key: &str| -> Result<Option<u64>> {
            props
                .get(key)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        Error::Config(format!("table property {key}={v:?} is not a whole number"))
                    })
                })
                .transpose()
        };
        let mut p = Self {
            enabled: true,
            target_file_size: settings.target_file_size,
            min_input_files: settings.min_input_files.unwrap_or(5),
            expire_older_than: match &settings.expire_older_than {
                Some(v) => duration("[maintain] expire_older_than", v)?,
                None => Duration::from_secs(5 * 86_400),
            },
            retain_last: settings.retain_last.unwrap_or(1),
            orphans_older_than: match &settings.orphans_older_than {
                Some(v) => duration("[maintain] orphans_older_than", v)?,
                None => crate::table::iceberg::orphans::DEFAULT_WINDOW,
            },
            compact_engine: settings.compact_engine.unwrap_or_default(),
        };
        if let Some(v) = props.get(COMPACT_ENGINE_PROPERTY) {
            p.compact_engine = match v.trim().to_ascii_lowercase().as_str() {
                "floe" => CompactEngine::Floe,
                "trino" => CompactEngine::Trino,
                _ => {
                    return Err(Error::Config(format!(
                        "table property {COMPACT_ENGINE_PROPERTY}={v:?}: name floe or trino"
                    )));
                }
            };
        }
        if let Some(v) = props.get(ENABLED_PROPERTY) {
            p.enabled = !v.trim().eq_ignore_ascii_case("false");
        }
        if let Some(n) = number("floe.compact.min-input-files")? {
            p.min_input_files = n as usize;
        }
        if let Some(ms) = number("history.expire.max-snapshot-age-ms")? {
            p.expire_older_than = Duration::from_millis(ms);
        }
        if let Some(n) = number("history.expire.min-snapshots-to-keep")? {
            p.retain_last = n as usize;
        }
        if let Some(v) = props.get("floe.orphans.older-than") {
            p.orphans_older_than = duration("table property floe.orphans.older-than", v)?;
        }
        Ok(p)
    }

    /// Raises the ages at which files are deleted to `min`, the shortest
    /// the table's format allows (see [`Table::min_retention`]).
    pub fn hold_to(&mut self, min: Duration) {
        for (what, age) in [
            ("expire_older_than", &mut self.expire_older_than),
            ("orphans_older_than", &mut self.orphans_older_than),
        ] {
            if *age < min {
                tracing::debug!(what, from = ?*age, to = ?min, "held to the table's file retention");
                *age = min;
            }
        }
    }
}

/// Files, bytes and snapshots of a table at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Live data files.
    pub data_files: u64,
    /// Their bytes.
    pub data_bytes: u64,
    /// Small data files.
    pub small_files: u64,
    /// Snapshots.
    pub snapshots: u64,
    /// Orphan candidates.
    pub orphan_candidates: u64,
}

impl From<&TableStatus> for Figures {
    fn from(s: &TableStatus) -> Self {
        Self {
            data_files: s.data_files,
            data_bytes: s.data_bytes,
            small_files: s.small_files,
            snapshots: s.snapshots,
            orphan_candidates: s.orphan_candidates,
        }
    }
}

/// What maintenance did to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableOutcome {
    /// The table.
    pub table: String,
    /// `ok`, `skipped` (disabled by policy) or `failed`.
    pub status: String,
    /// What was done: `compact`, `expire-snapshots`, `remove-orphans`.
    pub actions: Vec<String>,
    /// The policy applied.
    pub policy: Option<Policy>,
    /// Before.
    pub before: Figures,
    /// After.
    pub after: Figures,
    /// Compaction, when it ran.
    pub compact: Option<CompactReport>,
    /// Expiry, when it ran.
    pub expire: Option<ExpireReport>,
    /// Orphan removal, when it ran.
    pub orphans: Option<OrphanReport>,
    /// Snapshots expired.
    pub snapshots_expired: u64,
    /// Files deleted (expired and orphaned).
    pub files_deleted: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// Wall time.
    pub duration_ms: u128,
}

/// Maintains one table; never fails (the outcome carries the error).
pub async fn maintain_table(
    table: &mut Table,
    settings: &MaintainSettings,
    dry_run: bool,
) -> TableOutcome {
    let started = Instant::now();
    let ident = table.ident().to_string();
    let mut out = TableOutcome {
        table: ident.clone(),
        status: "failed".into(),
        ..TableOutcome::default()
    };
    if let Err(e) = run(table, settings, dry_run, &mut out).await {
        tracing::error!(table = %ident, error = %e, "maintenance failed");
        out.error = Some(e.to_string());
        out.status = "failed".into();
    }
    out.duration_ms = started.elapsed().as_millis();
    out
}

async fn run(
    table: &mut Table,
    settings: &MaintainSettings,
    dry_run: bool,
    out: &mut TableOutcome,
) -> Result<()> {
    // A table a pipeline names but never wrote: nothing to keep.
    if !table.written().await? {
        out.status = "skipped".into();
        out.error = Some(format!("{} has not been written yet", table.ident()));
        return Ok(());
    }
    let mut policy = Policy::resolve(settings, &table.properties().await?)?;
    if let Some(min) = table.min_retention().await? {
        policy.hold_to(min);
    }
    out.policy = Some(policy.clone());
    if !policy.enabled {
        out.status = "skipped".into();
        return Ok(());
    }
    // Orphans are counted once, by the removal step below, instead of by
    // listing the table and reading every manifest again before and after.
    out.before = Figures::from(&table.status(None, policy.target_file_size).await?);
    let compact_opts = CompactOptions {
        target_file_size: policy.target_file_size,
        min_input_files: policy.min_input_files,
        dry_run,
        ..CompactOptions::default()
    };
    let compacted = match policy.compact_engine {
        CompactEngine::Floe => table.compact(&compact_opts).await?,
        CompactEngine::Trino => {
            let trino = settings.trino.as_ref().ok_or_else(|| {
                Error::Config(format!(
                    "{} is compacted by Trino (compact_engine), and the pipeline has no [engines.trino]",
                    table.ident()
                ))
            })?;
            super::on_trino::compact(table, trino, &compact_opts).await?
        }
    };
    if compacted.input_files > 0 {
        out.actions.push("compact".into());
        table.reload().await?;
    }
    out.compact = Some(compacted);
    let expire_opts = ExpireOptions {
        older_than: policy.expire_older_than,
        retain_last: policy.retain_last,
        dry_run,
    };
    if table.expire_due(&expire_opts) {
        out.actions.push("expire-snapshots".into());
        let e = table.expire(&expire_opts).await?;
        out.snapshots_expired = e.expired.len() as u64;
        out.files_deleted += e.data_files_deleted
            + e.delete_files_deleted
            + e.manifests_deleted
            + e.manifest_lists_deleted;
        out.expire = Some(e);
        table.reload().await?;
    }
    let orphans = table
        .remove_orphans(&OrphanOptions {
            older_than: policy.orphans_older_than,
            dry_run,
        })
        .await?;
    let found = orphans.orphans.len() as u64;
    if found > 0 {
        out.actions.push("remove-orphans".into());
        out.files_deleted += found;
    }
    out.after = Figures::from(&table.status(None, policy.target_file_size).await?);
    out.before.orphan_candidates = found;
    // What is left: everything on a dry run, else what could not be deleted.
    out.after.orphan_candidates = if dry_run {
        found
    } else {
        orphans.delete_failures
    };
    out.orphans = Some(orphans);
    out.status = "ok".into();
    Ok(())
}

/// The run's figures in the Prometheus text format.
pub fn prometheus(outcomes: &[TableOutcome], finished_unix: i64) -> String {
    let mut text = String::new();
    let metric = |text: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(text, "# HELP floe_maintain_{name} {help}");
        let _ = writeln!(text, "# TYPE floe_maintain_{name} {kind}");
    };
    let label = |t: &str| t.replace('\\', "\\\\").replace('"', "\\\"");
    metric(
        &mut text,
        "success",
        "1 when the table's maintenance succeeded.",
        "gauge",
    );
    for o in outcomes {
        let ok = u8::from(o.status != "failed");
        let _ = writeln!(
            text,
            "floe_maintain_success{{table=\"{}\"}} {ok}",
            label(&o.table)
        );
    }
    type Pick = fn(&Figures) -> u64;
    let figures: [(&str, &str, Pick); 3] = [
        ("data_files", "Live data files.", |f| f.data_files),
        ("data_bytes", "Live data bytes.", |f| f.data_bytes),
        ("snapshots", "Snapshots in the table metadata.", |f| {
            f.snapshots
        }),
    ];
    for (name, help, pick) in figures {
        metric(&mut text, name, help, "gauge");
        for o in outcomes.iter().filter(|o| o.status == "ok") {
            for (when, f) in [("before", &o.before), ("after", &o.after)] {
                let _ = writeln!(
                    text,
                    "floe_maintain_{name}{{table=\"{}\",when=\"{when}\"}} {}",
                    label(&o.table),
                    pick(f)
                );
            }
        }
    }
    type Count = fn(&TableOutcome) -> u64;
    let counts: [(&str, &str, Count); 2] = [
        (
            "snapshots_expired",
            "Snapshots expired by the last run.",
            |o| o.snapshots_expired,
        ),
        ("files_deleted", "Files deleted by the last run.", |o| {
            o.files_deleted
        }),
    ];
    for (name, help, count) in counts {
        metric(&mut text, name, help, "gauge");
        for o in outcomes {
            let _ = writeln!(
                text,
                "floe_maintain_{name}{{table=\"{}\"}} {}",
                label(&o.table),
                count(o)
            );
        }
    }
    metric(
        &mut text,
        "duration_seconds",
        "Wall time of the table's maintenance.",
        "gauge",
    );
    for o in outcomes {
        let _ = writeln!(
            text,
            "floe_maintain_duration_seconds{{table=\"{}\"}} {:.3}",
            label(&o.table),
            o.duration_ms as f64 / 1000.0
        );
    }
    metric(
        &mut text,
        "last_run_timestamp_seconds",
        "When the last run finished.",
        "gauge",
    );
    let _ = writeln!(
        text,
        "floe_maintain_last_run_timestamp_seconds {finished_unix}"
    );
    text
}

/// Writes `text` to `path` atomically (node_exporter may read at any time).
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("prom.tmp");
    let io = |source| Error::Io {
        context: format!("cannot write {}", path.display()),
        source,
    };
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_properties_override_the_pipeline() {
        let settings = MaintainSettings {
            min_input_files: Some(8),
            expire_older_than: Some("2d".into()),
            ..MaintainSettings::default()
        };
        let p = Policy::resolve(&settings, &HashMap::new()).expect("policy");
        assert_eq!(p.min_input_files, 8);
        assert_eq!(p.expire_older_than, Duration::from_secs(172_800));
        assert_eq!(p.retain_last, 1);
        let props = HashMap::from([
            (
                "history.expire.max-snapshot-age-ms".to_string(),
                "60000".to_string(),
            ),
            (ENABLED_PROPERTY.to_string(), "false".to_string()),
        ]);
        let p = Policy::resolve(&settings, &props).expect("policy");
        assert_eq!(p.expire_older_than, Duration::from_secs(60));
        assert!(!p.enabled);
        let bad = HashMap::from([(
            "floe.compact.min-input-files".to_string(),
            "many".to_string(),
        )]);
        assert!(Policy::resolve(&settings, &bad).is_err());
    }

    #[test]
    fn prometheus_text_names_every_table() {
        let outcomes = vec![
            TableOutcome {
                table: "bronze.a".into(),
                status: "ok".into(),
                snapshots_expired: 3,
                ..TableOutcome::default()
            },
            TableOutcome {
                table: "bronze.\"b\"".into(),
                status: "failed".into(),
                ..TableOutcome::default()
            },
        ];
        let text = prometheus(&outcomes, 1_700_000_000);
        assert!(text.contains("floe_maintain_success{table=\"bronze.a\"} 1"));
        assert!(text.contains("floe_maintain_success{table=\"bronze.\\\"b\\\"\"} 0"));
        assert!(text.contains("floe_maintain_snapshots_expired{table=\"bronze.a\"} 3"));
        assert!(text.contains("floe_maintain_last_run_timestamp_seconds 1700000000"));
    }
}
