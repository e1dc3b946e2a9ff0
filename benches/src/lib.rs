//! Shared helpers for the benches.

use std::net::IpAddr;

use sink::{Event, EventId, EventKind, Field};

/// The data files `scripts/fetch-data.sh` fetches, shared with the tests.
pub use systest::data_files;

/// `n` public IPv4 addresses scattered over the whole space (loadtest's visitors' own).
pub fn scattered_ipv4(n: usize) -> Vec<std::net::IpAddr> {
    (0..n as u64)
        .map(|i| std::net::IpAddr::from(loadtest::funnel::public_ipv4(i)))
        .collect()
}

/// Four browsers' user agents, as sent.
pub const UAS: [&[u8]; 4] = [
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.110 Safari/537.36",
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    b"Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.6167.101 Mobile Safari/537.36",
];

/// A visit as the edge records it: long user agent, URL with parameters, remapped map.
pub fn visit(ts_ms: u64, n: u32, ip: IpAddr) -> Event {
    let mut e = Event::new(
        EventKind::Visit,
        EventId::new(ts_ms, 1, (n % 2) as u8, n),
        ip,
        b"",
        768,
    );
    let target = format!(
        "/c/5aaea5a02d38914cfd2ad8c1?utm_source=blog{}&utm_medium=review&utm_content=hero-{}&url=https%3A%2F%2Fblog.example.com%2Fpost%2F{}",
        n % 7,
        n % 13,
        n % 1000
    );
    let id = e.id.to_string();
    e.push(Field::Method, b"GET");
    e.push(Field::Target, target.as_bytes());
    e.push(Field::Host, b"track.example.com");
    e.push(
        Field::Referer,
        b"https://blog.example.com/post/how-to-automate-your-email",
    );
    e.push(Field::UserAgent, UAS[n as usize % UAS.len()]);
    e.push(Field::AcceptLanguage, b"en-US,en;q=0.9");
    e.push(Field::CampaignId, b"5aaea5a02d38914cfd2ad8c1");
    e.push(Field::TrafficSourceId, b"ts-blog");
    e.push(
        Field::OfferId,
        if n.is_multiple_of(4) {
            b"offer-drip-trial"
        } else {
            b"offer-drip"
        },
    );
    e.push(Field::NetworkId, b"net-impact");
    e.push(
        Field::Location,
        format!(
            "https://offers.example.com/drip?aff_sub={id}&src=blog{}&medium=review",
            n % 7
        )
        .as_bytes(),
    );
    let source = format!("blog{}", n % 7);
    let target_kw = format!("hero-{}", n % 13);
    e.push_remapped([
        (&b"source"[..], source.as_bytes()),
        (b"target", target_kw.as_bytes()),
        (b"var_2", b"review"),
        (b"var_7", b"https://blog.example.com/post"),
    ]);
    e.cost_micros = 50_000;
    e.path_index = Some(0);
    e
}

/// `n` visits a millisecond apart, [`visit`]s from the addresses `ips` in turn.
pub fn visits(n: u32, ips: &[IpAddr]) -> Vec<Event> {
    (0..n)
        .map(|i| {
            visit(
                1_795_766_000_000 + u64::from(i),
                i,
                ips[i as usize % ips.len()],
            )
        })
        .collect()
}
