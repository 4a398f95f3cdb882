//! The cache of verified tokens: SHA-256 of the token → what its verification found, bounded,
//! each entry usable until its token's `exp + leeway` and no longer.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::VerifiedToken;

/// What a successful verification found, remembered.
#[derive(Clone)]
pub(super) struct CachedToken {
    pub(super) token: VerifiedToken,
    /// `exp + leeway`, in seconds since the epoch: not used after.
    pub(super) valid_until: i64,
    /// Index of the issuer that verified it.
    pub(super) issuer: usize,
    /// The issuer's key set generation at the time.
    pub(super) generation: u64,
}

/// A bounded map of verified tokens. When it is full, expired entries are dropped, and if that
/// is not enough, arbitrary entries until a tenth of the room is free again.
pub(super) struct TokenCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], CachedToken>>,
}

impl TokenCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The entry of `digest` while `now` is not past its `valid_until`; an entry past it is
    /// removed.
    pub(super) fn get(&self, digest: &[u8; 32], now: i64) -> Option<CachedToken> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(digest) {
            Some(entry) if now <= entry.valid_until => Some(entry.clone()),
            Some(_) => {
                entries.remove(digest);
                None
            }
            None => None,
        }
    }

    pub(super) fn insert(&self, digest: [u8; 32], entry: CachedToken, now: i64) {
        if self.capacity == 0 || now > entry.valid_until {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, e| now <= e.valid_until);
            let keep = self.capacity - self.capacity.div_ceil(10);
            if entries.len() > keep {
                let excess = entries.len() - keep;
                let victims: Vec<[u8; 32]> = entries.keys().take(excess).copied().collect();
                for victim in victims {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(digest, entry);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn entry(valid_until: i64) -> CachedToken {
        CachedToken {
            token: VerifiedToken {
                issuer: Arc::from("legacy"),
                iss: Arc::from("legacy-ordering"),
                sub: None,
                exp: valid_until - 30,
            },
            valid_until,
            issuer: 0,
            generation: 0,
        }
    }

    fn digest(n: u32) -> [u8; 32] {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&n.to_be_bytes());
        d
    }

    #[test]
    fn an_entry_is_used_until_its_valid_until_and_never_after() {
        let cache = TokenCache::new(10);
        cache.insert(digest(1), entry(1_000), 900);
        assert!(cache.get(&digest(1), 1_000).is_some());
        assert!(cache.get(&digest(1), 1_001).is_none());
        // Gone for good, also if the clock went back.
        assert!(cache.get(&digest(1), 900).is_none());
        // An entry already past its time is not stored.
        cache.insert(digest(2), entry(1_000), 1_001);
        assert!(cache.get(&digest(2), 999).is_none());
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let cache = TokenCache::new(100);
        for n in 0..1_000 {
            cache.insert(digest(n), entry(10_000), 0);
            assert!(cache.len() <= 100);
        }
        // The newest entry is always kept.
        assert!(cache.get(&digest(999), 0).is_some());
        // Expired entries go first.
        let cache = TokenCache::new(10);
        for n in 0..9 {
            cache.insert(digest(n), entry(50), 0);
        }
        cache.insert(digest(100), entry(10_000), 0);
        cache.insert(digest(101), entry(10_000), 60);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&digest(100), 60).is_some());
    }
}
