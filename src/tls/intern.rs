//! Sharing what many connections have in common. Thousands of connections carry the same
//! certificate chain (a proxy mints one leaf per host and reuses it) and the same few ClientHello
//! shapes (one per client program), so the TLS stage parses and fingerprints each distinct one
//! once per thread and lets connections hold a reference to it. A tracked connection then costs
//! pointers, not kilobytes of strings, and a repeated chain is never parsed again.
//!
//! Each cache is bounded: when full it starts over (entries still referenced by connections
//! live on through their `Arc`), so hostile traffic that makes every chain unique costs one
//! clear per `limit` misses, never unbounded memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// Distinct values kept per cache and thread.
pub const CACHE_LIMIT: usize = 4096;

pub struct Interner<K, V> {
    map: HashMap<K, Arc<V>, foldhash::fast::RandomState>,
    limit: usize,
}

impl<K: Hash + Eq, V> Interner<K, V> {
    pub fn new(limit: usize) -> Self {
        Interner {
            map: HashMap::default(),
            limit: limit.max(1),
        }
    }

    /// The shared value for `key`, made by `make` the first time.
    pub fn get_or_make(&mut self, key: K, make: impl FnOnce(&K) -> V) -> Arc<V> {
        if let Some(value) = self.map.get(&key) {
            return Arc::clone(value);
        }
        if self.map.len() >= self.limit {
            self.map.clear();
        }
        let value = Arc::new(make(&key));
        self.map.insert(key, Arc::clone(&value));
        value
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_share_one_value_and_make_runs_once() {
        let mut cache = Interner::new(8);
        let mut made = 0;
        let a = cache.get_or_make("chain-a", |_| {
            made += 1;
            String::from("summary a")
        });
        let b = cache.get_or_make("chain-a", |_| {
            made += 1;
            String::from("other")
        });
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(made, 1);
    }

    #[test]
    fn a_full_cache_starts_over_and_old_values_stay_alive() {
        let mut cache = Interner::new(4);
        let first = cache.get_or_make(0u32, |k| k * 10);
        for k in 1..4 {
            cache.get_or_make(k, |k| k * 10);
        }
        assert_eq!(cache.len(), 4);
        let fifth = cache.get_or_make(4, |k| k * 10);
        assert_eq!(cache.len(), 1, "the cache was cleared before the new entry");
        assert_eq!((*first, *fifth), (0, 40));
        for k in 5..10_000 {
            cache.get_or_make(k, |k| k * 10);
        }
        assert!(cache.len() <= 4);
    }
}
