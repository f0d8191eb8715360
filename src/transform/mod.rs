//! `floe transform`: DataFusion runs the SQL models in `sql/<layer>/` over
//! Iceberg tables and writes each result back as the table `<layer>.<name>`.
//!
//! Per run:
//! 1. discover the models and order them by the tables their queries read
//!    ([`graph`]);
//! 2. read every upstream table at one snapshot (a model run earlier in
//!    the same run is read at its staged snapshot);
//! 3. per model, decide what to recompute ([`changes`]): nothing when no
//!    upstream changed since the snapshots recorded with the model's last
//!    run, the changed days for an incremental model whose upstream
//!    changes are all by day, else everything;
//! 4. run the query (upstream tables restricted to those days, [`session`])
//!    and write the result with ingest's writer ([`write`]);
//! 5. stage the snapshot on an audit branch, run the model's data tests on
//!    it ([`audit`]); a failing model is dropped and its dependents skipped;
//! 6. publish each layer's passing models together ([`publish`]).

pub mod audit;
pub mod changes;
pub mod delta;
pub mod graph;
pub mod locality;
pub mod model;
pub mod provider;
pub mod publish;
pub mod session;
pub mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use chrono::NaiveDate;
use datafusion::error::DataFusionError;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use iceberg::spec::Operation;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::TableFormat;
use crate::rest::{LoadedTable, RestClient};
use crate::table::days::{day_name, widen};
use crate::table::snapshot::{self, Change, ChangeOutcome, Removal, TableHandle};
use audit::TestOutcome;
use changes::{Changed, day_column};
use graph::Node;
use model::{Materialized, Model};
use publish::Staged;
use session::{Source, SourceTable};

// Both keys start with STATE_PREFIX, so compactions carry them forward.
/// Summary key: the upstream snapshots a model's table was computed from.
const INPUTS_KEY: &str = "floe.state.transform-inputs";
/// Summary key: the content hash of the last full refresh.
const CONTENT_KEY: &str = "floe.state.transform-content";
/// Summary key: a hash of the model's SQL file (an edit recomputes it).
const MODEL_KEY: &str = "floe.state.transform-model";

/// What to run.
#[derive(Debug, Clone)]
pub struct TransformRequest {
    /// The models folder (`<layer>/<name>.sql`).
    pub models_dir: PathBuf,
    /// `--select` (empty: every model).
    pub select: Vec<String>,
    /// Recompute these days (inclusive) instead of the changed ones.
    pub window: Option<(NaiveDate, NaiveDate)>,
    /// The run id (audit branch names, file names, snapshot summaries).
    pub run_id: String,
    /// Plan only: print what each model would recompute.
    pub dry_run: bool,
    /// Models run at once (when independent).
    pub concurrency: usize,
    /// Where the pipeline's Delta tables are (jobs' and models').
    pub delta: crate::places::Places,
    /// The format of models whose header names none.
    pub model_format: TableFormat,
}

/// One model's outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelReport {
    /// `layer.name` (also the table).
    pub model: String,
    /// The SQL file.
    pub file: String,
    /// published, up-to-date, unchanged, planned, tests-failed, failed,
    /// skipped, not-published.
    pub status: String,
    /// full, days or none.
    pub refresh: String,
    /// Why that refresh.
    pub reason: String,
    /// Days recomputed (a days refresh).
    pub days: Vec<String>,
    /// Rows written.
    pub rows_written: u64,
    /// Data files written.
    pub data_files: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// The snapshot staged (and published, when status is published); a
    /// Delta table's committed version.
    pub snapshot_id: Option<i64>,
    /// The table format (`iceberg` or `delta`).
    pub format: TableFormat,
    /// Tables read.
    pub reads: Vec<String>,
    /// Data test outcomes.
    pub tests: Vec<TestOutcome>,
    /// The table's location.
    pub location: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// Wall time.
    pub duration_ms: u128,
}

