//! Models on Trino. floe plans a model exactly as for DataFusion (its
//! columns, the days to refresh); Trino then computes the result and writes
//! it, as Parquet files of the model's table, into a staging table floe made
//! ([`crate::table::output::External`]); floe commits those files, tests and
//! publishes them as it does its own.
//!
//! The statement Trino runs is the model's own SQL, with each table it
//! reads pinned to the snapshot floe planned over (an upstream model of the
//! same run is read at its staged, unpublished snapshot) and restricted to
//! the days read, wrapped in an `INSERT` that casts each column to the
//! table's type:
//!
//! ```sql
//! INSERT INTO "iceberg"."silver"."fact__floe_staging_<run>" ("ts_utc", ...)
//! SELECT CAST("ts_utc" AS timestamp(6) with time zone), ... FROM (<the model,
//!   FROM (SELECT * FROM "iceberg"."bronze"."demand" FOR VERSION AS OF 42
//!         WHERE "ts_utc" >= TIMESTAMP '2024-03-30 00:00:00 UTC' AND ...) AS d>
//! ) AS "floe_model" ("ts_utc", ...)
//! ```
//!
//! Only the table names change in the model's text, so Trino's error
//! positions are the file's lines.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{ObjectName, ObjectNamePart, TableFactor, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Location;
use iceberg::spec::{PrimitiveType, Schema, Type};

use super::model::Model;
use crate::error::{Error, Result};
use crate::pipeline::TrinoSettings;
use crate::table::read::Source;
use crate::trino::{Outcome, QueryFailure, TrinoClient, day_filter, literal, quoted};

/// The alias of the model's query inside floe's `INSERT`.
const MODEL_ALIAS: &str = "floe_model";

/// A Trino coordinator models run on.
pub struct TrinoEngine {
    client: TrinoClient,
}

/// One model's result to compute on Trino.
pub struct Job<'a> {
    /// The model.
    pub model: &'a Model,
    /// The tables it reads, at the snapshots planned over.
    pub inputs: &'a [Source],
    /// The days of the inputs to read (none: all of them).
    pub read_days: Option<&'a BTreeSet<i32>>,
    /// Keep only result rows whose event time (this column) lies on these
    /// days (a lookback refresh reads more days than it writes).
    pub keep: Option<(&'a str, &'a BTreeSet<i32>)>,
    /// The table's columns.
    pub schema: &'a Schema,
    /// The staging table to insert into (namespace, name).
    pub staging: (&'a [String], &'a str),
    /// The staging table's proof property (key, value).
    pub token: (&'a str, &'a str),
}

