//! `genstore`: writes a large synthetic store — visits spread over days and hours, ~2 % of
//! them converting, with duplicate postbacks, upsells, declined conversions, conversions of
//! unknown clicks, and forged ones (docs/query.md "Trust": half the networks require their
//! postback token, and 1 % of their clicks also get a report without it) — through the sink's
//! own Arrow builder and Parquet writer, so the files are what the edge writes. The visitor
//! columns the edge fills from GeoIP and the user agent (country, OS, browser, device) get
//! realistic spreads without looking anything up. At the end it prints, as JSON, the
//! totals a correct report must show (docs/query.md "Attribution").
//!
//! `cargo run --release -p benches --bin genstore -- --store file:///var/tmp/lake50m --visits 50000000`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use object_store::ObjectStoreExt;
use sink::EventId;
use sink::model::event::{Auth, Event, EventKind, Field, NetworkPolicy, Pixels};
use sink::storage::columns::{Builder, TableKind};
use sink::storage::store;

const COUNTRIES: [&str; 24] = [
    "US", "US", "US", "US", "GB", "GB", "DE", "DE", "FR", "CA", "CA", "AU", "BR", "BR", "IN", "IN",
    "IN", "MX", "ES", "IT", "NL", "JP", "PL", "ZA",
];
const OS: [&str; 6] = [
    "Windows",
    "Android",
    "iOS",
    "Mac OS X",
    "Linux",
    "Chrome OS",
];
const BROWSERS: [&str; 5] = [
    "Chrome",
    "Chrome Mobile",
    "Mobile Safari",
    "Firefox",
    "Edge",
];
const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];
const UAS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.43 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
];

struct Opts {
    store: String,
    visits: u64,
    days: u64,
    campaigns: u64,
    conversion_rate: f64,
    rows_per_file: usize,
    start_ms: u64,
    threads: usize,
}

/// What a correct report over the whole store shows.
#[derive(Default, Clone, Copy)]
struct Expected {
    visits: i64,
    cost_micros: i64,
    conversions: i64,
    revenue_micros: i64,
    unknown_conversions: i64,
    unknown_revenue_micros: i64,
    conversion_rows: i64,
}

