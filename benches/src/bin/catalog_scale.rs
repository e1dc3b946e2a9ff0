//! `catalog_scale`: how the edge holds a large catalog. Writes a catalog of `--campaigns`
//! campaigns (default 1 000 000; each with a name, a traffic source, a cost, one path of two
//! weighted offers, one in a hundred with a country rule) into a fresh store, starts the
//! `edge` release binary on it with `catalog = "store"`, and measures:
//!
//! - the load: start to listening, and the edge's own split between reading and compiling;
//! - memory: the edge's resident set once loaded (`VmRSS`) and at its peak (`VmHWM`), each
//!   also over an edge serving an empty catalog (the baseline, started the same way);
//! - a change: one campaign put through the catalog log, from the write until the edge
//!   answers it, and the edge's time to apply it;
//! - the same edge loading `--baseline-campaigns` (default 100 000) of these campaigns from
//!   a TOML config file, the way without the store.
//!
//! Prints one JSON object. `cargo build --profile fast -p edge -p benches` then
//! `target/fast/catalog_scale --edge target/fast/edge`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use catalog::file::{
    CampaignConfig, NetworkConfig, OfferConfig, OfferRefConfig, PathConfig, RuleConfig, Sections,
    TrafficSourceConfig,
};
use catalog::store::{CatalogStore, Change, Deleted};

struct Opts {
    campaigns: usize,
    baseline_campaigns: usize,
    edge: PathBuf,
    dir: PathBuf,
}

fn opts() -> Opts {
    let mut o = Opts {
        campaigns: 1_000_000,
        baseline_campaigns: 100_000,
        edge: PathBuf::from("target/fast/edge"),
        dir: std::env::temp_dir().join(format!("catalog-scale-{}", std::process::id())),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--campaigns" => o.campaigns = v().parse().expect("--campaigns N"),
            "--baseline-campaigns" => {
                o.baseline_campaigns = v().parse().expect("--baseline-campaigns N")
            }
            "--edge" => o.edge = PathBuf::from(v()),
            "--dir" => o.dir = PathBuf::from(v()),
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

fn campaign(i: usize) -> CampaignConfig {
    let path = |a: usize, b: usize| PathConfig {
        weight: 1,
        landing_page: None,
        offers: vec![
            OfferRefConfig {
                offer: format!("offer-{a}"),
                weight: 3,
            },
            OfferRefConfig {
                offer: format!("offer-{b}"),
                weight: 1,
            },
        ],
    };
    CampaignConfig {
        id: format!("camp-{i:07}"),
        name: format!("Campaign {i} - push - tier 1"),
        traffic_source: format!("ts-{}", i % 10),
        cost: 0.01 * (i % 50) as f64,
        cost_model: None,
        category: None,
        paths: vec![path(i % 1000, (i + 1) % 1000)],
        rules: if i.is_multiple_of(100) {
            vec![RuleConfig {
                countries: vec!["US".into(), "CA".into()],
                paths: vec![path((i + 2) % 1000, (i + 3) % 1000)],
                ..RuleConfig::default()
            }]
        } else {
            Vec::new()
        },
    }
}

fn catalog(campaigns: usize) -> Sections {
    Sections {
        traffic_sources: (0..10)
            .map(|i| TrafficSourceConfig {
                id: format!("ts-{i}"),
                name: format!("Source {i}"),
                params: [("zone".to_owned(), "zoneid".to_owned())].into(),
                cost_param: Some("cpc".into()),
                ..Default::default()
            })
            .collect(),
        affiliate_networks: (0..10)
            .map(|i| NetworkConfig {
                id: format!("net-{i}"),
                name: format!("Network {i}"),
                postback_token: format!("token-{i}-0123456789abcdef"),
                pixels: None,
                click_id_macro: None,
                payout_macro: None,
                status_map: Default::default(),
                duplicates: None,
                ..Default::default()
            })
            .collect(),
        offers: (0..1000)
            .map(|i| OfferConfig {
                id: format!("offer-{i}"),
                name: format!("Offer {i}"),
                network: Some(format!("net-{}", i % 10)),
                url: format!("https://offers.example.com/{i}?sub={{click_id}}&z={{zone}}"),
                payout: 1.5,
                links: Vec::new(),
            })
            .collect(),
        landing_pages: Vec::new(),
        campaigns: (0..campaigns).map(campaign).collect(),
        ..Sections::default()
    }
}

/// `VmRSS` and `VmHWM` of `pid`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

struct Running {
    child: Child,
    addr: String,
    started: Duration,
    log: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(edge: &Path, config: &Path, data: &Path, store: &str) -> Running {
    let t = Instant::now();
    let mut child = Command::new(edge)
        .args(["--config", config.to_str().unwrap(), "--workers", "1"])
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(["--store", store])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the edge (build it first)");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(300)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the edge did not start");
        };
        if let Some(i) = line.find("listening on http://") {
            let addr = line[i + 20..].split_whitespace().next().unwrap().to_owned();
            return Running {
                child,
                addr,
                started: t.elapsed(),
                log: rx,
            };
        }
        if line.contains("catalog loaded") {
            eprintln!("{line}");
        }
    }
}

