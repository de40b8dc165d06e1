//! Recipient lookups: what a recipient's mail gets (encryption to a key set, or plaintext),
//! cached briefly. PostgreSQL notifications drop an account's entries at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sealpost_keystore::recipient::{self, RecipientKeys, Selection};
use sealpost_keystore::{Address, Backend, Keystore};

use crate::metrics::Metrics;

/// The treatment one recipient's mail needs.
#[derive(Clone, Debug)]
pub enum Treatment {
    /// Deliver as it is: no account, no active key, or encryption turned off.
    Plain { reason: &'static str },
    /// Encrypt to these keys (all OpenPGP or all S/MIME, sorted by id).
    Encrypt {
        keys: Arc<RecipientKeys>,
        protect_subject: Option<bool>,
    },
    /// The mailbox wants encryption but none of its active keys can encrypt now (expired or
    /// revoked since import): mail waits until the owner supplies a new key.
    Unusable { account: String },
}

#[derive(Clone)]
struct Entry {
    at: Instant,
    account_id: Option<String>,
    treatment: Treatment,
}

/// A short-lived cache in front of the keystore.
pub struct RecipientCache {
    keystore: Keystore,
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
    metrics: Arc<Metrics>,
}

impl RecipientCache {
    pub fn new(keystore: Keystore, ttl: Duration, metrics: Arc<Metrics>) -> RecipientCache {
        RecipientCache {
            keystore,
            ttl,
            entries: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Looks a recipient up, from the cache when fresh.
    pub async fn lookup(&self, rcpt: &Address) -> Result<Treatment, sealpost_keystore::Error> {
        let key = rcpt.to_string();
        if let Some(e) = self.entries.lock().expect("cache lock").get(&key) {
            if e.at.elapsed() < self.ttl {
                self.metrics.cache_hit();
                return Ok(e.treatment.clone());
            }
        }
        self.metrics.cache_miss();
        let (account_id, treatment) = self.resolve(rcpt).await?;
        let mut map = self.entries.lock().expect("cache lock");
        // Keep the map bounded: expired entries go first, then everything.
        if map.len() > 100_000 {
            map.retain(|_, e| e.at.elapsed() < self.ttl);
            if map.len() > 100_000 {
                map.clear();
            }
        }
        map.insert(
            key,
            Entry {
                at: Instant::now(),
                account_id,
                treatment: treatment.clone(),
            },
        );
        Ok(treatment)
    }

    async fn resolve(
        &self,
        rcpt: &Address,
    ) -> Result<(Option<String>, Treatment), sealpost_keystore::Error> {
        let Some(account_id) = self.keystore.resolve_recipient(rcpt).await? else {
            return Ok((
                None,
                Treatment::Plain {
                    reason: "no-account",
                },
            ));
        };
        let settings = self.keystore.account_settings(&account_id).await?;
        let keys = self.keystore.active_keys_of(&account_id).await?;
        if settings.encrypt_incoming == Some(false) {
            return Ok((Some(account_id), Treatment::Plain { reason: "disabled" }));
        }
        match recipient::select(&keys, settings.format, SystemTime::now()) {
            Selection::NoKey => Ok((Some(account_id), Treatment::Plain { reason: "no-key" })),
            // Active keys exist, but none can be encrypted to now (expired, revoked): the
            // mail must wait rather than go out in clear.
            Selection::Unusable => {
                let account = keys[0].account.clone();
                Ok((Some(account_id), Treatment::Unusable { account }))
            }
            Selection::Encrypt(set) => Ok((
                Some(account_id),
                Treatment::Encrypt {
                    keys: Arc::new(set),
                    protect_subject: settings.protect_subject,
                },
            )),
        }
    }

    /// Drops every cached entry of an account, and every "no account" entry: a notification
    /// may announce a new account whose addresses were cached as unknown.
    pub fn invalidate_account(&self, account_id: &str) {
        self.entries
            .lock()
            .expect("cache lock")
            .retain(|_, e| e.account_id.as_deref() != Some(account_id) && e.account_id.is_some());
    }

    pub fn clear(&self) {
        self.entries.lock().expect("cache lock").clear();
    }

    /// On PostgreSQL, listens for key changes and drops the affected entries until the
    /// task is aborted. Reconnects after errors; while disconnected the TTL still applies.
    pub fn spawn_invalidation(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if self.keystore.backend() != Backend::Postgres {
            return None;
        }
        let cache = Arc::clone(self);
        Some(tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect(cache.keystore.url()).await {
                    Ok(mut listener) => {
                        if let Err(e) = listener
                            .listen(sealpost_keystore::store::NOTIFY_CHANNEL)
                            .await
                        {
                            tracing::warn!(error = %e, "cannot LISTEN for key changes");
                        } else {
                            // Changes made while we were not listening are unknown.
                            cache.clear();
                            loop {
                                match listener.recv().await {
                                    Ok(n) => cache.invalidate_account(n.payload()),
                                    Err(e) => {
                                        tracing::warn!(error = %e, "key change notifications interrupted");
                                        cache.clear();
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot connect to receive key change notifications")
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }))
    }
}
