//! GeoIP through the real edge: visits are located by the client address (behind a trusted
//! proxy, the right-most untrusted `X-Forwarded-For` entry) with MaxMind's GeoLite2 City
//! database, and the store's `country`, `geoname_id` and `tz` columns carry the result.

use systest as common;

use std::time::Duration;

use common::{CAMP, Edge, data_files, ints, strings};

#[test]
fn visits_are_located_by_the_client_behind_trusted_proxies() {
    let db = data_files().join("GeoLite2-City.mmdb");
    let config = edge::config::DEMO_CONFIG.replace(
        "flush_interval_ms = 1000",
        &format!(
            "flush_interval_ms = 60000\ngeoip_db = {:?}\ntrusted_proxies = [\"127.0.0.1/32\"]",
            db.display()
        ),
    );
    let mut e = Edge::with_config("io_uring", &config);
    e.wait_for_log("visitors are located by GeoIP", Duration::from_secs(10));
    // (X-Forwarded-For, expected country, geoname_id, tz); the edge's peer is 127.0.0.1.
    let cases: [(&str, &str, Option<i64>, &str); 6] = [
        ("81.2.69.142", "GB", Some(2_635_167), "Europe/London"),
        // A forged left-most entry is ignored: the proxy appended the real address.
        ("81.2.69.142, 8.8.8.8", "US", Some(6_252_001), ""),
        // The same when the proxy appends its own header line (HAProxy's `option forwardfor`):
        // the lines are one list, in order.
        ("81.2.69.142\n8.8.8.8", "US", Some(6_252_001), ""),
        ("::ffff:81.2.69.142", "GB", Some(2_635_167), "Europe/London"),
        // No header: the peer itself, loopback, is nowhere.
        ("", "", None, ""),
        ("not an address", "", None, ""),
    ];
    for (i, (xff, ..)) in cases.iter().enumerate() {
        let mut c = e.connect();
        // Each line of the case is a header line of its own.
        let header: String = xff
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(|l| format!("X-Forwarded-For: {l}\r\nX-Other: between\r\n"))
            .collect();
        c.send(&format!(
            "GET {CAMP}?utm_content=case{i} HTTP/1.1\r\nHost: t\r\n{header}Connection: close\r\n\r\n"
        ));
        assert_eq!(c.response().status, 302);
    }
    e.signal("TERM");
    assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());
    let visits = e.stored("visits");
    let urls = strings(&visits, "url");
    let (countries, geonames, tzs) = (
        strings(&visits, "country"),
        ints(&visits, "geoname_id"),
        strings(&visits, "tz"),
    );
    assert_eq!(urls.len(), cases.len());
    for (i, (xff, country, geoname, tz)) in cases.iter().enumerate() {
        let row = urls
            .iter()
            .position(|u| u.ends_with(&format!("case{i}")))
            .unwrap();
        assert_eq!(
            (countries[row].as_str(), geonames[row], tzs[row].as_str()),
            (*country, *geoname, *tz),
            "X-Forwarded-For: {xff:?}"
        );
    }
}

#[test]
fn a_bad_geoip_database_stops_the_start_naming_the_key() {
    let dir = common::TempDir::new("geo-bad");
    let bad = dir.write("broken.mmdb", "not a database");
    let config = edge::config::DEMO_CONFIG.replace(
        "flush_interval_ms = 1000",
        &format!("flush_interval_ms = 60000\ngeoip_db = {:?}", bad.display()),
    );
    let path = dir.write("edge.toml", &config);
    let out = std::process::Command::new(common::bin())
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.geoip_db") && err.contains("broken.mmdb"),
        "{err}"
    );
}

#[test]
fn rules_on_countries_and_the_country_token_follow_the_client() {
    let db = data_files().join("GeoLite2-City.mmdb");
    let config = format!(
        r#"
[server]
geoip_db = {db:?}
trusted_proxies = ["127.0.0.1"]

[[traffic_sources]]
id = "ts"
name = "Source"

[[offers]]
id = "uk"
name = "UK offer"
url = "https://uk.example.com/?c={{country}}&id={{click_id}}"

[[offers]]
id = "world"
name = "World offer"
url = "https://world.example.com/?c={{country}}&id={{click_id}}"

[[campaigns]]
id = "geo"
name = "By country"
traffic_source = "ts"
  [[campaigns.paths]]
  weight = 1
  offers = [ {{ offer = "world", weight = 1 }} ]
  [[campaigns.rules]]
  countries = ["GB", "IE"]
  paths = [ {{ weight = 1, offers = [ {{ offer = "uk", weight = 1 }} ] }} ]
"#,
        db = db.display()
    );
    let e = Edge::with_config("legacy", &config);
    let location = |xff: &str| {
        let mut c = e.connect();
        c.send(&format!(
            "GET /c/geo HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n"
        ));
        let r = c.response();
        assert_eq!(r.status, 302);
        r.header("location").unwrap().to_owned()
    };
    assert!(location("81.2.69.142").starts_with("https://uk.example.com/?c=GB&id="));
    assert!(location("8.8.8.8").starts_with("https://world.example.com/?c=US&id="));
    // The forged entry on the left does not route the visitor.
    assert!(location("81.2.69.142, 8.8.8.8").starts_with("https://world.example.com/?c=US&"));
    // Unknown to the database: the default path, an empty token.
    assert!(location("10.0.0.1").starts_with("https://world.example.com/?c=&id="));
}

