//! The store's tables as Arrow: the `visits` and `conversions` schemas (SPEC.md "Store
//! layout") and builders that append events to them column by column.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, MapBuilder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::event::{Event, EventKind, Field};
use crate::url;

/// The two tables of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableKind {
    Visits,
    Conversions,
}

impl TableKind {
    pub fn of(kind: EventKind) -> TableKind {
        if kind.is_conversion() {
            TableKind::Conversions
        } else {
            TableKind::Visits
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TableKind::Visits => "visits",
            TableKind::Conversions => "conversions",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            TableKind::Visits => Arc::clone(&VISITS),
            TableKind::Conversions => Arc::clone(&CONVERSIONS),
        }
    }
}

fn map_type() -> DataType {
    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    arrow::array::Array::data_type(&b.finish()).clone()
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Columns of strings that stay null until GeoIP and user-agent parsing land (issue 7).
const VISITOR_STRINGS: [&str; 13] = [
    "country",
    "tz",
    "browser_family",
    "browser_major",
    "browser_minor",
    "browser_patch",
    "os_family",
    "os_major",
    "os_minor",
    "os_patch",
    "os_patch_minor",
    "device_family",
    "device_brand",
];

static VISITS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |name: &str| ArrowField::new(name, DataType::Utf8, true);
    let mut fields = vec![
        ArrowField::new("event_id", DataType::Utf8, false),
        ArrowField::new("ts", ts_type(), false),
        ArrowField::new("kind", DataType::Utf8, false),
        s("campaign_id"),
        s("traffic_source_id"),
        ArrowField::new("path_index", DataType::Int32, true),
        s("landing_page_id"),
        s("offer_id"),
        s("network_id"),
        ArrowField::new("cost_micros", DataType::Int64, false),
        s("method"),
        s("host"),
        s("url"),
        s("referer"),
        s("ip"),
        s("forwarded_for"),
        s("ua"),
        s("lang"),
        ArrowField::new("query", map_type(), true),
        ArrowField::new("remapped", map_type(), true),
        s("location"),
        ArrowField::new("geoname_id", DataType::Int64, true),
    ];
    fields.extend(VISITOR_STRINGS.iter().map(|n| s(n)));
    fields.extend([
        s("device_model"),
        ArrowField::new("mobile", DataType::Boolean, true),
        ArrowField::new("bot", DataType::Boolean, true),
        ArrowField::new("node_id", DataType::Int32, false),
    ]);
    Arc::new(Schema::new(fields))
});

static CONVERSIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |name: &str| ArrowField::new(name, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        ArrowField::new("event_id", DataType::Utf8, false),
        ArrowField::new("ts", ts_type(), false),
        ArrowField::new("click_id", DataType::Utf8, false),
        s("conversion_type"),
        s("txid"),
        s("status"),
        ArrowField::new("payout_micros", DataType::Int64, true),
        ArrowField::new("method", DataType::Utf8, false),
        s("http_method"),
        s("url"),
        s("host"),
        s("ip"),
        s("forwarded_for"),
        s("ua"),
        s("referer"),
        s("lang"),
        ArrowField::new("node_id", DataType::Int32, false),
    ]))
});

/// `v` as text: as it is when it is UTF-8 (the usual case, checked without copying), else
/// with invalid sequences replaced.
fn text(v: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(v) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v),
    }
}

/// Appends `v` as a string, or null when empty.
fn opt(b: &mut StringBuilder, v: &[u8]) {
    if v.is_empty() {
        b.append_null();
    } else {
        b.append_value(text(v));
    }
}

/// Builds record batches of either table from events.
pub struct Builder {
    table: TableKind,
    rows: usize,
    event_id: StringBuilder,
    ts: TimestampMillisecondBuilder,
    node_id: Int32Builder,
    /// Byte fields, in schema order, after the fixed columns.
    strings: Vec<(Field, StringBuilder)>,
    kind: StringBuilder,
    path_index: Int32Builder,
    cost: Int64Builder,
    payout: Int64Builder,
    ip: StringBuilder,
    query: MapBuilder<StringBuilder, StringBuilder>,
    remapped: MapBuilder<StringBuilder, StringBuilder>,
    scratch: Vec<u8>,
}

impl Builder {
    pub fn new(table: TableKind) -> Self {
        Self::with_capacity(table, 0)
    }