impl TrinoEngine {
    /// A client of the coordinator (nothing is sent yet).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(settings: &TrinoSettings) -> Result<Self> {
        Ok(Self {
            client: TrinoClient::new(settings)?,
        })
    }

    /// Checks that the coordinator answers a query.
    ///
    /// # Errors
    /// When it cannot be reached or refuses `SELECT 1`.
    pub async fn check(&self) -> Result<()> {
        match self.client.run("SELECT 1").await? {
            Outcome::Done(_) => Ok(()),
            Outcome::Failed(f) => Err(Error::Config(format!(
                "Trino at {} refused `SELECT 1`: {f}",
                self.client.uri()
            ))),
        }
    }

    /// Checks, before any model runs, that Trino's catalog is floe's: the
    /// current snapshot floe sees of one of the Iceberg tables the run reads
    /// (a random 63-bit id) must be among the snapshots Trino lists for that
    /// table. Without such a table the check is left to each model's staging
    /// table ([`TrinoEngine::write`]).
    ///
    /// # Errors
    /// When Trino does not see that table or that snapshot.
    pub async fn check_sees(&self, tables: impl Iterator<Item = &Source>) -> Result<()> {
        let Some((source, snapshot)) = tables
            .filter(|s| s.in_catalog())
            .find_map(|s| Some((s, s.snapshot_id?)))
        else {
            return Ok(());
        };
        let Some((ns, name)) = source.name.split_once('.') else {
            return Ok(());
        };
        let catalog = self.client.catalog();
        let sql = format!(
            "SELECT count(*) FROM {}.{}.{} WHERE snapshot_id = {snapshot}",
            quoted(catalog),
            quoted(ns),
            quoted(&format!("{name}$snapshots"))
        );
        let seen = match self.client.run(&sql).await? {
            Outcome::Done(rows) => rows
                .first()
                .and_then(|r| r.first())
                .and_then(serde_json::Value::as_i64)
                .map(|n| format!("{n} snapshot(s) with that id")),
            Outcome::Failed(f) => Some(format!("an error: {f}")),
        };
        if seen.as_deref() == Some("1 snapshot(s) with that id") {
            return Ok(());
        }
        Err(Error::Config(format!(
            "Trino's catalog {catalog:?} at {} is not floe's catalog: floe's [catalog] has snapshot {snapshot} \
             of {}, and Trino found {}. Point the Trino catalog at the same REST catalog and warehouse \
             ([engines.trino] catalog names it)",
            self.client.uri(),
            source.name,
            seen.unwrap_or_else(|| "nothing".to_string())
        )))
    }

    /// Has Trino compute the model's result into the staging table.
    ///
    /// # Errors
    /// When Trino's catalog is not floe's, the statement cannot be built
    /// (an input Trino cannot read), or Trino fails the query (its message,
    /// with the model file and the line it points at).
    pub async fn write(&self, job: &Job<'_>) -> Result<()> {
        self.check_same_catalog(job).await?;
        let statement = insert_statement(job, self.client.catalog())?;
        match self.client.run(&statement.sql).await? {
            Outcome::Done(_) => Ok(()),
            Outcome::Failed(f) => Err(query_error(job.model, &f, &statement)),
        }
    }

    /// Trino reads back the staging table's token: its catalog is the one
    /// floe made the staging table in (the same REST catalog and warehouse).
    async fn check_same_catalog(&self, job: &Job<'_>) -> Result<()> {
        let (namespace, name) = job.staging;
        let catalog = self.client.catalog();
        let table = format!(
            "{}.{}.{}",
            quoted(catalog),
            quoted(&trino_schema(namespace, job.model)?),
            quoted(&format!("{name}$properties"))
        );
        let (key, token) = job.token;
        let sql = format!("SELECT value FROM {table} WHERE key = {}", literal(key));
        let seen = match self.client.run(&sql).await? {
            Outcome::Done(rows) => rows
                .first()
                .and_then(|r| r.first())
                .and_then(|v| v.as_str().map(str::to_string)),
            Outcome::Failed(f) => Some(format!("an error: {f}")),
        };
        if seen.as_deref() == Some(token) {
            return Ok(());
        }
        Err(Error::Config(format!(
            "Trino's catalog {catalog:?} at {} is not floe's catalog: floe created the table {}.{name} \
             through [catalog] and Trino read {} for it. Point the Trino catalog at the same REST catalog \
             and warehouse ([engines.trino] catalog names it)",
            self.client.uri(),
            namespace.join("."),
            seen.map_or_else(|| "nothing".to_string(), |s| format!("{s:?}"))
        )))
    }
}

/// The Trino schema of a namespace (Trino has one level).
fn trino_schema(namespace: &[String], model: &Model) -> Result<String> {
    match namespace {
        [one] => Ok(one.clone()),
        _ => Err(Error::Model(format!(
            "{}: Trino reads one-level namespaces; {} has {}",
            model.file(),
            namespace.join("."),
            namespace.len()
        ))),
    }
}

/// The statement and where the model's text starts in it.
struct Statement {
    sql: String,
    /// Characters before the model's first line (on the statement's first
    /// line).
    prefix_chars: u64,
    /// Lines of the model's text.
    model_lines: u64,
}