fn status(addr: &str, target: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn main() {
    let o = opts();
    std::fs::create_dir_all(&o.dir).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The store's catalog.
    let lake = o.dir.join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let store_url = format!("file://{}", lake.display());
    let cs = CatalogStore::new(sink::storage::store::open(&store_url).unwrap());
    let t = Instant::now();
    let mut state = rt.block_on(cs.load()).unwrap();
    let commit = state
        .prepare(
            Change {
                replace: true,
                put: catalog(o.campaigns),
                delete: Deleted::default(),
            },
            "catalog_scale",
            sink::model::id::unix_ms(std::time::SystemTime::now()),
        )
        .unwrap();
    rt.block_on(cs.write(&mut state, commit)).unwrap();
    let written = t.elapsed();
    let checkpoint_bytes = std::fs::metadata(
        lake.join("catalog/checkpoints")
            .join(format!("{:020}.json", state.version)),
    )
    .map_or(0, |m| m.len());
    drop(state);
    eprintln!(
        "catalog of {} campaigns written in {written:?}",
        o.campaigns
    );

    let store_cfg = o.dir.join("store.toml");
    std::fs::write(
        &store_cfg,
        "[server]\ncatalog = \"store\"\ncatalog_poll_ms = 1000\n",
    )
    .unwrap();

    // Baseline: an edge serving an empty catalog from an empty store.
    let empty_lake = o.dir.join("empty-lake");
    std::fs::create_dir_all(&empty_lake).unwrap();
    let empty = start(
        &o.edge,
        &store_cfg,
        &o.dir.join("data-empty"),
        &format!("file://{}", empty_lake.display()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let (empty_rss, empty_hwm) = memory(empty.child.id());
    drop(empty);

    // The store's catalog.
    let edge = start(&o.edge, &store_cfg, &o.dir.join("data-store"), &store_url);
    std::thread::sleep(Duration::from_millis(500));
    let (rss, hwm) = memory(edge.child.id());
    let store_started = edge.started;
    assert_eq!(status(&edge.addr, "/c/camp-0000001"), 302);

    // One campaign changed: from its write to the edge answering it.
    let mut state = rt.block_on(cs.load()).unwrap();
    let mut put = Sections::default();
    let mut changed = campaign(7);
    changed.id = "camp-new".into();
    put.campaigns.push(changed);
    let t = Instant::now();
    rt.block_on(cs.change(
        &mut state,
        Change {
            put,
            ..Change::default()
        },
        "catalog_scale",
    ))
    .unwrap();
    let write = t.elapsed();
    while status(&edge.addr, "/c/camp-new") != 302 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the change never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let live = t.elapsed();
    let applied = edge
        .log
        .try_iter()
        .find(|l| l.contains("catalog changed"))
        .unwrap_or_default();
    let (rss_after, _) = memory(edge.child.id());
    drop(edge);
    drop(state);

    // The same campaigns from a TOML config file, as without the store.
    let toml_cfg = o.dir.join("file.toml");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&toml_cfg).unwrap());
        f.write_all(
            toml::to_string(&catalog(o.baseline_campaigns))
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
    }
    let file_lake = o.dir.join("file-lake");
    std::fs::create_dir_all(&file_lake).unwrap();
    let from_file = start(
        &o.edge,
        &toml_cfg,
        &o.dir.join("data-file"),
        &format!("file://{}", file_lake.display()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let (file_rss, file_hwm) = memory(from_file.child.id());
    let file_started = from_file.started;
    drop(from_file);

    let mib = |x: f64| (x * 10.0).round() / 10.0;
    println!(
        "{{\"campaigns\": {}, \"checkpoint_mib\": {:.1}, \"store\": {{\"start_s\": {:.2}, \"rss_mib\": {}, \"peak_mib\": {}, \"rss_over_empty_mib\": {}, \"rss_after_change_mib\": {}}}, \"empty\": {{\"rss_mib\": {}, \"peak_mib\": {}}}, \"change\": {{\"write_ms\": {}, \"live_ms\": {}, \"edge_log\": {:?}}}, \"toml_file\": {{\"campaigns\": {}, \"start_s\": {:.2}, \"rss_mib\": {}, \"peak_mib\": {}}}}}",
        o.campaigns,
        checkpoint_bytes as f64 / 1048576.0,
        store_started.as_secs_f64(),
        mib(rss),
        mib(hwm),
        mib(rss - empty_rss),
        mib(rss_after),
        mib(empty_rss),
        mib(empty_hwm),
        write.as_millis(),
        live.as_millis(),
        applied,
        o.baseline_campaigns,
        file_started.as_secs_f64(),
        mib(file_rss),
        mib(file_hwm),
    );
    let _ = std::fs::remove_dir_all(&o.dir);
}
