//! The host's own IPv4 addresses, which containers may not reach unless allowed (the issue's
//! "host addresses" deny entries). Read from `/proc/net/fib_trie` of the caller's namespace.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::cidr::Cidr;
use crate::error::Error;

/// Every local (`/32 host LOCAL`) address of the calling thread's network namespace, except
/// loopback (a container's 127/8 is its own).
pub fn host_addresses() -> Result<Vec<Cidr>, Error> {
    let path = "/proc/net/fib_trie";
    let text = std::fs::read_to_string(path).map_err(|source| Error::HostFile {
        path: path.into(),
        source,
    })?;
    Ok(parse_fib_trie(&text))
}

/// The `/32 host LOCAL` leaves of a `/proc/net/fib_trie` dump, loopback excluded.
pub fn parse_fib_trie(text: &str) -> Vec<Cidr> {
    let mut found = BTreeSet::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(ip) = last.filter(|ip| !ip.is_loopback())
        {
            found.insert(Cidr::host(ip));
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_local_addresses_once_without_loopback() {
        let dump = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
            \x20          |-- 127.0.0.1\n              /32 host LOCAL\n\
            \x20          |-- 192.0.2.2\n              /32 host LOCAL\n\
            \x20       |-- 192.0.2.255\n           /32 link BROADCAST\n\
            Local:\n           |-- 192.0.2.2\n              /32 host LOCAL\n\
            \x20          |-- 10.200.1.1\n              /32 host LOCAL\n";
        let got: Vec<String> = parse_fib_trie(dump)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.200.1.1/32", "192.0.2.2/32"]);
    }
}
