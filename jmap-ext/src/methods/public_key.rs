//! `PublicKey` (ours) and `Keystore` (TMail's shape) over the account's public keys.

use sealpost_keystore::PublicKeyRecord;
use serde_json::{json, Map, Value};

use super::{get_bool, ks_fail, only, utc, Ctx, Fail, Kind};
use crate::error::{internal, SetError};

fn view(kind: Kind, k: &PublicKeyRecord) -> Value {
    match kind {
        Kind::Keystore => json!({ "id": k.fingerprint, "key": k.armored }),
        _ => json!({
            "id": k.fingerprint,
            // "openpgp" or "x509" (an S/MIME certificate, PEM in `armored`).
            "kind": k.kind,
            "armored": k.armored,
            "blobId": format!("pk-{}", k.fingerprint),
            "fingerprint": k.fingerprint,
            "userIds": k.user_ids,
            "algorithm": k.algorithm,
            "version": k.version,
            "created": utc(k.created),
            "expires": k.expires.map(utc),
            "isActive": k.active,
        }),
    }
}

/// The server-set properties reported for a created or updated key.
fn server_set(kind: Kind, k: &PublicKeyRecord) -> Value {
    let mut v = view(kind, k);
    if let Value::Object(m) = &mut v {
        m.remove("armored");
        m.remove("key");
    }
    v
}

/// The JSON objects of these keys in one view.
pub fn views(kind: Kind, keys: &[PublicKeyRecord]) -> Vec<(String, Value)> {
    keys.iter()
        .map(|k| (k.fingerprint.clone(), view(kind, k)))
        .collect()
}

/// The armored-key property name of each view.
fn key_prop(kind: Kind) -> &'static str {
    match kind {
        Kind::Keystore => "key",
        _ => "armored",
    }
}

pub async fn create(
    ctx: &mut Ctx<'_>,
    kind: Kind,
    obj: &Map<String, Value>,
) -> Result<(String, Value), Fail> {
    let prop = key_prop(kind);
    match kind {
        Kind::Keystore => only(obj, &["key"], "")?,
        _ => only(
            obj,
            &["armored", "blobId", "isActive"],
            " (the other properties are read from the key)",
        )?,
    }
    let armored = super::input_bytes(ctx, obj, prop)?;
    let active = get_bool(obj, "isActive")?;
    let actor = ctx.principal.actor();
    let rec = ctx
        .ks()
        .add_public_key(ctx.account(), &armored, &actor)
        .await
        .map_err(|e| ks_fail(e, &[prop]))?;
    let rec = match active {
        Some(false) => ctx
            .ks()
            .set_key_active(&rec.fingerprint, false, &actor)
            .await
            .map_err(|e| ks_fail(e, &["isActive"]))?,
        _ => rec,
    };
    Ok((rec.fingerprint.clone(), server_set(kind, &rec)))
}

async fn owned(ctx: &Ctx<'_>, id: &str) -> Result<PublicKeyRecord, Fail> {
    ctx.ks()
        .public_key_of(ctx.account(), id)
        .await
        .map_err(|e| Fail::Method(internal("public key", &e)))?
        .ok_or_else(|| Fail::Set(SetError::not_found()))
}

pub async fn update(
    ctx: &mut Ctx<'_>,
    kind: Kind,
    id: &str,
    patch: &Map<String, Value>,
) -> Result<Value, Fail> {
    let rec = owned(ctx, id).await?;
    let prop = key_prop(kind);
    match kind {
        Kind::Keystore => only(patch, &["key"], "")?,
        _ => only(
            patch,
            &["armored", "isActive"],
            " (the other properties are read from the key)",
        )?,
    }
    let actor = ctx.principal.actor();
    let mut rec = rec;
    if let Some(armored) = super::get_str(patch, prop)? {
        // A newer copy of the same certificate (new expiry, user ID, subkey).
        let uploaded = sealpost_keystore::recipient::key_id(armored.as_bytes())
            .map_err(|e| Fail::Set(SetError::invalid(&[prop], format!("key refused: {e}"))))?;
        if uploaded != rec.fingerprint {
            return Err(Fail::Set(SetError::invalid(
                &[prop],
                format!(
                    "the uploaded key is {uploaded}, not {}; create a new key instead",
                    rec.fingerprint
                ),
            )));
        }
        rec = ctx
            .ks()
            .add_public_key(ctx.account(), armored.as_bytes(), &actor)
            .await
            .map_err(|e| ks_fail(e, &[prop]))?;
    }
    if let Some(active) = get_bool(patch, "isActive")? {
        rec = ctx
            .ks()
            .set_key_active(&rec.fingerprint, active, &actor)
            .await
            .map_err(|e| ks_fail(e, &["isActive"]))?;
    }
    Ok(server_set(kind, &rec))
}

pub async fn destroy(ctx: &mut Ctx<'_>, id: &str) -> Result<(), Fail> {
    let rec = owned(ctx, id).await?;
    ctx.ks()
        .remove_public_key(&rec.fingerprint, &ctx.principal.actor())
        .await
        .map_err(|e| ks_fail(e, &[]))?;
    Ok(())
}
