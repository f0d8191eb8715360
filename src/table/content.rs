//! Query results in a table's columns: batches conformed to the table's
//! Arrow schema, and an order-independent hash of a result's content (a
//! full result equal to the table's is not committed).

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema as ArrowSchema;
use datafusion::arrow::row::{RowConverter, SortField};

use crate::error::{Error, Result};

/// A batch in the table's Arrow schema (columns by name, cast).
pub fn conform(
    batch: &datafusion::arrow::record_batch::RecordBatch,
    target: &Arc<ArrowSchema>,
    model: &str,
) -> Result<datafusion::arrow::record_batch::RecordBatch> {
    let columns = target
        .fields()
        .iter()
        .map(|f| {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                Error::Model(format!("{model}: the result lost column {}", f.name()))
            })?;
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                cast(c, f.data_type()).map_err(|e| {
                    Error::Model(format!(
                        "{model}: column {} cannot be stored: {e}",
                        f.name()
                    ))
                    .caused_by(e)
                })
            }
        })
        .collect::<Result<Vec<_>>>()?;
    datafusion::arrow::record_batch::RecordBatch::try_new(target.clone(), columns)
        .map_err(|e| Error::Model(format!("{model}: {e}")).caused_by(e))
}

/// Sum of per-row XXH3-128 hashes of the row encoding: the same rows in
/// any order give the same value.
pub struct ContentHash {
    converter: RowConverter,
    sum: u128,
    rows: u64,
    schema: String,
}

impl ContentHash {
    pub fn new(schema: &ArrowSchema) -> Result<Self> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            converter: RowConverter::new(fields)
                .map_err(|e| Error::Storage(e.to_string()).caused_by(e))?,
            sum: 0,
            rows: 0,
            schema: schema
                .fields()
                .iter()
                .map(|f| format!("{}:{}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(","),
        })
    }

    pub fn add(&mut self, batch: &datafusion::arrow::record_batch::RecordBatch) -> Result<()> {
        let rows = self
            .converter
            .convert_columns(batch.columns())
            .map_err(|e| Error::Storage(e.to_string()).caused_by(e))?;
        for row in rows.iter() {
            self.sum = self
                .sum
                .wrapping_add(twox_hash::XxHash3_128::oneshot(row.as_ref()));
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    pub fn finish(self) -> String {
        let schema = twox_hash::XxHash3_128::oneshot(self.schema.as_bytes());
        format!("{:032x}-{}-{:032x}", self.sum, self.rows, schema)
    }
}

/// `column` cast to `to`; a view array (DataFusion reads Parquet binary
/// and text as views) goes through its plain type first, which arrow can
/// cast onwards (e.g. binary views to `fixed[16]`).
fn cast(
    column: &datafusion::arrow::array::ArrayRef,
    to: &datafusion::arrow::datatypes::DataType,
) -> std::result::Result<datafusion::arrow::array::ArrayRef, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::compute::{can_cast_types, cast as arrow_cast};
    use datafusion::arrow::datatypes::DataType;
    let plain = match column.data_type() {
        DataType::BinaryView => Some(DataType::Binary),
        DataType::Utf8View => Some(DataType::Utf8),
        _ => None,
    };
    match plain {
        Some(plain) if !can_cast_types(column.data_type(), to) => {
            arrow_cast(&arrow_cast(column, &plain)?, to)
        }
        _ => arrow_cast(column, to),
    }
}
