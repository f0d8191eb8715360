//! Declarations shared by a model's `[tests]` and a job's `[job.expect]`:
//! `not_null` entries, and the checks of `regex` patterns and SQL
//! `expression`s made before anything runs.

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
