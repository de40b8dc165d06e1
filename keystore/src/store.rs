//! The keystore database: one code path for SQLite and PostgreSQL through sqlx's `Any`
//! driver, with the schema written in the SQL both share.

use std::path::Path;
use std::str::FromStr;
use std::time::SystemTime;

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::address::{Address, LocalPartMatch, LookupConfig};
use crate::audit;
use crate::policy::{self, CertInfo, PolicyConfig, PolicyError};
use crate::{now_unix, random_id};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The PostgreSQL notification channel writers signal key changes on; the payload is the
/// account id.
pub const NOTIFY_CHANNEL: &str = "sealpost_keys";

/// `[database]` in the config file.
#[derive(Clone, Debug, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://./sealpost-data/keystore.db";

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: DEFAULT_DATABASE_URL.into(),
            max_connections: 8,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Address(#[from] crate::address::AddressError),
    #[error("key refused: {0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database URL {0:?} is not supported: use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which JMAP data type a change belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    PublicKey,
    PrivateKey,
    Escrow,
    KeySettings,
}

impl ObjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::PublicKey => "PublicKey",
            ObjectType::PrivateKey => "PrivateKey",
            ObjectType::Escrow => "Escrow",
            ObjectType::KeySettings => "KeySettings",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    Created,
    Updated,
    Destroyed,
}

impl ChangeOp {
    fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Created => "created",
            ChangeOp::Updated => "updated",
            ChangeOp::Destroyed => "destroyed",
        }
    }
}

/// Who made a change, recorded in the audit log.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

impl Actor {
    /// The operator running a CLI command: `cli:USER`.
    pub fn cli() -> Actor {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(unix_user_name)
            .unwrap_or_else(|| "unknown".into());
        Actor(format!("cli:{user}"))
    }
}

/// The name of the real user id, from /proc and /etc/passwd (no libc binding needed).
fn unix_user_name() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    let name = passwd.as_deref().and_then(|p| {
        p.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
        })
    });
    Some(name.unwrap_or(format!("uid{uid}")))
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub primary: String,
    pub aliases: Vec<String>,
    pub created: i64,
    pub has_password: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PublicKeyRecord {
    pub fingerprint: String,
    pub account: String,
    pub account_id: String,
    pub kind: String,
    pub active: bool,
    pub algorithm: String,
    pub version: i32,
    pub user_ids: Vec<String>,
    pub created: i64,
    pub expires: Option<i64>,
    pub imported_at: i64,
    pub updated_at: i64,
    #[serde(skip)]
    pub armored: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct KeyHistoryEvent {
    pub fingerprint: String,
    pub event: String,
    pub at: i64,
    pub actor: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub modseq: i64,
    pub object_id: String,
    pub op: String,
}

/// The keystore handle. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Keystore {
    pool: AnyPool,
    backend: Backend,
    url: String,
    lookup: LookupConfig,
    policy: PolicyConfig,
}

pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Any>;

