//! Which tables of a pipeline are Delta tables, and where: its Delta jobs'
//! and its Delta models' (read from the models folder). The command layer
//! works this out once and hands the verbs resolved tables.

use std::collections::{BTreeSet, HashMap};

use crate::error::Result;
use crate::pipeline::{DeltaSettings, Job, Pipeline, TableFormat};
use crate::table::delta::Target;
use crate::table::read::Location;

/// Where a pipeline's Delta tables are: its jobs' and its models'.
#[derive(Debug, Clone, Default)]
pub struct Places {
    settings: DeltaSettings,
    embedded_warehouse: Option<String>,
    s3_props: HashMap<String, String>,
    /// `namespace.table` of every job writing Delta only.
    jobs: BTreeSet<String>,
    /// The Delta tables of two-format jobs (whose name stands for their
    /// Iceberg table, unless models are Delta too).
    twins: BTreeSet<String>,
    /// Whether models are Delta by default (`[transform] format`).
    models_delta: bool,
    /// `layer.name` of every model writing Delta (when the models folder
    /// was read).
    models: BTreeSet<String>,
}

impl Places {
    /// The pipeline's Delta root and store settings (S3 from `[catalog]
    /// properties` and the AWS environment).
    pub fn of(pipeline: &Pipeline) -> Self {
        let mut s3_props: HashMap<String, String> =
            pipeline.catalog.properties.clone().into_iter().collect();
        crate::store::add_env_credentials(&mut s3_props);
        Self {
            settings: pipeline.delta.clone(),
            embedded_warehouse: pipeline.catalog.embedded_warehouse.clone(),
            s3_props,
            jobs: pipeline
                .jobs
                .iter()
                .filter(|j| j.format == crate::pipeline::TableFormat::Delta && !j.twin)
                .map(Job::table_ident)
                .collect(),
            twins: pipeline
                .jobs
                .iter()
                .filter(|j| j.format == crate::pipeline::TableFormat::Delta && j.twin)
                .map(Job::table_ident)
                .collect(),
            models_delta: pipeline.model_format == crate::pipeline::TableFormat::Delta,
            models: BTreeSet::new(),
        }
    }

    /// The same places with the pipeline's models: each model's
    /// `layer.name` and the format its header names (none: the pipeline's
    /// `[transform] format`), as read from the models folder.
    pub fn with_models(
        mut self,
        models: impl IntoIterator<Item = (String, Option<TableFormat>)>,
    ) -> Self {
        let default = if self.models_delta {
            TableFormat::Delta
        } else {
            TableFormat::Iceberg
        };
        self.models = models
            .into_iter()
            .filter(|(_, format)| format.unwrap_or(default) == TableFormat::Delta)
            .map(|(name, _)| name)
            .collect();
        self
    }

    /// Every Delta table: the jobs' (two-format ones too) and the models'.
    pub fn tables(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = self.jobs.union(&self.models).cloned().collect();
        all.extend(self.twins.iter().cloned());
        all.into_iter().collect()
    }

    /// Whether the name `ident` stands for a Delta table (a Delta job's or
    /// a Delta model's; a two-format job's name stands for its Iceberg
    /// table).
    pub fn is_delta(&self, ident: &str) -> bool {
        self.jobs.contains(ident) || self.models.contains(ident)
    }

    /// The same places, reached with the catalog's storage settings
    /// (`/v1/config` defaults, the pipeline's properties, overrides) and
    /// the AWS environment.
    pub fn with_store_properties(mut self, props: &HashMap<String, String>) -> Self {
        let mut s3_props = props.clone();
        crate::store::add_env_credentials(&mut s3_props);
        self.s3_props = s3_props;
        self
    }

    /// Whether models read the job table `ident` as a Delta table: a
    /// Delta job's, or a two-format job's when models are Delta by default.
    pub fn is_job_table(&self, ident: &str) -> bool {
        self.jobs.contains(ident) || (self.models_delta && self.twins.contains(ident))
    }

    /// Where the table `ident` is read from: the pipeline's Delta table of
    /// that name (a Delta job's, a Delta model's, or a twin job's when the
    /// models are Delta), else the catalog's.
    ///
    /// # Errors
    /// When the Delta location cannot be resolved, or `ident` has no
    /// namespace.
    pub fn locate(&self, ident: &str) -> Result<Location> {
        if self.is_delta(ident) || self.is_job_table(ident) {
            Ok(Location::Delta(self.target(ident)?))
        } else {
            Location::catalog(ident)
        }
    }

    /// Where a table of `format` named `ident` is (a model's output).
    ///
    /// # Errors
    /// As [`Places::locate`].
    pub fn location(&self, ident: &str, format: TableFormat) -> Result<Location> {
        match format {
            TableFormat::Delta => Ok(Location::Delta(self.target(ident)?)),
            TableFormat::Iceberg => Location::catalog(ident),
        }
    }

    /// The Delta table `ident` (`namespace.table`).
    ///
    /// # Errors
    /// No Delta root (no `[delta] location` and no embedded warehouse).
    pub fn target(&self, ident: &str) -> Result<Target> {
        let (ns, table) = ident.rsplit_once('.').unwrap_or(("", ident));
        let namespace: Vec<String> = ns.split('.').map(str::to_string).collect();
        Target::at(
            &self.settings,
            self.embedded_warehouse.as_deref(),
            &self.s3_props,
            &namespace,
            table,
        )
    }
}
