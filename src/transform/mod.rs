//! `floe transform`: DataFusion runs the SQL models in `sql/<layer>/` over
//! the pipeline's tables and writes each result back as the table
//! `<layer>.<name>`, in the format its header (or `[transform]`) names.
//!
//! Per run:
//! 1. discover the models and order them by the tables their queries read
//!    ([`graph`]);
//! 2. read every upstream table at one snapshot (a model run earlier in
//!    the same run is read at its staged result);
//! 3. per model, decide what to recompute: nothing when no upstream
//!    changed since the snapshots recorded with the model's last run, the
//!    changed days for an incremental model whose upstream changes are all
//!    by day (widened by its `lookback`, [`locality`]), else everything;
//! 4. run the query (upstream tables restricted to those days) and write
//!    the result through the table layer ([`crate::table::output`]);
//! 5. stage it, run the model's data tests on it ([`audit`]); a failing
//!    model is dropped and its dependents skipped;
//! 6. publish each layer's passing models together (a format without
//!    branches commits a model when its tests pass).

pub mod audit;
pub mod graph;
pub mod locality;
pub mod model;
pub mod session;
pub mod trino;
pub mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use chrono::NaiveDate;
use datafusion::error::DataFusionError;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::{Engine, TableFormat, TrinoSettings};
use crate::rest::RestClient;
use crate::table::days::{day_name, widen};
use crate::table::output::{self, Accepted, Output, OutputSpec, RunSpec, Staged};
use crate::table::read::{Changed, Location, Source, day_predicate};
use audit::TestOutcome;
use graph::Node;
use model::{Materialized, Model};

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
    /// Where the pipeline's tables are (which are Delta, and where).
    pub places: crate::places::Places,
    /// The format of models whose header names none.
    pub model_format: TableFormat,
    /// The engine of models whose header names none.
    pub engine: Engine,
    /// The Trino coordinator (`[engines.trino]`), for models on Trino.
    pub trino: Option<TrinoSettings>,
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
    /// The engine that computed it (`datafusion` or `trino`).
    pub engine: String,
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
    /// Accepted, waiting for its layer's publish.
    pending: Option<Pending>,
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
    let run = Run {
        client,
        req,
        places: places_with_models(&graph, req),
        trino: trino_engine(&selected, req).await?,
    };
    let world = run.load_world(&graph, &selected).await?;
    if let Some(engine) = &run.trino
        && !req.dry_run
    {
        engine.check_sees(world.values()).await?;
    }
    let (mut reports, pending, first_error) = run.run_models(&selected, world).await;
    let publish_error = run.publish_layers(&selected, pending, &mut reports).await;
    let ordered: Vec<ModelReport> = selected
        .iter()
        .filter_map(|n| reports.remove(&n.model.name))
        .collect();
    let outcome = overall_outcome(&ordered, publish_error, first_error);
    Ok((ordered, outcome))
}

/// The Trino coordinator when a selected model runs on Trino, checked to
/// answer (unless the run only plans).
async fn trino_engine(
    selected: &[&Node],
    req: &TransformRequest,
) -> Result<Option<trino::TrinoEngine>> {
    let Some(first) = selected
        .iter()
        .find(|n| n.model.engine.unwrap_or(req.engine) == Engine::Trino)
    else {
        return Ok(None);
    };
    let Some(settings) = &req.trino else {
        return Err(Error::Config(format!(
            "{} runs on Trino, and the pipeline has no [engines.trino] uri = \"http://...\"",
            first.model.file()
        )));
    };
    let engine = trino::TrinoEngine::new(settings)?;
    if !req.dry_run {
        engine.check().await?;
    }
    Ok(Some(engine))
}

/// Where the pipeline's tables are, the models' outputs included (each
/// in the format its header names, else `[transform] format`).
fn places_with_models(graph: &graph::Graph, req: &TransformRequest) -> crate::places::Places {
    let formats = graph.nodes.iter().map(|n| {
        (
            n.model.name.clone(),
            Some(n.model.format.unwrap_or(req.model_format)),
        )
    });
    req.places.clone().with_models(formats)
}

