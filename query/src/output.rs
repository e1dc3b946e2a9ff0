//! Rendering: reports and SQL results as an aligned table, CSV or JSON. Money is printed
//! from exact micro-unit sums, rounded to the cent only at the end.

use std::io::Write;
use std::str::FromStr;

use arrow::array::RecordBatch;
use serde_json::{Map, Value, json};

use crate::Result;
use crate::report::{Figures, Report, Row, STATUS_COLUMNS, StatusCounts};

/// The label of the unknown-click row in each dimension column (table and CSV).
pub const UNKNOWN_CLICK: &str = "(unknown click)";
/// The label of the totals row (table and CSV).
pub const TOTAL: &str = "(total)";

const METRICS: [&str; 9] = [
    "visits",
    "clicks",
    "conversions",
    "revenue",
    "cost",
    "profit",
    "roi",
    "cr",
    "epc",
];

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown format {s:?}: expected table, csv or json")),
        }
    }
}

/// Micro-units as a decimal with two places, rounded half away from zero.
pub fn money(micros: i64) -> String {
    let cents = cents(micros);
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// Micro-units rounded to whole cents, half away from zero.
pub fn cents(micros: i64) -> i64 {
    let c = (micros.unsigned_abs() + 5_000) / 10_000;
    if micros < 0 { -(c as i64) } else { c as i64 }
}

fn fixed(v: Option<f64>, places: usize) -> String {
    v.map_or_else(String::new, |v| format!("{v:.places$}"))
}

/// The nine metric cells of a row as text.
fn metric_cells(m: &Figures) -> [String; 9] {
    [
        m.visits.to_string(),
        m.clicks.to_string(),
        m.conversions.to_string(),
        money(m.revenue_micros),
        money(m.cost_micros),
        money(m.profit_micros()),
        fixed(m.roi(), 2),
        fixed(m.cr(), 2),
        fixed(m.epc(), 4),
    ]
}

/// A row's dimension cells, each named one followed by its name.
fn dim_cells(report: &Report, r: &Row) -> Vec<String> {
    let mut out = Vec::with_capacity(r.dims.len() * 2);
    for (i, d) in r.dims.iter().enumerate() {
        if r.unknown_click {
            out.push(UNKNOWN_CLICK.to_owned());
        } else {
            out.push(d.clone().unwrap_or_default());
        }
        if report.named[i] {
            out.push(r.names.get(i).cloned().flatten().unwrap_or_default());
        }
    }
    out
}

/// The header's dimension columns: each dimension, a named one followed by `{dim}_name`.
fn dim_header(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for (d, &named) in report.dims.iter().zip(&report.named) {
        out.push(d.name().to_owned());
        if named {
            out.push(format!("{}_name", d.name()));
        }
    }
    out
}

/// Writes `report` in `format`.
pub fn report(report: &Report, format: Format, out: &mut dyn Write) -> Result<()> {
    let header: Vec<String> = dim_header(report)
        .into_iter()
        .chain(METRICS.iter().map(|m| (*m).to_owned()))
        .chain(STATUS_COLUMNS.iter().map(|(name, _)| (*name).to_owned()))
        .chain(
            STATUS_COLUMNS
                .iter()
                .map(|(name, _)| format!("revenue_{name}")),
        )
        .chain(report.types.iter().map(|t| format!("type:{t}")))
        .collect();
    let dim_columns = header.len() - METRICS.len() - 2 * STATUS_COLUMNS.len() - report.types.len();
    let revenue_cells = |s: &StatusCounts| s.0.map(money);
    let status_cells = |s: &StatusCounts| s.0.map(|n| n.to_string());
    let mut body: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            dim_cells(report, r)
                .into_iter()
                .chain(metric_cells(&r.figures))
                .chain(status_cells(&r.statuses))
                .chain(revenue_cells(&r.status_revenue))
                .chain(r.types.iter().map(i64::to_string))
                .collect()
        })
        .collect();
    let mut total: Vec<String> = vec![String::new(); dim_columns];
    if let Some(first) = total.first_mut() {
        *first = TOTAL.to_owned();
    }
    total.extend(metric_cells(&report.totals));
    total.extend(status_cells(&report.status_totals));
    total.extend(revenue_cells(&report.status_revenue_totals));
    total.extend(report.type_totals.iter().map(i64::to_string));
    match format {
        Format::Table => table(&header, &body, Some(&total), dim_columns, out)?,
        Format::Csv => {
            body.push(total);
            csv(&header, &body, out)?;
        }
        Format::Json => {
            let rows: Vec<Value> = report
                .rows
                .iter()
                .map(|r| {
                    json_row(
                        report,
                        Some(r),
                        &r.figures,
                        (&r.statuses, &r.status_revenue),
                        &r.types,
                    )
                })
                .collect();
            let v = json!({
                "dimensions": report.dims.iter().map(|d| d.name()).collect::<Vec<_>>(),
                "rows": rows,
                "totals": json_row(
                    report,
                    None,
                    &report.totals,
                    (&report.status_totals, &report.status_revenue_totals),
                    &report.type_totals,
                ),
            });
            serde_json::to_writer_pretty(&mut *out, &v).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

fn json_row(
    report: &Report,
    row: Option<&Row>,
    m: &Figures,
    (st, st_revenue): (&StatusCounts, &StatusCounts),
    types: &[i64],
) -> Value {
    let mut o = Map::new();
    if let Some(r) = row {
        for (i, (d, v)) in report.dims.iter().zip(&r.dims).enumerate() {
            o.insert(
                d.name().to_owned(),
                v.clone().map_or(Value::Null, Value::String),
            );
            if report.named[i] {
                o.insert(
                    format!("{}_name", d.name()),
                    r.names
                        .get(i)
                        .cloned()
                        .flatten()
                        .map_or(Value::Null, Value::String),
                );
            }
        }
        o.insert("unknown_click".into(), r.unknown_click.into());
    }
    let money = |micros: i64| json!(cents(micros) as f64 / 100.0);
    let round = |v: Option<f64>, places: i32| {
        v.map_or(Value::Null, |v| {
            let p = 10f64.powi(places);
            json!((v * p).round() / p)
        })
    };
    o.insert("visits".into(), m.visits.into());
    o.insert("clicks".into(), m.clicks.into());
    o.insert("conversions".into(), m.conversions.into());
    o.insert("revenue".into(), money(m.revenue_micros));
    o.insert("cost".into(), money(m.cost_micros));
    o.insert("profit".into(), money(m.profit_micros()));
    o.insert("roi".into(), round(m.roi(), 2));
    o.insert("cr".into(), round(m.cr(), 2));
    o.insert("epc".into(), round(m.epc(), 4));
    o.insert("revenue_micros".into(), m.revenue_micros.into());
    o.insert("cost_micros".into(), m.cost_micros.into());
    o.insert("profit_micros".into(), m.profit_micros().into());
    for ((name, _), n) in STATUS_COLUMNS.iter().zip(st.0) {
        o.insert((*name).into(), n.into());
    }
    for ((name, _), micros) in STATUS_COLUMNS.iter().zip(st_revenue.0) {
        o.insert(format!("revenue_{name}"), money(micros));
    }
    // Conversions by type, as an object: the types are the data's, not a fixed set.
    let by_type: Map<String, Value> = report
        .types
        .iter()
        .zip(types)
        .map(|(t, &n)| (t.clone(), n.into()))
        .collect();
    o.insert("types".into(), Value::Object(by_type));
    Value::Object(o)
}

/// An aligned text table: the first `left` columns left-aligned, the rest right-aligned.
fn table(
    header: &[String],
    body: &[Vec<String>],
    total: Option<&Vec<String>>,
    left: usize,
    out: &mut dyn Write,
) -> Result<()> {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in body.iter().chain(total) {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String], out: &mut dyn Write| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w - c.chars().count();
            if i < left {
                s.push_str(c);
                s.extend(std::iter::repeat_n(' ', pad));
            } else {
                s.extend(std::iter::repeat_n(' ', pad));
                s.push_str(c);
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    line(header, out)?;
    line(&rule, out)?;
    for row in body {
        line(row, out)?;
    }
    if let Some(t) = total {
        line(&rule, out)?;
        line(t, out)?;
    }
    Ok(())
}

/// RFC 4180 CSV.
fn csv(header: &[String], body: &[Vec<String>], out: &mut dyn Write) -> Result<()> {
    for row in std::iter::once(header).chain(body.iter().map(Vec::as_slice)) {
        let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}

fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_owned()
    }
}

/// Writes SQL results: a table, CSV with a header, or JSON with one object per line.
pub fn batches(batches: &[RecordBatch], format: Format, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Table => {
            writeln!(
                out,
                "{}",
                arrow::util::pretty::pretty_format_batches(batches)?
            )?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_rounds_half_away_from_zero_at_the_cent() {
        assert_eq!(money(0), "0.00");
        assert_eq!(money(92_400_000), "92.40");
        assert_eq!(money(4_999), "0.00");
        assert_eq!(money(5_000), "0.01");
        assert_eq!(money(-5_000), "-0.01");
        assert_eq!(money(-4_999), "0.00");
        assert_eq!(money(1_234_567_890_000), "1234567.89");
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
