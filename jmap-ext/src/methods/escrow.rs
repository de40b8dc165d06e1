//! `Escrow`: a private key's password encrypted to the security officer's key (recovery
//! model 4), bound to the private key (same id).

use sealpost_keystore::protection;
use sealpost_keystore::EscrowRecord;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::Cert;
use serde_json::{json, Map, Value};

use super::{ks_fail, only, require_str, utc, Ctx, Fail};
use crate::config::EscrowMode;
use crate::error::{internal, MethodError, SetError};

fn view(e: &EscrowRecord) -> Value {
    json!({
        "id": e.private_key_fingerprint,
        "privateKeyId": e.private_key_fingerprint,
        "officerFingerprint": e.officer_fingerprint,
        "created": utc(e.created),
        "size": e.size,
        "blobId": format!("esc-{}", e.private_key_fingerprint),
    })
}

pub async fn load_all(ctx: &Ctx<'_>, with_blob: bool) -> Result<Vec<(String, Value)>, MethodError> {
    let all = ctx
        .ks()
        .escrows_of(ctx.account())
        .await
        .map_err(|e| internal("escrows", &e))?;
    let mut out = Vec::with_capacity(all.len());
    for e in all {
        let mut v = view(&e);
        if with_blob {
            v["armored"] = json!(ctx
                .ks()
                .escrow_armored(ctx.account(), &e.private_key_fingerprint)
                .await
                .map_err(|e| internal("escrow blob", &e))?);
        }
        out.push((e.private_key_fingerprint, v));
    }
    Ok(out)
}

/// The active officer keys as certificates.
pub async fn officer_certs(ctx: &Ctx<'_>) -> Result<Vec<Cert>, Fail> {
    let recs = ctx
        .ks()
        .active_officer_keys()
        .await
        .map_err(|e| Fail::Method(internal("officer keys", &e)))?;
    let mut out = Vec::new();
    for r in recs {
        match Cert::from_bytes(r.armored.as_bytes()) {
            Ok(c) => out.push(c),
            Err(e) => {
                tracing::error!(officer = %r.fingerprint, error = %e, "stored officer key does not parse");
            }
        }
    }
    Ok(out)
}

fn escrow_off() -> Fail {
    Fail::Set(SetError::new(
        "forbidden",
        "password escrow is off on this server",
    ))
}

async fn verify(ctx: &Ctx<'_>, armored: &[u8]) -> Result<protection::VerifiedEscrow, Fail> {
    let officers = officer_certs(ctx).await?;
    protection::verify_escrow(armored, &officers, &ctx.state.inner().protection)
        .map_err(|e| Fail::Set(SetError::invalid(&["armored"], e.to_string())))
}

pub async fn create(
    ctx: &mut Ctx<'_>,
    cid: &str,
    obj: &Map<String, Value>,
) -> Result<(String, Value), Fail> {
    if ctx.state.config().keys.escrow == EscrowMode::Off {
        return Err(escrow_off());
    }
    only(
        obj,
        &["privateKeyId", "armored", "blobId"],
        " (the other properties are computed by the server)",
    )?;
    let raw = require_str(obj, "privateKeyId")?;
    let Some(fpr) = ctx.resolve_id(raw).map(|f| f.to_ascii_uppercase()) else {
        return Err(Fail::Set(SetError::invalid(
            &["privateKeyId"],
            format!("{raw:?} is not a creation id of this request"),
        )));
    };
    // Stored together with its private key (escrow = "required").
    if ctx.prestored_escrows.get(&fpr).map(String::as_str) == Some(cid) {
        ctx.prestored_escrows.remove(&fpr);
        let rec = ctx
            .ks()
            .escrow(ctx.account(), &fpr)
            .await
            .map_err(|e| Fail::Method(internal("escrow", &e)))?
            .ok_or_else(|| Fail::Method(MethodError::server_fail()))?;
        return Ok((fpr, view(&rec)));
    }
    if ctx
        .ks()
        .private_key(ctx.account(), &fpr)
        .await
        .map_err(|e| Fail::Method(internal("private key", &e)))?
        .is_none()
    {
        return Err(Fail::Set(SetError::invalid(
            &["privateKeyId"],
            format!("no private key {fpr} is stored in this account"),
        )));
    }
    if ctx
        .ks()
        .escrow(ctx.account(), &fpr)
        .await
        .map_err(|e| Fail::Method(internal("escrow", &e)))?
        .is_some()
    {
        let mut e = SetError::new(
            "alreadyExists",
            format!("private key {fpr} already has an escrow; update it instead"),
        );
        e.existing_id = Some(fpr);
        return Err(Fail::Set(e));
    }
    let armored = super::input_bytes(ctx, obj, "armored")?;
    let verified = verify(ctx, &armored).await?;
    let (rec, _) = ctx
        .ks()
        .put_escrow(ctx.account(), &fpr, &verified, &ctx.principal.actor())
        .await
        .map_err(|e| ks_fail(e, &["armored"]))?;
    Ok((fpr, view(&rec)))
}

pub async fn update(
    ctx: &mut Ctx<'_>,
    id: &str,
    patch: &Map<String, Value>,
) -> Result<Value, Fail> {
    if ctx.state.config().keys.escrow == EscrowMode::Off {
        return Err(escrow_off());
    }
    if ctx
        .ks()
        .escrow(ctx.account(), id)
        .await
        .map_err(|e| Fail::Method(internal("escrow", &e)))?
        .is_none()
    {
        return Err(Fail::Set(SetError::not_found()));
    }
    only(
        patch,
        &["armored", "blobId"],
        " (an escrow stays bound to its private key)",
    )?;
    let armored = super::input_bytes(ctx, patch, "armored")?;
    let verified = verify(ctx, &armored).await?;
    let (rec, _) = ctx
        .ks()
        .put_escrow(ctx.account(), id, &verified, &ctx.principal.actor())
        .await
        .map_err(|e| ks_fail(e, &["armored"]))?;
    let v = view(&rec);
    Ok(
        json!({ "officerFingerprint": v["officerFingerprint"], "created": v["created"], "size": v["size"] }),
    )
}

pub async fn destroy(ctx: &mut Ctx<'_>, id: &str) -> Result<(), Fail> {
    if ctx
        .ks()
        .escrow(ctx.account(), id)
        .await
        .map_err(|e| Fail::Method(internal("escrow", &e)))?
        .is_none()
    {
        return Err(Fail::Set(SetError::not_found()));
    }
    if ctx.state.config().keys.escrow == EscrowMode::Required {
        return Err(Fail::Set(SetError::new(
            "forbidden",
            "escrow is required on this server: destroy the private key to remove its escrow",
        )));
    }
    ctx.ks()
        .destroy_escrow(ctx.account(), id, &ctx.principal.actor())
        .await
        .map_err(|e| ks_fail(e, &[]))
}