impl Expected {
    fn add(&mut self, o: &Expected) {
        self.visits += o.visits;
        self.cost_micros += o.cost_micros;
        self.conversions += o.conversions;
        self.revenue_micros += o.revenue_micros;
        self.unknown_conversions += o.unknown_conversions;
        self.unknown_revenue_micros += o.unknown_revenue_micros;
        self.conversion_rows += o.conversion_rows;
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |name: &str, default: u64| {
        arg(&args, name).map_or(default, |v| {
            v.replace('_', "").parse().unwrap_or_else(|_| {
                eprintln!("genstore: {name} takes a whole number, got {v:?}");
                std::process::exit(2)
            })
        })
    };
    let Some(store) = arg(&args, "--store") else {
        eprintln!(
            "usage: genstore --store URL [--visits N] [--days D] [--campaigns C] \
             [--conversion-rate R] [--rows-per-file N] [--threads T]"
        );
        std::process::exit(2)
    };
    let opts = Opts {
        store,
        visits: num("--visits", 50_000_000),
        days: num("--days", 7).max(1),
        campaigns: num("--campaigns", 200).max(1),
        conversion_rate: arg(&args, "--conversion-rate")
            .map_or(0.02, |v| v.parse().unwrap_or(0.02)),
        rows_per_file: num("--rows-per-file", 262_144).max(1) as usize,
        // 2026-11-01T00:00:00Z
        start_ms: num("--start-ms", 1_793_491_200_000),
        threads: num("--threads", 2).max(1) as usize,
    };
    let hours = opts.days * 24;
    let opts = Arc::new(opts);
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..opts.threads)
        .map(|t| {
            let opts = Arc::clone(&opts);
            std::thread::spawn(move || {
                let mut total = Expected::default();
                for hour in (t as u64..hours).step_by(opts.threads) {
                    total.add(&gen_hour(&opts, hour));
                }
                total
            })
        })
        .collect();
    let mut total = Expected::default();
    for w in workers {
        total.add(&w.join().expect("generator thread"));
    }
    eprintln!(
        "genstore: {} visits, {} conversion rows in {:.1} s",
        total.visits,
        total.conversion_rows,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{{\"visits\":{},\"cost_micros\":{},\"conversions\":{},\"revenue_micros\":{},\
         \"unknown_conversions\":{},\"unknown_revenue_micros\":{},\"conversion_rows\":{}}}",
        total.visits,
        total.cost_micros,
        total.conversions,
        total.revenue_micros,
        total.unknown_conversions,
        total.unknown_revenue_micros,
        total.conversion_rows
    );
}

/// Generates and writes one hour of visits and the conversions they lead to.
fn gen_hour(opts: &Opts, hour: u64) -> Expected {
    let hours = opts.days * 24;
    let mut rng = fastrand::Rng::with_seed(0x5eed ^ hour.wrapping_mul(0x9e37_79b9));
    let n = opts.visits / hours + u64::from(hour < opts.visits % hours);
    let hour_ms = opts.start_ms + hour * 3_600_000;
    let mut times: Vec<u64> = (0..n).map(|_| hour_ms + rng.u64(..3_600_000)).collect();
    times.sort_unstable();
    let mut exp = Expected::default();
    let mut conversions: Vec<(u64, Event)> = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = store::open(&opts.store).expect("store");
    let node = 1 + (hour % 3) as u16;
    let mut segment = hour * 1000;
    for (chunk_no, chunk) in times.chunks(opts.rows_per_file).enumerate() {
        let mut b = Builder::with_capacity(TableKind::Visits, chunk.len());
        let mut visitor: Vec<[usize; 4]> = Vec::with_capacity(chunk.len());
        for (i, &ts) in chunk.iter().enumerate() {
            let id = EventId::new(ts, node, (chunk_no % 4) as u8, i as u32);
            let campaign = rng.u64(..opts.campaigns);
            let ua = UAS[rng.usize(..UAS.len())];
            let cost = 1_000 + rng.u64(..500) as i64 * 1_000;
            let target = format!(
                "/c/camp-{campaign}?utm_source=src{}&utm_medium=m{}&cost={}",
                rng.u64(..20),
                rng.u64(..5),
                cost as f64 / 1e6
            );
            let raw =
                format!("GET {target} HTTP/1.1\r\nHost: t.example.com\r\nUser-Agent: {ua}\r\n\r\n");
            let ip = IpAddr::V4(Ipv4Addr::from(rng.u64(..) as u32));
            let mut e = Event::new(EventKind::Visit, id, ip, raw.as_bytes(), 256);
            e.set_raw(Field::Method, 0, 3);
            e.set_raw(Field::Target, 4, target.len());
            e.set_raw(Field::Host, raw.find("t.example").unwrap_or(0), 13);
            let ua_at = raw.find("Mozilla").unwrap_or(0);
            e.set_raw(Field::UserAgent, ua_at, ua.len());
            e.cost_micros = cost;
            e.path_index = Some(0);
            e.push(Field::CampaignId, format!("camp-{campaign}").as_bytes());
            e.push(
                Field::TrafficSourceId,
                format!("ts-{}", campaign % 10).as_bytes(),
            );
            let offer = format!("offer-{}", campaign % 40);
            e.push(Field::OfferId, offer.as_bytes());
            let network = campaign % 4;
            e.push(Field::NetworkId, format!("net-{network}").as_bytes());
            e.network_policy = Some(policy(network));
            e.push(
                Field::Location,
                format!("https://offers.example.com/{offer}?sub={id}").as_bytes(),
            );
            let src = format!("src{}", rng.u64(..20));
            e.push_remapped([
                (&b"source"[..], src.as_bytes()),
                (&b"var_2"[..], &b"cpc"[..]),
            ]);
            b.append(&e);
            visitor.push([
                rng.usize(..COUNTRIES.len()),
                rng.usize(..OS.len()),
                rng.usize(..BROWSERS.len()),
                rng.usize(..DEVICES.len()),
            ]);
            exp.visits += 1;
            exp.cost_micros += cost;
            if rng.f64() < opts.conversion_rate {
                convert(&mut rng, &mut exp, id, ts, network, &mut conversions);
            }
        }
        let batch = b.finish().expect("visits batch");
        let batch = with_visitors(batch, &visitor);
        put(
            &rt,
            &store,
            TableKind::Visits,
            chunk[0],
            node,
            segment,
            &batch,
        );
        segment += 1;
    }
    // Conversions of clicks nobody made: 0.5 % of this hour's conversions; those carrying a
    // network's token count (a visit lost in a crash), the others are forged.
    let unknown = (conversions.len() / 200).max(1);
    for k in 0..unknown {
        let ts = hour_ms + rng.u64(..3_600_000);
        let id = EventId::new(ts, 9, 9, rng.u64(..1 << 24) as u32);
        let payout = payout(&mut rng);
        let authenticated = k % 2 == 0;
        let mut e = postback(id, ts + 1_000, &mut rng, "u", Some(payout), "");
        if authenticated {
            e.auth = Auth::Token;
            e.push(Field::NetworkId, b"net-0");
            exp.unknown_conversions += 1;
            exp.unknown_revenue_micros += payout;
        }
        conversions.push((ts + 1_000, e));
    }
    // Conversions land in the partitions of their own time.
    conversions.sort_by_key(|(ts, _)| *ts);
    exp.conversion_rows += conversions.len() as i64;
    let mut i = 0;
    while i < conversions.len() {
        let part_hour = conversions[i].0 / 3_600_000;
        let mut b = Builder::new(TableKind::Conversions);
        let first = conversions[i].0;
        while i < conversions.len() && conversions[i].0 / 3_600_000 == part_hour {
            b.append(&conversions[i].1);
            i += 1;
        }
        let batch = b.finish().expect("conversions batch");
        put(
            &rt,
            &store,
            TableKind::Conversions,
            first,
            node,
            segment,
            &batch,
        );
        segment += 1;
    }
    exp
}

/// Networks 0 and 1 require their postback token (and take no pixels); 2 and 3 do not.
fn policy(network: u64) -> NetworkPolicy {
    let token = network < 2;
    NetworkPolicy {
        token,
        pixels: if token { Pixels::Off } else { Pixels::Payout },
    }
}

fn payout(rng: &mut fastrand::Rng) -> i64 {
    (100 + rng.u64(..9_900) as i64) * 10_000
}

/// The conversions of one visit: the sale, sometimes reported twice, sometimes with an
/// upsell, sometimes declined later, each carrying its network's token when it has one; and
/// for 1 % of a token network's clicks, a forged report without it (which must not count,
/// nor cancel the sale).
fn convert(
    rng: &mut fastrand::Rng,
    exp: &mut Expected,
    click: EventId,
    ts: u64,
    network: u64,
    out: &mut Vec<(u64, Event)>,
) {
    let at = ts + 5_000 + rng.u64(..2 * 3_600_000);
    let p = payout(rng);
    let net = format!("net-{network}");
    let signed = |mut e: Event| {
        if policy(network).token {
            e.auth = Auth::Token;
            e.push(Field::NetworkId, net.as_bytes());
        }
        e
    };
    if policy(network).token && rng.f64() < 0.01 {
        let forged = postback(click, at + 30_000, rng, "1", Some(999_000_000), "declined");
        out.push((at + 30_000, forged));
    }
    out.push((
        at,
        signed(postback(click, at, rng, "1", Some(p), "approved")),
    ));
    let mut counted = true;
    if rng.f64() < 0.10 {
        // The network retries: the same txid again, counted once.
        out.push((
            at + 60_000,
            signed(postback(click, at + 60_000, rng, "1", Some(p), "approved")),
        ));
    }
    if rng.f64() < 0.03 {
        out.push((
            at + 120_000,
            signed(postback(click, at + 120_000, rng, "1", Some(p), "declined")),
        ));
        counted = false;
    }
    if counted {
        exp.conversions += 1;
        exp.revenue_micros += p;
    }
    if rng.f64() < 0.05 {
        let up = payout(rng);
        out.push((
            at + 180_000,
            signed(postback(click, at + 180_000, rng, "2", Some(up), "")),
        ));
        exp.conversions += 1;
        exp.revenue_micros += up;
    }
}

fn postback(
    click: EventId,
    ts: u64,
    rng: &mut fastrand::Rng,
    txid: &str,
    payout: Option<i64>,
    status: &str,
) -> Event {
    let url = format!("/postback?cid={click}&txid={txid}&status={status}");
    let raw = format!("GET {url} HTTP/1.1\r\nHost: t.example.com\r\n\r\n");
    let id = EventId::new(ts, 5, 0, rng.u64(..1 << 24) as u32);
    let mut e = Event::new(
        EventKind::Postback,
        id,
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        raw.as_bytes(),
        64,
    );
    e.set_raw(Field::Method, 0, 3);
    e.set_raw(Field::Target, 4, url.len());
    e.push(Field::ClickId, &click.to_hex());
    e.push(Field::TxId, txid.as_bytes());
    e.push(Field::Status, status.as_bytes());
    e.push(Field::ConversionType, b"cps");
    e.payout_micros = payout;
    e
}

/// Fills the visitor columns (country, OS, browser, device) with realistic spreads.
fn with_visitors(batch: RecordBatch, v: &[[usize; 4]]) -> RecordBatch {
    let schema = batch.schema();
    let col = |pick: &dyn Fn(&[usize; 4]) -> &'static str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(v.iter().map(pick)))
    };
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| match f.name().as_str() {
            "country" => col(&|x| COUNTRIES[x[0]]),
            "os_family" => col(&|x| OS[x[1]]),
            "browser_family" => col(&|x| BROWSERS[x[2]]),
            "device_type" => col(&|x| DEVICES[x[3]]),
            _ => Arc::clone(c),
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("visitor columns")
}

fn put(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn object_store::ObjectStore>,
    table: TableKind,
    ts_ms: u64,
    node: u16,
    segment: u64,
    batch: &RecordBatch,
) {
    let bytes = store::encode_parquet(table, batch).expect("parquet");
    let path = store::object_path(table, ts_ms as i64, node, segment);
    rt.block_on(store.put(&path, bytes.into())).expect("put");
}
