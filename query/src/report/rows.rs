//! The report's rows as Arrow answers them, and their display order.

use std::cmp::Ordering;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};

use super::{Figures, Row, STATUS_COLUMNS, StatusCounts};
use crate::Result;
use crate::dims::Dimension;

pub(super) fn read_rows(
    b: &RecordBatch,
    ndims: usize,
    ntypes: usize,
    out: &mut Vec<Row>,
) -> Result<()> {
    let unknown = b.column(0).as_boolean();
    let dims: Vec<_> = (0..ndims)
        .map(|i| cast(b.column(1 + i), &DataType::Utf8))
        .collect::<Result<_, _>>()?;
    let metric = |i: usize| cast(b.column(1 + ndims + i), &DataType::Int64);
    let m: Vec<_> = (0..5 + 2 * STATUS_COLUMNS.len() + ntypes)
        .map(metric)
        .collect::<Result<_, _>>()?;
    let m: Vec<_> = m.iter().map(|a| a.as_primitive::<Int64Type>()).collect();
    for row in 0..b.num_rows() {
        let value = |a: &arrow::array::PrimitiveArray<Int64Type>| {
            if a.is_null(row) { 0 } else { a.value(row) }
        };
        out.push(Row {
            dims: dims
                .iter()
                .map(|d| {
                    let s = d.as_string::<i32>();
                    (!s.is_null(row)).then(|| s.value(row).to_owned())
                })
                .collect(),
            unknown_click: unknown.value(row),
            names: Vec::new(),
            figures: Figures {
                visits: value(m[0]),
                clicks: value(m[1]),
                conversions: value(m[2]),
                revenue_micros: value(m[3]),
                cost_micros: value(m[4]),
            },
            statuses: StatusCounts(std::array::from_fn(|i| value(m[5 + i]))),
            status_revenue: StatusCounts(std::array::from_fn(|i| {
                value(m[5 + STATUS_COLUMNS.len() + i])
            })),
            types: (0..ntypes)
                .map(|i| value(m[5 + 2 * STATUS_COLUMNS.len() + i]))
                .collect(),
        });
    }
    Ok(())
}

/// Display order: by time when a time dimension is asked for, else by traffic (visits, then
/// conversions, then revenue, descending), ties by the values; missing values after present
/// ones; the unknown-click row last.
pub(super) fn sort(dims: &[Dimension], rows: &mut [Row]) {
    let by_values = |a: &Row, b: &Row| {
        a.dims
            .iter()
            .zip(&b.dims)
            .map(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    };
    let by_time = dims.iter().any(Dimension::is_time);
    rows.sort_by(|a, b| {
        a.unknown_click.cmp(&b.unknown_click).then_with(|| {
            if by_time {
                by_values(a, b)
            } else {
                let (x, y) = (&a.figures, &b.figures);
                (y.visits, y.conversions, y.revenue_micros)
                    .cmp(&(x.visits, x.conversions, x.revenue_micros))
                    .then_with(|| by_values(a, b))
            }
        })
    });
}
