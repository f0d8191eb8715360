//! Can an incremental refresh of a model be trusted? An incremental run
//! reads only some days of its day-partitioned inputs, so it publishes what
//! a full refresh would only when every result row of a day comes from
//! input rows of that same day (*day-local*), or, with a `lookback`, from
//! rows within that many days of it.
//!
//! The check walks the model's optimized logical plan (subqueries are
//! joins there) and follows, per column, how it relates to the day of the
//! input rows it comes from:
//! - [`Level::Exact`]: its value falls on the same UTC day (the input's
//!   day-partition column, a cast of it, `date_trunc` to a day or less);
//! - [`Level::Derived`]: some other function of such a column (a shifted
//!   time, `date_trunc('week', ..)`), so rows stay near their day;
//! - [`Level::Opaque`]: anything else.
//!
//! Without a lookback, groups, window partitions and joins of two
//! day-partitioned inputs must be keyed by an exact column, and the
//! model's event time must be exact. With one, a key derived from the time
//! is enough, window functions must look a bounded number of rows away
//! (`lag`, `lead`, frames without UNBOUNDED), and the event time must be
//! derived from the time. What no lookback bounds (ranking across all
//! days, running totals, a LIMIT, a subquery) is always refused.

use std::collections::{BTreeSet, HashMap};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, JoinType, ScalarValue};
use datafusion::logical_expr::expr::{Exists, WindowFunction};
use datafusion::logical_expr::{
    Aggregate, Distinct, DistinctOn, Expr, Join, Limit, LogicalPlan, Projection, Sort, TableScan,
    Union, Unnest, Window, WindowFrameBound,
};

/// How a column relates to the day of the input rows it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Unrelated to the input rows' day.
    Opaque,
    /// A function of a day-exact column (rows stay within some days).
    Derived,
    /// On the same UTC day as the input rows.
    Exact,
}

/// What the plan was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No lookback: every day is computed from that day alone.
    DayLocal,
    /// A lookback: rows may read a bounded distance into other days.
    Bounded,
}

/// The day-partitioned inputs: table (`namespace.table`, lower case) →
/// its day-exact columns (lower case).
pub type DayColumns = HashMap<String, BTreeSet<String>>;

/// One plan node as seen by the check.
struct Seen {
    /// Whether it reads a day-partitioned input.
    restricted: bool,
    /// Per output column.
    levels: Vec<Level>,
    /// The day-partitioned tables it reads (for messages).
    tables: BTreeSet<String>,
}

impl Seen {
    fn unrestricted(columns: usize) -> Self {
        Self {
            restricted: false,
            levels: vec![Level::Opaque; columns],
            tables: BTreeSet::new(),
        }
    }
}

/// Checks `plan` (a model's query) for an incremental refresh; `Err`
/// describes the first construct that reads across days.
///
/// # Errors
/// A sentence naming the construct, for the model's error message.
pub fn check(
    plan: &LogicalPlan,
    inputs: &DayColumns,
    event_time: &str,
    mode: Mode,
) -> Result<(), String> {
    let seen = visit(plan, inputs, mode)?;
    if !seen.restricted {
        return Ok(());
    }
    let schema = plan.schema();
    let level = schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(event_time))
        .and_then(|i| seen.levels.get(i).copied())
        .unwrap_or(Level::Opaque);
    let needed = match mode {
        Mode::DayLocal => Level::Exact,
        Mode::Bounded => Level::Derived,
    };
    if level < needed {
        return Err(across(
            &seen,
            &format!(
                "the result's event time {event_time} is not {} the time of the input rows it comes from (shifted, aggregated, or taken from elsewhere)",
                if mode == Mode::DayLocal {
                    "on the same day as"
                } else {
                    "derived from"
                }
            ),
        ));
    }
    Ok(())
}

