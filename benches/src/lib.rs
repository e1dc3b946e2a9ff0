//! Shared helpers for the benches.

/// The data files `scripts/fetch-data.sh` fetches, shared with the tests.
pub use systest::data_files;

/// `n` public IPv4 addresses scattered over the whole space (loadtest's visitors' own).
pub fn scattered_ipv4(n: usize) -> Vec<std::net::IpAddr> {
    (0..n as u64)
        .map(|i| std::net::IpAddr::from(loadtest::funnel::public_ipv4(i)))
        .collect()
}
