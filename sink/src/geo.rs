//! Where a visitor is: the client address behind trusted proxies, and its country, GeoNames
//! id and time zone from a MaxMind database (GeoIP2/GeoLite2 City or Country).

use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use maxminddb::{PathElement, Reader};

/// An address range, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, unmap(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl Cidr {
    /// The first and last address of the range, IPv4 as `u32` or IPv6 as `u128`.
    fn bounds(&self) -> Bounds {
        match self.net {
            IpAddr::V4(n) => {
                let host = u32::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                let lo = u32::from(n) & !host;
                Bounds::V4(lo, lo | host)
            }
            IpAddr::V6(n) => {
                let host = u128::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                let lo = u128::from(n) & !host;
                Bounds::V6(lo, lo | host)
            }
        }
    }
}

enum Bounds {
    V4(u32, u32),
    V6(u128, u128),
}

/// A set of address ranges looked up in O(log n): e.g. the data centres whose visitors count
/// as bots (cloud providers publish thousands of ranges).
#[derive(Debug, Clone, Default)]
pub struct Networks {
    /// Sorted, disjoint, inclusive ranges.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// Sorts and merges overlapping or adjacent ranges.
fn merge<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if next(last.1).is_none_or(|n| lo <= n) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|&(lo, _)| lo <= x);
    i > 0 && x <= ranges[i - 1].1
}

impl Networks {
    pub fn new(cidrs: &[Cidr]) -> Networks {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for c in cidrs {
            match c.bounds() {
                Bounds::V4(lo, hi) => v4.push((lo, hi)),
                Bounds::V6(lo, hi) => v6.push((lo, hi)),
            }
        }
        Networks {
            v4: merge(v4, |x: u32| x.checked_add(1)),
            v6: merge(v6, |x: u128| x.checked_add(1)),
        }
    }

    /// Reads ranges from text: one address or CIDR per line; blank lines and `#` comments
    /// are skipped. The error names the line.
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            out.push(
                Cidr::parse(line)
                    .ok_or_else(|| format!("line {}: {line:?} is not an address or CIDR", n + 1))?,
            );
        }
        Ok(out)
    }

    /// Whether `ip` (IPv4-mapped addresses as IPv4) is in one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match unmap(ip) {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// Disjoint ranges after merging.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `::ffff:a.b.c.d` as the IPv4 address it is; other addresses unchanged.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn trusted(ip: IpAddr, proxies: &[Cidr]) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

