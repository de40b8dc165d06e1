//! `PrivateKey`: password-protected secret keys stored for the user (recovery models 3–5).
//! Metadata and the `armored` blob are separate: /get returns the blob only when asked.

use sealpost_keystore::protection::{self, ProtectionError};
use sealpost_keystore::PrivateKeyRecord;
use serde_json::{json, Map, Value};

use super::{get_str, ks_fail, only, utc, Ctx, Fail};
use crate::config::EscrowMode;
use crate::error::{internal, MethodError, SetError};

fn view(k: &PrivateKeyRecord) -> Value {
    json!({
        "id": k.fingerprint,
        "publicKeyId": k.public_key_fingerprint,
        "label": k.label,
        "created": utc(k.created),
        "updated": utc(k.updated_at),
        "protection": k.protection,
        "size": k.size,
        "blobId": format!("sk-{}", k.fingerprint),
    })
}

pub async fn load_all(ctx: &Ctx<'_>, with_blob: bool) -> Result<Vec<(String, Value)>, MethodError> {
    let keys = ctx
        .ks()
        .private_keys_of(ctx.account())
        .await
        .map_err(|e| internal("private keys", &e))?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let mut v = view(&k);
        if with_blob {
            v["armored"] = json!(ctx
                .ks()
                .private_key_armored(ctx.account(), &k.fingerprint)
                .await
                .map_err(|e| internal("private key blob", &e))?);
        }
        out.push((k.fingerprint, v));
    }
    Ok(out)
}

pub fn protection_fail(e: ProtectionError, prop: &str) -> Fail {
    let props: &[&str] = match e {
        ProtectionError::NoMatchingPublicKey(_) => &["armored", "publicKeyId"],
        _ => &[prop],
    };
    Fail::Set(SetError::invalid(props, e.to_string()))
}

/// Finds an Escrow create in a later Escrow/set of this request whose privateKeyId is
/// `#cid`: its creation id and blob (armored, or an upload named by blobId).
fn escrow_in_request(ctx: &Ctx<'_>, cid: &str) -> Option<(String, Vec<u8>)> {
    let target = format!("#{cid}");
    for (name, args, _) in ctx.req.calls.iter().skip(ctx.index + 1) {
        if name != "Escrow/set" {
            continue;
        }
        let Some(Value::Object(create)) = args.get("create") else {
            continue;
        };
        for (ecid, obj) in create {
            if obj.get("privateKeyId").and_then(Value::as_str) == Some(target.as_str()) {
                if let Some(blob) = obj.get("armored").and_then(Value::as_str) {
                    return Some((ecid.clone(), blob.as_bytes().to_vec()));
                }
                if let Some(id) = obj.get("blobId").and_then(Value::as_str) {
                    let bytes = ctx.state.inner().blobs.get(ctx.account(), id)?;
                    return Some((ecid.clone(), bytes.to_vec()));
                }
            }
        }
    }
    None
}

