//! The append-only, hash-chained audit log.
//!
//! Each row's hash is SHA-256 over the previous row's hash and the row's own fields, so
//! changing or deleting any row breaks the chain; `audit_head` keeps the latest sequence
//! number and hash, so cutting rows off the end is detected too.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};

use crate::store::{Actor, Result, Tx};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub account: Option<String>,
    pub action: String,
    pub object: Option<String>,
    pub reason: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The outcome of walking the chain.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Verification {
    pub rows: i64,
    /// One line per break found; empty when the chain is intact.
    pub problems: Vec<String>,
}

/// The text fields of a row that its hash covers (besides chain position and time).
struct RowText<'a> {
    actor: &'a str,
    account: Option<&'a str>,
    action: &'a str,
    object: Option<&'a str>,
    reason: Option<&'a str>,
}

fn row_hash(prev_hash: &str, seq: i64, at: i64, t: &RowText) -> String {
    // A JSON array is an unambiguous encoding of the fields (no separator games).
    let canonical =
        serde_json::json!([prev_hash, seq, at, t.actor, t.account, t.action, t.object, t.reason]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Appends a row inside the caller's transaction, so the row commits with the change.
/// Returns the row's sequence number.
pub(crate) async fn append(
    tx: &mut Tx,
    actor: &Actor,
    account: Option<&str>,
    action: &str,
    object: Option<&str>,
    reason: Option<&str>,
) -> Result<i64> {
    // Taking the head row's lock first serialises concurrent writers.
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut **tx)
        .await?;
    let seq: i64 = head.get(0);
    let prev: String = head.get(1);
    let at = crate::now_unix();
    let text = RowText {
        actor: &actor.0,
        account,
        action,
        object,
        reason,
    };
    let hash = row_hash(&prev, seq, at, &text);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, account, action, object, reason, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(seq)
    .bind(at)
    .bind(&actor.0)
    .bind(account)
    .bind(action)
    .bind(object)
    .bind(reason)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
    Ok(seq)
}

pub(crate) async fn rows(pool: &AnyPool, account: Option<&str>) -> Result<Vec<AuditRow>> {
    let sql =
        "SELECT seq, at, actor, account, action, object, reason, prev_hash, hash FROM audit_log";
    let rows = match account {
        Some(a) => {
            sqlx::query(&format!("{sql} WHERE account = $1 ORDER BY seq"))
                .bind(a)
                .fetch_all(pool)
                .await?
        }
        None => {
            sqlx::query(&format!("{sql} ORDER BY seq"))
                .fetch_all(pool)
                .await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| AuditRow {
            seq: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            account: r.get(3),
            action: r.get(4),
            object: r.get(5),
            reason: r.get(6),
            prev_hash: r.get(7),
            hash: r.get(8),
        })
        .collect())
}

pub(crate) async fn verify(pool: &AnyPool) -> Result<Verification> {
    let all = rows(pool, None).await?;
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(pool)
        .await?;
    let head_seq: i64 = head.get(0);
    let head_hash: String = head.get(1);

    let mut problems = Vec::new();
    let mut expected_prev = "0".repeat(64);
    let mut expected_seq = 1;
    for r in &all {
        if r.seq != expected_seq {
            problems.push(format!(
                "row {}: expected sequence number {} (rows {}..{} are missing)",
                r.seq,
                expected_seq,
                expected_seq,
                r.seq - 1
            ));
        }
        if r.prev_hash != expected_prev {
            problems.push(format!(
                "row {}: its previous-hash does not match the row before it",
                r.seq
            ));
        }
        let text = RowText {
            actor: &r.actor,
            account: r.account.as_deref(),
            action: &r.action,
            object: r.object.as_deref(),
            reason: r.reason.as_deref(),
        };
        let h = row_hash(&r.prev_hash, r.seq, r.at, &text);
        if h != r.hash {
            problems.push(format!(
                "row {}: its content does not match its hash (modified)",
                r.seq
            ));
        }
        expected_prev = r.hash.clone();
        expected_seq = r.seq + 1;
    }
    let last_seq = all.last().map(|r| r.seq).unwrap_or(0);
    if head_seq != last_seq || head_hash != expected_prev {
        problems.push(format!(
            "the log ends at row {last_seq} but its head records row {head_seq}: rows were removed from the end or the head was altered"
        ));
    }
    Ok(Verification {
        rows: all.len() as i64,
        problems,
    })
}
