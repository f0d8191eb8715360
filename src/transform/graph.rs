//! The dependency graph of models: each model's query names the tables it
//! reads; a name that is another model is an edge. Models run in
//! topological order; `--select` picks `MODEL`, `MODEL+` (and everything
//! downstream) or `+MODEL` (and everything upstream).

use std::collections::{BTreeMap, BTreeSet};

use datafusion::execution::context::SessionState;
use datafusion::sql::TableReference;

use super::model::Model;
use super::sql_error;
use crate::error::{Error, Result};

/// A model with the tables its query reads.
#[derive(Debug, Clone)]
pub struct Node {
    /// The model.
    pub model: Model,
    /// Every table read, as `namespace.table`.
    pub reads: BTreeSet<String>,
    /// The tables its data tests read besides its own: the parents of
    /// its `relationships` tests and the tables its `sql` tests name.
    pub tested: BTreeSet<String>,
    /// The models among `reads` and `tested` (run before this one).
    pub upstream: BTreeSet<String>,
}

/// Models in an order where each comes after the models it reads.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Topologically sorted (ties by name).
    pub nodes: Vec<Node>,
}

/// The `namespace.table` names a query reads (CTE names excluded).
///
/// # Errors
/// A parse error naming the file (and line and column), or a reference
/// that does not name `namespace.table`.
pub fn references(model: &Model, state: &SessionState) -> Result<BTreeSet<String>> {
    sql_references(model, &model.sql, state)
}

/// The `namespace.table` names `sql` (the model's query or one of its
/// tests) reads.
fn sql_references(model: &Model, sql: &str, state: &SessionState) -> Result<BTreeSet<String>> {
    let statement = state
        .sql_to_statement(sql, &datafusion::config::Dialect::Generic)
        .map_err(|e| sql_error(model, &e))?;
    let refs = state
        .resolve_table_references(&statement)
        .map_err(|e| sql_error(model, &e))?;
    refs.into_iter()
        .map(|r| match r {
            TableReference::Partial { schema, table } => Ok(format!("{schema}.{table}")),
            TableReference::Full { schema, table, .. } => Ok(format!("{schema}.{table}")),
            TableReference::Bare { table } => Err(Error::Model(format!(
                "{}: table {table:?} needs its namespace (e.g. bronze.{table})",
                model.file()
            ))),
        })
        .collect()
}

/// Builds the graph of `models`.
///
/// # Errors
/// A model that reads itself, or a cycle (naming its models).
pub fn build(models: Vec<Model>, state: &SessionState) -> Result<Graph> {
    let names: BTreeSet<String> = models.iter().map(|m| m.name.clone()).collect();
    let mut pending: BTreeMap<String, Node> = BTreeMap::new();
    for model in models {
        let reads = references(&model, state)?;
        if reads.contains(&model.name) {
            return Err(Error::Model(format!(
                "{}: the model reads its own table {}",
                model.file(),
                model.name
            )));
        }
        // A relationships test reads its parent table too, as a custom sql
        // test may read other tables: a model among them runs first, so the
        // test sees this run's version of it.
        super::audit::validate(&model)?;
        let mut tested = model.tests.relationship_tables(&model.name);
        for test in &model.tests.sql.0 {
            let query = test
                .query_on(&model.name)
                .map_err(|e| Error::Model(format!("{}: [tests] {e}", model.file())))?;
            tested.extend(sql_references(&model, &query, state)?);
        }
        tested.remove(&model.name);
        let upstream = reads
            .union(&tested)
            .filter(|t| names.contains(*t))
            .cloned()
            .collect();
        pending.insert(
            model.name.clone(),
            Node {
                model,
                reads,
                tested,
                upstream,
            },
        );
    }
    let mut nodes = Vec::with_capacity(pending.len());
    let mut done: BTreeSet<String> = BTreeSet::new();
    while !pending.is_empty() {
        let ready: Vec<String> = pending
            .iter()
            .filter(|(_, n)| n.upstream.is_subset(&done))
            .map(|(k, _)| k.clone())
            .collect();
        if ready.is_empty() {
            let stuck: Vec<&str> = pending.keys().map(String::as_str).collect();
            return Err(Error::Model(format!(
                "the models {} read each other in a cycle",
                stuck.join(", ")
            )));
        }
        for name in ready {
            if let Some(node) = pending.remove(&name) {
                done.insert(name);
                nodes.push(node);
            }
        }
    }
    Ok(Graph { nodes })
}

impl Graph {
    /// The models `selectors` pick (all when empty), in run order.
    ///
    /// # Errors
    /// A selector naming no model (listing the models).
    pub fn select(&self, selectors: &[String]) -> Result<Vec<&Node>> {
        if selectors.is_empty() {
            return Ok(self.nodes.iter().collect());
        }
        let mut chosen: BTreeSet<String> = BTreeSet::new();
        for raw in selectors {
            let down = raw.ends_with('+');
            let up = raw.starts_with('+');
            let name = raw.trim_matches('+');
            let found: Vec<&Node> = self
                .nodes
                .iter()
                .filter(|n| n.model.name == name || n.model.name.split('.').nth(1) == Some(name))
                .collect();
            let [node] = found.as_slice() else {
                let all: Vec<&str> = self.nodes.iter().map(|n| n.model.name.as_str()).collect();
                return Err(Error::Config(format!(
                    "--select {raw}: {} model named {name:?}; models: {}",
                    if found.is_empty() {
                        "no"
                    } else {
                        "more than one"
                    },
                    all.join(", ")
                )));
            };
            chosen.insert(node.model.name.clone());
            if down {
                chosen.extend(self.closure(&node.model.name, |n, of| n.upstream.contains(of)));
            }
            if up {
                chosen.extend(self.closure(&node.model.name, |n, of| {
                    self.nodes
                        .iter()
                        .any(|m| m.model.name == *of && m.upstream.contains(&n.model.name))
                }));
            }
        }
        Ok(self
            .nodes
            .iter()
            .filter(|n| chosen.contains(&n.model.name))
            .collect())
    }

    /// Every model reachable from `start` along `linked(node, from)`.
    fn closure(&self, start: &str, linked: impl Fn(&Node, &String) -> bool) -> BTreeSet<String> {
        let mut seen: BTreeSet<String> = BTreeSet::from([start.to_string()]);
        let mut frontier = vec![start.to_string()];
        while let Some(of) = frontier.pop() {
            for n in &self.nodes {
                if !seen.contains(&n.model.name) && linked(n, &of) {
                    seen.insert(n.model.name.clone());
                    frontier.push(n.model.name.clone());
                }
            }
        }
        seen
    }
}
