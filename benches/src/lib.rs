//! Shared helpers for the benches.

use std::path::PathBuf;

/// The data files `scripts/fetch-data.sh` fetches (GeoLite2 City, uap-core's regexes), in a
/// directory shared with the tests; fetched when missing.
pub fn data_files() -> PathBuf {
    let dir = std::env::temp_dir().join("clicktracker-data");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-data.sh");
    let st = std::process::Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .status()
        .expect("run scripts/fetch-data.sh");
    assert!(st.success(), "scripts/fetch-data.sh failed");
    dir
}

/// `n` public IPv4 addresses scattered over the whole space (loadtest's visitors' own).
pub fn scattered_ipv4(n: usize) -> Vec<std::net::IpAddr> {
    (0..n as u64)
        .map(|i| std::net::IpAddr::from(loadtest::funnel::public_ipv4(i)))
        .collect()
}
