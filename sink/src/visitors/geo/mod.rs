//! Where a visitor is: the client address behind trusted proxies, and its country, GeoNames
//! id and time zone from a MaxMind database (GeoIP2/GeoLite2 City or Country).

use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use maxminddb::{PathElement, Reader};

mod ranges;

pub use ranges::{Cidr, Networks, client_ip, unmap};

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
struct DbBytes(crate::visitors::huge::HugeSlice<u8>);

impl DbBytes {
    fn read(path: &Path) -> std::io::Result<DbBytes> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("the database is too large"))?;
        // SAFETY: all-zero bytes are valid `u8`s.
        let mut bytes = unsafe { crate::visitors::huge::HugeSlice::zeroed(len)? };
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
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("not.mmdb");
        std::fs::write(&path, b"hello").unwrap();
        let e = GeoDb::open(&path).unwrap_err().to_string();
        assert!(e.contains("not.mmdb") && e.contains("MaxMind"), "{e}");
        let e = GeoDb::open(&dir.join("missing.mmdb"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.mmdb"), "{e}");
    }
}
