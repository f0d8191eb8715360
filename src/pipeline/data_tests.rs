//! Declarations shared by a model's `[tests]` and a job's `[job.expect]`:
//! `not_null` entries, custom `sql` tests, and the checks of `regex`
//! patterns, SQL `expression`s and `sql` queries made before anything
//! runs.

use serde::Deserialize;

/// A `not_null` entry: a column name (no null tolerated) or
/// `{ column = "temp", max_fraction = 0.01 }` (the test fails when the
/// share of null rows exceeds the fraction).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct NotNull {
    /// The column.
    pub column: String,
    /// The largest share of null rows tolerated (0: none).
    pub max_fraction: f64,
}

impl TryFrom<toml::Value> for NotNull {
    type Error = String;

    fn try_from(v: toml::Value) -> std::result::Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Tolerant {
            column: String,
            #[serde(default)]
            max_fraction: f64,
        }
        let t = match v {
            toml::Value::String(column) => Tolerant {
                column,
                max_fraction: 0.0,
            },
            v @ toml::Value::Table(_) => Tolerant::deserialize(v)
                .map_err(|e| format!("not_null: {}", e.message().trim_end()))?,
            other => {
                return Err(format!(
                    "not_null entries are a column name or {{ column = \"...\", max_fraction = 0.01 }}, not {other}"
                ));
            }
        };
        if !(0.0..=1.0).contains(&t.max_fraction) {
            return Err(format!(
                "not_null {}: max_fraction must be between 0 and 1, not {}",
                t.column, t.max_fraction
            ));
        }
        Ok(NotNull {
            column: t.column,
            max_fraction: t.max_fraction,
        })
    }
}

/// Checks that `pattern` is a valid regular expression (Rust `regex`
/// syntax, as DataFusion's `regexp_like`).
///
/// # Errors
/// The pattern's error, in words.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| format!("{pattern:?} is not a valid pattern: {e}"))
}

/// Checks that `text` is one SQL expression (nothing before or after it);
/// returns it trimmed.
///
/// # Errors
/// An empty expression or one that does not parse, in words.
pub fn check_expression(text: &str) -> Result<&str, String> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion::sql::sqlparser::tokenizer::Token;
    let text = text.trim();
    if text.is_empty() {
        return Err("expression lists an empty expression".into());
    }
    let dialect = GenericDialect {};
    let next = Parser::new(&dialect)
        .try_with_sql(text)
        .and_then(|mut p| {
            p.parse_expr()?;
            Ok(p.peek_token().token)
        })
        .map_err(|e| format!("expression {text:?} does not parse: {e}"))?;
    if next != Token::EOF {
        return Err(format!(
            "expression {text:?} does not parse: unexpected {next} after the expression"
        ));
    }
    Ok(text)
}

/// A custom SQL test (dbt's singular test): a query returning the failing
/// rows, reading the tested rows (a model's result, a job's delivered
/// rows) as `{this}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlTest {
    /// Its name in reports.
    pub name: String,
    /// A SELECT returning the failing rows.
    pub query: String,
}

/// `sql = { name, query }` or a list of them (`[[tests.sql]]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct SqlTests(pub Vec<SqlTest>);

impl TryFrom<toml::Value> for SqlTests {
    type Error = String;

    fn try_from(v: toml::Value) -> std::result::Result<Self, String> {
        let one = |v: toml::Value| {
            SqlTest::deserialize(v).map_err(|e| format!("sql: {}", e.message().trim_end()))
        };
        match v {
            toml::Value::Array(items) => items
                .into_iter()
                .map(one)
                .collect::<std::result::Result<_, _>>()
                .map(SqlTests),
            v @ toml::Value::Table(_) => Ok(SqlTests(vec![one(v)?])),
            other => Err(format!(
                "sql is {{ name = \"...\", query = \"SELECT ... FROM {{this}} ...\" }} or a list of them, not {other}"
            )),
        }
    }
}

impl SqlTest {
    /// The query with `{this}` standing for `this` (a registered table
    /// name), without a trailing `;`.
    ///
    /// # Errors
    /// A test without a name, or a query that does not name `{this}`,
    /// does not parse or is not one SELECT, in words.
    pub fn query_on(&self, this: &str) -> Result<String, String> {
        use datafusion::sql::sqlparser::ast::Statement;
        use datafusion::sql::sqlparser::dialect::GenericDialect;
        use datafusion::sql::sqlparser::parser::Parser;
        let name = self.name.trim();
        if name.is_empty() {
            return Err("sql tests need a name".into());
        }
        if !self.query.contains("{this}") {
            return Err(format!(
                "sql {name:?}: the query must read the tested rows as {{this}} (e.g. SELECT * FROM {{this}} WHERE ...)"
            ));
        }
        let sql = self
            .query
            .trim()
            .trim_end_matches(';')
            .trim_end()
            .replace("{this}", this);
        let statements = Parser::parse_sql(&GenericDialect {}, &sql)
            .map_err(|e| format!("sql {name:?}: the query does not parse: {e}"))?;
        if !matches!(statements.as_slice(), [Statement::Query(_)]) {
            return Err(format!(
                "sql {name:?}: the query must be one SELECT returning the failing rows"
            ));
        }
        Ok(sql)
    }
}
