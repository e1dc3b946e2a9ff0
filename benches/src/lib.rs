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

/// `n` public-looking IPv4 addresses scattered over the whole space (a fixed sequence).
pub fn scattered_ipv4(n: usize) -> Vec<std::net::IpAddr> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let mut a = x.rotate_left(13);
            // Keep off 0/8, 10/8, 127/8 and the multicast and reserved ranges.
            let first = (a >> 24) % 223;
            if first == 0 || first == 10 || first == 127 {
                a ^= 0x4000_0000;
            }
            std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                ((first.max(1)) << 24) | (a & 0x00ff_ffff),
            ))
        })
        .collect()
}
