//! Address ranges: CIDRs, sets of ranges (data centres), and the client's address behind
//! trusted proxies (`X-Forwarded-For`).

use std::net::IpAddr;

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
