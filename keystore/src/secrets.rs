//! Protected private keys, escrow blobs and officer keys.
//!
//! Uploads are verified by [`crate::protection`] before they reach these functions; each
//! write here runs in one transaction together with its JMAP change record and its audit
//! row, so no write leaves half a change.

use std::time::SystemTime;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::audit;
use crate::now_unix;
use crate::policy;
use crate::protection::{GeneratedKey, Protection, VerifiedEscrow, VerifiedPrivateKey};
use crate::store::{
    normalize_fingerprint, Actor, ChangeOp, Error, Keystore, ObjectType, PublicKeyRecord, Result,
    Tx,
};

/// Metadata of a stored private key (the blob is fetched separately).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PrivateKeyRecord {
    /// Upper-case hex fingerprint; equal to the public key's.
    pub fingerprint: String,
    pub account_id: String,
    pub public_key_fingerprint: String,
    pub kind: String,
    pub label: Option<String>,
    pub protection: Protection,
    /// Size of the stored blob in bytes.
    pub size: i64,
    pub created: i64,
    pub updated_at: i64,
}

/// An escrow: the password of a private key, encrypted to an officer key.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EscrowRecord {
    /// The private key's fingerprint (also the escrow's id).
    pub private_key_fingerprint: String,
    pub account_id: String,
    pub officer_fingerprint: String,
    pub created: i64,
    pub size: i64,
}

/// A security officer's public key.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OfficerKeyRecord {
    pub fingerprint: String,
    pub armored: String,
    pub user_ids: Vec<String>,
    pub algorithm: String,
    pub active: bool,
    pub added_at: i64,
    pub retired_at: Option<i64>,
}

const PRIV_SELECT: &str =
    "SELECT p.fingerprint, p.account_id, p.public_key_fingerprint, p.kind, p.label, \
     p.protection, p.size, p.created, p.updated_at FROM private_keys p";

fn priv_from_row(r: &AnyRow) -> PrivateKeyRecord {
    let protection: String = r.get(5);
    PrivateKeyRecord {
        fingerprint: r.get(0),
        account_id: r.get(1),
        public_key_fingerprint: r.get(2),
        kind: r.get(3),
        label: r.get(4),
        protection: serde_json::from_str(&protection).unwrap_or(Protection {
            kind: "unknown".into(),
            s2k: String::new(),
            cipher: String::new(),
            count: None,
        }),
        size: r.get(6),
        created: r.get(7),
        updated_at: r.get(8),
    }
}

const ESCROW_SELECT: &str = "SELECT private_key_fingerprint, account_id, officer_fingerprint, created, armored FROM escrows";

fn escrow_from_row(r: &AnyRow) -> EscrowRecord {
    EscrowRecord {
        private_key_fingerprint: r.get(0),
        account_id: r.get(1),
        officer_fingerprint: r.get(2),
        created: r.get(3),
        size: r.get::<String, _>(4).len() as i64,
    }
}

const OFFICER_SELECT: &str = "SELECT fingerprint, armored, user_ids, algorithm, active, added_at, retired_at FROM officer_keys";

fn officer_from_row(r: &AnyRow) -> OfficerKeyRecord {
    let uids: String = r.get(2);
    OfficerKeyRecord {
        fingerprint: r.get(0),
        armored: r.get(1),
        user_ids: serde_json::from_str(&uids).unwrap_or_default(),
        algorithm: r.get(3),
        active: r.get::<i64, _>(4) != 0,
        added_at: r.get(5),
        retired_at: r.get(6),
    }
}

impl Keystore {
    // ---- public keys, account-scoped ------------------------------------------------