pub async fn create(
    ctx: &mut Ctx<'_>,
    cid: &str,
    obj: &Map<String, Value>,
) -> Result<(String, Value), Fail> {
    let keys_cfg = &ctx.state.config().keys;
    if !keys_cfg.stores_private_keys() {
        return Err(Fail::Set(SetError::new(
            "forbidden",
            "this server does not store private keys (recovery models 3, 4 and 5 are not allowed)",
        )));
    }
    only(
        obj,
        &["armored", "blobId", "publicKeyId", "label"],
        " (the other properties are computed by the server)",
    )?;
    let armored = super::input_bytes(ctx, obj, "armored")?;
    let label = get_str(obj, "label")?;
    if label.is_some_and(|l| l.chars().count() > 256) {
        return Err(Fail::Set(SetError::invalid(
            &["label"],
            "label is longer than 256 characters",
        )));
    }
    let claimed = match get_str(obj, "publicKeyId")? {
        Some(p) => Some(ctx.resolve_id(p).ok_or_else(|| {
            Fail::Set(SetError::invalid(
                &["publicKeyId"],
                format!("{p:?} is not a creation id of this request"),
            ))
        })?),
        None => None,
    };
    let publics: Vec<(String, String)> = ctx
        .ks()
        .public_keys_of(ctx.account())
        .await
        .map_err(|e| Fail::Method(internal("public keys", &e)))?
        .into_iter()
        .map(|k| (k.fingerprint, k.armored))
        .collect();
    let verified = protection::verify_private_key(
        &armored,
        &publics,
        claimed.as_deref(),
        &ctx.state.inner().protection,
    )
    .map_err(|e| protection_fail(e, "armored"))?;
    if let Some(existing) = ctx
        .ks()
        .private_key(ctx.account(), &verified.fingerprint)
        .await
        .map_err(|e| Fail::Method(internal("private key", &e)))?
    {
        let mut e = SetError::new(
            "alreadyExists",
            format!(
                "a private key for {} is already stored; destroy it first",
                existing.fingerprint
            ),
        );
        e.existing_id = Some(existing.fingerprint);
        return Err(Fail::Set(e));
    }
    let actor = ctx.principal.actor();
    let label = label.map(str::to_string);
    let rec = if keys_cfg.escrow == EscrowMode::Required {
        let Some((ecid, blob)) = escrow_in_request(ctx, cid) else {
            return Err(Fail::Set(SetError::new(
                "forbidden",
                format!(
                    "escrow is required on this server: send the escrow of this key in a later \
                     Escrow/set of the same request, with privateKeyId \"#{cid}\""
                ),
            )));
        };
        let officers = super::escrow::officer_certs(ctx).await?;
        let escrow = protection::verify_escrow(&blob, &officers, &ctx.state.inner().protection)
            .map_err(|e| {
                Fail::Set(SetError::invalid(
                    &["armored"],
                    format!(
                        "the escrow sent for this key (Escrow/set create {ecid:?}) is refused: {e}"
                    ),
                ))
            })?;
        let rec = ctx
            .ks()
            .create_private_key_with_escrow(
                ctx.account(),
                &verified,
                label.as_deref(),
                &escrow,
                &actor,
            )
            .await
            .map_err(|e| ks_fail(e, &["armored"]))?;
        ctx.prestored_escrows.insert(rec.fingerprint.clone(), ecid);
        rec
    } else {
        ctx.ks()
            .create_private_key(ctx.account(), &verified, label.as_deref(), &actor)
            .await
            .map_err(|e| ks_fail(e, &["armored"]))?
    };
    let mut v = view(&rec);
    if let Value::Object(m) = &mut v {
        m.remove("label");
    }
    Ok((rec.fingerprint, v))
}

pub async fn update(
    ctx: &mut Ctx<'_>,
    id: &str,
    patch: &Map<String, Value>,
) -> Result<Value, Fail> {
    only(
        patch,
        &["label"],
        " (only label can change; upload a re-protected key by destroying and creating)",
    )?;
    if ctx
        .ks()
        .private_key(ctx.account(), id)
        .await
        .map_err(|e| Fail::Method(internal("private key", &e)))?
        .is_none()
    {
        return Err(Fail::Set(SetError::not_found()));
    }
    let label = get_str(patch, "label")?;
    if label.is_some_and(|l| l.chars().count() > 256) {
        return Err(Fail::Set(SetError::invalid(
            &["label"],
            "label is longer than 256 characters",
        )));
    }
    let rec = ctx
        .ks()
        .set_private_key_label(ctx.account(), id, label, &ctx.principal.actor())
        .await
        .map_err(|e| ks_fail(e, &["label"]))?;
    Ok(json!({ "updated": utc(rec.updated_at) }))
}

pub async fn destroy(ctx: &mut Ctx<'_>, id: &str) -> Result<(), Fail> {
    if ctx
        .ks()
        .private_key(ctx.account(), id)
        .await
        .map_err(|e| Fail::Method(internal("private key", &e)))?
        .is_none()
    {
        return Err(Fail::Set(SetError::not_found()));
    }
    ctx.ks()
        .destroy_private_key(ctx.account(), id, &ctx.principal.actor())
        .await
        .map_err(|e| ks_fail(e, &[]))
}
