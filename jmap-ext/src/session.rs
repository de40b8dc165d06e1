//! The JMAP session resource (RFC 8620 §2).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::error::internal;
use crate::{JmapState, CAP_CORE, CAP_KEYS, CAP_PGP};

pub async fn handler(
    State(state): State<JmapState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let inner = state.inner();
    let principal = match inner.auth.authenticate(&headers, peer).await {
        Ok(p) => p,
        Err(e) => return inner.auth.error_response(e),
    };
    match session_object(&state, &principal, &headers).await {
        Ok(v) => (
            [(http::header::CACHE_CONTROL, "no-cache, no-store")],
            axum::Json(v),
        )
            .into_response(),
        Err(_) => crate::error::Problem::http(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "the session is unavailable; try again later",
        )
        .into_response(),
    }
}

/// The base URL for links in the session object.
fn base_url(state: &JmapState, headers: &HeaderMap) -> String {
    let cfg = state.config();
    if !cfg.base_url.is_empty() {
        return cfg.base_url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// The `org:sealpost:params:jmap:keys` capability value.
pub async fn keys_capability(
    state: &JmapState,
) -> Result<std::sync::Arc<crate::cache::KeysCapability>, crate::error::MethodError> {
    let inner = state.inner();
    if let Some(v) = inner.cache.keys_capability() {
        return Ok(v);
    }
    let k = &inner.config.keys;
    let officers = inner
        .ks
        .active_officer_keys()
        .await
        .map_err(|e| internal("officer keys", &e))?;
    let v = json!({
        "allowedModels": k.allowed_models,
        "escrow": k.escrow.as_str(),
        "officerKeys": officers.iter().map(|o| json!({
            "fingerprint": o.fingerprint,
            "armored": o.armored,
        })).collect::<Vec<_>>(),
        "serverKeyGeneration": k.generation_enabled(),
        "storesPrivateKeys": k.stores_private_keys(),
        "minS2kCount": k.min_s2k_count,
        "maxBlobSize": inner.config.limits.max_blob_size,
    });
    let v = std::sync::Arc::new(crate::cache::KeysCapability {
        digest: Sha256::digest(v.to_string().as_bytes()).into(),
        value: v,
    });
    inner.cache.put_keys_capability(&v);
    Ok(v)
}

pub fn core_capability(state: &JmapState) -> Value {
    let l = &state.config().limits;
    json!({
        "maxSizeUpload": l.max_blob_size,
        "maxConcurrentUpload": crate::MAX_CONCURRENT_UPLOAD,
        "maxSizeRequest": l.max_size_request,
        "maxConcurrentRequests": l.max_concurrent_requests,
        "maxCallsInRequest": l.max_calls_in_request,
        "maxObjectsInGet": l.max_objects_in_get,
        "maxObjectsInSet": l.max_objects_in_set,
        "collationAlgorithms": [],
    })
}

/// The session state: changes whenever anything in the session object changes.
pub fn session_state(principal: &Principal, keys_cap: &crate::cache::KeysCapability) -> String {
    let mut h = Sha256::new();
    h.update(principal.account_id.as_bytes());
    h.update([0]);
    h.update(principal.username.as_bytes());
    h.update([0]);
    h.update(keys_cap.digest);
    hex::encode(&h.finalize()[..8])
}

async fn session_object(
    state: &JmapState,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<Value, crate::error::MethodError> {
    let base = base_url(state, headers);
    let keys = keys_capability(state).await?;
    let session_state = session_state(principal, &keys);
    let id = &principal.account_id;
    Ok(json!({
        "capabilities": {
            CAP_CORE: core_capability(state),
            CAP_PGP: {},
            CAP_KEYS: keys.value,
        },
        "accounts": {
            id: {
                "name": principal.username,
                "isPersonal": true,
                "isReadOnly": false,
                "accountCapabilities": { CAP_PGP: {}, CAP_KEYS: {} },
            }
        },
        "primaryAccounts": { CAP_PGP: id, CAP_KEYS: id },
        "username": principal.username,
        "apiUrl": format!("{base}/jmap"),
        "downloadUrl": format!("{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?type={{type}}"),
        "uploadUrl": format!("{base}/jmap/upload/{{accountId}}/"),
        "eventSourceUrl": format!("{base}/jmap/eventsource/?types={{types}}&closeafter={{closeafter}}&ping={{ping}}"),
        "state": session_state,
    }))
}