    /// A builder with room for `rows` rows before it grows.
    pub fn with_capacity(table: TableKind, rows: usize) -> Self {
        let strings = |avg: usize| StringBuilder::with_capacity(rows, rows * avg);
        let fields = match table {
            TableKind::Visits => vec![
                Field::CampaignId,
                Field::TrafficSourceId,
                Field::LandingPageId,
                Field::OfferId,
                Field::NetworkId,
                Field::Method,
                Field::Host,
                Field::Target,
                Field::Referer,
                Field::ForwardedFor,
                Field::UserAgent,
                Field::AcceptLanguage,
                Field::Location,
            ],
            TableKind::Conversions => vec![
                Field::ClickId,
                Field::ConversionType,
                Field::TxId,
                Field::Status,
                Field::Method,
                Field::Target,
                Field::Host,
                Field::ForwardedFor,
                Field::UserAgent,
                Field::Referer,
                Field::AcceptLanguage,
            ],
        };
        Builder {
            table,
            rows: 0,
            event_id: strings(24),
            ts: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            node_id: Int32Builder::with_capacity(rows),
            strings: fields.into_iter().map(|f| (f, strings(40))).collect(),
            kind: strings(8),
            path_index: Int32Builder::with_capacity(rows),
            cost: Int64Builder::with_capacity(rows),
            payout: Int64Builder::with_capacity(rows),
            ip: strings(16),
            query: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            remapped: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            scratch: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one event; it must belong to this builder's table.
    pub fn append(&mut self, e: &Event) {
        debug_assert_eq!(TableKind::of(e.kind), self.table);
        self.rows += 1;
        self.event_id
            .append_value(std::str::from_utf8(&e.id.to_hex()).unwrap_or_default());
        self.ts.append_value(e.ts_ms() as i64);
        self.node_id.append_value(i32::from(e.id.node_id()));
        for (field, b) in &mut self.strings {
            opt(b, e.get(*field));
        }
        self.kind.append_value(e.kind.as_str());
        let mut ip = [0u8; 48];
        let mut cur = std::io::Cursor::new(&mut ip[..]);
        let _ = std::io::Write::write_fmt(&mut cur, format_args!("{}", e.peer));
        let n = cur.position() as usize;
        self.ip.append_value(text(&ip[..n]));
        match self.table {
            TableKind::Visits => {
                self.path_index.append_option(e.path_index.map(i32::from));
                self.cost.append_value(e.cost_micros);
                let (_, query) = url::split_target(e.get(Field::Target));
                for (k, v) in url::pairs(query) {
                    self.scratch.clear();
                    url::decode_into(k, &mut self.scratch);
                    self.query.keys().append_value(text(&self.scratch));
                    self.scratch.clear();
                    url::decode_into(v, &mut self.scratch);
                    self.query.values().append_value(text(&self.scratch));
                }
                let _ = self.query.append(true);
                for (k, v) in e.remapped() {
                    self.remapped.keys().append_value(text(k));
                    self.remapped.values().append_value(text(v));
                }
                let _ = self.remapped.append(true);
            }
            TableKind::Conversions => self.payout.append_option(e.payout_micros),
        }
    }

    /// The rows appended so far as a record batch; the builder starts over empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let rows = std::mem::take(&mut self.rows);
        let mut strings = self
            .strings
            .iter_mut()
            .map(|(_, b)| Arc::new(b.finish()) as ArrayRef);
        let mut next = || strings.next().expect("one builder per string column");
        let nulls_str = |n: usize| -> ArrayRef {
            let mut b = StringBuilder::new();
            b.append_nulls(n);
            Arc::new(b.finish())
        };
        let event_id = Arc::new(self.event_id.finish()) as ArrayRef;
        let ts = Arc::new(self.ts.finish()) as ArrayRef;
        let node_id = Arc::new(self.node_id.finish()) as ArrayRef;
        let kind = Arc::new(self.kind.finish()) as ArrayRef;
        let ip = Arc::new(self.ip.finish()) as ArrayRef;
        let columns: Vec<ArrayRef> = match self.table {
            TableKind::Visits => {
                let campaign = next();
                let source = next();
                let mut cols = vec![
                    event_id,
                    ts,
                    kind,
                    campaign,
                    source,
                    Arc::new(self.path_index.finish()),
                    next(),
                    next(),
                    next(),
                    Arc::new(self.cost.finish()),
                    next(),
                    next(),
                    next(),
                    next(),
                    ip,
                    next(),
                    next(),
                    next(),
                    Arc::new(self.query.finish()),
                    Arc::new(self.remapped.finish()),
                    next(),
                    {
                        let mut b = Int64Builder::new();
                        b.append_nulls(rows);
                        Arc::new(b.finish())
                    },
                ];
                cols.extend((0..VISITOR_STRINGS.len() + 1).map(|_| nulls_str(rows)));
                for _ in 0..2 {
                    let mut b = BooleanBuilder::new();
                    b.append_nulls(rows);
                    cols.push(Arc::new(b.finish()));
                }
                cols.push(node_id);
                cols
            }
            TableKind::Conversions => {
                let click_id = next();
                let (ty, txid, status) = (next(), next(), next());
                let http_method = next();
                vec![
                    event_id,
                    ts,
                    click_id,
                    ty,
                    txid,
                    status,
                    Arc::new(self.payout.finish()),
                    kind,
                    http_method,
                    next(),
                    next(),
                    ip,
                    next(),
                    next(),
                    next(),
                    next(),
                    node_id,
                ]
            }
        };
        RecordBatch::try_new(self.table.schema(), columns)
    }
}

#[cfg(test)]
pub(crate) mod tests;