/// Follows `plan` bottom-up: whether it reads a day-partitioned input and
/// the level of each output column; `Err` names the first construct that
/// reads across days.
fn visit(plan: &LogicalPlan, inputs: &DayColumns, mode: Mode) -> Result<Seen, String> {
    let columns = plan.schema().fields().len();
    check_subqueries(plan, inputs, mode)?;
    let mut seen = match plan {
        LogicalPlan::TableScan(scan) => table_scan(scan, inputs, columns),
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Seen::unrestricted(columns),
        LogicalPlan::Projection(p) => projection(p, inputs, mode)?,
        LogicalPlan::Filter(f) => visit(&f.input, inputs, mode)?,
        LogicalPlan::Repartition(r) => visit(&r.input, inputs, mode)?,
        LogicalPlan::SubqueryAlias(a) => visit(&a.input, inputs, mode)?,
        LogicalPlan::Subquery(s) => visit(&s.subquery, inputs, mode)?,
        LogicalPlan::Sort(s) => sort(s, inputs, mode)?,
        LogicalPlan::Limit(l) => limit(l, inputs, mode)?,
        LogicalPlan::Window(w) => window_node(w, inputs, mode)?,
        LogicalPlan::Aggregate(a) => aggregate(a, inputs, mode)?,
        LogicalPlan::Distinct(Distinct::All(input)) => distinct_all(input, inputs, mode)?,
        LogicalPlan::Distinct(Distinct::On(d)) => distinct_on(d, inputs, mode)?,
        LogicalPlan::Join(j) => join(j, inputs, mode)?,
        LogicalPlan::Union(u) => union(u, inputs, mode, columns)?,
        LogicalPlan::Unnest(u) => unnest(u, plan, inputs, mode)?,
        other => unfollowed(other, inputs, mode, columns)?,
    };
    seen.levels.resize(columns, Level::Opaque);
    Ok(seen)
}

/// A scan: a day-partitioned input's day-exact columns are `Exact`.
fn table_scan(scan: &TableScan, inputs: &DayColumns, columns: usize) -> Seen {
    let name = match scan.table_name.schema() {
        Some(schema) => format!("{schema}.{}", scan.table_name.table()),
        None => scan.table_name.table().to_string(),
    }
    .to_lowercase();
    let Some(exact) = inputs.get(&name) else {
        return Seen::unrestricted(columns);
    };
    Seen {
        restricted: true,
        levels: scan
            .projected_schema
            .fields()
            .iter()
            .map(|f| {
                if exact.contains(&f.name().to_lowercase()) {
                    Level::Exact
                } else {
                    Level::Opaque
                }
            })
            .collect(),
        tables: BTreeSet::from([name]),
    }
}

/// ORDER BY: harmless alone, but with a fetch (`ORDER BY ... LIMIT`) it
/// picks rows across days.
fn sort(s: &Sort, inputs: &DayColumns, mode: Mode) -> Result<Seen, String> {
    let input = visit(&s.input, inputs, mode)?;
    if input.restricted && s.fetch.is_some() {
        return Err(across(
            &input,
            "ORDER BY ... LIMIT picks rows across all days",
        ));
    }
    Ok(input)
}

/// LIMIT/OFFSET over a day-partitioned input picks rows across days.
fn limit(l: &Limit, inputs: &DayColumns, mode: Mode) -> Result<Seen, String> {
    let input = visit(&l.input, inputs, mode)?;
    if input.restricted {
        return Err(across(&input, "LIMIT/OFFSET picks rows across all days"));
    }
    Ok(input)
}

/// A window node: each of its functions is checked (see [`window`]); the
/// columns it adds are `Opaque` ([`visit`] pads the levels).
fn window_node(w: &Window, inputs: &DayColumns, mode: Mode) -> Result<Seen, String> {
    let input = visit(&w.input, inputs, mode)?;
    if input.restricted {
        for e in &w.window_expr {
            window(e, w.input.schema(), &input, mode)?;
        }
    }
    Ok(input)
}

/// SELECT DISTINCT: some column must keep the day, or rows of different
/// days merge.
fn distinct_all(input: &LogicalPlan, inputs: &DayColumns, mode: Mode) -> Result<Seen, String> {
    let seen = visit(input, inputs, mode)?;
    let best = seen.levels.iter().copied().max().unwrap_or(Level::Opaque);
    if seen.restricted && best < key_level(mode) {
        return Err(across(
            &seen,
            "SELECT DISTINCT has no column of the day of the time, so it merges rows of different days",
        ));
    }
    Ok(seen)
}

