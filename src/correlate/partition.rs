//! Partitions of the rule set, for aggregators that share the scoring (`aggregate --partition
//! K/N`): a rule belongs to the partition of its registrable domain (for an IP-literal name,
//! the server address it names), by a fixed hash, so every aggregator of every build and host
//! assigns it to the same one.
//!
//! Only the rules are partitioned: what scoring learns from the whole run (interception CAs,
//! the proxy's upstream legs, clients missing the proxy CA, the path of a TLS 1.3 connection
//! from other names' certificates at the same server) is still learned from every observation,
//! so a partition's rules are exactly those one aggregator gives for its domains. The findings
//! are run-wide and come from partition 0 alone.

use std::fmt;
use std::str::FromStr;

/// Partition `index` of `count`; the default, 0 of 1, is the whole rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    index: u32,
    count: u32,
}

impl Default for Partition {
    fn default() -> Self {
        Partition { index: 0, count: 1 }
    }
}

impl Partition {
    pub fn new(index: u32, count: u32) -> Result<Partition, String> {
        if count == 0 || index >= count {
            return Err(format!(
                "partition {index}/{count}: expected K/N with N at least 1 and K from 0 to N-1"
            ));
        }
        Ok(Partition { index, count })
    }

    /// Whether this partition scores and emits the rules of `registrable_domain`.
    pub fn owns(&self, registrable_domain: &str) -> bool {
        self.count == 1
            || fnv1a(registrable_domain.as_bytes()) % u64::from(self.count) == u64::from(self.index)
    }

    /// Whether this partition emits the run-wide findings (learned CAs, missing-CA clients).
    pub fn owns_findings(&self) -> bool {
        self.index == 0
    }

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Partition {
    type Err = String;
    fn from_str(s: &str) -> Result<Partition, String> {
        let bad = || format!("{s:?}: expected K/N, e.g. 0/2");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k = k.trim().parse().map_err(|_| bad())?;
        let n = n.trim().parse().map_err(|_| bad())?;
        Partition::new(k, n)
    }
}

/// 64-bit FNV-1a: fixed, so partitions agree across processes (the maps' hashers are seeded
/// per process and cannot be used for this).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_and_every_domain_has_exactly_one_owner() {
        // The reference values of FNV-1a 64.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        for domain in ["example.com", "pinned.test", "192.0.2.7", "b\u{fc}cher.de"] {
            let owners: Vec<u32> = (0..3)
                .filter(|&k| Partition::new(k, 3).unwrap().owns(domain))
                .collect();
            assert_eq!(owners.len(), 1, "{domain}");
            assert!(Partition::default().owns(domain));
        }
    }

    #[test]
    fn partitions_parse_as_k_of_n() {
        assert_eq!("1/2".parse::<Partition>(), Partition::new(1, 2));
        assert_eq!("1/2".parse::<Partition>().unwrap().to_string(), "1/2");
        for bad in ["2/2", "0/0", "1", "a/2", "-1/2", ""] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
        assert!(Partition::new(0, 2).unwrap().owns_findings());
        assert!(!Partition::new(1, 2).unwrap().owns_findings());
    }
}