/// The first failure: failing data tests (exit 1), else a failed publish,
/// else the first model error.
fn overall_outcome(
    reports: &[ModelReport],
    publish_error: Option<Error>,
    first_error: Option<Error>,
) -> Result<()> {
    let test_failures: Vec<&ModelReport> = reports
        .iter()
        .filter(|r| r.status == "tests-failed")
        .collect();
    if !test_failures.is_empty() {
        return Err(Error::DataTest(
            test_failures
                .iter()
                .filter_map(|r| r.error.clone())
                .collect::<Vec<_>>()
                .join("\n"),
        ));
    }
    match publish_error.or(first_error) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// An accepted model waiting for its layer's publish.
struct Pending {
    model: String,
    layer: String,
    accepted: crate::table::iceberg::publish::Pending,
}

/// One transform run: the catalog, the request and where its tables are.
struct Run<'a> {
    client: &'a RestClient,
    req: &'a TransformRequest,
    places: crate::places::Places,
    /// The Trino coordinator, when a selected model runs on Trino.
    trino: Option<trino::TrinoEngine>,
}

impl Run<'_> {
    /// Every table the selected models read or test against, at its
    /// current snapshot.
    async fn load_world(
        &self,
        graph: &graph::Graph,
        selected: &[&Node],
    ) -> Result<HashMap<String, Source>> {
        let mut world: HashMap<String, Source> = HashMap::new();
        for node in selected {
            for name in node
                .reads
                .iter()
                .cloned()
                .chain(node.tested.iter().cloned())
                .chain([node.model.name.clone()])
            {
                if world.contains_key(&name) {
                    continue;
                }
                let location = self.places.locate(&name)?;
                if let Some(source) = location.load(self.client, &name).await? {
                    world.insert(name, source);
                } else if !graph.nodes.iter().any(|n| n.model.name == name) {
                    return Err(Error::Model(format!(
                        "{}: reads table {name}, which is not in the catalog and is not a model",
                        node.model.file()
                    )));
                }
            }
        }
        Ok(world)
    }

    /// Runs the models, each once its selected upstream models are done
    /// (up to `concurrency` at once); a model whose upstream failed is
    /// skipped. Returns the reports, the accepted results waiting for
    /// their layer's publish and the first error.
    async fn run_models<'n>(
        &self,
        selected: &[&'n Node],
        mut world: HashMap<String, Source>,
    ) -> (BTreeMap<String, ModelReport>, Vec<Pending>, Option<Error>) {
        let selected_names: BTreeSet<String> =
            selected.iter().map(|n| n.model.name.clone()).collect();
        let mut reports: BTreeMap<String, ModelReport> = BTreeMap::new();
        let mut finished: BTreeMap<String, bool> = BTreeMap::new(); // name -> ok
        let mut pending_publish: Vec<Pending> = Vec::new();
        let mut planned: BTreeMap<String, Refresh> = BTreeMap::new();
        let mut first_error: Option<Error> = None;
        let mut pending: Vec<&'n Node> = selected.to_vec();
        let mut running = FuturesUnordered::new();
        let total = pending.len();
        loop {
            while running.len() < self.req.concurrency.max(1) {
                let Some(pos) = pending.iter().position(|n| {
                    n.upstream
                        .iter()
                        .filter(|u| selected_names.contains(*u))
                        .all(|u| finished.contains_key(u))
                }) else {
                    break;
                };
                let node = pending.remove(pos);
                if let Some(report) = skipped(node, &finished) {
                    finished.insert(node.model.name.clone(), false);
                    reports.insert(node.model.name.clone(), report);
                    continue;
                }
                let sources: HashMap<String, Source> = world.clone();
                let plans = planned.clone();
                let started = reports.len() + running.len() + 1;
                eprintln!("[{started}/{total}] {}: running", node.model.name);
                running.push(async move {
                    let t = Instant::now();
                    let mut ran = self.run_model(node, &sources, &plans).await;
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
            pending_publish.extend(ran.pending);
            reports.insert(name, ran.report);
        }
        (reports, pending_publish, first_error)
    }

    /// Publishes layer by layer, in run order; after a failed publish,
    /// later layers (computed from the unpublished tables) are dropped.
    /// Returns the publish error.
    async fn publish_layers(
        &self,
        selected: &[&Node],
        pending: Vec<Pending>,
        reports: &mut BTreeMap<String, ModelReport>,
    ) -> Option<Error> {
        let mut layers: Vec<String> = Vec::new();
        for node in selected {
            if !layers.contains(&node.model.layer) {
                layers.push(node.model.layer.clone());
            }
        }
        let mut publish_error: Option<Error> = None;
        for layer in layers {
            let (models, batch): (Vec<&str>, Vec<_>) = pending
                .iter()
                .filter(|p| p.layer == layer)
                .map(|p| (p.model.as_str(), p.accepted.clone()))
                .unzip();
            if batch.is_empty() {
                continue;
            }
            let outcome = if publish_error.is_some() {
                output::abandon(self.client, &batch).await;
                Err("not published: an earlier layer failed to publish".to_string())
            } else {
                output::publish(self.client, &batch).await.map_err(|e| {
                    let text = e.to_string();
                    publish_error = Some(e);
                    text
                })
            };
            for model in models {
                if let Some(r) = reports.get_mut(model) {
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
        publish_error
    }

    async fn run_model(
        &self,
        node: &Node,
        world: &HashMap<String, Source>,
        planned: &BTreeMap<String, Refresh>,
    ) -> Ran {
        let model = &node.model;
        let mut report = ModelReport {
            model: model.name.clone(),
            file: model.file(),
            reads: node.reads.iter().cloned().collect(),
            ..ModelReport::default()
        };
        match self
            .run_model_inner(node, world, planned, &mut report)
            .await
        {
            Ok(done) => Ran {
                failed: report.status == "tests-failed",
                report,
                pending: done.pending.map(|accepted| Pending {
                    model: model.name.clone(),
                    layer: model.layer.clone(),
                    accepted,
                }),
                source: done.source,
                error: None,
                planned: done.planned,
            },
            Err(e) => {
                report.status = "failed".into();
                report.error = Some(e.to_string());
                report.snapshot_id = None;
                Ran {
                    report,
                    pending: None,
                    source: None,
                    failed: true,
                    error: Some(e),
                    planned: None,
                }
            }
        }
    }

    /// Plan, refresh decision, write, stage, audit, accept.
    async fn run_model_inner(
        &self,
        node: &Node,
        world: &HashMap<String, Source>,
        planned: &BTreeMap<String, Refresh>,
        report: &mut ModelReport,
    ) -> Result<Done> {
        let model = &node.model;
        // A dry run cannot plan over an upstream model that has no table
        // yet (its first run is only planned): this one will be computed
        // whole.
        if self.req.dry_run
            && let Some(missing) = node
                .reads
                .iter()
                .find(|r| !world.contains_key(*r) && planned.contains_key(*r))
        {
            report.status = "planned".into();
            report.refresh = "full".into();
            report.reason = format!("{missing} has no table yet (its first run is planned)");
            return Ok(Done::planned(Refresh::Full));
        }
        let engine = model.engine.unwrap_or(self.req.engine);
        report.engine = engine.name().to_string();
        let plan = Plan::of(node, world).await.map_err(|e| match engine {
            Engine::Trino => e.caused_by(PlannedByDataFusion),
            Engine::DataFusion => e,
        })?;
        plan_tests(node, &plan, world).await?;
        report.format = model.format.unwrap_or(self.req.model_format);
        let (namespace_name, properties) = (model.name.as_str(), &model.properties);
        let file = model.file();
        let spec = OutputSpec {
            ident: namespace_name,
            file: &file,
            schema: &plan.schema,
            event_time: plan.event_time.as_deref(),
            sort: &model.sort,
            properties,
            record_key: MODEL_KEY,
        };
        let location = self.places.location(&model.name, report.format)?;
        let out = Output::open(&location, self.client, &spec).await?;
        let last = out.last_record();
        let Some(refresh) = self.refresh(&plan, &last, planned, report).await? else {
            return Ok(Done::default());
        };
        if self.req.dry_run {
            report.status = "planned".into();
            return Ok(Done::planned(refresh));
        }
        let days = match &refresh {
            Refresh::Days(d) => Some(d),
            _ => None,
        };
        let run = RunSpec {
            run_id: &self.req.run_id,
            days,
            hash: days.is_none(),
        };
        let written = match engine {
            Engine::DataFusion => {
                let df = plan.restricted(model, days).await?;
                let rows = df
                    .execute_stream()
                    .await
                    .map_err(|e| sql_error(model, &e))?
                    .map_err(move |e| sql_error(model, &e))
                    .boxed();
                out.write(&spec, &run, rows).await?
            }
            Engine::Trino => self.write_on_trino(&plan, days, out, &spec, &run).await?,
        };
        report.location = Some(written.location.clone());
        report.rows_written = written.rows;
        report.data_files = written.data_files;
        report.bytes_written = written.bytes;
        if last.get(MODEL_KEY) == Some(&plan.model_hash)
            && written.content.is_some()
            && written.content.as_ref() == last.get(CONTENT_KEY)
        {
            written.discard().await;
            report.status = "unchanged".into();
            report.bytes_written = 0;
            report.data_files = 0;
            return Ok(Done::default());
        }
        let record = plan.record(&written.content, report)?;
        let staged = written.stage(&spec, &run, record).await?;
        report.snapshot_id = staged.snapshot_id;
        audit_and_accept(node, &plan, staged, days, world, report).await
    }

    /// Has Trino compute the model's result (the refreshed days of it) into
    /// a staging table, and takes its files as the result's.
    async fn write_on_trino<'o>(
        &self,
        plan: &Plan,
        days: Option<&BTreeSet<i32>>,
        out: Output<'o>,
        spec: &OutputSpec<'_>,
        run: &RunSpec<'_>,
    ) -> Result<output::Written<'o>> {
        let model = &plan.model;
        let Some(engine) = &self.trino else {
            return Err(Error::Config(format!(
                "{} runs on Trino, and the pipeline has no [engines.trino]",
                model.file()
            )));
        };
        let external = out.external(spec, run).await?;
        let lookback = model.lookback_days.unwrap_or(0);
        let read_days = days.map(|d| widen(d, lookback));
        let keep = match (plan.event_time.as_deref(), days) {
            (Some(column), Some(d)) if lookback > 0 => Some((column, d)),
            _ => None,
        };
        let job = trino::Job {
            model,
            inputs: &plan.inputs,
            read_days: read_days.as_ref(),
            keep,
            schema: &plan.schema,
            staging: external.staging(),
            token: external.token(),
        };
        if let Err(e) = engine.write(&job).await {
            external.abandon().await;
            return Err(e);
        }
        external.collect(spec, run).await
    }

    /// What the model recomputes (none: it is up to date), with the report's
    /// refresh, reason and days.
    async fn refresh(
        &self,
        plan: &Plan,
        last: &HashMap<String, String>,
        planned: &BTreeMap<String, Refresh>,
        report: &mut ModelReport,
    ) -> Result<Option<Refresh>> {
        let model = &plan.model;
        let (refresh, reason) = if last.contains_key(INPUTS_KEY)
            && last.get(MODEL_KEY) != Some(&plan.model_hash)
            && self.req.window.is_none()
        {
            (Refresh::Full, "the model's SQL changed".to_string())
        } else {
            decide(
                plan.materialized,
                self.req.window,
                last,
                &plan.inputs,
                &plan.now,
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
        // With a lookback, the days around a changed one are recomputed
        // too, reading the days around those (a `--from/--to` window is
        // recomputed as asked, reading around it).
        let lookback = model.lookback_days.unwrap_or(0);
        let mut refresh = refresh;
        if let Refresh::Days(days) = &mut refresh
            && self.req.window.is_none()
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
            return Ok(None);
        }
        Ok(Some(refresh))
    }
}

/// Plans the model's data tests over an empty table of its result's
/// columns (and the tables they read), before anything is computed: a
/// test naming an unknown column stops the model at once. Skipped when a
/// table a test reads is not there yet (a dry run before its first run).
async fn plan_tests(node: &Node, plan: &Plan, world: &HashMap<String, Source>) -> Result<()> {
    let model = &node.model;
    if node.tested.iter().any(|t| !world.contains_key(t)) {
        return Ok(());
    }
    let checks = audit::checks(model, plan.event_time.as_deref())?;
    let ctx = session::context();
    let schema = std::sync::Arc::new(plan.df.schema().as_arrow().clone());
    let empty = datafusion::datasource::MemTable::try_new(schema, vec![Vec::new()])
        .map_err(|e| sql_error(model, &e))?;
    crate::table::read::register_as(&ctx, &model.name, std::sync::Arc::new(empty))?;
    for table in &node.tested {
        if let Some(s) = world.get(table) {
            s.register(&ctx, None).await?;
        }
    }
    audit::plan(&ctx, model, &checks).await
}

/// Runs the model's data tests over what this run staged: a failing model
/// is dropped, a passing one accepted (queued for its layer's publish, or
/// committed where the format has no branches).
async fn audit_and_accept(
    node: &Node,
    plan: &Plan,
    staged: Staged<'_>,
    days: Option<&BTreeSet<i32>>,
    world: &HashMap<String, Source>,
    report: &mut ModelReport,
) -> Result<Done> {
    let model = &node.model;
    let checks = audit::checks(model, plan.event_time.as_deref())?;
    let ctx = session::context();
    let registered = async {
        staged.register(&ctx, days).await?;
        for table in &node.tested {
            if let Some(s) = world.get(table) {
                s.register(&ctx, None).await?;
            }
        }
        audit::run(&ctx, model, &checks).await
    }
    .await;
    let outcomes = match registered {
        Ok(o) => o,
        Err(e) => {
            staged.discard().await;
            return Err(e);
        }
    };
    if let Some(msg) = audit::failures(model, &outcomes) {
        staged.discard().await;
        report.tests = outcomes;
        report.status = "tests-failed".into();
        report.error = Some(msg);
        report.snapshot_id = None;
        return Ok(Done::default());
    }
    report.tests = outcomes;
    match staged.accept().await? {
        Accepted::Pending { pending, source } => {
            report.status = "staged".into();
            Ok(Done {
                pending: Some(pending),
                source: Some(source),
                planned: None,
            })
        }
        Accepted::Published {
            source,
            snapshot_id,
        } => {
            report.status = "published".into();
            report.snapshot_id = snapshot_id;
            Ok(Done {
                pending: None,
                source: Some(source),
                planned: None,
            })
        }
    }
}

/// What a model's run left: an accepted result waiting for its layer's
/// publish, the model's table as read downstream and, in a dry run, the
/// plan.
#[derive(Default)]
struct Done {
    pending: Option<crate::table::iceberg::publish::Pending>,
    source: Option<Source>,
    planned: Option<Refresh>,
}

impl Done {
    fn planned(refresh: Refresh) -> Self {
        Done {
            planned: Some(refresh),
            ..Done::default()
        }
    }
}

/// A model's query planned over its inputs' current snapshots.
struct Plan {
    model: Model,
    inputs: Vec<Source>,
    /// The full query over the whole upstream tables.
    df: datafusion::prelude::DataFrame,
    event_time: Option<String>,
    materialized: Materialized,
    /// The result as a table.
    schema: iceberg::spec::Schema,
    /// The inputs' snapshots, as recorded with the result.
    now: BTreeMap<String, Option<i64>>,
    /// A hash of the model's file.
    model_hash: String,
}

impl Plan {
    /// Plans the query once over the whole upstream tables (for the
    /// output schema) and refuses an incremental model whose refresh of
    /// some days would differ from a full one.
    async fn of(node: &Node, world: &HashMap<String, Source>) -> Result<Plan> {
        let model = &node.model;
        let inputs: Vec<Source> = node
            .reads
            .iter()
            .map(|r| {
                world.get(r).cloned().ok_or_else(|| {
                    Error::Model(format!(
                        "{}: reads {r}, which has no table yet (its model has never published)",
                        model.file()
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let ctx = session::context();
        for s in &inputs {
            s.register(&ctx, None).await?;
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
        let now = inputs
            .iter()
            .map(|s| (s.name.clone(), s.snapshot_id))
            .collect();
        let model_hash = format!(
            "{:032x}",
            twox_hash::XxHash3_128::oneshot(model.sql.as_bytes())
        );
        Ok(Plan {
            model: model.clone(),
            inputs,
            df,
            event_time,
            materialized,
            schema,
            now,
            model_hash,
        })
    }

    /// The query to write: the full one, or for a days refresh the query
    /// again over the upstream days only (with a lookback, the days around
    /// them too, keeping only the result rows of the days recomputed).
    async fn restricted(
        &self,
        model: &Model,
        days: Option<&BTreeSet<i32>>,
    ) -> Result<datafusion::prelude::DataFrame> {
        let Some(days) = days else {
            return Ok(self.df.clone());
        };
        let lookback = model.lookback_days.unwrap_or(0);
        let ctx = session::context();
        let read = widen(days, lookback);
        for s in &self.inputs {
            s.register(&ctx, Some(&read)).await?;
        }
        let df = ctx
            .sql(&model.sql)
            .await
            .map_err(|e| sql_error(model, &e))?;
        match self.event_time.as_deref() {
            Some(time) if lookback > 0 => {
                let tz = match df.schema().as_arrow().field_with_name(time) {
                    Ok(f) => match f.data_type() {
                        datafusion::arrow::datatypes::DataType::Timestamp(_, tz) => tz.clone(),
                        _ => None,
                    },
                    Err(_) => None,
                };
                df.filter(day_predicate(time, days, tz))
                    .map_err(|e| sql_error(model, &e))
            }
            _ => Ok(df),
        }
    }

    /// What the result records in its snapshot summary or commit info.
    fn record(
        &self,
        content: &Option<String>,
        report: &ModelReport,
    ) -> Result<BTreeMap<String, String>> {
        let inputs_json = serde_json::to_string(&self.now)
            .map_err(|e| Error::Model(format!("cannot record the inputs: {e}")).caused_by(e))?;
        let mut record = BTreeMap::from([
            (
                "floe.job".to_string(),
                format!("transform:{}", self.model.name),
            ),
            ("floe.transform.refresh".to_string(), report.refresh.clone()),
            (INPUTS_KEY.to_string(), inputs_json),
            (MODEL_KEY.to_string(), self.model_hash.clone()),
            (CONTENT_KEY.to_string(), content.clone().unwrap_or_default()),
        ]);
        if report.refresh == "days" {
            record.insert("floe.transform.days".into(), report.days.join(","));
        }
        Ok(record)
    }
}

/// Why a model on Trino was planned by DataFusion (kept as the cause of a
/// planning error).
#[derive(Debug)]
struct PlannedByDataFusion;

impl std::fmt::Display for PlannedByDataFusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the model runs on Trino, and floe plans every model with DataFusion first (its columns, \
             the days to refresh): write SQL that Trino and DataFusion both read (README, \"Models on Trino\")",
        )
    }
}

impl std::error::Error for PlannedByDataFusion {}

/// A report for a model not run because an upstream model failed.
fn skipped(node: &Node, finished: &BTreeMap<String, bool>) -> Option<ModelReport> {
    let blocked: Vec<&str> = node
        .upstream
        .iter()
        .filter(|u| finished.get(*u) == Some(&false))
        .map(String::as_str)
        .collect();
    if blocked.is_empty() {
        return None;
    }
    Some(ModelReport {
        model: node.model.name.clone(),
        file: node.model.file(),
        status: "skipped".into(),
        error: Some(format!("not run: upstream {} failed", blocked.join(", "))),
        ..ModelReport::default()
    })
}

/// What a model recomputes.
#[derive(Debug, Clone, PartialEq)]
enum Refresh {
    Skip,
    Full,
    Days(BTreeSet<i32>),
}

/// Refuses an incremental model whose refresh of some days would publish
/// other rows than a full refresh (see [`locality`]).
fn check_locality(
    model: &Model,
    df: &datafusion::prelude::DataFrame,
    inputs: &[Source],
    event_time: &str,
) -> Result<()> {
    let mut day_columns = locality::DayColumns::new();
    for s in inputs {
        let exact = s.day_columns();
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
    inputs: &[Source],
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
            _ => s.changed(before, after).await?,
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
    location: &Location,
    name: &str,
    rows: usize,
) -> Result<Option<(String, Vec<datafusion::arrow::record_batch::RecordBatch>)>> {
    let Some(source) = location.load(client, name).await? else {
        return Ok(None);
    };
    let ctx = session::context();
    source.register(&ctx, None).await?;
    let location = source.location();
    let query = |e: DataFusionError| Error::Model(format!("preview of {name}: {e}")).caused_by(e);
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