/// DISTINCT ON: some key must keep the day; the selected expressions give
/// the levels.
fn distinct_on(d: &DistinctOn, inputs: &DayColumns, mode: Mode) -> Result<Seen, String> {
    let input = visit(&d.input, inputs, mode)?;
    let schema = d.input.schema();
    let best = d
        .on_expr
        .iter()
        .map(|e| level(e, schema, &input.levels))
        .max()
        .unwrap_or(Level::Opaque);
    if input.restricted && best < key_level(mode) {
        return Err(across(
            &input,
            "DISTINCT ON has no key of the day of the time, so it picks rows across days",
        ));
    }
    let levels = d
        .select_expr
        .iter()
        .map(|e| level(e, schema, &input.levels))
        .collect();
    Ok(Seen { levels, ..input })
}

/// UNION: a column keeps the lowest level it has among the day-partitioned
/// branches (`Opaque` when no branch is one).
fn union(u: &Union, inputs: &DayColumns, mode: Mode, columns: usize) -> Result<Seen, String> {
    let mut seen = Seen::unrestricted(columns);
    seen.levels = vec![Level::Exact; columns];
    for input in &u.inputs {
        let s = visit(input, inputs, mode)?;
        if !s.restricted {
            continue;
        }
        seen.restricted = true;
        seen.tables.extend(s.tables);
        for (l, other) in seen.levels.iter_mut().zip(&s.levels) {
            *l = (*l).min(*other);
        }
    }
    if !seen.restricted {
        seen.levels = vec![Level::Opaque; columns];
    }
    Ok(seen)
}

/// UNNEST: columns passed through keep their level; unnested ones are
/// `Opaque`.
fn unnest(u: &Unnest, plan: &LogicalPlan, inputs: &DayColumns, mode: Mode) -> Result<Seen, String> {
    let input = visit(&u.input, inputs, mode)?;
    let schema = u.input.schema();
    let levels = plan
        .schema()
        .columns()
        .iter()
        .map(|c| {
            let unnested = u.exec_columns.iter().any(|e| e.name == c.name);
            match schema.index_of_column(c) {
                Ok(i) if !unnested => input.levels.get(i).copied().unwrap_or(Level::Opaque),
                _ => Level::Opaque,
            }
        })
        .collect();
    Ok(Seen { levels, ..input })
}

/// Any other node: fine over unrestricted inputs only, since the check
/// cannot follow it day by day.
fn unfollowed(
    other: &LogicalPlan,
    inputs: &DayColumns,
    mode: Mode,
    columns: usize,
) -> Result<Seen, String> {
    let mut seen = Seen::unrestricted(columns);
    for input in other.inputs() {
        let s = visit(input, inputs, mode)?;
        if s.restricted {
            return Err(across(
                &s,
                &format!(
                    "the query's {} step is not one floe can follow day by day",
                    other.display()
                ),
            ));
        }
        seen.tables.extend(s.tables);
    }
    Ok(seen)
}

/// The level a key must reach (GROUP BY, PARTITION BY, join keys).
fn key_level(mode: Mode) -> Level {
    match mode {
        Mode::DayLocal => Level::Exact,
        Mode::Bounded => Level::Derived,
    }
}

fn across(seen: &Seen, what: &str) -> String {
    let tables: Vec<&str> = seen.tables.iter().map(String::as_str).collect();
    format!("over {}: {what}", tables.join(", "))
}

fn projection(p: &Projection, inputs: &DayColumns, mode: Mode) -> Result<Seen, String> {
    let input = visit(&p.input, inputs, mode)?;
    let schema = p.input.schema();
    let levels = p
        .expr
        .iter()
        .map(|e| level(e, schema, &input.levels))
        .collect();
    Ok(Seen { levels, ..input })
}

fn aggregate(a: &Aggregate, inputs: &DayColumns, mode: Mode) -> Result<Seen, String> {
    let input = visit(&a.input, inputs, mode)?;
    let schema = a.input.schema();
    let at = |e: &Expr| level(e, schema, &input.levels);
    let groups: Vec<String> = a.group_expr.iter().map(ToString::to_string).collect();
    let mut levels: Vec<Level> = Vec::new();
    for g in &a.group_expr {
        match g {
            Expr::GroupingSet(set) => {
                let exact_in_every_set =
                    set.distinct_expr().iter().any(|e| at(e) >= key_level(mode))
                        && grouping_sets(set)
                            .iter()
                            .all(|s| s.iter().any(|e| at(e) >= key_level(mode)));
                if input.restricted && !exact_in_every_set {
                    return Err(across(
                        &input,
                        &format!(
                            "the grouping sets {g} have a set without the day of the time, whose groups mix days"
                        ),
                    ));
                }
                levels.extend(set.distinct_expr().into_iter().map(at));
                levels.push(Level::Opaque);
            }
            e => levels.push(at(e)),
        }
    }
    let best = levels.iter().copied().max().unwrap_or(Level::Opaque);
    if input.restricted && best < key_level(mode) {
        let what = if groups.is_empty() {
            "an aggregate without GROUP BY sums up every day".to_string()
        } else {
            format!(
                "GROUP BY {} has no key of the day of the time, so a group mixes days",
                groups.join(", ")
            )
        };
        return Err(across(&input, &what));
    }
    levels.extend(a.aggr_expr.iter().map(|_| Level::Opaque));
    Ok(Seen { levels, ..input })
}