/// A DataFusion error as a model error naming the file, and the line and
/// column when DataFusion knows them.
pub(crate) fn sql_error(model: &Model, e: &DataFusionError) -> Error {
    let root = e.find_root();
    let position = e
        .diagnostic()
        .and_then(|d| d.span)
        .map(|s| (s.start.line, s.start.column))
        .or_else(|| parser_position(&root.to_string()));
    let message = root.to_string();
    match position {
        Some((line, column)) if line > 0 => {
            Error::Model(format!("{}:{line}:{column}: {message}", model.file()))
        }
        _ => Error::Model(format!("{}: {message}", model.file())),
    }
}

/// `(line, column)` from a parser message ending "at Line: 3, Column: 8".
fn parser_position(message: &str) -> Option<(u64, u64)> {
    let after = |key: &str| -> Option<u64> {
        let rest = &message[message.rfind(key)? + key.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((after("Line: ")?, after("Column: ")?))
}

/// What a model's run produced.
struct Ran {
    report: ModelReport,
    staged: Option<Staged>,
    /// The model's table as downstream models read it (staged or
    /// committed).
    source: Option<Source>,
    failed: bool,
    /// What went wrong (not for failing data tests).
    error: Option<Error>,
    /// A dry run's plan for this model (so downstream plans follow it).
    planned: Option<Refresh>,
}

/// Runs the selected models. Every model gets a report; the error returned
/// is the first failure (data-test failures exit 1, others 2).
pub async fn run(client: &RestClient, req: &TransformRequest) -> (Vec<ModelReport>, Result<()>) {
    match plan_and_run(client, req).await {
        Ok(out) => out,
        Err(e) => (Vec::new(), Err(e)),
    }
}

async fn plan_and_run(
    client: &RestClient,
    req: &TransformRequest,
) -> Result<(Vec<ModelReport>, Result<()>)> {
    let models = model::discover(&req.models_dir)?;
    let graph = graph::build(models, &session::context().state())?;
    let selected = graph.select(&req.select)?;
    let selected_names: BTreeSet<String> = selected.iter().map(|n| n.model.name.clone()).collect();
    let delta_models: BTreeSet<String> = graph
        .nodes
        .iter()
        .filter(|n| n.model.format.unwrap_or(req.model_format) == TableFormat::Delta)
        .map(|n| n.model.name.clone())
        .collect();
    // Every table read or tested against, at its current snapshot.
    let mut world: HashMap<String, Source> = HashMap::new();
    for node in &selected {
        let relationship_targets = node.model.tests.relationship_tables(&node.model.name);
        for name in node
            .reads
            .iter()
            .cloned()
            .chain(relationship_targets)
            .chain([node.model.name.clone()])
        {
            if world.contains_key(&name) {
                continue;
            }
            let source = if delta_models.contains(&name) || req.delta.is_job_table(&name) {
                delta::load(&req.delta, &name).await?
            } else {
                load_source(client, &name).await?
            };
            if let Some(source) = source {
                world.insert(name, source);
            } else if !graph.nodes.iter().any(|n| n.model.name == name) {
                return Err(Error::Model(format!(
                    "{}: reads table {name}, which is not in the catalog and is not a model",
                    node.model.file()
                )));
            }
        }
    }

    let mut reports: BTreeMap<String, ModelReport> = BTreeMap::new();
    let mut finished: BTreeMap<String, bool> = BTreeMap::new(); // name -> ok
    let mut staged: Vec<(String, Staged)> = Vec::new();
    let mut planned: BTreeMap<String, Refresh> = BTreeMap::new();
    let mut first_error: Option<Error> = None;
    let mut pending: Vec<&Node> = selected.clone();
    let mut running = FuturesUnordered::new();
    let total = pending.len();
    loop {
        // Start every model whose selected upstream models are done.
        while running.len() < req.concurrency.max(1) {
            let Some(pos) = pending.iter().position(|n| {
                n.upstream
                    .iter()
                    .filter(|u| selected_names.contains(*u))
                    .all(|u| finished.contains_key(u))
            }) else {
                break;
            };
            let node = pending.remove(pos);
            let blocked: Vec<&String> = node
                .upstream
                .iter()
                .filter(|u| finished.get(*u) == Some(&false))
                .collect();
            if !blocked.is_empty() {
                finished.insert(node.model.name.clone(), false);
                reports.insert(
                    node.model.name.clone(),
                    ModelReport {
                        model: node.model.name.clone(),
                        file: node.model.file(),
                        status: "skipped".into(),
                        error: Some(format!(
                            "not run: upstream {} failed",
                            blocked
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                        ..ModelReport::default()
                    },
                );
                continue;
            }
            let sources: HashMap<String, Source> = world.clone();
            let plans = planned.clone();
            let started = reports.len() + running.len() + 1;
            eprintln!("[{started}/{total}] {}: running", node.model.name);
            running.push(async move {
                let t = Instant::now();
                let mut ran = run_model(client, node, &sources, &plans, req).await;
                ran.report.duration_ms = t.elapsed().as_millis();
                (node.model.name.clone(), ran)
            });
        }
        let Some((name, ran)) = running.next().await else {
            break;
        };
        eprintln!(
            "  {name}: {}{}",
            ran.report.status,
            ran.report
                .error
                .as_deref()
                .map(|e| format!(" ({})", e.lines().next().unwrap_or_default()))
                .unwrap_or_default()
        );
        finished.insert(name.clone(), !ran.failed);
        if let Some(plan) = ran.planned {
            planned.insert(name.clone(), plan);
        }
        if let Some(e) = ran.error
            && first_error.is_none()
        {
            first_error = Some(e);
        }
        if let Some(source) = ran.source {
            world.insert(name.clone(), source);
        }
        if let Some(s) = ran.staged {
            staged.push((s.layer.clone(), s));
        }
        reports.insert(name, ran.report);
    }

    // Publish layer by layer, in run order; after a failed publish, later
    // layers (computed from the unpublished tables) are dropped.
    let mut layers: Vec<String> = Vec::new();
    for node in &selected {
        if !layers.contains(&node.model.layer) {
            layers.push(node.model.layer.clone());
        }
    }
    let mut publish_error: Option<Error> = None;
    for layer in layers {
        let batch: Vec<Staged> = staged
            .iter()
            .filter(|(l, _)| *l == layer)
            .map(|(_, s)| s.clone())
            .collect();
        if batch.is_empty() {
            continue;
        }
        let outcome = if publish_error.is_some() {
            for s in &batch {
                publish::discard(client, s).await;
            }
            Err("not published: an earlier layer failed to publish".to_string())
        } else {
            publish::publish(client, &batch).await.map_err(|e| {
                let text = e.to_string();
                publish_error = Some(e);
                text
            })
        };
        for s in &batch {
            if let Some(r) = reports.get_mut(&s.model) {
                match &outcome {
                    Ok(()) => r.status = "published".into(),
                    Err(e) => {
                        r.status = "not-published".into();
                        r.error = Some(e.clone());
                    }
                }
            }
        }
    }

    let ordered: Vec<ModelReport> = selected
        .iter()
        .filter_map(|n| reports.remove(&n.model.name))
        .collect();
    let test_failures: Vec<&ModelReport> = ordered
        .iter()
        .filter(|r| r.status == "tests-failed")
        .collect();
    let outcome = if !test_failures.is_empty() {
        Err(Error::DataTest(
            test_failures
                .iter()
                .filter_map(|r| r.error.clone())
                .collect::<Vec<_>>()
                .join("\n"),
        ))
    } else if let Some(e) = publish_error {
        Err(e)
    } else if let Some(e) = first_error {
        Err(e)
    } else {
        Ok(())
    };
    Ok((ordered, outcome))
}

/// The table `name` (`namespace.table`) at `main`, if it exists.
async fn load_source(client: &RestClient, name: &str) -> Result<Option<Source>> {
    let (ns, table) = name
        .split_once('.')
        .ok_or_else(|| Error::Model(format!("table {name} needs a namespace")))?;
    let namespace = vec![ns.to_string()];
    let Some(loaded) = client.load_table(&namespace, table).await? else {
        return Ok(None);
    };
    Ok(Some(source_of(client, name, &loaded, None)?))
}

fn source_of(
    client: &RestClient,
    name: &str,
    loaded: &LoadedTable,
    snapshot_id: Option<i64>,
) -> Result<Source> {
    let (ns, table) = name.split_once('.').unwrap_or(("", name));
    let handle = TableHandle {
        namespace: vec![ns.to_string()],
        name: table.to_string(),
        io: crate::store::table_io(client, loaded),
    };
    Ok(Source {
        name: name.to_string(),
        table: SourceTable::Iceberg(handle.table(loaded)?),
        snapshot_id: snapshot_id.or(loaded.metadata.current_snapshot_id()),
    })
}

/// What a model recomputes.
#[derive(Debug, Clone, PartialEq)]
enum Refresh {
    Skip,
    Full,
    Days(BTreeSet<i32>),
}

async fn run_model(
    client: &RestClient,
    node: &Node,
    world: &HashMap<String, Source>,
    planned: &BTreeMap<String, Refresh>,
    req: &TransformRequest,
) -> Ran {
    let model = &node.model;
    let mut report = ModelReport {
        model: model.name.clone(),
        file: model.file(),
        reads: node.reads.iter().cloned().collect(),
        ..ModelReport::default()
    };
    match run_model_inner(client, node, world, planned, req, &mut report).await {
        Ok((staged, source, plan)) => Ran {
            failed: report.status == "tests-failed",
            report,
            staged,
            source,
            error: None,
            planned: plan,
        },
        Err(e) => {
            report.status = "failed".into();
            report.error = Some(e.to_string());
            report.snapshot_id = None;
            Ran {
                report,
                staged: None,
                source: None,
                failed: true,
                error: Some(e),
                planned: None,
            }
        }
    }
}

/// A staged result (to publish), the model's table as read downstream
/// and, in a dry run, the plan.
type Outcome = (Option<Staged>, Option<Source>, Option<Refresh>);

async fn run_model_inner(
    client: &RestClient,
    node: &Node,
    world: &HashMap<String, Source>,
    planned: &BTreeMap<String, Refresh>,
    req: &TransformRequest,
    report: &mut ModelReport,
) -> Result<Outcome> {
    let model = &node.model;
    // A dry run cannot plan over an upstream model that has no table yet
    // (its first run is only planned): this one will be computed whole.
    if req.dry_run
        && let Some(missing) = node
            .reads
            .iter()
            .find(|r| !world.contains_key(*r) && planned.contains_key(*r))
    {
        report.status = "planned".into();
        report.refresh = "full".into();
        report.reason = format!("{missing} has no table yet (its first run is planned)");
        return Ok((None, None, Some(Refresh::Full)));
    }
    let inputs: Vec<&Source> = node
        .reads
        .iter()
        .map(|r| {
            world.get(r).ok_or_else(|| {
                Error::Model(format!(
                    "{}: reads {r}, which has no table yet (its model has never published)",
                    model.file()
                ))
            })
        })
        .collect::<Result<_>>()?;

    // Plan once over the whole upstream tables for the output schema.
    let ctx = session::context();
    for s in &inputs {
        session::register(&ctx, s, None).await?;
    }
    let df = ctx
        .sql(&model.sql)
        .await
        .map_err(|e| sql_error(model, &e))?;
    let output = df.schema().as_arrow().clone();
    let event_time = write::event_time(model, &output)?;
    let materialized = match (model.materialized, &event_time) {
        (Some(Materialized::Incremental), None) => {
            return Err(Error::Model(format!(
                "{}: materialized = \"incremental\" needs an event-time column (ts_utc, or set event_time)",
                model.file()
            )));
        }
        (Some(m), _) => m,
        (None, Some(_)) => Materialized::Incremental,
        (None, None) => Materialized::Table,
    };
    if materialized == Materialized::Incremental
        && let Some(time) = &event_time
    {
        check_locality(model, &df, &inputs, time)?;
    }
    let schema = write::table_schema(model, &output)?;
    let (namespace, name) = model.target();
    report.format = model.format.unwrap_or(req.model_format);
    let delta_head = match report.format {
        TableFormat::Delta => {
            Some(delta::head(&req.delta, model, &schema, event_time.is_some()).await?)
        }
        TableFormat::Iceberg => None,
    };
    let existing = match delta_head {
        Some(_) => None,
        None => client.load_table(&namespace, &name).await?,
    };
    if let Some(t) = &existing {
        publish::drop_stale_branches(client, &namespace, &name, t).await;
        // Checked before anything else: a changed query must not pass as
        // up to date.
        if t.metadata.current_snapshot().is_some() {
            write::check_same_columns(model, t.metadata.current_schema(), &schema)?;
        }
    }
    let head_props = match &delta_head {
        Some(h) => h.props.clone(),
        None => existing
            .as_ref()
            .and_then(|t| t.metadata.current_snapshot())
            .map(|s| s.summary().additional_properties.clone())
            .unwrap_or_default(),
    };
    let now: BTreeMap<String, Option<i64>> = inputs
        .iter()
        .map(|s| (s.name.clone(), s.snapshot_id))
        .collect();
    let model_hash = format!(
        "{:032x}",
        twox_hash::XxHash3_128::oneshot(model.sql.as_bytes())
    );
    // An edited model file (its query, or its tests) is committed even when
    // its rows did not change, so its tests run and its hash is recorded.
    let same_model = head_props.get(MODEL_KEY) == Some(&model_hash);
    let (refresh, reason) = if head_props.contains_key(INPUTS_KEY)
        && head_props.get(MODEL_KEY) != Some(&model_hash)
        && req.window.is_none()
    {
        (Refresh::Full, "the model's SQL changed".to_string())
    } else {
        decide(
            materialized,
            req.window,
            &head_props,
            &inputs,
            &now,
            planned,
        )
        .await?
    };
    report.reason = reason;
    report.refresh = match &refresh {
        Refresh::Skip => "none",
        Refresh::Full => "full",
        Refresh::Days(_) => "days",
    }
    .into();
    // With a lookback, the days around a changed one are recomputed too,
    // reading the days around those (a `--from/--to` window is recomputed
    // as asked, reading around it).
    let lookback = model.lookback_days.unwrap_or(0);
    let mut refresh = refresh;
    if let Refresh::Days(days) = &mut refresh
        && req.window.is_none()
    {
        *days = widen(days, lookback);
    }
    if let Refresh::Days(days) = &refresh {
        report.days = days.iter().map(|d| day_name(*d)).collect();
        if lookback > 0 {
            report.reason.push_str(&format!(
                "; lookback {lookback}d: {} day(s) recomputed",
                days.len()
            ));
        }
    }
    if refresh == Refresh::Skip {
        report.status = "up-to-date".into();
        return Ok((None, None, None));
    }
    if req.dry_run {
        report.status = "planned".into();
        return Ok((None, None, Some(refresh)));
    }
    let days = match &refresh {
        Refresh::Days(d) => Some(d),
        _ => None,
    };
    // The query again over the upstream days only, for a days refresh
    // (with a lookback, the days around them too, keeping only the result
    // rows of the days recomputed).
    let df = match days {
        None => df,
        Some(days) => {
            let ctx = session::context();
            let read = widen(days, lookback);
            for s in &inputs {
                session::register(&ctx, s, Some(&read)).await?;
            }
            let df = ctx
                .sql(&model.sql)
                .await
                .map_err(|e| sql_error(model, &e))?;
            match event_time.as_deref() {
                Some(time) if lookback > 0 => {
                    let tz = match df.schema().as_arrow().field_with_name(time) {
                        Ok(f) => match f.data_type() {
                            datafusion::arrow::datatypes::DataType::Timestamp(_, tz) => tz.clone(),
                            _ => None,
                        },
                        Err(_) => None,
                    };
                    df.filter(session::day_predicate(time, days, tz))
                        .map_err(|e| sql_error(model, &e))?
                }
                _ => df,
            }
        }
    };
    if let Some(head) = &delta_head {
        report.location = Some(head.target.url.to_string());
        let mut record = vec![
            (
                "floe.job".to_string(),
                serde_json::json!(format!("transform:{}", model.name)),
            ),
            (
                "floe.transform.refresh".to_string(),
                serde_json::json!(report.refresh),
            ),
            (
                INPUTS_KEY.to_string(),
                serde_json::json!(
                    serde_json::to_string(&now)
                        .map_err(|e| Error::Model(format!("cannot record the inputs: {e}")))?
                ),
            ),
            (MODEL_KEY.to_string(), serde_json::json!(model_hash)),
            ("floe.run-id".to_string(), serde_json::json!(req.run_id)),
        ];
        if days.is_some() {
            record.push((
                "floe.transform.days".to_string(),
                serde_json::json!(report.days.join(",")),
            ));
        }
        let run_id = format!("{}-{}", req.run_id, model.name);
        let source = delta::write(
            delta::ModelWrite {
                model,
                target: &head.target,
                schema: &schema,
                event_time: event_time.as_deref(),
                days,
                run_id: &run_id,
                record,
                previous_content: head
                    .props
                    .get(CONTENT_KEY)
                    .filter(|_| same_model)
                    .map(String::as_str),
                world,
            },
            df,
            report,
        )
        .await?;
        return Ok((None, source, None));
    }

    let loaded = write::open_or_create(client, model, &schema, event_time.as_deref()).await?;
    report.location = Some(loaded.metadata.location().to_string());
    let handle = TableHandle {
        namespace: namespace.clone(),
        name: name.clone(),
        io: crate::store::table_io(client, &loaded),
    };
    let stream = df
        .execute_stream()
        .await
        .map_err(|e| sql_error(model, &e))?;
    let run_id = format!("{}-{}", req.run_id, model.name);
    let written = write::write(
        &write::WriteSpec {
            model,
            loaded: &loaded,
            handle: &handle,
            event_time: event_time.as_deref(),
            days,
            run_id: &run_id,
            hash: days.is_none(),
        },
        stream,
    )
    .await?;
    report.rows_written = written.rows;
    report.data_files = written.files.len() as u64;
    report.bytes_written = written.files.iter().map(|f| f.file_size_in_bytes()).sum();
    if same_model
        && written.content.is_some()
        && loaded.metadata.current_snapshot().is_some()
        && written.content.as_ref() == head_props.get(CONTENT_KEY)
    {
        for f in &written.files {
            let _ = handle.io.delete(f.file_path()).await;
        }
        report.status = "unchanged".into();
        report.bytes_written = 0;
        report.data_files = 0;
        return Ok((None, None, None));
    }

    // Stage on the audit branch.
    let branch = publish::branch_name(&req.run_id, &model.name);
    let inputs_json = serde_json::to_string(&now)
        .map_err(|e| Error::Model(format!("cannot record the inputs: {e}")))?;
    let mut properties = HashMap::from([
        ("floe.job".to_string(), format!("transform:{}", model.name)),
        ("floe.transform.refresh".to_string(), report.refresh.clone()),
        (INPUTS_KEY.to_string(), inputs_json),
        (MODEL_KEY.to_string(), model_hash),
        (
            CONTENT_KEY.to_string(),
            written.content.clone().unwrap_or_default(),
        ),
    ]);
    if days.is_some() {
        properties.insert("floe.transform.days".into(), report.days.join(","));
    }
    let file_paths: Vec<String> = written
        .files
        .iter()
        .map(|f| f.file_path().to_string())
        .collect();
    let change = Change {
        added: BTreeMap::from([(loaded.metadata.default_partition_spec_id(), written.files)]),
        removal: match days {
            Some(d) => Removal::Days(d.clone()),
            None => Removal::Everything,
        },
        operation: Operation::Overwrite,
        properties,
        run_id: run_id.clone(),
        guarded_days: BTreeSet::new(),
        branch: Some(branch.clone()),
    };
    let base = loaded.metadata.current_snapshot_id();
    let uuid = loaded.metadata.uuid();
    let snapshot_id = match snapshot::commit_change(client, &handle, loaded, &change).await? {
        ChangeOutcome::Committed(c) => c.snapshot_id,
        ChangeOutcome::Stale(paths) => {
            return Err(Error::Storage(format!(
                "{} file(s) vanished while staging",
                paths.len()
            )));
        }
    };
    report.snapshot_id = Some(snapshot_id);
    let staged_table = snapshot::reload(client, &handle).await?;
    let staged = Staged {
        model: model.name.clone(),
        layer: model.layer.clone(),
        namespace,
        table: name,
        uuid,
        branch,
        base,
        snapshot_id,
        files: file_paths,
    };
    let source = source_of(client, &model.name, &staged_table, Some(snapshot_id))?;

    // Audit: the model's tests over what this run wrote.
    let checks = audit::checks(model, event_time.as_deref())?;
    let ctx = session::context();
    session::register(&ctx, &source, days).await?;
    for table in model.tests.relationship_tables(&model.name) {
        if let Some(s) = world.get(&table) {
            session::register(&ctx, s, None).await?;
        }
    }
    let outcomes = match audit::run(&ctx, model, &checks).await {
        Ok(o) => o,
        Err(e) => {
            publish::discard(client, &staged).await;
            return Err(e);
        }
    };
    if let Some(msg) = audit::failures(model, &outcomes) {
        publish::discard(client, &staged).await;
        if staged.base.is_none() {
            // Its first result failed: the table floe created for it goes
            // too, as if the model had never run.
            if let Err(e) = client
                .drop_table(&staged.namespace, &staged.table, true)
                .await
            {
                tracing::warn!(model = %model.name, error = %e, "could not drop the empty table");
            }
        }
        report.tests = outcomes;
        report.status = "tests-failed".into();
        report.error = Some(msg);
        report.snapshot_id = None;
        return Ok((None, None, None));
    }
    report.tests = outcomes;
    report.status = "staged".into();
    Ok((Some(staged), Some(source), None))
}

/// Refuses an incremental model whose refresh of some days would publish
/// other rows than a full refresh (see [`locality`]).
fn check_locality(
    model: &Model,
    df: &datafusion::prelude::DataFrame,
    inputs: &[&Source],
    event_time: &str,
) -> Result<()> {
    let mut day_columns = locality::DayColumns::new();
    for s in inputs {
        let exact: BTreeSet<String> = match &s.table {
            SourceTable::Iceberg(t) => day_column(t.metadata()).into_iter().collect(),
            SourceTable::Delta(t) => delta::day_columns(t),
        };
        if !exact.is_empty() {
            day_columns.insert(
                s.name.to_lowercase(),
                exact.into_iter().map(|c| c.to_lowercase()).collect(),
            );
        }
    }
    let plan = df
        .clone()
        .into_optimized_plan()
        .map_err(|e| sql_error(model, &e))?;
    let mode = if model.lookback_days.is_some() {
        locality::Mode::Bounded
    } else {
        locality::Mode::DayLocal
    };
    locality::check(&plan, &day_columns, event_time, mode).map_err(|what| {
        let fix = match mode {
            locality::Mode::DayLocal => "set lookback = \"Nd\" in its header (how many days from its own day a result row's inputs may lie), or materialized = \"table\"",
            locality::Mode::Bounded => "no lookback bounds that; set materialized = \"table\"",
        };
        Error::Model(format!(
            "{}: an incremental refresh would publish other rows than a full one: {what}; {fix}",
            model.file()
        ))
    })
}

/// What to recompute, and why.
async fn decide(
    materialized: Materialized,
    window: Option<(NaiveDate, NaiveDate)>,
    head_props: &HashMap<String, String>,
    inputs: &[&Source],
    now: &BTreeMap<String, Option<i64>>,
    planned: &BTreeMap<String, Refresh>,
) -> Result<(Refresh, String)> {
    if let (Some((from, to)), Materialized::Incremental) = (window, materialized) {
        return Ok((
            Refresh::Days(crate::table::days::window(from, to).collect()),
            format!("--from {from} --to {to}"),
        ));
    }
    let previous: Option<BTreeMap<String, Option<i64>>> = head_props
        .get(INPUTS_KEY)
        .and_then(|v| serde_json::from_str(v).ok());
    let Some(previous) = previous else {
        return Ok((Refresh::Full, "no record of an earlier run".into()));
    };
    let mut changed = Changed::Nothing;
    let mut why: Vec<String> = Vec::new();
    let mut maybe: Vec<String> = Vec::new();
    for s in inputs {
        let before = previous.get(&s.name).copied().flatten();
        let after = now.get(&s.name).copied().flatten();
        if !previous.contains_key(&s.name) {
            changed = Changed::Everything;
            why.push(format!("{} is a new input", s.name));
            continue;
        }
        // In a dry run, an upstream model's plan stands for its change. A
        // full recompute may well give the same rows (not committed then),
        // so it is noted rather than assumed.
        let c = match planned.get(&s.name) {
            Some(Refresh::Days(d)) => Changed::Days(d.clone()),
            Some(Refresh::Full) => {
                maybe.push(s.name.clone());
                Changed::Nothing
            }
            _ => match &s.table {
                SourceTable::Iceberg(t) => changes::between(t, before, after).await?,
                SourceTable::Delta(t) => delta::changed(t, before, after).await?,
            },
        };
        match &c {
            Changed::Nothing => {}
            Changed::Days(d) => why.push(format!("{} changed on {} day(s)", s.name, d.len())),
            Changed::Everything => why.push(format!("{} changed (not by day)", s.name)),
        }
        changed = changed.merge(c);
    }
    if !maybe.is_empty() {
        let note = format!(
            "whole model if the recomputed {} give(s) different rows",
            maybe.join(", ")
        );
        if changed == Changed::Nothing {
            return Ok((Refresh::Full, note));
        }
        why.push(note);
    }
    Ok(match (changed, materialized) {
        (Changed::Nothing, _) => (Refresh::Skip, "no input changed".into()),
        (Changed::Days(d), Materialized::Incremental) => (Refresh::Days(d), why.join("; ")),
        (_, _) => (Refresh::Full, why.join("; ")),
    })
}

/// The first `rows` rows of table `name` at `main` (ordered by its first
/// three columns) and its location; none when the table does not exist.
/// With `places`, `name` is a Delta table there.
///
/// # Errors
/// When the catalog or the query fails.
pub async fn preview(
    client: &RestClient,
    places: Option<&crate::places::Places>,
    name: &str,
    rows: usize,
) -> Result<Option<(String, Vec<datafusion::arrow::record_batch::RecordBatch>)>> {
    let source = match places {
        Some(p) => delta::load(p, name).await?,
        None => load_source(client, name).await?,
    };
    let Some(source) = source else {
        return Ok(None);
    };
    let location = match &source.table {
        SourceTable::Iceberg(t) => t.metadata().location().to_string(),
        SourceTable::Delta(t) => t.table_url().to_string(),
    };
    let ctx = session::context();
    session::register(&ctx, &source, None).await?;
    let query = |e: DataFusionError| Error::Model(format!("preview of {name}: {e}"));
    let df = ctx.table(name).await.map_err(query)?;
    let order: Vec<datafusion::logical_expr::SortExpr> = df
        .schema()
        .fields()
        .iter()
        .take(3)
        .map(|f| datafusion::prelude::ident(f.name()).sort(true, true))
        .collect();
    let batches = df
        .sort(order)
        .and_then(|d| d.limit(0, Some(rows)))
        .map_err(query)?
        .collect()
        .await
        .map_err(query)?;
    Ok(Some((location, batches)))
}