/// The visitor's address. The socket's peer, unless the peer is a trusted proxy: then the
/// right-most address of `X-Forwarded-For` that is not itself trusted (what nginx's
/// `real_ip_recursive on` does), so a client cannot pick its country by sending the header
/// itself. An unparsable entry stops the walk at the address after it.
pub fn client_ip(peer: IpAddr, forwarded_for: &[u8], proxies: &[Cidr]) -> IpAddr {
    let peer = unmap(peer);
    if forwarded_for.is_empty() || !trusted(peer, proxies) {
        return peer;
    }
    let mut client = peer;
    for part in forwarded_for.rsplit(|&b| b == b',') {
        let Some(ip) = std::str::from_utf8(part)
            .ok()
            .and_then(|s| parse_forwarded(s.trim()))
        else {
            break;
        };
        client = unmap(ip);
        if !trusted(client, proxies) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5678`, `[2001:db8::1]:80`).
fn parse_forwarded(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']').and_then(|(a, _)| a.parse().ok());
    }
    s.rsplit_once(':')
        .and_then(|(a, _)| a.parse::<std::net::Ipv4Addr>().ok())
        .map(IpAddr::V4)
}

/// What the database knows of an address; any part may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Geo {
    /// ISO 3166-1 alpha-2, e.g. `US`.
    pub country: Option<String>,
    /// The country's GeoNames id, e.g. 6252001 for the United States.
    pub geoname_id: Option<u32>,
    /// IANA time zone of the location, e.g. `America/Chicago` (City databases only).
    pub tz: Option<String>,
}

/// Why a database cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: not a readable MaxMind database: {reason}")]
pub struct GeoError {
    pub path: PathBuf,
    pub reason: String,
}

/// An open MaxMind database, read into memory once; lookups take no lock.
pub struct GeoDb {
    reader: Reader<DbBytes>,
}

/// The database's bytes, in memory backed by huge pages where the kernel allows: a lookup
/// walks some thirty tree nodes spread over tens of megabytes, and with 4 KiB pages most steps
/// of a never-seen address would also miss the TLB.
struct DbBytes(crate::huge::HugeSlice<u8>);

impl DbBytes {
    fn read(path: &Path) -> std::io::Result<DbBytes> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("the database is too large"))?;
        // SAFETY: all-zero bytes are valid `u8`s.
        let mut bytes = unsafe { crate::huge::HugeSlice::zeroed(len)? };
        file.read_exact(bytes.as_mut_slice())?;
        Ok(DbBytes(bytes))
    }
}

impl AsRef<[u8]> for DbBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GeoDb({})", self.reader.metadata.database_type)
    }
}

impl GeoDb {
    pub fn open(path: &Path) -> Result<GeoDb, GeoError> {
        let err = |reason: String| GeoError {
            path: path.to_owned(),
            reason,
        };
        let bytes = DbBytes::read(path).map_err(|e| err(e.to_string()))?;
        let reader = Reader::from_source(bytes).map_err(|e| err(e.to_string()))?;
        Ok(GeoDb { reader })
    }

    /// The database's type as it names itself, e.g. `GeoLite2-City`.
    pub fn kind(&self) -> &str {
        &self.reader.metadata.database_type
    }

    /// What the database says of `ip` (an IPv4-mapped IPv6 address is looked up as IPv4).
    /// Private, reserved and unknown addresses give an empty [`Geo`].
    pub fn lookup(&self, ip: IpAddr) -> Geo {
        let r = self.lookup_ref(ip);
        Geo {
            country: r.country.map(str::to_owned),
            geoname_id: r.geoname_id,
            tz: r.tz.map(str::to_owned),
        }
    }

    /// [`GeoDb::lookup`] without copying: the strings are the database's own.
    pub fn lookup_ref(&self, ip: IpAddr) -> GeoRef<'_> {
        let ip = match unmap(ip) {
            IpAddr::V6(v6) if v6 == Ipv6Addr::UNSPECIFIED => return GeoRef::default(),
            other => other,
        };
        let Ok(found) = self.reader.lookup(ip) else {
            return GeoRef::default();
        };
        match found.decode::<Record<'_>>() {
            Ok(Some(r)) => GeoRef {
                country: r.country.as_ref().and_then(|c| c.iso_code),
                geoname_id: r.country.as_ref().and_then(|c| c.geoname_id),
                tz: r.location.and_then(|l| l.time_zone),
            },
            _ => GeoRef::default(),
        }
    }

    /// The country (ISO code) of `ip` alone, as rules and `{country}` need it: the record is
    /// entered along `country.iso_code` only, and a record seen before (many networks share
    /// one) is answered from `cache` without decoding.
    pub fn country(&self, ip: IpAddr, cache: &mut CountryCache) -> Option<[u8; 2]> {
        let ip = match unmap(ip) {
            IpAddr::V6(v6) if v6 == Ipv6Addr::UNSPECIFIED => return None,
            other => other,
        };
        let found = self.reader.lookup(ip).ok()?;
        let offset = found.offset()?;
        if cache.slots.is_empty() {
            cache.slots = vec![(0, None); COUNTRY_CACHE];
        }
        let slot = &mut cache.slots[offset % COUNTRY_CACHE];
        if slot.0 == offset + 1 {
            return slot.1;
        }
        let iso: Option<&str> = found
            .decode_path(&[PathElement::Key("country"), PathElement::Key("iso_code")])
            .ok()
            .flatten();
        let code = iso.and_then(|c| <[u8; 2]>::try_from(c.as_bytes()).ok());
        *slot = (offset + 1, code);
        code
    }
}

/// Records remembered by a [`CountryCache`] (a power of two).
const COUNTRY_CACHE: usize = 1 << 14;

/// Countries of recently seen database records, by the record's offset: a City database
/// shares one record between all the networks of a place, so most visitors' records were
/// seen before and their country needs no decoding. One per worker.
#[derive(Clone, Default)]
pub struct CountryCache {
    /// (offset + 1, country); 0 is empty. Allocated on first use.
    slots: Vec<(usize, Option<[u8; 2]>)>,
}

impl std::fmt::Debug for CountryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountryCache")
    }
}

/// [`Geo`] borrowing its strings from the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeoRef<'a> {
    pub country: Option<&'a str>,
    pub geoname_id: Option<u32>,
    pub tz: Option<&'a str>,
}

/// The parts of a City or Country record that are used; the rest (names in every language,
/// subdivisions, …) is skipped without being decoded.
#[derive(serde::Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<CountryRecord<'a>>,
    #[serde(borrow, default)]
    location: Option<LocationRecord<'a>>,
}

#[derive(serde::Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
    #[serde(default)]
    geoname_id: Option<u32>,
}

#[derive(serde::Deserialize)]
struct LocationRecord<'a> {
    #[serde(borrow, default)]
    time_zone: Option<&'a str>,
}

/// Locates visitors: the database and the proxies whose `X-Forwarded-For` is believed.
#[derive(Debug)]
pub struct Locator {
    pub db: GeoDb,
    pub proxies: Vec<Cidr>,
}

impl Locator {
    /// The country of the visitor of a request from `peer` with this `X-Forwarded-For`.
    pub fn country(
        &self,
        peer: IpAddr,
        forwarded_for: &[u8],
        cache: &mut CountryCache,
    ) -> Option<[u8; 2]> {
        self.db
            .country(client_ip(peer, forwarded_for, &self.proxies), cache)
    }

    /// Where the visitor of a request from `peer` with this `X-Forwarded-For` is.
    pub fn locate(&self, peer: IpAddr, forwarded_for: &[u8]) -> GeoRef<'_> {
        self.db
            .lookup_ref(client_ip(peer, forwarded_for, &self.proxies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_their_addresses() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("2001:db8::1")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        for bad in ["10.0.0.0/33", "2001:db8::/129", "nope", "10.0.0.0/x", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn networks_find_addresses_in_merged_ranges() {
        let list = "# cloud\n10.0.0.0/8\n10.1.0.0/16 # inside the first\n\n11.0.0.0/8\n192.0.2.7\n2001:db8::/32\n";
        let n = Networks::new(&Networks::parse_list(list).unwrap());
        assert_eq!(n.len(), 3, "10/8 and 11/8 merge, 10.1/16 is inside");
        for yes in [
            "10.0.0.0",
            "11.255.255.255",
            "192.0.2.7",
            "::ffff:10.2.3.4",
            "2001:db8::1",
        ] {
            assert!(n.contains(ip(yes)), "{yes}");
        }
        for no in [
            "9.255.255.255",
            "12.0.0.0",
            "192.0.2.8",
            "2001:db9::1",
            "8.8.8.8",
        ] {
            assert!(!n.contains(ip(no)), "{no}");
        }
        let all = Networks::new(&[
            Cidr::parse("0.0.0.0/0").unwrap(),
            Cidr::parse("::/0").unwrap(),
        ]);
        assert!(all.contains(ip("255.255.255.255")) && all.contains(ip("ffff::1")));
        assert!(!Networks::default().contains(ip("10.0.0.1")));
        let e = Networks::parse_list("10.0.0.0/8\n\n300.1.1.1\n").unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_forwarded_address() {
        let proxies = [
            Cidr::parse("127.0.0.1/32").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap(),
        ];
        let lb = ip("127.0.0.1");
        // Through the trusted load balancer: the address it saw.
        assert_eq!(client_ip(lb, b"8.8.8.8", &proxies), ip("8.8.8.8"));
        // A client claiming an address of its own: the load balancer appends the real one.
        assert_eq!(client_ip(lb, b"1.2.3.4, 8.8.8.8", &proxies), ip("8.8.8.8"));
        // Through two trusted hops.
        assert_eq!(client_ip(lb, b"8.8.8.8, 10.1.1.1", &proxies), ip("8.8.8.8"));
        // From an untrusted peer the header counts for nothing.
        assert_eq!(
            client_ip(ip("9.9.9.9"), b"8.8.8.8", &proxies),
            ip("9.9.9.9")
        );
        // Ports, IPv6 and mapped addresses.
        assert_eq!(client_ip(lb, b"8.8.8.8:4711", &proxies), ip("8.8.8.8"));
        assert_eq!(
            client_ip(lb, b"[2001:db8::7]:80", &proxies),
            ip("2001:db8::7")
        );
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), b"8.8.4.4", &proxies),
            ip("8.8.4.4")
        );
        // Garbage stops the walk at the last good address.
        assert_eq!(client_ip(lb, b"8.8.8.8, junk", &proxies), lb);
        assert_eq!(client_ip(lb, b"junk, 8.8.8.8", &proxies), ip("8.8.8.8"));
        // Every hop trusted: the left-most.
        assert_eq!(
            client_ip(lb, b"10.2.2.2, 10.1.1.1", &proxies),
            ip("10.2.2.2")
        );
        // No proxies configured.
        assert_eq!(client_ip(lb, b"8.8.8.8", &[]), lb);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named() {
        let dir = crate::test_dir("geo-bad");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not.mmdb");
        std::fs::write(&path, b"hello").unwrap();
        let e = GeoDb::open(&path).unwrap_err().to_string();
        assert!(e.contains("not.mmdb") && e.contains("MaxMind"), "{e}");
        let e = GeoDb::open(&dir.join("missing.mmdb"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.mmdb"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
