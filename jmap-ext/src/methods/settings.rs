//! `KeySettings`: the account's singleton settings object.

use sealpost_keystore::recipient::KeyFormat;
use serde_json::{json, Map, Value};

use super::{only, Ctx, Fail};
use crate::error::{internal, MethodError, SetError};

pub const SINGLETON: &str = "singleton";

async fn view(ctx: &Ctx<'_>) -> Result<Value, MethodError> {
    let s = ctx
        .ks()
        .account_settings(ctx.account())
        .await
        .map_err(|e| internal("settings", &e))?;
    let encrypt = match s.encrypt_incoming {
        Some(b) => b,
        None => !ctx
            .ks()
            .active_keys_of(ctx.account())
            .await
            .map_err(|e| internal("settings", &e))?
            .is_empty(),
    };
    Ok(json!({
        "id": SINGLETON,
        "encryptIncoming": encrypt,
        // null: the server's default ([milter] protect_subject).
        "protectSubject": s.protect_subject,
        // Publish the active keys in the Web Key Directory ([jmap.wkd]); off unless set.
        "publishWkd": s.publish_wkd.unwrap_or(false),
        // "openpgp" or "smime" for an account with both kinds of key; null: the kind of
        // the most recently activated key.
        "format": s.format.map(|f| f.as_str()),
    }))
}

pub async fn load_all(ctx: &Ctx<'_>) -> Result<Vec<(String, Value)>, MethodError> {
    Ok(vec![(SINGLETON.to_string(), view(ctx).await?)])
}

fn opt_bool(patch: &Map<String, Value>, k: &str) -> Result<Option<Option<bool>>, Fail> {
    match patch.get(k) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Bool(b)) => Ok(Some(Some(*b))),
        Some(_) => Err(Fail::Set(SetError::invalid(
            &[k],
            format!("{k} must be true, false or null (the default)"),
        ))),
    }
}

pub async fn update(
    ctx: &mut Ctx<'_>,
    id: &str,
    patch: &Map<String, Value>,
) -> Result<Value, Fail> {
    if id != SINGLETON {
        return Err(Fail::Set(SetError::not_found()));
    }
    only(
        patch,
        &["encryptIncoming", "protectSubject", "publishWkd", "format"],
        "",
    )?;
    let mut s = ctx
        .ks()
        .account_settings(ctx.account())
        .await
        .map_err(|e| Fail::Method(internal("settings", &e)))?;
    if let Some(v) = opt_bool(patch, "encryptIncoming")? {
        s.encrypt_incoming = v;
    }
    if let Some(v) = opt_bool(patch, "protectSubject")? {
        s.protect_subject = v;
    }
    if let Some(v) = opt_bool(patch, "publishWkd")? {
        s.publish_wkd = v;
    }
    match patch.get("format") {
        None => {}
        Some(Value::Null) => s.format = None,
        Some(v) => {
            s.format = Some(v.as_str().and_then(KeyFormat::parse).ok_or_else(|| {
                Fail::Set(SetError::invalid(
                    &["format"],
                    "format must be \"openpgp\", \"smime\" or null (the kind of the most recently activated key)",
                ))
            })?)
        }
    }
    ctx.ks()
        .set_account_settings(ctx.account(), &s, &ctx.principal.actor())
        .await
        .map_err(|e| super::ks_fail(e, &[]))?;
    let v = view(ctx).await?;
    // Report the computed value when it differs from what was sent (the default).
    Ok(json!({ "encryptIncoming": v["encryptIncoming"] }))
}
