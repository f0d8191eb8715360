//! The table layer: what every verb needs from a table, whatever its format.
//! Day maths and table properties, the Parquet writer lanes both formats
//! write with, Iceberg's snapshot producer and the Delta log code.

pub mod content;
pub mod days;
pub mod delta;
pub mod iceberg;
pub mod lanes;
pub mod maintenance;
mod open;
pub mod output;
pub mod props;
pub mod read;
pub mod rejects;
pub mod retry;
pub mod schema;
pub mod snapshot;
pub mod window;
pub mod writer;

pub use open::Table;
