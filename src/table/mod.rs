//! The table layer: what every verb needs from a table, whatever its format
//! (day maths, table properties and summary keys, ...).

pub mod days;
pub mod props;
