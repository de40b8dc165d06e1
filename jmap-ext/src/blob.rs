//! Blob upload and download (RFC 8620 §6). Uploads are kept in memory for an hour, per
//! account, so a following /set can name them by `blobId` instead of sending `armored`.
//! Stored keys are downloadable as blobs too: `pk-FPR` (public key), `sk-FPR` (protected
//! private key), `esc-FPR` (escrow).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Problem;
use crate::JmapState;

const TTL: Duration = Duration::from_secs(3600);

struct Upload {
    at: Instant,
    account: String,
    bytes: Bytes,
}

pub struct BlobStore {
    uploads: Mutex<HashMap<String, Upload>>,
    /// Most bytes of unexpired uploads one account may hold.
    per_account: usize,
}

impl BlobStore {
    pub fn new(max_size_upload: usize) -> BlobStore {
        BlobStore {
            uploads: Mutex::new(HashMap::new()),
            per_account: max_size_upload.saturating_mul(16),
        }
    }

    fn put(&self, account: &str, bytes: Bytes) -> Result<String, Problem> {
        let mut m = self.uploads.lock().expect("blobs");
        m.retain(|_, u| u.at.elapsed() < TTL);
        let held: usize = m
            .values()
            .filter(|u| u.account == account)
            .map(|u| u.bytes.len())
            .sum();
        if held + bytes.len() > self.per_account {
            return Err(Problem::http(
                StatusCode::TOO_MANY_REQUESTS,
                "too many unused uploads; use or let them expire (one hour) first",
            ));
        }
        let id = format!("u-{}", sealpost_keystore::random_id(16));
        m.insert(
            id.clone(),
            Upload {
                at: Instant::now(),
                account: account.to_string(),
                bytes,
            },
        );
        Ok(id)
    }

    /// An unexpired upload of this account.
    pub fn get(&self, account: &str, id: &str) -> Option<Bytes> {
        let m = self.uploads.lock().expect("blobs");
        m.get(id)
            .filter(|u| u.account == account && u.at.elapsed() < TTL)
            .map(|u| u.bytes.clone())
    }
}

pub async fn upload(
    State(state): State<JmapState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let inner = state.inner();
    let principal = match inner.auth.authenticate(&headers, peer).await {
        Ok(p) => p,
        Err(e) => return inner.auth.error_response(e),
    };
    if account != principal.account_id {
        return Problem::http(StatusCode::NOT_FOUND, "no such account").into_response();
    }
    let Ok(_permit) = inner.uploads.try_acquire() else {
        return Problem::limit("maxConcurrentUpload", "too many uploads at once").into_response();
    };
    let max = inner.config.limits.max_blob_size as usize;
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            return Problem::limit(
                "maxSizeUpload",
                format!("the upload is larger than maxSizeUpload ({max} bytes)"),
            )
            .into_response()
        }
    };
    let ty = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .chars()
        .take(128)
        .collect::<String>();
    let size = bytes.len();
    match inner.blobs.put(&account, bytes) {
        Ok(id) => (
            StatusCode::CREATED,
            axum::Json(json!({"accountId": account, "blobId": id, "type": ty, "size": size})),
        )
            .into_response(),
        Err(p) => p.into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct DownloadQuery {
    #[serde(rename = "type")]
    ty: Option<String>,
}

pub async fn download(
    State(state): State<JmapState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((account, blob_id, name)): Path<(String, String, String)>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Response {
    let inner = state.inner();
    let principal = match inner.auth.authenticate(&headers, peer).await {
        Ok(p) => p,
        Err(e) => return inner.auth.error_response(e),
    };
    let not_found = || Problem::http(StatusCode::NOT_FOUND, "no such blob").into_response();
    if account != principal.account_id {
        return not_found();
    }
    let ks = &inner.ks;
    let found: Result<Option<Bytes>, sealpost_keystore::Error> =
        if let Some(f) = blob_id.strip_prefix("pk-") {
            ks.public_key_of(&account, f)
                .await
                .map(|k| k.map(|k| Bytes::from(k.armored)))
        } else if let Some(f) = blob_id.strip_prefix("sk-") {
            ks.private_key_armored(&account, f)
                .await
                .map(|k| k.map(Bytes::from))
        } else if let Some(f) = blob_id.strip_prefix("esc-") {
            ks.escrow_armored(&account, f)
                .await
                .map(|k| k.map(Bytes::from))
        } else {
            Ok(inner.blobs.get(&account, &blob_id))
        };
    let bytes = match found {
        Ok(Some(b)) => b,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "blob download failed");
            return Problem::http(
                StatusCode::SERVICE_UNAVAILABLE,
                "the blob cannot be read now; try again later",
            )
            .into_response();
        }
    };
    let ty =
        q.ty.filter(|t| !t.is_empty())
            .unwrap_or_else(|| "application/octet-stream".into());
    let mut resp = (StatusCode::OK, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_str(&ty).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(100)
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(http::header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    resp
}
