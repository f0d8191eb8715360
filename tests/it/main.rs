//! floe's integration tests: ingest through a real REST catalog (floe's,
//! served in-process on 127.0.0.1) onto a local-folder warehouse, read back
//! with iceberg-rust's scan. pyiceberg and Spark read the same tables in
//! `tests/python`.

mod bad_data;
mod common;
mod data_tests;
mod delta;
mod errors;
mod faults;
mod http;
mod incremental;
mod ingest;
mod maintain;
mod modes;
mod nothing_lost;
mod s3_faults;
mod secrets;
mod transform;
