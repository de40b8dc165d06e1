//! Short-lived read caches of this process: the public keys of an account with their state
//! (the hot path of `Keystore/get` and `PublicKey/get`) and the session's officer-key
//! capability. A snapshot is coherent (the state was read before the keys, so it never
//! claims changes the data lacks) and at most `[jmap] cache_ms` old; every write through
//! this service drops the account's entry at once, so a client always reads its own
//! writes. Changes made elsewhere (the CLI, another node) show within `cache_ms`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Cache {
    ttl: Duration,
    /// account id → (fetched at, state, public keys as (id, full JSON object)).
    public_keys: Mutex<HashMap<String, (Instant, Arc<Snapshot>)>>,
    /// The `org:sealpost:params:jmap:keys` capability value.
    keys_capability: Mutex<Option<(Instant, Arc<KeysCapability>)>>,
    /// Bumped by every invalidation, so a read that raced with a write is not cached.
    generation: std::sync::atomic::AtomicU64,
}

/// The session's `org:sealpost:params:jmap:keys` value and a digest of it (for the
/// session state).
pub struct KeysCapability {
    pub value: Value,
    pub digest: [u8; 32],
}

pub struct Snapshot {
    pub state: String,
    pub objects: Vec<(String, Value)>,
}

impl Cache {
    pub fn new(ttl_ms: u64) -> Cache {
        Cache {
            ttl: Duration::from_millis(ttl_ms),
            public_keys: Mutex::new(HashMap::new()),
            keys_capability: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    pub fn public_keys(&self, account: &str) -> Option<Arc<Snapshot>> {
        let m = self.public_keys.lock().expect("cache");
        m.get(account)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, s)| s.clone())
    }

    /// Call before reading from the database; pass the result to `put_public_keys`.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn put_public_keys(&self, account: &str, generation: u64, s: Arc<Snapshot>) {
        if !self.enabled() {
            return;
        }
        let mut m = self.public_keys.lock().expect("cache");
        if self.generation() != generation {
            return;
        }
        if m.len() > 10_000 {
            let ttl = self.ttl;
            m.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        m.insert(account.to_string(), (Instant::now(), s));
    }

    /// Drops what this account's writes may have changed.
    pub fn invalidate(&self, account: &str) {
        let mut m = self.public_keys.lock().expect("cache");
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        m.remove(account);
    }

    pub fn keys_capability(&self) -> Option<Arc<KeysCapability>> {
        self.keys_capability
            .lock()
            .expect("cache")
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn put_keys_capability(&self, v: &Arc<KeysCapability>) {
        if self.enabled() {
            *self.keys_capability.lock().expect("cache") = Some((Instant::now(), v.clone()));
        }
    }
}