/// The `INSERT` Trino runs for `job`.
fn insert_statement(job: &Job<'_>, catalog: &str) -> Result<Statement> {
    let model = job.model;
    let mut pinned: HashMap<String, String> = HashMap::new();
    for source in job.inputs {
        pinned.insert(source.name.to_lowercase(), relation(source, catalog, job)?);
    }
    let body = pin_tables(&model.sql, &pinned)
        .map_err(|e| Error::Model(format!("{}: {e}", model.file())))?;
    let columns: Vec<String> = job
        .schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| quoted(&f.name))
        .collect();
    let casts: Vec<String> = job
        .schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            trino_type(&f.field_type)
                .map(|t| format!("CAST({} AS {t})", quoted(&f.name)))
                .map_err(|what| {
                    Error::Model(format!(
                        "{}: column {} is {what}, which floe cannot write through Trino",
                        model.file(),
                        f.name
                    ))
                })
        })
        .collect::<Result<_>>()?;
    let (namespace, name) = job.staging;
    let target = format!(
        "{}.{}.{}",
        quoted(catalog),
        quoted(&trino_schema(namespace, model)?),
        quoted(name)
    );
    let prefix = format!(
        "INSERT INTO {target} ({}) SELECT {} FROM (",
        columns.join(", "),
        casts.join(", ")
    );
    let mut sql = prefix.clone();
    sql.push_str(&body);
    sql.push_str(&format!(
        "\n) AS {} ({})",
        quoted(MODEL_ALIAS),
        columns.join(", ")
    ));
    if let Some((column, days)) = job.keep {
        sql.push_str(&format!(" WHERE {}", day_filter(column, days, true)));
    }
    Ok(Statement {
        sql,
        prefix_chars: prefix.chars().count() as u64,
        model_lines: body.lines().count() as u64,
    })
}

/// The model's text as Trino reads it: the text of each table reference
/// named in `pinned` (lower-case `namespace.table`) replaced by its pinned
/// relation, aliased by the table's name where the query gave no alias.
/// The rest of the text is kept byte for byte.
///
/// # Errors
/// When the text does not parse as SQL.
pub fn pin_tables(sql: &str, pinned: &HashMap<String, String>) -> Result<String, String> {
    struct Finder<'a> {
        pinned: &'a HashMap<String, String>,
        found: Vec<(Location, Location, String, Option<String>)>,
    }
    impl Visitor for Finder<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { name, alias, .. } = factor
                && let Some((key, last)) = normalized(name)
                && let Some(relation) = self.pinned.get(&key)
            {
                let span = datafusion::sql::sqlparser::ast::Spanned::span(name);
                let alias = alias.is_none().then(|| quoted(&last));
                self.found
                    .push((span.start, span.end, relation.clone(), alias));
            }
            ControlFlow::Continue(())
        }
    }
    let statements = Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| format!("cannot read the query: {e}"))?;
    let mut finder = Finder {
        pinned,
        found: Vec::new(),
    };
    let _ = statements.visit(&mut finder);
    let lines = line_starts(sql);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (start, end, relation, alias) in finder.found {
        let (Some(from), Some(to)) = (offset(sql, &lines, start), offset(sql, &lines, end)) else {
            return Err("cannot place a table reference in the query's text".to_string());
        };
        let text = match alias {
            Some(a) => format!("{relation} AS {a}"),
            None => relation,
        };
        edits.push((from, to, text));
    }
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = sql.trim_end().trim_end_matches(';').to_string();
    for (from, to, text) in edits {
        if to > out.len() || from > to {
            return Err("cannot place a table reference in the query's text".to_string());
        }
        out.replace_range(from..to, &text);
    }
    Ok(out)
}

