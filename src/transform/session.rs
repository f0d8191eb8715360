//! DataFusion sessions for models and their tests. Tables are registered
//! by the table layer ([`crate::table::read::Source::register`]): every
//! table a query reads under its `namespace.table` name at one snapshot,
//! optionally restricted to some days.

use datafusion::prelude::{SessionConfig, SessionContext};

/// A session with floe's settings: SQL spans on (so errors can name a line
/// and column), identifiers case-insensitive as in Spark and Trino.
pub fn context() -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(false);
    config.options_mut().sql_parser.collect_spans = true;
    SessionContext::new_with_config(config)
}
