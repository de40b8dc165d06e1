//! Per-account key settings (JMAP `KeySettings`), stored as JSON in `accounts.settings`.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::audit;
use crate::store::{Actor, ChangeOp, Error, Keystore, ObjectType, Result, Tx};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AccountSettings {
    /// Encrypt incoming mail. `None` means the default: on whenever a key is active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypt_incoming: Option<bool>,
    /// Replace the outer Subject with `[...]`. `None` follows `[milter] protect_subject`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protect_subject: Option<bool>,
    /// Publish active keys through WKD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_wkd: Option<bool>,
    /// "openpgp" or "smime" for an account holding both kinds of key. `None`: the kind of
    /// the most recently activated key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<crate::recipient::KeyFormat>,
}

impl Keystore {
    pub async fn account_settings(&self, account_id: &str) -> Result<AccountSettings> {
        let row = sqlx::query("SELECT settings FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::NotFound(format!("no account with id {account_id}")))?;
        let text: String = row.get(0);
        // Unknown or malformed settings fall back to defaults rather than blocking mail.
        Ok(serde_json::from_str(&text).unwrap_or_default())
    }

    /// Replaces an account's settings inside a transaction, with the JMAP change, the
    /// audit row and the cache notification.
    pub async fn set_account_settings_tx(
        &self,
        tx: &mut Tx,
        account_id: &str,
        account: &str,
        settings: &AccountSettings,
        actor: &Actor,
    ) -> Result<()> {
        let text = serde_json::to_string(settings).expect("settings serialize");
        sqlx::query("UPDATE accounts SET settings = $1 WHERE id = $2")
            .bind(&text)
            .bind(account_id)
            .execute(&mut **tx)
            .await?;
        self.record_change(
            tx,
            account_id,
            ObjectType::KeySettings,
            "singleton",
            ChangeOp::Updated,
        )
        .await?;
        audit::append(
            tx,
            actor,
            Some(account),
            "settings.update",
            Some(&text),
            None,
        )
        .await?;
        self.notify(tx, account_id).await?;
        Ok(())
    }

    /// Replaces an account's settings in its own transaction.
    pub async fn set_account_settings(
        &self,
        account_id: &str,
        settings: &AccountSettings,
        actor: &Actor,
    ) -> Result<()> {
        let account = self
            .account_by_id(account_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no account with id {account_id}")))?;
        let mut tx = self.begin().await?;
        self.set_account_settings_tx(&mut tx, account_id, &account.primary, settings, actor)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