impl Keystore {
    /// Connects to the database named by `config.url`. For SQLite the file (and its
    /// directory) is created when missing. Does not run migrations.
    pub async fn connect(
        config: &DatabaseConfig,
        lookup: LookupConfig,
        policy: PolicyConfig,
    ) -> Result<Keystore> {
        sqlx::any::install_default_drivers();
        let (backend, url) = normalize_url(&config.url)?;
        let mut opts = AnyPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(10));
        if backend == Backend::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = opts.connect(&url).await?;
        if backend == Backend::Sqlite {
            // WAL lets the milter read while the JMAP service or the CLI writes.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        Ok(Keystore {
            pool,
            backend,
            url,
            lookup,
            policy,
        })
    }

    /// Connects and brings the schema up to date. A schema that is already current is left
    /// alone, so a role that may only read (the milter role) can still open the keystore.
    pub async fn open(
        config: &DatabaseConfig,
        lookup: LookupConfig,
        policy: PolicyConfig,
    ) -> Result<Keystore> {
        let ks = Keystore::connect(config, lookup, policy).await?;
        if !matches!(ks.pending_migrations().await, Ok(p) if p.is_empty()) {
            ks.migrate().await?;
        }
        Ok(ks)
    }

    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Migrations embedded in this build that the database has not applied yet.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>> {
        let applied: Vec<i64> =
            match sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(&self.pool)
                .await
            {
                Ok(rows) => rows.iter().map(|r| r.get::<i64, _>(0)).collect(),
                // A database no migration ever ran on has no such table; any other error
                // (a role without SELECT on it, a lost connection) must not read as "behind".
                Err(e) if is_missing_table(&e) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
        Ok(MIGRATOR
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection URL (for opening a PostgreSQL LISTEN connection).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn policy_config(&self) -> &PolicyConfig {
        &self.policy
    }

    pub fn lookup_config(&self) -> &LookupConfig {
        &self.lookup
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction. SQLite takes its write lock at once (`BEGIN IMMEDIATE`)
    /// so two writers queue instead of failing when the reader upgrades.
    pub(crate) async fn begin(&self) -> Result<Tx> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    // ---- accounts -------------------------------------------------------------------

    /// Creates an account with a primary address and aliases.
    pub async fn add_account(
        &self,
        primary: &Address,
        aliases: &[Address],
        actor: &Actor,
    ) -> Result<Account> {
        let mut tx = self.begin().await?;
        let id = self.create_account_tx(&mut tx, primary, aliases).await?;
        audit::append(
            &mut tx,
            actor,
            Some(&primary.to_string()),
            "account.add",
            Some(&id),
            None,
        )
        .await?;
        tx.commit().await?;
        self.account_by_id(&id)
            .await?
            .ok_or_else(|| Error::NotFound("account vanished".into()))
    }

    async fn create_account_tx(
        &self,
        tx: &mut Tx,
        primary: &Address,
        aliases: &[Address],
    ) -> Result<String> {
        let mut all = vec![primary];
        all.extend(aliases.iter());
        for (i, a) in all.iter().enumerate() {
            if all[..i].contains(a) {
                return Err(Error::Invalid(format!("address {a} is given twice")));
            }
            if let Some(owner) = self.exact_owner(&mut **tx, a).await? {
                return Err(Error::Conflict(format!(
                    "address {a} already belongs to account {owner}"
                )));
            }
        }
        let id = format!("a{}", random_id(8));
        sqlx::query("INSERT INTO accounts (id, created) VALUES ($1, $2)")
            .bind(&id)
            .bind(now_unix())
            .execute(&mut **tx)
            .await?;
        for (i, a) in all.iter().enumerate() {
            sqlx::query(
                "INSERT INTO addresses (local_part, domain, account_id, is_primary) VALUES ($1, $2, $3, $4)",
            )
            .bind(&a.local)
            .bind(&a.domain)
            .bind(&id)
            .bind(i64::from(i == 0))
            .execute(&mut **tx)
            .await?;
        }
        Ok(id)
    }

    /// The primary address of the account that owns exactly this stored address.
    async fn exact_owner<'e, E>(&self, ex: E, a: &Address) -> Result<Option<String>>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let row = sqlx::query(
            "SELECT p.local_part, p.domain FROM addresses a \
             JOIN addresses p ON p.account_id = a.account_id AND p.is_primary = 1 \
             WHERE a.local_part = $1 AND a.domain = $2",
        )
        .bind(&a.local)
        .bind(&a.domain)
        .fetch_optional(ex)
        .await?;
        Ok(row.map(|r| format!("{}@{}", r.get::<String, _>(0), r.get::<String, _>(1))))
    }

    pub async fn list_accounts(&self) -> Result<Vec<Account>> {
        let rows = sqlx::query(
            "SELECT a.id, a.created, a.password_hash, d.local_part, d.domain, d.is_primary \
             FROM accounts a JOIN addresses d ON d.account_id = a.id \
             ORDER BY a.id, d.is_primary DESC, d.domain, d.local_part",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<Account> = Vec::new();
        for r in rows {
            let id: String = r.get(0);
            let addr = format!("{}@{}", r.get::<String, _>(3), r.get::<String, _>(4));
            let primary = r.get::<i64, _>(5) != 0;
            match out.last_mut() {
                Some(acc) if acc.id == id => acc.aliases.push(addr),
                _ => out.push(Account {
                    id,
                    created: r.get(1),
                    has_password: r.get::<Option<String>, _>(2).is_some(),
                    primary: if primary { addr } else { String::new() },
                    aliases: Vec::new(),
                }),
            }
        }
        out.sort_by(|a, b| a.primary.cmp(&b.primary));
        Ok(out)
    }

    pub async fn account_by_id(&self, id: &str) -> Result<Option<Account>> {
        Ok(self.list_accounts().await?.into_iter().find(|a| a.id == id))
    }

    /// The account holding this exact address (as stored: domain lower-cased, local part
    /// compared per `[lookup] local_part`). No recipient-delimiter stripping.
    pub async fn account_for_address(&self, a: &Address) -> Result<Option<String>> {
        let sql = match self.lookup.local_part {
            LocalPartMatch::Exact => {
                "SELECT account_id FROM addresses WHERE domain = $2 AND local_part = $1"
            }
            LocalPartMatch::Insensitive => {
                "SELECT account_id FROM addresses WHERE domain = $2 AND lower(local_part) = lower($1)"
            }
        };
        let row = sqlx::query(sql)
            .bind(&a.local)
            .bind(&a.domain)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Resolves a mail recipient to its account: aliases resolve to their account, and
    /// when the address itself is unknown the recipient extension (`user+tag`) is stripped.
    pub async fn resolve_recipient(&self, a: &Address) -> Result<Option<String>> {
        if let Some(id) = self.account_for_address(a).await? {
            return Ok(Some(id));
        }
        match a.strip_delimiter(&self.lookup.recipient_delimiter) {
            Some(base) => self.account_for_address(&base).await,
            None => Ok(None),
        }
    }

    /// Like [`resolve_recipient`] but fails when there is no account.
    pub async fn require_account(&self, a: &Address) -> Result<String> {
        self.resolve_recipient(a)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no account has the address {a}")))
    }

    pub async fn addresses_of(&self, account_id: &str) -> Result<Vec<Address>> {
        let rows = sqlx::query(
            "SELECT local_part, domain FROM addresses WHERE account_id = $1 ORDER BY is_primary DESC, domain, local_part",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Address {
                local: r.get(0),
                domain: r.get(1),
            })
            .collect())
    }

    /// Every address in `domain` (lower-case, as stored) with its account id.
    pub async fn addresses_in_domain(&self, domain: &str) -> Result<Vec<(String, Address)>> {
        let rows = sqlx::query(
            "SELECT account_id, local_part, domain FROM addresses WHERE domain = $1 ORDER BY local_part",
        )
        .bind(domain)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    Address {
                        local: r.get(1),
                        domain: r.get(2),
                    },
                )
            })
            .collect())
    }

    /// Removes an account with its addresses, keys and escrows.
    pub async fn remove_account(&self, a: &Address, actor: &Actor) -> Result<Account> {
        let id = self.require_account(a).await?;
        let account = self
            .account_by_id(&id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no account has the address {a}")))?;
        let mut tx = self.begin().await?;
        // Children first, so the result is the same with or without foreign-key cascades.
        for sql in [
            "DELETE FROM escrows WHERE account_id = $1",
            "DELETE FROM private_key_blobs WHERE fingerprint IN (SELECT fingerprint FROM private_keys WHERE account_id = $1)",
            "DELETE FROM private_keys WHERE account_id = $1",
            "DELETE FROM public_keys WHERE account_id = $1",
            "DELETE FROM addresses WHERE account_id = $1",
            "DELETE FROM changes WHERE account_id = $1",
            "DELETE FROM accounts WHERE id = $1",
        ] {
            sqlx::query(sql).bind(&id).execute(&mut *tx).await?;
        }
        audit::append(
            &mut tx,
            actor,
            Some(&account.primary),
            "account.remove",
            Some(&id),
            None,
        )
        .await?;
        self.notify(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(account)
    }

    /// Stores an argon2id hash of the password (static auth mode).
    pub async fn set_password(&self, a: &Address, password: &str, actor: &Actor) -> Result<()> {
        if password.is_empty() {
            return Err(Error::Invalid("the password is empty".into()));
        }
        let id = self.require_account(a).await?;
        let hash = crate::password::hash(password)?;
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
            .bind(&hash)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        audit::append(
            &mut tx,
            actor,
            Some(&a.to_string()),
            "account.passwd",
            Some(&id),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The account holding this address (recipient-delimiter stripping aside) and its
    /// argon2id hash, if one is set, so a caller can verify off the async reactor.
    pub async fn password_hash_of(&self, a: &Address) -> Result<Option<(String, Option<String>)>> {
        let Some(id) = self.account_for_address(a).await? else {
            return Ok(None);
        };
        let hash: Option<String> = sqlx::query("SELECT password_hash FROM accounts WHERE id = $1")
            .bind(&id)
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(Some((id, hash)))
    }

    /// Checks a password against the stored hash; returns the account id on success.
    pub async fn verify_password(&self, a: &Address, password: &str) -> Result<Option<String>> {
        let Some(id) = self.account_for_address(a).await? else {
            // Spend the same time as a real check so timing does not reveal accounts.
            crate::password::burn(password);
            return Ok(None);
        };
        let hash: Option<String> = sqlx::query("SELECT password_hash FROM accounts WHERE id = $1")
            .bind(&id)
            .fetch_one(&self.pool)
            .await?
            .get(0);
        match hash {
            Some(h) if crate::password::verify(&h, password) => Ok(Some(id)),
            Some(_) => Ok(None),
            None => {
                crate::password::burn(password);
                Ok(None)
            }
        }
    }

    // ---- public keys ----------------------------------------------------------------

    /// Imports a public key for the account holding `addr`, creating the account when
    /// `create_account` is set and none exists. The key must pass the policy; it is stored
    /// active. Re-importing a stored key updates it (e.g. a new expiry or user ID).
    pub async fn import_public_key(
        &self,
        addr: &Address,
        bytes: &[u8],
        actor: &Actor,
        create_account: bool,
    ) -> Result<PublicKeyRecord> {
        let existing = self.resolve_recipient(addr).await?;
        let addresses = match &existing {
            Some(id) => self.addresses_of(id).await?,
            None if create_account => vec![addr.clone()],
            None => {
                return Err(Error::NotFound(format!(
                    "no account has the address {addr}"
                )))
            }
        };
        let (key, info) = policy::accept_key(bytes, &addresses, SystemTime::now(), &self.policy)?;
        let armored = stored_text(&key, bytes)?;

        let mut tx = self.begin().await?;
        let account_id = match existing {
            Some(id) => id,
            None => {
                let id = self.create_account_tx(&mut tx, addr, &[]).await?;
                audit::append(
                    &mut tx,
                    actor,
                    Some(&addr.to_string()),
                    "account.add",
                    Some(&id),
                    None,
                )
                .await?;
                id
            }
        };
        let record = self
            .store_public_key_tx(&mut tx, &account_id, &info, &armored, actor)
            .await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Stores a checked certificate for an account inside a transaction: insert, or update
    /// the stored copy when the fingerprint is already the account's. Records history,
    /// the JMAP change, the audit row and the cache notification.
    pub async fn store_public_key_tx(
        &self,
        tx: &mut Tx,
        account_id: &str,
        info: &CertInfo,
        armored: &str,
        actor: &Actor,
    ) -> Result<PublicKeyRecord> {
        let now = now_unix();
        let owner: Option<String> =
            sqlx::query("SELECT account_id FROM public_keys WHERE fingerprint = $1")
                .bind(&info.fingerprint)
                .fetch_optional(&mut **tx)
                .await?
                .map(|r| r.get(0));
        let uids = serde_json::to_string(&info.user_ids).expect("strings serialize");
        let event = match owner {
            Some(o) if o != account_id => {
                return Err(Error::Conflict(format!(
                    "key {} is already registered to another account",
                    info.fingerprint
                )))
            }
            Some(_) => {
                sqlx::query(
                    "UPDATE public_keys SET armored = $1, user_ids = $2, algorithm = $3, version = $4, \
                     created = $5, expires = $6, updated_at = $7 WHERE fingerprint = $8",
                )
                .bind(armored)
                .bind(&uids)
                .bind(&info.algorithm)
                .bind(info.version as i32)
                .bind(info.created)
                .bind(info.expires)
                .bind(now)
                .bind(&info.fingerprint)
                .execute(&mut **tx)
                .await?;
                "updated"
            }
            None => {
                sqlx::query(
                    "INSERT INTO public_keys (fingerprint, account_id, kind, armored, user_ids, algorithm, \
                     version, created, expires, active, imported_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10)",
                )
                .bind(&info.fingerprint)
                .bind(account_id)
                .bind(info.kind.as_str())
                .bind(armored)
                .bind(&uids)
                .bind(&info.algorithm)
                .bind(info.version as i32)
                .bind(info.created)
                .bind(info.expires)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                "imported"
            }
        };
        let primary = self.primary_of_tx(tx, account_id).await?;
        self.key_event_tx(
            tx,
            (&info.fingerprint, account_id, &primary),
            event,
            &format!("key.{event}"),
            actor,
        )
        .await?;
        let op = if event == "imported" {
            ChangeOp::Created
        } else {
            ChangeOp::Updated
        };
        self.record_change(tx, account_id, ObjectType::PublicKey, &info.fingerprint, op)
            .await?;
        self.notify(tx, account_id).await?;
        let row = sqlx::query(&format!("{PK_SELECT} WHERE k.fingerprint = $1"))
            .bind(&info.fingerprint)
            .fetch_one(&mut **tx)
            .await?;
        Ok(pk_from_row(&row))
    }

    pub(crate) async fn primary_of_tx(&self, tx: &mut Tx, account_id: &str) -> Result<String> {
        let r = sqlx::query(
            "SELECT local_part, domain FROM addresses WHERE account_id = $1 AND is_primary = 1",
        )
        .bind(account_id)
        .fetch_one(&mut **tx)
        .await?;
        Ok(format!(
            "{}@{}",
            r.get::<String, _>(0),
            r.get::<String, _>(1)
        ))
    }

    /// Records a key event together with its audit row (whose sequence number orders the
    /// history).
    async fn key_event_tx(
        &self,
        tx: &mut Tx,
        key: (&str, &str, &str),
        event: &str,
        action: &str,
        actor: &Actor,
    ) -> Result<()> {
        let (fpr, account_id, account) = key;
        let seq = audit::append(tx, actor, Some(account), action, Some(fpr), None).await?;
        sqlx::query(
            "INSERT INTO public_key_history (id, fingerprint, account_id, event, at, actor) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(seq)
        .bind(fpr)
        .bind(account_id)
        .bind(event)
        .bind(now_unix())
        .bind(&actor.0)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Public keys, all or those of the account holding `addr`.
    pub async fn list_public_keys(&self, addr: Option<&Address>) -> Result<Vec<PublicKeyRecord>> {
        let rows = match addr {
            Some(a) => {
                let id = self.require_account(a).await?;
                sqlx::query(&format!(
                    "{PK_SELECT} WHERE k.account_id = $1 ORDER BY k.imported_at, k.fingerprint"
                ))
                .bind(id)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "{PK_SELECT} ORDER BY p.domain, p.local_part, k.imported_at, k.fingerprint"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.iter().map(pk_from_row).collect())
    }

    pub async fn public_keys_of(&self, account_id: &str) -> Result<Vec<PublicKeyRecord>> {
        let rows = sqlx::query(&format!(
            "{PK_SELECT} WHERE k.account_id = $1 ORDER BY k.imported_at, k.fingerprint"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(pk_from_row).collect())
    }

    /// The account's public keys together with the PublicKey state, read in one statement
    /// so the two are a consistent snapshot (the JMAP /get path).
    pub async fn public_keys_with_state(
        &self,
        account_id: &str,
    ) -> Result<(i64, Vec<PublicKeyRecord>)> {
        let rows = sqlx::query(
            "SELECT (SELECT MAX(c.modseq) FROM changes c WHERE c.account_id = $1 \
             AND c.object_type = 'PublicKey'), \
             k.fingerprint, p.local_part, p.domain, k.account_id, k.kind, k.active, \
             k.algorithm, k.version, k.user_ids, k.created, k.expires, k.imported_at, \
             k.updated_at, k.armored \
             FROM (SELECT 1 AS one) d \
             LEFT JOIN public_keys k ON k.account_id = $1 \
             LEFT JOIN addresses p ON p.account_id = k.account_id AND p.is_primary = 1 \
             ORDER BY k.imported_at, k.fingerprint",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        let state = rows
            .first()
            .and_then(|r| r.get::<Option<i64>, _>(0))
            .unwrap_or(0);
        let keys = rows
            .iter()
            .filter(|r| r.get::<Option<String>, _>(1).is_some())
            .map(|r| pk_from_row_at(r, 1))
            .collect();
        Ok((state, keys))
    }

    /// The active keys mail to this account is encrypted to.
    pub async fn active_keys_of(&self, account_id: &str) -> Result<Vec<PublicKeyRecord>> {
        let rows = sqlx::query(&format!(
            "{PK_SELECT} WHERE k.account_id = $1 AND k.active = 1 ORDER BY k.fingerprint"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(pk_from_row).collect())
    }

    /// Finds a key by fingerprint (case-insensitive, spaces ignored).
    pub async fn public_key(&self, fpr: &str) -> Result<Option<PublicKeyRecord>> {
        let fpr = normalize_fingerprint(fpr)?;
        let row = sqlx::query(&format!("{PK_SELECT} WHERE k.fingerprint = $1"))
            .bind(&fpr)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(pk_from_row))
    }

    pub async fn require_public_key(&self, fpr: &str) -> Result<PublicKeyRecord> {
        self.public_key(fpr)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no public key has the fingerprint {fpr}")))
    }

    pub async fn key_history(&self, fpr: &str) -> Result<Vec<KeyHistoryEvent>> {
        let fpr = normalize_fingerprint(fpr)?;
        let rows = sqlx::query(
            "SELECT fingerprint, event, at, actor FROM public_key_history WHERE fingerprint = $1 ORDER BY id",
        )
        .bind(&fpr)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| KeyHistoryEvent {
                fingerprint: r.get(0),
                event: r.get(1),
                at: r.get(2),
                actor: r.get(3),
            })
            .collect())
    }

    /// Removes a public key (and the private key and escrow bound to it).
    pub async fn remove_public_key(&self, fpr: &str, actor: &Actor) -> Result<PublicKeyRecord> {
        let key = self.require_public_key(fpr).await?;
        let mut tx = self.begin().await?;
        self.remove_public_key_tx(&mut tx, &key, actor).await?;
        tx.commit().await?;
        Ok(key)
    }

    pub async fn remove_public_key_tx(
        &self,
        tx: &mut Tx,
        key: &PublicKeyRecord,
        actor: &Actor,
    ) -> Result<()> {
        let fpr = &key.fingerprint;
        let private: Vec<String> =
            sqlx::query("SELECT fingerprint FROM private_keys WHERE public_key_fingerprint = $1")
                .bind(fpr)
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
        for p in &private {
            let had_escrow = sqlx::query(
                "SELECT private_key_fingerprint FROM escrows WHERE private_key_fingerprint = $1",
            )
            .bind(p)
            .fetch_optional(&mut **tx)
            .await?
            .is_some();
            if had_escrow {
                self.record_change(
                    tx,
                    &key.account_id,
                    ObjectType::Escrow,
                    p,
                    ChangeOp::Destroyed,
                )
                .await?;
            }
            for sql in [
                "DELETE FROM escrows WHERE private_key_fingerprint = $1",
                "DELETE FROM private_key_blobs WHERE fingerprint = $1",
                "DELETE FROM private_keys WHERE fingerprint = $1",
            ] {
                sqlx::query(sql).bind(p).execute(&mut **tx).await?;
            }
            self.record_change(
                tx,
                &key.account_id,
                ObjectType::PrivateKey,
                p,
                ChangeOp::Destroyed,
            )
            .await?;
        }
        sqlx::query("DELETE FROM public_keys WHERE fingerprint = $1")
            .bind(fpr)
            .execute(&mut **tx)
            .await?;
        self.key_event_tx(
            tx,
            (fpr, &key.account_id, &key.account),
            "removed",
            "key.remove",
            actor,
        )
        .await?;
        self.record_change(
            tx,
            &key.account_id,
            ObjectType::PublicKey,
            fpr,
            ChangeOp::Destroyed,
        )
        .await?;
        self.notify(tx, &key.account_id).await?;
        Ok(())
    }

    /// Turns a key on or off for encryption. Returns the updated record.
    pub async fn set_key_active(
        &self,
        fpr: &str,
        active: bool,
        actor: &Actor,
    ) -> Result<PublicKeyRecord> {
        let key = self.require_public_key(fpr).await?;
        let mut tx = self.begin().await?;
        self.set_key_active_tx(&mut tx, &key, active, actor).await?;
        tx.commit().await?;
        self.require_public_key(fpr).await
    }

    pub async fn set_key_active_tx(
        &self,
        tx: &mut Tx,
        key: &PublicKeyRecord,
        active: bool,
        actor: &Actor,
    ) -> Result<()> {
        if active {
            // A key that has expired or been revoked since import must not come back.
            let addresses = self.addresses_of(&key.account_id).await?;
            crate::recipient::recheck(key, &addresses, SystemTime::now(), &self.policy)?;
        }
        if key.active == active {
            return Ok(());
        }
        sqlx::query("UPDATE public_keys SET active = $1, updated_at = $2 WHERE fingerprint = $3")
            .bind(i64::from(active))
            .bind(now_unix())
            .bind(&key.fingerprint)
            .execute(&mut **tx)
            .await?;
        let (event, action) = if active {
            ("activated", "key.activate")
        } else {
            ("deactivated", "key.deactivate")
        };
        self.key_event_tx(
            tx,
            (&key.fingerprint, &key.account_id, &key.account),
            event,
            action,
            actor,
        )
        .await?;
        self.record_change(
            tx,
            &key.account_id,
            ObjectType::PublicKey,
            &key.fingerprint,
            ChangeOp::Updated,
        )
        .await?;
        self.notify(tx, &key.account_id).await?;
        Ok(())
    }

    // ---- change tracking ------------------------------------------------------------

    /// Records one object change under the account's next modseq.
    pub async fn record_change(
        &self,
        tx: &mut Tx,
        account_id: &str,
        ty: ObjectType,
        object_id: &str,
        op: ChangeOp,
    ) -> Result<i64> {
        let modseq: i64 =
            sqlx::query("UPDATE accounts SET modseq = modseq + 1 WHERE id = $1 RETURNING modseq")
                .bind(account_id)
                .fetch_one(&mut **tx)
                .await?
                .get(0);
        sqlx::query(
            "INSERT INTO changes (account_id, modseq, object_type, object_id, op) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(account_id)
        .bind(modseq)
        .bind(ty.as_str())
        .bind(object_id)
        .bind(op.as_str())
        .execute(&mut **tx)
        .await?;
        Ok(modseq)
    }

    /// The current state of one object type for an account: the modseq of its latest
    /// change, 0 when it never changed.
    pub async fn state(&self, account_id: &str, ty: ObjectType) -> Result<i64> {
        let row = sqlx::query(
            "SELECT MAX(modseq) FROM changes WHERE account_id = $1 AND object_type = $2",
        )
        .bind(account_id)
        .bind(ty.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get::<Option<i64>, _>(0).unwrap_or(0))
    }

    /// Changes of one type after `since`, oldest first, at most `limit` rows.
    pub async fn changes_since(
        &self,
        account_id: &str,
        ty: ObjectType,
        since: i64,
        limit: i64,
    ) -> Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT modseq, object_id, op FROM changes WHERE account_id = $1 AND object_type = $2 \
             AND modseq > $3 ORDER BY modseq LIMIT $4",
        )
        .bind(account_id)
        .bind(ty.as_str())
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Change {
                modseq: r.get(0),
                object_id: r.get(1),
                op: r.get(2),
            })
            .collect())
    }

    /// On PostgreSQL, tells every listening milter node to drop cached lookups for the
    /// account (delivered at commit). SQLite readers rely on their cache TTL.
    pub async fn notify(&self, tx: &mut Tx, account_id: &str) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(account_id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    // ---- audit ----------------------------------------------------------------------

    /// Appends an audit row in its own transaction (for events with no other write, such as
    /// an export).
    pub async fn audit(
        &self,
        actor: &Actor,
        account: Option<&str>,
        action: &str,
        object: Option<&str>,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        audit::append(&mut tx, actor, account, action, object, reason).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn audit_rows(&self, account: Option<&str>) -> Result<Vec<audit::AuditRow>> {
        audit::rows(&self.pool, account).await
    }

    pub async fn audit_verify(&self) -> Result<audit::Verification> {
        audit::verify(&self.pool).await
    }
}

const PK_SELECT: &str = "SELECT k.fingerprint, p.local_part, p.domain, k.account_id, k.kind, k.active, \
     k.algorithm, k.version, k.user_ids, k.created, k.expires, k.imported_at, k.updated_at, k.armored \
     FROM public_keys k JOIN addresses p ON p.account_id = k.account_id AND p.is_primary = 1";

fn pk_from_row(r: &AnyRow) -> PublicKeyRecord {
    pk_from_row_at(r, 0)
}

/// A public key whose columns (in `PK_SELECT` order) start at column `o`.
fn pk_from_row_at(r: &AnyRow, o: usize) -> PublicKeyRecord {
    let uids: String = r.get(o + 8);
    PublicKeyRecord {
        fingerprint: r.get(o),
        account: format!(
            "{}@{}",
            r.get::<String, _>(o + 1),
            r.get::<String, _>(o + 2)
        ),
        account_id: r.get(o + 3),
        kind: r.get(o + 4),
        active: r.get::<i64, _>(o + 5) != 0,
        algorithm: r.get(o + 6),
        version: r.get(o + 7),
        user_ids: serde_json::from_str(&uids).unwrap_or_default(),
        created: r.get(o + 9),
        expires: r.get(o + 10),
        imported_at: r.get(o + 11),
        updated_at: r.get(o + 12),
        armored: r.get(o + 13),
    }
}

/// Upper-case hex without spaces; refuses anything that is not a hex fingerprint.
pub fn normalize_fingerprint(fpr: &str) -> Result<String> {
    let s: String = fpr
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_uppercase();
    let s = s.strip_prefix("0X").unwrap_or(&s).to_string();
    if !(s.len() == 40 || s.len() == 64) || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Invalid(format!(
            "{:?} is not a key fingerprint (40 or 64 hex digits)",
            fpr.chars().take(80).collect::<String>()
        )));
    }
    Ok(s)
}

/// The key as text to store: OpenPGP input armored (armored input as uploaded), X.509
/// certificates as PEM.
pub(crate) fn stored_text(key: &policy::AcceptedKey, bytes: &[u8]) -> Result<String> {
    if let policy::AcceptedKey::X509(cert) = key {
        return Ok(crate::x509::to_pem(cert));
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        if s.trim_start().starts_with("-----BEGIN PGP") {
            return Ok(s.to_string());
        }
    }
    use sequoia_openpgp::parse::Parse;
    use sequoia_openpgp::serialize::SerializeInto;
    let cert = sequoia_openpgp::Cert::from_bytes(bytes)
        .map_err(|e| Error::Invalid(format!("cannot re-read the key: {e}")))?;
    let armored = cert
        .armored()
        .to_vec()
        .map_err(|e| Error::Invalid(format!("cannot armor the key: {e}")))?;
    Ok(String::from_utf8(armored).expect("armor is ASCII"))
}

/// Accepts `sqlite://PATH`, `sqlite:PATH`, `postgres://…` and `postgresql://…`. Creates the
/// SQLite file's directory and asks for the file to be created when missing.
fn normalize_url(url: &str) -> Result<(Backend, String)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_string()));
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(Error::BadUrl(url.to_string()));
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(Error::BadUrl(url.to_string()));
    }
    if path != ":memory:" {
        if let Some(dir) = Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
        }
    }
    let query = match query {
        Some(q) if q.contains("mode=") => q.to_string(),
        Some(q) => format!("{q}&mode=rwc"),
        None => "mode=rwc".to_string(),
    };
    // Validate through sqlx's own parser so a bad option is reported here.
    let normalized = format!("sqlite://{path}?{query}");
    sqlx::sqlite::SqliteConnectOptions::from_str(&normalized)
        .map_err(|_| Error::BadUrl(url.to_string()))?;
    Ok((Backend::Sqlite, normalized))
}

/// True when a query failed because its table does not exist (PostgreSQL SQLSTATE 42P01,
/// SQLite "no such table").
fn is_missing_table(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        d.code().as_deref() == Some("42P01") || d.message().starts_with("no such table")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_fingerprints() {
        assert_eq!(
            normalize_fingerprint("0x1234 5678 9abc def0 1234 5678 9abc def0 1234 5678").unwrap(),
            "123456789ABCDEF0123456789ABCDEF012345678"
        );
        assert!(normalize_fingerprint("xyz").is_err());
    }

    #[test]
    fn normalizes_urls() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/ks.db");
        let (b, u) = normalize_url(&format!("sqlite://{}", p.display())).unwrap();
        assert_eq!(b, Backend::Sqlite);
        assert!(u.ends_with("ks.db?mode=rwc"));
        assert!(p.parent().unwrap().is_dir());
        assert!(normalize_url("mysql://x").is_err());
        assert_eq!(
            normalize_url("postgres://u@h/db").unwrap().0,
            Backend::Postgres
        );
    }
}