/// The sets of a GROUPING SETS / ROLLUP / CUBE.
fn grouping_sets(set: &datafusion::logical_expr::GroupingSet) -> Vec<Vec<&Expr>> {
    use datafusion::logical_expr::GroupingSet;
    match set {
        GroupingSet::GroupingSets(sets) => sets.iter().map(|s| s.iter().collect()).collect(),
        // ROLLUP (a, b) has the set () and CUBE every subset: both hold an
        // empty set, whose one group spans every day.
        GroupingSet::Rollup(_) | GroupingSet::Cube(_) => vec![Vec::new()],
    }
}

/// A window function over a day-partitioned input.
fn window(e: &Expr, schema: &DFSchema, input: &Seen, mode: Mode) -> Result<(), String> {
    let Some(w) = window_function(e) else {
        return Ok(());
    };
    let params = &w.params;
    // Partitions of one day (or, with a lookback, of a span of days such
    // as a week) keep the function within them.
    let partitioned = params
        .partition_by
        .iter()
        .map(|p| level(p, schema, &input.levels))
        .any(|l| l >= key_level(mode));
    if partitioned {
        return Ok(());
    }
    let name = w.fun.name().to_lowercase();
    let shown = e.to_string();
    if mode == Mode::DayLocal {
        return Err(across(
            input,
            &format!(
                "the window function {shown} is not partitioned by the day of the time, so it reads rows of other days"
            ),
        ));
    }
    let bounded = match name.as_str() {
        "lag" | "lead" => true,
        "row_number" | "rank" | "dense_rank" | "percent_rank" | "cume_dist" | "ntile" => false,
        _ => {
            let finite = |b: &WindowFrameBound| match b {
                WindowFrameBound::Preceding(v) | WindowFrameBound::Following(v) => {
                    !ScalarValue::is_null(v)
                }
                WindowFrameBound::CurrentRow => true,
            };
            finite(&params.window_frame.start_bound) && finite(&params.window_frame.end_bound)
        }
    };
    if bounded {
        return Ok(());
    }
    Err(across(
        input,
        &format!(
            "the window function {shown} reaches every earlier or later day of its partition (a ranking or an UNBOUNDED frame), which no lookback bounds"
        ),
    ))
}

fn window_function(e: &Expr) -> Option<&WindowFunction> {
    match e {
        Expr::WindowFunction(w) => Some(w),
        Expr::Alias(a) => window_function(&a.expr),
        _ => None,
    }
}

fn join(j: &Join, inputs: &DayColumns, mode: Mode) -> Result<Seen, String> {
    let left = visit(&j.left, inputs, mode)?;
    let right = visit(&j.right, inputs, mode)?;
    if left.restricted && right.restricted {
        let (ls, rs) = (j.left.schema(), j.right.schema());
        let keyed = j.on.iter().any(|(l, r)| {
            level(l, ls, &left.levels) >= key_level(mode)
                && level(r, rs, &right.levels) >= key_level(mode)
        });
        if !keyed {
            let on: Vec<String> = j.on.iter().map(|(l, r)| format!("{l} = {r}")).collect();
            let both = Seen {
                restricted: true,
                levels: Vec::new(),
                tables: left.tables.union(&right.tables).cloned().collect(),
            };
            return Err(across(
                &both,
                &format!(
                    "the join{} does not match rows of the same day (a self-join on shifted times, or no time in the condition)",
                    if on.is_empty() {
                        String::new()
                    } else {
                        format!(" ON {}", on.join(" AND "))
                    }
                ),
            ));
        }
    }
    // A day-partitioned side's columns keep their level; an unrestricted
    // side (a dimension) says nothing about the day of the row.
    let side = |s: &Seen| -> Vec<Level> {
        if s.restricted {
            s.levels.clone()
        } else {
            vec![Level::Opaque; s.levels.len()]
        }
    };
    let (l, r) = (side(&left), side(&right));
    let levels = match j.join_type {
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => [l, r].concat(),
        JoinType::LeftSemi | JoinType::LeftAnti => l,
        JoinType::RightSemi | JoinType::RightAnti => r,
        JoinType::LeftMark => [l, vec![Level::Opaque]].concat(),
        _ => [r, vec![Level::Opaque]].concat(),
    };
    Ok(Seen {
        restricted: left.restricted || right.restricted,
        levels,
        tables: left.tables.union(&right.tables).cloned().collect(),
    })
}