/// A relation's name as floe names tables (unquoted parts lower-cased),
/// and its last part; none unless it is `namespace.table`.
fn normalized(name: &ObjectName) -> Option<(String, String)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) if i.quote_style.is_none() => {
                Some(i.value.to_lowercase())
            }
            ObjectNamePart::Identifier(i) => Some(i.value.clone()),
            ObjectNamePart::Function(_) => None,
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [_, last] => Some((parts.join("."), last.clone())),
        _ => None,
    }
}

/// Byte offsets where each line starts.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// The byte offset of a parser location (1-based line and character
/// column).
fn offset(text: &str, lines: &[usize], at: Location) -> Option<usize> {
    let line_start = *lines.get(usize::try_from(at.line).ok()?.checked_sub(1)?)?;
    let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
    let line = &text[line_start..];
    if column == 0 {
        return Some(line_start);
    }
    line.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(line.len()))
        .nth(column)
        .map(|i| line_start + i)
}

/// The table pinned to its snapshot, restricted to the days read.
fn relation(source: &Source, catalog: &str, job: &Job<'_>) -> Result<String> {
    if !source.in_catalog() {
        return Err(Error::Model(format!(
            "{}: reads {}, which is not a table of the catalog; a model run on Trino reads Iceberg tables of the catalog",
            job.model.file(),
            source.name
        )));
    }
    let (ns, name) = source.name.split_once('.').unwrap_or(("", &source.name));
    let mut sql = format!(
        "(SELECT * FROM {}.{}.{}",
        quoted(catalog),
        quoted(ns),
        quoted(name)
    );
    if let Some(id) = source.snapshot_id {
        sql.push_str(&format!(" FOR VERSION AS OF {id}"));
    }
    if let (Some(days), Some((column, zoned))) = (job.read_days, source.catalog_day_column()) {
        sql.push_str(&format!(" WHERE {}", day_filter(&column, days, zoned)));
    }
    sql.push(')');
    Ok(sql)
}

/// Trino's type for an Iceberg type (the Iceberg connector's mapping).
fn trino_type(ty: &Type) -> Result<String, String> {
    Ok(match ty {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => "boolean".into(),
            PrimitiveType::Int => "integer".into(),
            PrimitiveType::Long => "bigint".into(),
            PrimitiveType::Float => "real".into(),
            PrimitiveType::Double => "double".into(),
            PrimitiveType::Decimal { precision, scale } => format!("decimal({precision}, {scale})"),
            PrimitiveType::Date => "date".into(),
            PrimitiveType::Time => "time(6)".into(),
            PrimitiveType::Timestamp => "timestamp(6)".into(),
            PrimitiveType::Timestamptz => "timestamp(6) with time zone".into(),
            PrimitiveType::TimestampNs => "timestamp(9)".into(),
            PrimitiveType::TimestamptzNs => "timestamp(9) with time zone".into(),
            PrimitiveType::String => "varchar".into(),
            PrimitiveType::Uuid => "uuid".into(),
            PrimitiveType::Fixed(_) | PrimitiveType::Binary => "varbinary".into(),
        },
        Type::List(l) => format!("array({})", trino_type(&l.element_field.field_type)?),
        Type::Map(m) => format!(
            "map({}, {})",
            trino_type(&m.key_field.field_type)?,
            trino_type(&m.value_field.field_type)?
        ),
        Type::Struct(s) => {
            let fields: Vec<String> = s
                .fields()
                .iter()
                .map(|f| {
                    Ok(format!(
                        "{} {}",
                        quoted(&f.name),
                        trino_type(&f.field_type)?
                    ))
                })
                .collect::<Result<_, String>>()?;
            format!("row({})", fields.join(", "))
        }
    })
}

