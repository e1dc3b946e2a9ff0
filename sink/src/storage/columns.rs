//! The store's tables as Arrow: the `visits` and `conversions` schemas (SPEC.md "Store
//! layout") and builders that append events to them column by column.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanBuilder, Int32Builder, Int64Builder,
    MapArray, MapBuilder, StringArray, StringBuilder, StructArray, TimestampMillisecondBuilder,
    new_null_array,
};
use arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::model::event::{Event, EventKind, Field, format_ip};
use crate::model::url;
use crate::visitors::Visitors;
use crate::visitors::agent::{Agent, Agents, parsed_bytes};
use crate::visitors::geo::Locator;

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

/// The type of the `query` and `remapped` columns.
static MAP_TYPE: LazyLock<DataType> = LazyLock::new(map_type);

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

static VISITS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |name: &str| ArrowField::new(name, DataType::Utf8, true);
    let mut fields = vec![
        ArrowField::new("event_id", DataType::Utf8, false),
        ArrowField::new("ts", ts_type(), false),
        ArrowField::new("kind", DataType::Utf8, false),
        // A click-through's visit (its click id); null on visits.
        s("click_id"),
        s("campaign_id"),
        s("traffic_source_id"),
        ArrowField::new("path_index", DataType::Int32, true),
        s("landing_page_id"),
        s("offer_id"),
        // The offer's link taken, for an offer with several (null otherwise).
        s("offer_link_id"),
        s("network_id"),
        // How the offer's network took conversions when the visit was answered
        // (docs/query.md "Trust"): its postbacks must carry its token; its pixels count (off | default_payout
        // | payout). Null without a network.
        ArrowField::new("network_token", DataType::Boolean, true),
        s("network_pixels"),
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
        // Visitor facts: filled when the sink has a GeoIP database and uap-core's rules
        // (`Builder::with_visitors`).
        s("country"),
        s("tz"),
    ];
    fields.extend(AGENT_STRINGS.iter().map(|n| s(n)));
    fields.extend([
        // desktop | mobile | tablet: the class rules and reports use.
        s("device_type"),
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
        // What the request proved about its sender: token (it carried the postback token of
        // auth_network_id), open (no network required one) or none.
        s("auth"),
        s("auth_network_id"),
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

/// Appends `v`, or null when empty.
fn opt(b: &mut BinaryBuilder, v: &[u8]) {
    if v.is_empty() {
        b.append_null();
    } else {
        b.append_value(v);
    }
}

/// A column of bytes as it is stored, text: request fields are gathered as bytes and checked
/// once per column, a single pass over all its values (a check per value costs far more on
/// short strings). Only a column holding something other than UTF-8 (rare: a hostile request)
/// is converted value by value, invalid sequences replaced.
fn utf8(bytes: BinaryArray) -> StringArray {
    match StringArray::try_from_binary(bytes.clone()) {
        Ok(text) => text,
        Err(_) => bytes
            .iter()
            .map(|v| v.map(String::from_utf8_lossy))
            .collect(),
    }
}

/// A map of bytes to bytes as the map of text to text `data_type` (the schema's), checked as
/// [`utf8`] checks a column.
fn utf8_map(map: MapArray, data_type: &DataType) -> Result<MapArray, ArrowError> {
    let DataType::Map(field, ordered) = data_type else {
        return Err(ArrowError::SchemaError(format!("{data_type} is not a map")));
    };
    let DataType::Struct(fields) = field.data_type() else {
        return Err(ArrowError::SchemaError(format!("{field} is not a struct")));
    };
    let (fields, ordered, field) = (fields.clone(), *ordered, Arc::clone(field));
    let (_, offsets, entries, nulls, _) = map.into_parts();
    let (_, columns, entry_nulls) = entries.into_parts();
    let columns = columns
        .iter()
        .map(|c| Arc::new(utf8(c.as_binary::<i32>().clone())) as ArrayRef)
        .collect();
    let entries = StructArray::try_new(fields, columns, entry_nulls)?;
    MapArray::try_new(field, offsets, entries, nulls, ordered)
}

/// Builds record batches of either table from events.
pub struct Builder {
    table: TableKind,
    rows: usize,
    event_id: BinaryBuilder,
    ts: TimestampMillisecondBuilder,
    node_id: Int32Builder,
    /// The event's byte fields and the column each goes to.
    strings: Vec<(Field, &'static str, BinaryBuilder)>,
    kind: StringBuilder,
    path_index: Int32Builder,
    cost: Int64Builder,
    payout: Int64Builder,
    network_token: BooleanBuilder,
    network_pixels: StringBuilder,
    auth: StringBuilder,
    /// Decoded query parameters of one visit: (key start, key end, value end) in `scratch`.
    params: Vec<(usize, usize, usize)>,
    ip: StringBuilder,
    query: MapBuilder<BinaryBuilder, BinaryBuilder>,
    remapped: MapBuilder<BinaryBuilder, BinaryBuilder>,
    scratch: Vec<u8>,
    /// Visits only: where each visitor is, with the columns it fills.
    geo: Option<GeoColumns>,
    /// Visits only: what each visitor browses with.
    agents: Option<AgentColumns>,
    /// Who decides the bot column, and the column.
    bot: Option<(Visitors, BooleanBuilder)>,
}

/// The user-agent columns, in the order [`agent_strings`] gives them.
const AGENT_STRINGS: [&str; 12] = [
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
    "device_model",
];

fn agent_strings(a: &Agent) -> [Option<&str>; 12] {
    [
        Some(&a.browser_family),
        a.browser_major.as_deref(),
        a.browser_minor.as_deref(),
        a.browser_patch.as_deref(),
        Some(&a.os_family),
        a.os_major.as_deref(),
        a.os_minor.as_deref(),
        a.os_patch.as_deref(),
        a.os_patch_minor.as_deref(),
        Some(&a.device_family),
        a.device_brand.as_deref(),
        a.device_model.as_deref(),
    ]
}

/// Distinct user agents remembered per builder: most traffic repeats a few thousand.
const AGENT_CACHE: usize = 1 << 16;

struct AgentColumns {
    agents: Arc<Agents>,
    cache: HashMap<Box<[u8]>, Agent>,
    strings: Vec<StringBuilder>,
    device_type: StringBuilder,
    mobile: BooleanBuilder,
}

struct GeoColumns {
    locator: Arc<Locator>,
    country: StringBuilder,
    geoname_id: Int64Builder,
    tz: StringBuilder,
}

impl Builder {
    pub fn new(table: TableKind) -> Self {
        Self::with_capacity(table, 0)
    }

    /// A builder with room for `rows` rows before it grows.
    pub fn with_capacity(table: TableKind, rows: usize) -> Self {
        let strings = |avg: usize| StringBuilder::with_capacity(rows, rows * avg);
        let bytes = |avg: usize| BinaryBuilder::with_capacity(rows, rows * avg);
        // Room for the usual lengths, so that a batch is built without copying its columns
        // as they grow.
        let typical = |f: Field| match f {
            Field::Target | Field::UserAgent | Field::Location => 160,
            Field::Referer => 64,
            _ => 24,
        };
        let map = |pairs: usize| {
            let side = || BinaryBuilder::with_capacity(rows * pairs, rows * pairs * 12);
            MapBuilder::with_capacity(None, side(), side(), rows)
        };
        let request = [
            (Field::Host, "host"),
            (Field::Target, "url"),
            (Field::Referer, "referer"),
            (Field::ForwardedFor, "forwarded_for"),
            (Field::UserAgent, "ua"),
            (Field::AcceptLanguage, "lang"),
        ];
        let own: &[(Field, &'static str)] = match table {
            TableKind::Visits => &[
                (Field::CampaignId, "campaign_id"),
                (Field::TrafficSourceId, "traffic_source_id"),
                (Field::LandingPageId, "landing_page_id"),
                (Field::OfferId, "offer_id"),
                (Field::OfferLinkId, "offer_link_id"),
                (Field::NetworkId, "network_id"),
                (Field::Method, "method"),
                (Field::Location, "location"),
                (Field::ClickId, "click_id"),
            ],
            TableKind::Conversions => &[
                (Field::ClickId, "click_id"),
                (Field::NetworkId, "auth_network_id"),
                (Field::ConversionType, "conversion_type"),
                (Field::TxId, "txid"),
                (Field::Status, "status"),
                (Field::Method, "http_method"),
            ],
        };
        Builder {
            table,
            rows: 0,
            event_id: bytes(24),
            ts: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            node_id: Int32Builder::with_capacity(rows),
            strings: own
                .iter()
                .chain(&request)
                .map(|&(f, name)| (f, name, bytes(typical(f))))
                .collect(),
            kind: strings(8),
            path_index: Int32Builder::with_capacity(rows),
            cost: Int64Builder::with_capacity(rows),
            payout: Int64Builder::with_capacity(rows),
            network_token: BooleanBuilder::with_capacity(rows),
            network_pixels: strings(8),
            auth: strings(6),
            params: Vec::new(),
            ip: strings(16),
            query: map(4),
            remapped: map(4),
            scratch: Vec::new(),
            geo: None,
            agents: None,
            bot: None,
        }
    }

    /// Fills visits' `country`, `geoname_id` and `tz` from the visitor's address (the client
    /// behind trusted proxies), and the browser, OS, device, `device_type`, `mobile` and `bot`
    /// columns from the user agent, with what `v` has.
    pub fn with_visitors(mut self, v: &Visitors) -> Self {
        if self.table != TableKind::Visits {
            return self;
        }
        if let Some(locator) = &v.geo {
            self.geo = Some(GeoColumns {
                locator: Arc::clone(locator),
                country: StringBuilder::new(),
                geoname_id: Int64Builder::new(),
                tz: StringBuilder::new(),
            });
        }
        if let Some(agents) = &v.agents {
            self.agents = Some(AgentColumns {
                agents: Arc::clone(agents),
                cache: HashMap::new(),
                strings: AGENT_STRINGS.iter().map(|_| StringBuilder::new()).collect(),
                device_type: StringBuilder::new(),
                mobile: BooleanBuilder::new(),
            });
        }
        if v.agents.is_some() || v.datacenters.is_some() {
            self.bot = Some((v.clone(), BooleanBuilder::new()));
        }
        self
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
        self.event_id.append_value(e.id.to_hex());
        self.ts.append_value(e.ts_ms() as i64);
        self.node_id.append_value(i32::from(e.id.node_id()));
        for (field, _, b) in &mut self.strings {
            opt(b, e.get(*field));
        }
        self.kind.append_value(e.kind.as_str());
        let mut ip = [0u8; 64];
        self.ip.append_value(format_ip(e.peer, &mut ip));
        match self.table {
            TableKind::Visits => {
                self.path_index.append_option(e.path_index.map(i32::from));
                self.cost.append_value(e.cost_micros);
                self.network_token
                    .append_option(e.network_policy.map(|p| p.token));
                self.network_pixels
                    .append_option(e.network_policy.map(|p| p.pixels.as_str()));
                self.append_query(e.get(Field::Target));
                for (k, v) in e.remapped() {
                    self.remapped.keys().append_value(k);
                    self.remapped.values().append_value(v);
                }
                let _ = self.remapped.append(true);
                if let Some(g) = &mut self.geo {
                    let at = g.locator.locate(e.peer, e.get(Field::ForwardedFor));
                    g.country.append_option(at.country);
                    g.geoname_id.append_option(at.geoname_id.map(i64::from));
                    g.tz.append_option(at.tz);
                }
                let mut agent_bot = None;
                if let Some(a) = &mut self.agents {
                    // Only the parsed part of an agent is its key (a bounded cache entry).
                    let ua = parsed_bytes(e.get(Field::UserAgent));
                    if a.cache.len() >= AGENT_CACHE && !a.cache.contains_key(ua) {
                        a.cache.clear();
                    }
                    let agents = &a.agents;
                    let agent = a
                        .cache
                        .entry(ua.into())
                        .or_insert_with(|| agents.parse(&String::from_utf8_lossy(ua)));
                    for (b, v) in a.strings.iter_mut().zip(agent_strings(agent)) {
                        b.append_option(v);
                    }
                    a.device_type.append_value(agent.device_type.as_str());
                    a.mobile.append_value(agent.mobile());
                    agent_bot = Some(agent.bot);
                }
                if let Some((v, b)) = &mut self.bot {
                    b.append_option(v.bot(agent_bot, e.peer, e.get(Field::ForwardedFor)));
                }
            }
            TableKind::Conversions => {
                self.payout.append_option(e.payout_micros);
                self.auth.append_value(e.auth.as_str());
            }
        }
    }

    /// Appends a visit's query parameters, decoded, as the `query` map. A key repeated in the
    /// query (`?k=1&k=2`, common in ad traffic) keeps its first value, as the edge's remapping
    /// does: a map with a key twice is unreadable for DuckDB and others. The `url` column
    /// keeps every value.
    fn append_query(&mut self, target: &[u8]) {
        let (_, query) = url::split_target(target);
        self.scratch.clear();
        self.params.clear();
        for (k, v) in url::pairs(query) {
            let start = self.scratch.len();
            url::decode_into(k, &mut self.scratch);
            let key_end = self.scratch.len();
            url::decode_into(v, &mut self.scratch);
            self.params.push((start, key_end, self.scratch.len()));
        }
        let buf = &self.scratch;
        let key = |&(s, k, _): &(usize, usize, usize)| &buf[s..k];
        // Few parameters: compare with those before; many: a set, so a hostile query of
        // thousands of keys costs linear time.
        let mut seen =
            (self.params.len() > 16).then(|| ahash::AHashSet::with_capacity(self.params.len()));
        for (i, p) in self.params.iter().enumerate() {
            let repeated = match &mut seen {
                Some(set) => !set.insert(key(p)),
                None => self.params[..i].iter().any(|q| key(q) == key(p)),
            };
            if repeated {
                continue;
            }
            self.query.keys().append_value(key(p));
            self.query.values().append_value(&buf[p.1..p.2]);
        }
        let _ = self.query.append(true);
    }

    /// The rows appended so far as a record batch; the builder starts over empty. Columns are
    /// matched to the schema by name; the ones nothing fills (user agent; GeoIP without a
    /// database) are null.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let rows = std::mem::take(&mut self.rows);
        let mut cols: HashMap<&'static str, ArrayRef> = HashMap::with_capacity(40);
        // The next batch gets the room this one took: a builder reused slice after slice
        // (the uploader's) fills its columns without growing them again.
        let again = |b: &mut BinaryBuilder| {
            let next = BinaryBuilder::with_capacity(rows, b.values_slice().len());
            utf8(std::mem::replace(b, next).finish())
        };
        for (_, name, b) in &mut self.strings {
            cols.insert(name, Arc::new(again(b)));
        }
        cols.insert("event_id", Arc::new(again(&mut self.event_id)));
        cols.insert("ts", Arc::new(self.ts.finish()));
        cols.insert("node_id", Arc::new(self.node_id.finish()));
        cols.insert("ip", Arc::new(self.ip.finish()));
        let kind: ArrayRef = Arc::new(self.kind.finish());
        match self.table {
            TableKind::Visits => {
                cols.insert("kind", kind);
                cols.insert("network_token", Arc::new(self.network_token.finish()));
                cols.insert("network_pixels", Arc::new(self.network_pixels.finish()));
                cols.insert("path_index", Arc::new(self.path_index.finish()));
                cols.insert("cost_micros", Arc::new(self.cost.finish()));
                let query = utf8_map(self.query.finish(), &MAP_TYPE)?;
                cols.insert("query", Arc::new(query));
                let remapped = utf8_map(self.remapped.finish(), &MAP_TYPE)?;
                cols.insert("remapped", Arc::new(remapped));
                if let Some(g) = &mut self.geo {
                    cols.insert("country", Arc::new(g.country.finish()));
                    cols.insert("geoname_id", Arc::new(g.geoname_id.finish()));
                    cols.insert("tz", Arc::new(g.tz.finish()));
                }
                if let Some(a) = &mut self.agents {
                    for (name, b) in AGENT_STRINGS.iter().zip(&mut a.strings) {
                        cols.insert(name, Arc::new(b.finish()));
                    }
                    cols.insert("device_type", Arc::new(a.device_type.finish()));
                    cols.insert("mobile", Arc::new(a.mobile.finish()));
                }
                if let Some((_, b)) = &mut self.bot {
                    cols.insert("bot", Arc::new(b.finish()));
                }
            }
            TableKind::Conversions => {
                cols.insert("method", kind);
                cols.insert("payout_micros", Arc::new(self.payout.finish()));
                cols.insert("auth", Arc::new(self.auth.finish()));
            }
        }
        let schema = self.table.schema();
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                cols.remove(f.name().as_str())
                    .unwrap_or_else(|| new_null_array(f.data_type(), rows))
            })
            .collect();
        debug_assert!(
            cols.is_empty(),
            "columns not in the schema: {:?}",
            cols.keys()
        );
        RecordBatch::try_new(schema, columns)
    }
}

#[cfg(test)]
pub(crate) mod tests;
