//! `KeyPair/generate` (recovery model 5, off unless the operator enables it): the server
//! generates a key, protects it with a random password, escrows the password to the
//! officer keys, stores all three and returns the password once. The password is never
//! logged or stored in clear.

use sealpost_keystore::protection;
use serde_json::{json, Map, Value};

use super::{Args, Ctx, Fail};
use crate::error::{internal, MethodError};

pub async fn generate(ctx: &mut Ctx<'_>, args: Map<String, Value>) -> Result<Value, MethodError> {
    let mut a = Args::new(args);
    a.account(ctx)?;
    let user_id = a.opt_string("userId")?;
    let label = a.opt_string("label")?;
    a.finish()?;
    let cfg = &ctx.state.config().keys;
    if !cfg.generation_enabled() {
        return Err(MethodError::forbidden(
            "server-side key generation (recovery model 5) is not enabled on this server",
        ));
    }
    let algorithm = cfg.algorithm().map_err(|e| internal("key algorithm", &e))?;
    let addresses = ctx
        .ks()
        .addresses_of(ctx.account())
        .await
        .map_err(|e| internal("addresses", &e))?;
    let user_id = match user_id {
        None => format!("<{}>", ctx.principal.username),
        Some(u) => {
            // The user ID must name one of the account's addresses (the key policy).
            let named = addresses.iter().any(|ad| {
                u.to_ascii_lowercase()
                    .contains(&ad.to_string().to_ascii_lowercase())
            });
            if !named || u.len() > 256 || u.chars().any(char::is_control) {
                return Err(MethodError::invalid_arguments(
                    "userId must be a user ID naming one of the account's addresses, e.g. \"Alice <alice@example.org>\"",
                ));
            }
            u
        }
    };
    if label.as_ref().is_some_and(|l| l.chars().count() > 256) {
        return Err(MethodError::invalid_arguments(
            "label is longer than 256 characters",
        ));
    }
    let officers = match super::escrow::officer_certs(ctx).await {
        Ok(o) => o,
        Err(Fail::Method(m)) => return Err(m),
        Err(Fail::Set(s)) => return Err(MethodError::forbidden(s.description)),
    };
    if officers.is_empty() {
        return Err(MethodError::forbidden(
            "no active officer key is installed, so a generated key's password cannot be escrowed",
        ));
    }
    let protection = ctx.state.inner().protection.clone();
    let generated = tokio::task::spawn_blocking(move || {
        protection::generate_protected_key(&user_id, algorithm, &officers, &protection)
    })
    .await
    .map_err(|e| internal("key generation", &e))?
    .map_err(|e| internal("key generation", &e))?;
    let old = json!({
        "PublicKey": super::state_of(ctx, super::Kind::PublicKey).await?,
        "PrivateKey": super::state_of(ctx, super::Kind::PrivateKey).await?,
        "Escrow": super::state_of(ctx, super::Kind::Escrow).await?,
    });
    let rec = ctx
        .ks()
        .store_generated_key(
            ctx.account(),
            &generated,
            label.as_deref(),
            &ctx.principal.actor(),
        )
        .await
        .map_err(|e| match e {
            sealpost_keystore::Error::Policy(p) => {
                MethodError::invalid_arguments(format!("the generated key is refused: {p}"))
            }
            other => internal("store generated key", &other),
        })?;
    ctx.state.inner().cache.invalidate(ctx.account());
    let new = json!({
        "PublicKey": super::state_of(ctx, super::Kind::PublicKey).await?,
        "PrivateKey": super::state_of(ctx, super::Kind::PrivateKey).await?,
        "Escrow": super::state_of(ctx, super::Kind::Escrow).await?,
    });
    Ok(json!({
        "accountId": ctx.account(),
        "id": rec.fingerprint,
        "publicKeyId": rec.fingerprint,
        "privateKeyId": rec.fingerprint,
        "escrowId": rec.fingerprint,
        "armored": rec.armored,
        "password": generated.password,
        "oldState": old,
        "newState": new,
    }))
}