/// Trino's failure as a model error: the file, the line and column when
/// Trino points into the model's text, Trino's message and error name.
fn query_error(model: &Model, failure: &QueryFailure, statement: &Statement) -> Error {
    let position = failure.position.and_then(|p| {
        if p.line > statement.model_lines {
            return None;
        }
        let column = if p.line == 1 {
            p.column.checked_sub(statement.prefix_chars)?
        } else {
            p.column
        };
        Some((p.line, column))
    });
    let hint = match failure.error_name.as_str() {
        "SYNTAX_ERROR"
        | "FUNCTION_NOT_FOUND"
        | "TYPE_MISMATCH"
        | "FUNCTION_IMPLEMENTATION_MISSING"
        | "NOT_SUPPORTED"
        | "MISSING_COLUMN_ALIASES"
        | "MISMATCHED_COLUMN_ALIASES" => {
            "; the model runs on Trino: write SQL that Trino and DataFusion both read (README, \"Models on Trino\")"
        }
        "ADMINISTRATIVELY_KILLED" | "USER_CANCELED" | "ADMINISTRATIVELY_PREEMPTED" => {
            "; the query was killed: nothing was committed, run the model again"
        }
        _ => "",
    };
    let place = match position {
        Some((line, column)) => format!("{}:{line}:{column}", model.file()),
        None => model.file(),
    };
    Error::Model(format!("{place}: Trino: {failure}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_the_table_names_change() {
        let sql = "/* floe\nmaterialized = \"table\"\n*/\nSELECT d.x, \"Bronze\".y\nFROM bronze.demand AS d\n  JOIN \"silver\".\"dim_site\" s ON s.id = d.id\n  CROSS JOIN bronze.weather;\n";
        let out = pin_tables(
            sql,
            &pinned(&[
                ("bronze.demand", "(D)"),
                ("silver.dim_site", "(S)"),
                ("bronze.weather", "(W)"),
            ]),
        )
        .expect("parses");
        assert_eq!(
            out,
            "/* floe\nmaterialized = \"table\"\n*/\nSELECT d.x, \"Bronze\".y\nFROM (D) AS d\n  JOIN (S) s ON s.id = d.id\n  CROSS JOIN (W) AS \"weather\""
        );
    }

    #[test]
    fn tables_in_subqueries_ctes_and_unions_are_pinned_and_lines_kept() {
        let sql = "WITH w AS (SELECT * FROM Bronze.Weather)\nSELECT 'bronze.demand' AS s, é FROM (SELECT * FROM bronze.demand) AS x\nUNION ALL SELECT 'x', é FROM w";
        let out = pin_tables(
            sql,
            &pinned(&[("bronze.demand", "(D)"), ("bronze.weather", "(W)")]),
        )
        .expect("parses");
        assert_eq!(
            out,
            "WITH w AS (SELECT * FROM (W) AS \"weather\")\nSELECT 'bronze.demand' AS s, é FROM (SELECT * FROM (D) AS \"demand\") AS x\nUNION ALL SELECT 'x', é FROM w"
        );
        assert_eq!(out.lines().count(), sql.lines().count());
    }

    #[test]
    fn a_quoted_name_keeps_its_case() {
        let out = pin_tables(
            "SELECT * FROM \"bronze\".\"Demand\"",
            &pinned(&[("bronze.demand", "(D)")]),
        )
        .expect("parses");
        assert_eq!(out, "SELECT * FROM \"bronze\".\"Demand\"");
    }

    #[test]
    fn nested_types_map_to_trino_s() {
        let ty = Type::Struct(iceberg::spec::StructType::new(vec![
            iceberg::spec::NestedField::optional(1, "a", Type::Primitive(PrimitiveType::Long))
                .into(),
            iceberg::spec::NestedField::optional(
                2,
                "b",
                Type::List(iceberg::spec::ListType::new(
                    iceberg::spec::NestedField::list_element(
                        3,
                        Type::Primitive(PrimitiveType::Timestamptz),
                        false,
                    )
                    .into(),
                )),
            )
            .into(),
        ]));
        assert_eq!(
            trino_type(&ty).expect("maps"),
            "row(\"a\" bigint, \"b\" array(timestamp(6) with time zone))"
        );
    }
}