/// Every value of a Boolean column, nulls as None.
fn bools(batches: &[arrow::record_batch::RecordBatch], name: &str) -> Vec<Option<bool>> {
    use arrow::array::{Array, AsArray};
    batches
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name(name).unwrap().as_boolean().clone();
            (0..col.len())
                .map(|i| (!col.is_null(i)).then(|| col.value(i)))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn visits_carry_browser_os_device_and_the_bot_flag() {
    let regexes = data_files().join("regexes.yaml");
    let config = edge::config::DEMO_CONFIG.replace(
        "flush_interval_ms = 1000",
        &format!(
            "flush_interval_ms = 60000\nua_regexes = {:?}",
            regexes.display()
        ),
    );
    let mut e = Edge::with_config("legacy", &config);
    e.wait_for_log("user agents are parsed", Duration::from_secs(20));
    // (user agent, browser, os, device_type, mobile, bot)
    let cases = [
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.110 Safari/537.36",
            "Chrome",
            "Mac OS X",
            "desktop",
            false,
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Mobile Safari",
            "iOS",
            "mobile",
            true,
            false,
        ),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Googlebot",
            "Other",
            "desktop",
            false,
            true,
        ),
    ];
    for (i, (ua, ..)) in cases.iter().enumerate() {
        let mut c = e.connect();
        c.send(&format!(
            "GET {CAMP}?utm_content=ua{i} HTTP/1.1\r\nHost: t\r\nUser-Agent: {ua}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(c.response().status, 302);
    }
    e.signal("TERM");
    assert!(e.wait(Duration::from_secs(30)).success(), "{}", e.log());
    let visits = e.stored("visits");
    let urls = strings(&visits, "url");
    let (browsers, oses, types) = (
        strings(&visits, "browser_family"),
        strings(&visits, "os_family"),
        strings(&visits, "device_type"),
    );
    let (mobile, bot) = (bools(&visits, "mobile"), bools(&visits, "bot"));
    for (i, (ua, browser, os, device_type, is_mobile, is_bot)) in cases.iter().enumerate() {
        let row = urls
            .iter()
            .position(|u| u.ends_with(&format!("ua{i}")))
            .unwrap();
        assert_eq!(
            (
                browsers[row].as_str(),
                oses[row].as_str(),
                types[row].as_str(),
                mobile[row],
                bot[row]
            ),
            (*browser, *os, *device_type, Some(*is_mobile), Some(*is_bot)),
            "{ua}"
        );
    }
}

/// The per-worker cache of parsed agents that rules and tokens use on the request path.
#[test]
fn the_agent_cache_answers_repeated_agents_without_parsing() {
    use edge::visitor::AgentCache;
    use sink::visitors::agent::{Agents, DeviceType};
    let agents = Agents::load(&data_files().join("regexes.yaml")).unwrap();
    let mut c = AgentCache::default();
    let chrome = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let facts = c.get(&agents, chrome).clone();
    assert_eq!(
        (facts.device, &*facts.os, &*facts.browser, facts.bot),
        (DeviceType::Desktop, "Windows", "Chrome", false)
    );
    assert_eq!(c.get(&agents, chrome), &facts);
    assert_eq!((c.parsed, c.hits), (1, 1));
    // The empty agent is a bot; an overlong agent is parsed but not kept, and does not
    // shadow it.
    assert!(c.get(&agents, b"").bot);
    let long = vec![b'x'; 4096];
    assert!(!c.get(&agents, &long).bot);
    assert!(c.get(&agents, b"").bot);
    // Three thousand distinct agents, twice: the second pass is (nearly) all hits. The hash
    // is seeded at random, so the count varies: about 20 on average, the few sets that got
    // five or more agents missing every time (a direct-mapped cache missed about 500).
    let many: Vec<String> = (0..3000)
        .map(|i| format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/{i}.0 Safari/537.36"))
        .collect();
    for a in &many {
        c.get(&agents, a.as_bytes());
    }
    let parsed = c.parsed;
    for a in &many {
        c.get(&agents, a.as_bytes());
    }
    let missed = c.parsed - parsed;
    assert!(missed < 150, "{missed} of 3000 missed on the second pass");
}
