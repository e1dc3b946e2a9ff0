//! The sink's hot paths: events → Arrow → zstd Parquet (target: 1 M events/s on one core),
//! and WAL group commit with fsync (acknowledged conversions per second).

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sink::EventKind;
use sink::storage::columns::{Builder, TableKind};
use sink::storage::store::encode_parquet;
use sink::storage::writer::{WalConfig, WalWriter};
use sink::visitors::Visitors;
use sink::visitors::agent::Agents;
use sink::visitors::geo::{GeoDb, Locator};

fn parquet(c: &mut Criterion) {
    let n = 100_000u32;
    // Visitors from a few thousand addresses spread over the world.
    let ips = benches::scattered_ipv4(4096);
    let events = benches::visits(n, &ips);
    let db = benches::data_files().join("GeoLite2-City.mmdb");
    let locator = Arc::new(Locator {
        db: GeoDb::open(&db).unwrap(),
        proxies: Vec::new(),
    });
    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Elements(u64::from(n)));
    g.sample_size(10);
    g.bench_function("events_to_arrow", |b| {
        b.iter(|| {
            let mut builder = Builder::with_capacity(TableKind::Visits, events.len());
            for e in &events {
                builder.append(e);
            }
            black_box(builder.finish().unwrap())
        })
    });
    let geo_only = Visitors {
        geo: Some(Arc::clone(&locator)),
        ..Visitors::default()
    };
    g.bench_function("events_to_arrow_with_geoip", |b| {
        b.iter(|| {
            let mut builder =
                Builder::with_capacity(TableKind::Visits, events.len()).with_visitors(&geo_only);
            for e in &events {
                builder.append(e);
            }
            black_box(builder.finish().unwrap())
        })
    });
    let agents = Arc::new(Agents::load(&benches::data_files().join("regexes.yaml")).unwrap());
    let everything = Visitors {
        geo: Some(Arc::clone(&locator)),
        agents: Some(Arc::clone(&agents)),
        ..Visitors::default()
    };
    g.bench_function("events_to_arrow_with_geoip_and_agents", |b| {
        b.iter(|| {
            let mut builder =
                Builder::with_capacity(TableKind::Visits, events.len()).with_visitors(&everything);
            for e in &events {
                builder.append(e);
            }
            black_box(builder.finish().unwrap())
        })
    });
    g.finish();
    let mut g = c.benchmark_group("agent");
    g.throughput(Throughput::Elements(benches::UAS.len() as u64));
    g.bench_function("parse_uncached", |b| {
        b.iter(|| {
            for ua in benches::UAS {
                black_box(agents.parse(std::str::from_utf8(ua).unwrap()).bot);
            }
        })
    });
    // The same agents padded to the 16 KiB a request head allows: only their first 512 bytes
    // are parsed, so they cost about what the plain ones do.
    let padded: Vec<String> = benches::UAS
        .iter()
        .map(|ua| {
            let mut s = std::str::from_utf8(ua).unwrap().to_owned();
            while s.len() < 16 * 1024 {
                s.push_str(" (compatible; x-padding/1.0)");
            }
            s
        })
        .collect();
    g.bench_function("parse_uncached_16k", |b| {
        b.iter(|| {
            for ua in &padded {
                black_box(agents.parse(ua).bot);
            }
        })
    });
    g.finish();
    let mut g = c.benchmark_group("geo");
    g.throughput(Throughput::Elements(ips.len() as u64));
    g.bench_function("lookup_4096_addresses", |b| {
        b.iter(|| {
            let mut found = 0;
            for ip in &ips {
                found += usize::from(locator.db.lookup(*ip).country.is_some());
            }
            black_box(found)
        })
    });
    g.finish();
    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Elements(u64::from(n)));
    g.sample_size(10);
    g.bench_function("events_to_zstd_parquet", |b| {
        b.iter(|| {
            let mut builder = Builder::with_capacity(TableKind::Visits, events.len());
            for e in &events {
                builder.append(e);
            }
            let batch = builder.finish().unwrap();
            black_box(encode_parquet(TableKind::Visits, &batch).unwrap().len())
        })
    });
    g.finish();
}

fn wal(c: &mut Criterion) {
    let tmp = tempfile::Builder::new()
        .prefix("bench-wal-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("wal");
    let (tx, rx) = sink::storage::queue::queue(100_000, u64::MAX);
    let mut cfg = WalConfig::new(dir.clone());
    cfg.max_bytes = u64::MAX;
    let writer = WalWriter::spawn(vec![rx], cfg, None).unwrap();
    let mut g = c.benchmark_group("wal");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    // 64 postbacks in flight at a time (64 connections), each answered once fsynced.
    const IN_FLIGHT: u64 = 64;
    g.throughput(Throughput::Elements(IN_FLIGHT));
    g.bench_function("acked_postbacks_64_in_flight", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let acks: Vec<_> = (0..IN_FLIGHT)
                    .map(|k| {
                        let n = (i * IN_FLIGHT + k) as u32;
                        let mut e =
                            benches::visit(1_795_766_000_000, n, IpAddr::from([1, 2, 3, 4]));
                        e.kind = EventKind::Postback;
                        let (sender, receiver) = sink::model::ack::pair();
                        e.ack = Some(sender);
                        tx.try_send(e).unwrap();
                        receiver
                    })
                    .collect();
                for a in &acks {
                    while a.outcome().is_none() {
                        std::hint::spin_loop();
                    }
                    assert_eq!(a.outcome(), Some(true));
                }
            }
            start.elapsed()
        })
    });
    g.finish();
    drop(tx);
    writer.join();
}

criterion_group!(benches, parquet, wal);
criterion_main!(benches);