/// A subquery left in an expression (one the optimizer could not turn into
/// a join) over a day-partitioned input cannot be followed.
fn check_subqueries(plan: &LogicalPlan, inputs: &DayColumns, mode: Mode) -> Result<(), String> {
    for e in plan.expressions() {
        let mut found: Option<String> = None;
        let _ = e.apply(|x| {
            let sub = match x {
                Expr::ScalarSubquery(s) | Expr::Exists(Exists { subquery: s, .. }) => Some(s),
                Expr::InSubquery(i) => Some(&i.subquery),
                _ => None,
            };
            if let Some(s) = sub
                && let Ok(seen) = visit(&s.subquery, inputs, mode)
                && seen.restricted
            {
                found = Some(across(
                    &seen,
                    &format!("the subquery in {x} reads rows of any day"),
                ));
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if let Some(f) = found {
            return Err(f);
        }
    }
    Ok(())
}

/// The level of expression `e` over an input with `schema` and `levels`.
pub fn level(e: &Expr, schema: &DFSchema, levels: &[Level]) -> Level {
    match e {
        Expr::Column(c) => schema
            .index_of_column(c)
            .ok()
            .and_then(|i| levels.get(i).copied())
            .unwrap_or(Level::Opaque),
        Expr::Alias(a) => level(&a.expr, schema, levels),
        Expr::Cast(c) => level(&c.expr, schema, levels),
        Expr::TryCast(c) => level(&c.expr, schema, levels),
        Expr::ScalarFunction(f) => match day_keeping_argument(f.name(), &f.args) {
            Some(arg) if level(arg, schema, levels) == Level::Exact => Level::Exact,
            _ => derived(e, schema, levels),
        },
        Expr::AggregateFunction(_) | Expr::WindowFunction(_) => Level::Opaque,
        _ => derived(e, schema, levels),
    }
}

/// The argument whose UTC day a call to `name` keeps: `date_trunc` to a
/// day or a finer unit, and the conversions to a date or timestamp.
fn day_keeping_argument<'e>(name: &str, args: &'e [Expr]) -> Option<&'e Expr> {
    const FINE_UNITS: [&str; 7] = [
        "day",
        "hour",
        "minute",
        "second",
        "millisecond",
        "microsecond",
        "nanosecond",
    ];
    const CONVERSIONS: [&str; 6] = [
        "to_date",
        "to_timestamp",
        "to_timestamp_seconds",
        "to_timestamp_millis",
        "to_timestamp_micros",
        "to_timestamp_nanos",
    ];
    let name = name.to_lowercase();
    match args {
        [unit, arg] if name == "date_trunc" || name == "datetrunc" => {
            let Expr::Literal(
                ScalarValue::Utf8(Some(u))
                | ScalarValue::Utf8View(Some(u))
                | ScalarValue::LargeUtf8(Some(u)),
                _,
            ) = unit
            else {
                return None;
            };
            FINE_UNITS
                .contains(&u.to_lowercase().as_str())
                .then_some(arg)
        }
        [arg] if CONVERSIONS.contains(&name.as_str()) => Some(arg),
        _ => None,
    }
}

/// `Derived` when `e` reads a column of at least that level.
fn derived(e: &Expr, schema: &DFSchema, levels: &[Level]) -> Level {
    let reads_time = e.column_refs().into_iter().any(|c| {
        schema
            .index_of_column(c)
            .ok()
            .and_then(|i| levels.get(i))
            .is_some_and(|l| *l >= Level::Derived)
    });
    if reads_time {
        Level::Derived
    } else {
        Level::Opaque
    }
}