    /// Checks uploaded key bytes against the policy for this account and stores the key
    /// (active), in one transaction with its history, change and audit rows.
    pub async fn add_public_key(
        &self,
        account_id: &str,
        bytes: &[u8],
        actor: &Actor,
    ) -> Result<PublicKeyRecord> {
        let addresses = self.addresses_of(account_id).await?;
        if addresses.is_empty() {
            return Err(Error::NotFound(format!("no account {account_id}")));
        }
        let (key, info) =
            policy::accept_key(bytes, &addresses, SystemTime::now(), self.policy_config())?;
        let armored = crate::store::stored_text(&key, bytes)?;
        let mut tx = self.begin().await?;
        let rec = self
            .store_public_key_tx(&mut tx, account_id, &info, &armored, actor)
            .await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// A public key of this account, by fingerprint; `None` for another account's key.
    pub async fn public_key_of(
        &self,
        account_id: &str,
        fpr: &str,
    ) -> Result<Option<PublicKeyRecord>> {
        let Ok(fpr) = normalize_fingerprint(fpr) else {
            return Ok(None);
        };
        Ok(self
            .public_key(&fpr)
            .await?
            .filter(|k| k.account_id == account_id))
    }

    // ---- private keys ---------------------------------------------------------------

    pub async fn private_keys_of(&self, account_id: &str) -> Result<Vec<PrivateKeyRecord>> {
        let rows = sqlx::query(&format!(
            "{PRIV_SELECT} WHERE p.account_id = $1 ORDER BY p.created, p.fingerprint"
        ))
        .bind(account_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(priv_from_row).collect())
    }

    pub async fn private_key(
        &self,
        account_id: &str,
        fpr: &str,
    ) -> Result<Option<PrivateKeyRecord>> {
        let Ok(fpr) = normalize_fingerprint(fpr) else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "{PRIV_SELECT} WHERE p.account_id = $1 AND p.fingerprint = $2"
        ))
        .bind(account_id)
        .bind(&fpr)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(priv_from_row))
    }

    /// The stored (protected) private key blob, as uploaded.
    pub async fn private_key_armored(&self, account_id: &str, fpr: &str) -> Result<Option<String>> {
        let Ok(fpr) = normalize_fingerprint(fpr) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT b.armored FROM private_key_blobs b JOIN private_keys p ON p.fingerprint = b.fingerprint \
             WHERE p.account_id = $1 AND b.fingerprint = $2",
        )
        .bind(account_id)
        .bind(&fpr)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Stores a verified private key for the account. Fails when the public key is not
    /// the account's or a private key is already stored for it.
    pub async fn create_private_key(
        &self,
        account_id: &str,
        key: &VerifiedPrivateKey,
        label: Option<&str>,
        actor: &Actor,
    ) -> Result<PrivateKeyRecord> {
        let mut tx = self.begin().await?;
        self.create_private_key_tx(&mut tx, account_id, key, label, actor)
            .await?;
        tx.commit().await?;
        self.private_key(account_id, &key.fingerprint)
            .await?
            .ok_or_else(|| Error::NotFound("private key vanished".into()))
    }

    pub(crate) async fn create_private_key_tx(
        &self,
        tx: &mut Tx,
        account_id: &str,
        key: &VerifiedPrivateKey,
        label: Option<&str>,
        actor: &Actor,
    ) -> Result<()> {
        let owner: Option<String> =
            sqlx::query("SELECT account_id FROM public_keys WHERE fingerprint = $1")
                .bind(&key.fingerprint)
                .fetch_optional(&mut **tx)
                .await?
                .map(|r| r.get(0));
        if owner.as_deref() != Some(account_id) {
            return Err(Error::NotFound(format!(
                "no public key {} in this account",
                key.fingerprint
            )));
        }
        let exists = sqlx::query("SELECT fingerprint FROM private_keys WHERE fingerprint = $1")
            .bind(&key.fingerprint)
            .fetch_optional(&mut **tx)
            .await?
            .is_some();
        if exists {
            return Err(Error::Conflict(format!(
                "a private key for {} is already stored; destroy it first",
                key.fingerprint
            )));
        }
        let now = now_unix();
        let protection = serde_json::to_string(&key.protection).expect("serializable");
        sqlx::query(
            "INSERT INTO private_keys (fingerprint, account_id, public_key_fingerprint, kind, label, protection, size, created, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(&key.fingerprint)
        .bind(account_id)
        .bind(&key.fingerprint)
        .bind(&key.kind)
        .bind(label)
        .bind(&protection)
        .bind(key.armored.len() as i64)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        sqlx::query("INSERT INTO private_key_blobs (fingerprint, armored) VALUES ($1, $2)")
            .bind(&key.fingerprint)
            .bind(&key.armored)
            .execute(&mut **tx)
            .await?;
        let primary = self.primary_of_tx(tx, account_id).await?;
        audit::append(
            tx,
            actor,
            Some(&primary),
            "private_key.create",
            Some(&key.fingerprint),
            None,
        )
        .await?;
        self.record_change(
            tx,
            account_id,
            ObjectType::PrivateKey,
            &key.fingerprint,
            ChangeOp::Created,
        )
        .await?;
        Ok(())
    }

    /// Stores a verified private key together with its escrow in one transaction (the
    /// escrow-required policy: neither is stored without the other).
    pub async fn create_private_key_with_escrow(
        &self,
        account_id: &str,
        key: &VerifiedPrivateKey,
        label: Option<&str>,
        escrow: &VerifiedEscrow,
        actor: &Actor,
    ) -> Result<PrivateKeyRecord> {
        let mut tx = self.begin().await?;
        self.create_private_key_tx(&mut tx, account_id, key, label, actor)
            .await?;
        self.put_escrow_tx(&mut tx, account_id, &key.fingerprint, escrow, actor)
            .await?;
        tx.commit().await?;
        self.private_key(account_id, &key.fingerprint)
            .await?
            .ok_or_else(|| Error::NotFound("private key vanished".into()))
    }

    /// Changes a private key's label.
    pub async fn set_private_key_label(
        &self,
        account_id: &str,
        fpr: &str,
        label: Option<&str>,
        actor: &Actor,
    ) -> Result<PrivateKeyRecord> {
        let rec = self
            .private_key(account_id, fpr)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no private key {fpr}")))?;
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE private_keys SET label = $1, updated_at = $2 WHERE fingerprint = $3")
            .bind(label)
            .bind(now_unix())
            .bind(&rec.fingerprint)
            .execute(&mut *tx)
            .await?;
        let primary = self.primary_of_tx(&mut tx, account_id).await?;
        audit::append(
            &mut tx,
            actor,
            Some(&primary),
            "private_key.update",
            Some(&rec.fingerprint),
            None,
        )
        .await?;
        self.record_change(
            &mut tx,
            account_id,
            ObjectType::PrivateKey,
            &rec.fingerprint,
            ChangeOp::Updated,
        )
        .await?;
        tx.commit().await?;
        self.private_key(account_id, fpr)
            .await?
            .ok_or_else(|| Error::NotFound("private key vanished".into()))
    }

    /// Removes a private key and its escrow.
    pub async fn destroy_private_key(
        &self,
        account_id: &str,
        fpr: &str,
        actor: &Actor,
    ) -> Result<()> {
        let rec = self
            .private_key(account_id, fpr)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no private key {fpr}")))?;
        let fpr = rec.fingerprint;
        let mut tx = self.begin().await?;
        let primary = self.primary_of_tx(&mut tx, account_id).await?;
        let had_escrow = sqlx::query("DELETE FROM escrows WHERE private_key_fingerprint = $1")
            .bind(&fpr)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if had_escrow {
            audit::append(
                &mut tx,
                actor,
                Some(&primary),
                "escrow.destroy",
                Some(&fpr),
                None,
            )
            .await?;
            self.record_change(
                &mut tx,
                account_id,
                ObjectType::Escrow,
                &fpr,
                ChangeOp::Destroyed,
            )
            .await?;
        }
        for sql in [
            "DELETE FROM private_key_blobs WHERE fingerprint = $1",
            "DELETE FROM private_keys WHERE fingerprint = $1",
        ] {
            sqlx::query(sql).bind(&fpr).execute(&mut *tx).await?;
        }
        audit::append(
            &mut tx,
            actor,
            Some(&primary),
            "private_key.destroy",
            Some(&fpr),
            None,
        )
        .await?;
        self.record_change(
            &mut tx,
            account_id,
            ObjectType::PrivateKey,
            &fpr,
            ChangeOp::Destroyed,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a re-protected private key after an officer recovery, replacing the stored one
    /// (or storing it when none is). The escrow of the old key holds the old password, so it
    /// is removed. Returns the record and whether an escrow was removed. Audited as
    /// `private_key.reinstate` with `reason`.
    pub async fn reinstate_private_key(
        &self,
        account_id: &str,
        key: &VerifiedPrivateKey,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<(PrivateKeyRecord, bool)> {
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT account_id FROM private_keys WHERE fingerprint = $1")
            .bind(&key.fingerprint)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get::<String, _>(0));
        let primary = self.primary_of_tx(&mut tx, account_id).await?;
        let escrow_removed = match exists.as_deref() {
            None => {
                self.create_private_key_tx(&mut tx, account_id, key, None, actor)
                    .await?;
                false
            }
            Some(owner) if owner != account_id => {
                return Err(Error::NotFound(format!(
                    "no private key {} in this account",
                    key.fingerprint
                )));
            }
            Some(_) => {
                let removed = sqlx::query("DELETE FROM escrows WHERE private_key_fingerprint = $1")
                    .bind(&key.fingerprint)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                if removed {
                    audit::append(
                        &mut tx,
                        actor,
                        Some(&primary),
                        "escrow.destroy",
                        Some(&key.fingerprint),
                        Some("replaced key: the escrow held the old password"),
                    )
                    .await?;
                    self.record_change(
                        &mut tx,
                        account_id,
                        ObjectType::Escrow,
                        &key.fingerprint,
                        ChangeOp::Destroyed,
                    )
                    .await?;
                }
                let protection = serde_json::to_string(&key.protection).expect("serializable");
                sqlx::query(
                    "UPDATE private_keys SET protection = $1, size = $2, updated_at = $3 WHERE fingerprint = $4",
                )
                .bind(&protection)
                .bind(key.armored.len() as i64)
                .bind(now_unix())
                .bind(&key.fingerprint)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE private_key_blobs SET armored = $1 WHERE fingerprint = $2")
                    .bind(&key.armored)
                    .bind(&key.fingerprint)
                    .execute(&mut *tx)
                    .await?;
                self.record_change(
                    &mut tx,
                    account_id,
                    ObjectType::PrivateKey,
                    &key.fingerprint,
                    ChangeOp::Updated,
                )
                .await?;
                removed
            }
        };
        audit::append(
            &mut tx,
            actor,
            Some(&primary),
            "private_key.reinstate",
            Some(&key.fingerprint),
            reason,
        )
        .await?;
        tx.commit().await?;
        let rec = self
            .private_key(account_id, &key.fingerprint)
            .await?
            .ok_or_else(|| Error::NotFound("private key vanished".into()))?;
        Ok((rec, escrow_removed))
    }

    // ---- escrows --------------------------------------------------------------------

    pub async fn escrows_of(&self, account_id: &str) -> Result<Vec<EscrowRecord>> {
        let rows = sqlx::query(&format!(
            "{ESCROW_SELECT} WHERE account_id = $1 ORDER BY created, private_key_fingerprint"
        ))
        .bind(account_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(escrow_from_row).collect())
    }

    pub async fn escrow(&self, account_id: &str, fpr: &str) -> Result<Option<EscrowRecord>> {
        let Ok(fpr) = normalize_fingerprint(fpr) else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "{ESCROW_SELECT} WHERE account_id = $1 AND private_key_fingerprint = $2"
        ))
        .bind(account_id)
        .bind(&fpr)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(escrow_from_row))
    }

    pub async fn escrow_armored(&self, account_id: &str, fpr: &str) -> Result<Option<String>> {
        let Ok(fpr) = normalize_fingerprint(fpr) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT armored FROM escrows WHERE account_id = $1 AND private_key_fingerprint = $2",
        )
        .bind(account_id)
        .bind(&fpr)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Stores (or replaces) the escrow of one of the account's private keys. Returns the
    /// record and whether it was created (rather than replaced).
    pub async fn put_escrow(
        &self,
        account_id: &str,
        private_fpr: &str,
        escrow: &VerifiedEscrow,
        actor: &Actor,
    ) -> Result<(EscrowRecord, bool)> {
        let fpr = normalize_fingerprint(private_fpr)?;
        let mut tx = self.begin().await?;
        let created = self
            .put_escrow_tx(&mut tx, account_id, &fpr, escrow, actor)
            .await?;
        tx.commit().await?;
        let rec = self
            .escrow(account_id, &fpr)
            .await?
            .ok_or_else(|| Error::NotFound("escrow vanished".into()))?;
        Ok((rec, created))
    }

    pub(crate) async fn put_escrow_tx(
        &self,
        tx: &mut Tx,
        account_id: &str,
        fpr: &str,
        escrow: &VerifiedEscrow,
        actor: &Actor,
    ) -> Result<bool> {
        let owner: Option<String> =
            sqlx::query("SELECT account_id FROM private_keys WHERE fingerprint = $1")
                .bind(fpr)
                .fetch_optional(&mut **tx)
                .await?
                .map(|r| r.get(0));
        if owner.as_deref() != Some(account_id) {
            return Err(Error::NotFound(format!(
                "no private key {fpr} in this account"
            )));
        }
        let active: Option<i64> =
            sqlx::query("SELECT active FROM officer_keys WHERE fingerprint = $1")
                .bind(&escrow.officer_fingerprint)
                .fetch_optional(&mut **tx)
                .await?
                .map(|r| r.get(0));
        if active != Some(1) {
            return Err(Error::Invalid(format!(
                "officer key {} is not active",
                escrow.officer_fingerprint
            )));
        }
        let replaced = sqlx::query("DELETE FROM escrows WHERE private_key_fingerprint = $1")
            .bind(fpr)
            .execute(&mut **tx)
            .await?
            .rows_affected()
            > 0;
        sqlx::query(
            "INSERT INTO escrows (private_key_fingerprint, account_id, officer_fingerprint, armored, created) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(fpr)
        .bind(account_id)
        .bind(&escrow.officer_fingerprint)
        .bind(&escrow.armored)
        .bind(now_unix())
        .execute(&mut **tx)
        .await?;
        let primary = self.primary_of_tx(tx, account_id).await?;
        let (action, op) = if replaced {
            ("escrow.update", ChangeOp::Updated)
        } else {
            ("escrow.create", ChangeOp::Created)
        };
        audit::append(
            tx,
            actor,
            Some(&primary),
            action,
            Some(fpr),
            Some(&format!("officer {}", escrow.officer_fingerprint)),
        )
        .await?;
        self.record_change(tx, account_id, ObjectType::Escrow, fpr, op)
            .await?;
        Ok(!replaced)
    }

    pub async fn destroy_escrow(&self, account_id: &str, fpr: &str, actor: &Actor) -> Result<()> {
        let rec = self
            .escrow(account_id, fpr)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no escrow {fpr}")))?;
        let fpr = rec.private_key_fingerprint;
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM escrows WHERE private_key_fingerprint = $1")
            .bind(&fpr)
            .execute(&mut *tx)
            .await?;
        let primary = self.primary_of_tx(&mut tx, account_id).await?;
        audit::append(
            &mut tx,
            actor,
            Some(&primary),
            "escrow.destroy",
            Some(&fpr),
            None,
        )
        .await?;
        self.record_change(
            &mut tx,
            account_id,
            ObjectType::Escrow,
            &fpr,
            ChangeOp::Destroyed,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a server-generated key (recovery model 5): public key, protected private key
    /// and escrow, in one transaction. The password is not stored.
    pub async fn store_generated_key(
        &self,
        account_id: &str,
        generated: &GeneratedKey,
        label: Option<&str>,
        actor: &Actor,
    ) -> Result<PublicKeyRecord> {
        let addresses = self.addresses_of(account_id).await?;
        let info = policy::check_cert(
            &generated.cert.clone().strip_secret_key_material(),
            &addresses,
            SystemTime::now(),
            self.policy_config(),
        )?;
        let mut tx = self.begin().await?;
        let rec = self
            .store_public_key_tx(&mut tx, account_id, &info, &generated.public_armored, actor)
            .await?;
        self.create_private_key_tx(&mut tx, account_id, &generated.private, label, actor)
            .await?;
        self.put_escrow_tx(
            &mut tx,
            account_id,
            &generated.private.fingerprint,
            &generated.escrow,
            actor,
        )
        .await?;
        tx.commit().await?;
        Ok(rec)
    }

    // ---- officer keys ---------------------------------------------------------------

    /// Installs an officer public key (active). It must be a valid public certificate with
    /// an encryption-capable subkey; the user-ID rule does not apply.
    pub async fn add_officer_key(&self, bytes: &[u8], actor: &Actor) -> Result<OfficerKeyRecord> {
        let cert = policy::parse_public_cert(bytes)?;
        let relaxed = policy::PolicyConfig {
            require_uid_match: false,
            ..self.policy_config().clone()
        };
        let info = policy::check_cert(&cert, &[], SystemTime::now(), &relaxed)?;
        let armored =
            crate::store::stored_text(&policy::AcceptedKey::OpenPgp(Box::new(cert)), bytes)?;
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT fingerprint FROM officer_keys WHERE fingerprint = $1")
            .bind(&info.fingerprint)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if exists {
            return Err(Error::Conflict(format!(
                "officer key {} is already installed",
                info.fingerprint
            )));
        }
        sqlx::query(
            "INSERT INTO officer_keys (fingerprint, armored, user_ids, algorithm, active, added_at) \
             VALUES ($1, $2, $3, $4, 1, $5)",
        )
        .bind(&info.fingerprint)
        .bind(&armored)
        .bind(serde_json::to_string(&info.user_ids).expect("strings serialize"))
        .bind(&info.algorithm)
        .bind(now_unix())
        .execute(&mut *tx)
        .await?;
        audit::append(
            &mut tx,
            actor,
            None,
            "officer.add",
            Some(&info.fingerprint),
            None,
        )
        .await?;
        tx.commit().await?;
        self.officer_key(&info.fingerprint)
            .await?
            .ok_or_else(|| Error::NotFound("officer key vanished".into()))
    }

    pub async fn officer_key(&self, fpr: &str) -> Result<Option<OfficerKeyRecord>> {
        let fpr = normalize_fingerprint(fpr)?;
        let row = sqlx::query(&format!("{OFFICER_SELECT} WHERE fingerprint = $1"))
            .bind(&fpr)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(officer_from_row))
    }

    pub async fn list_officer_keys(&self) -> Result<Vec<OfficerKeyRecord>> {
        let rows = sqlx::query(&format!("{OFFICER_SELECT} ORDER BY added_at, fingerprint"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(officer_from_row).collect())
    }

    pub async fn active_officer_keys(&self) -> Result<Vec<OfficerKeyRecord>> {
        Ok(self
            .list_officer_keys()
            .await?
            .into_iter()
            .filter(|k| k.active)
            .collect())
    }

    /// Retires (or re-activates) an officer key. Escrows to a retired key stay stored.
    pub async fn set_officer_key_active(
        &self,
        fpr: &str,
        active: bool,
        actor: &Actor,
    ) -> Result<OfficerKeyRecord> {
        let rec = self
            .officer_key(fpr)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no officer key {fpr}")))?;
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE officer_keys SET active = $1, retired_at = $2 WHERE fingerprint = $3")
            .bind(i64::from(active))
            .bind(if active { None } else { Some(now_unix()) })
            .bind(&rec.fingerprint)
            .execute(&mut *tx)
            .await?;
        let action = if active {
            "officer.activate"
        } else {
            "officer.retire"
        };
        audit::append(&mut tx, actor, None, action, Some(&rec.fingerprint), None).await?;
        tx.commit().await?;
        self.officer_key(&rec.fingerprint)
            .await?
            .ok_or_else(|| Error::NotFound("officer key vanished".into()))
    }
}
