//! Web Key Directory (draft-koch-openpgp-webkey-service): read-only publication of the active
//! public keys of accounts that opted in (`KeySettings.publishWkd`).
//!
//! Served when `[jmap.wkd] enabled = true`, without authentication:
//! - direct method: `/.well-known/openpgpkey/hu/<hash>?l=<local part>`, the domain being the
//!   request's `Host` (the mail domain's web server proxies `/.well-known/openpgpkey/` here);
//! - advanced method: `/.well-known/openpgpkey/<domain>/hu/<hash>?l=<local part>` (for a
//!   proxy at `openpgpkey.<domain>`);
//! - the policy file at `/.well-known/openpgpkey/policy` (and `<domain>/policy`), empty.
//!
//! `<hash>` is the z-base-32 encoded SHA-1 of the local part with ASCII upper case mapped to
//! lower case. The response is the binary (non-armored) transferable public keys, each
//! stripped to the user IDs naming the requested address, concatenated; 404 when the address
//! is unknown, did not opt in, has no active key with such a user ID, or `l` does not hash to
//! `<hash>`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sealpost_keystore::Address;
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};

use openpgp::parse::Parse;
use openpgp::serialize::Serialize as _;
use openpgp::types::HashAlgorithm;

use crate::JmapState;

/// `[jmap.wkd]`: the Web Key Directory.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WkdConfig {
    /// Serve `/.well-known/openpgpkey/` from the JMAP service's listener.
    pub enabled: bool,
}

/// The WKD routes when enabled, else none.
pub(crate) fn routes(config: &WkdConfig) -> Router<JmapState> {
    if !config.enabled {
        return Router::new();
    }
    Router::new()
        .route("/.well-known/openpgpkey/policy", get(policy))
        .route("/.well-known/openpgpkey/{domain}/policy", get(policy))
        .route("/.well-known/openpgpkey/hu/{hash}", get(direct))
        .route("/.well-known/openpgpkey/{domain}/hu/{hash}", get(advanced))
}

const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// z-base-32 (as GnuPG encodes WKD hashes: 5 bits per character, most significant first).
pub fn zbase32(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ZBASE32[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ZBASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The WKD hash of a local part: z-base-32 of the SHA-1 of its ASCII-lower-cased bytes.
pub fn local_part_hash(local: &str) -> anyhow::Result<String> {
    let mut ctx = HashAlgorithm::SHA1.context()?.for_digest();
    ctx.update(local.to_ascii_lowercase().as_bytes());
    Ok(zbase32(&ctx.into_digest()?))
}

#[derive(Deserialize)]
struct Params {
    l: Option<String>,
}

async fn policy() -> Response {
    with_cors(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], ""))
}

async fn direct(
    State(state): State<JmapState>,
    Path(hash): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let Some(domain) = host_domain(&headers) else {
        return not_found();
    };
    lookup(&state, &domain, &hash, params.l.as_deref()).await
}

async fn advanced(
    State(state): State<JmapState>,
    Path((domain, hash)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Response {
    lookup(
        &state,
        &domain.to_ascii_lowercase(),
        &hash,
        params.l.as_deref(),
    )
    .await
}

/// The request's host without a port, lower-cased.
fn host_domain(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn not_found() -> Response {
    with_cors((StatusCode::NOT_FOUND, "no key published for this address\n"))
}

/// WKD responses may be read by web clients on any origin (the draft asks for `*`).
fn with_cors(r: impl IntoResponse) -> Response {
    let mut r = r.into_response();
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

async fn lookup(state: &JmapState, domain: &str, hash: &str, l: Option<&str>) -> Response {
    match find(state, domain, hash, l).await {
        Ok(Some(body)) => with_cors(([(header::CONTENT_TYPE, "application/octet-stream")], body)),
        Ok(None) => not_found(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), domain, "WKD lookup failed");
            with_cors((
                StatusCode::INTERNAL_SERVER_ERROR,
                "key lookup failed; try again later\n",
            ))
        }
    }
}

/// The published keys for `hash` in `domain`, or `None`.
async fn find(
    state: &JmapState,
    domain: &str,
    hash: &str,
    l: Option<&str>,
) -> anyhow::Result<Option<Vec<u8>>> {
    if hash.len() != 32 || !hash.bytes().all(|b| ZBASE32.contains(&b)) {
        return Ok(None);
    }
    let ks = &state.inner().ks;
    // The addresses of `domain` whose local part has this hash (and is `l`, when given).
    let wanted = match l {
        Some(l) => {
            if local_part_hash(l)? != hash {
                return Ok(None);
            }
            Some(l.to_ascii_lowercase())
        }
        None => None,
    };
    let mut accounts: Vec<(String, Address)> = Vec::new();
    for (account_id, addr) in ks.addresses_in_domain(domain).await? {
        let matches = match &wanted {
            Some(w) => *w == addr.local.to_ascii_lowercase(),
            None => local_part_hash(&addr.local)? == hash,
        };
        // Addresses differing only in case (exact local-part matching) can share an account.
        if matches && !accounts.iter().any(|(id, _)| *id == account_id) {
            accounts.push((account_id, addr));
        }
    }
    let mut out = Vec::new();
    for (account_id, addr) in accounts {
        if ks.account_settings(&account_id).await?.publish_wkd != Some(true) {
            continue;
        }
        let email = format!("{}@{}", addr.local.to_ascii_lowercase(), addr.domain);
        // WKD serves OpenPGP keys only; S/MIME certificates are not published here.
        for key in ks.active_keys_of(&account_id).await? {
            if key.kind != "openpgp" {
                continue;
            }
            let cert = match openpgp::Cert::from_bytes(key.armored.as_bytes()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(fingerprint = %key.fingerprint, error = %e, "stored key does not parse; not published");
                    continue;
                }
            };
            // Only the user IDs naming this address: the key's other addresses stay private.
            let cert = cert
                .retain_userids(|ua| {
                    ua.userid()
                        .email_normalized()
                        .ok()
                        .flatten()
                        .is_some_and(|e| e.to_ascii_lowercase() == email)
                })
                .retain_user_attributes(|_| false);
            if cert.userids().next().is_none() {
                continue;
            }
            cert.export(&mut out)?;
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zbase32_matches_the_reference_vectors() {
        // From the z-base-32 specification (Zooko O'Whielacronx), on whole bytes.
        assert_eq!(zbase32(&[]), "");
        assert_eq!(zbase32(&[0xf0, 0xbf, 0xc7]), "6n9hq");
        assert_eq!(zbase32(&[0xd4, 0x7a, 0x04]), "4t7ye");
        assert_eq!(zbase32(&[0x00]), "yy");
        assert_eq!(zbase32(&[0xff]), "9h");
    }

    #[test]
    fn local_part_hashes_match_gnupg() {
        // `gpg-wks-client --print-wkd-hash` (GnuPG 2.2), and the draft's own example.
        assert_eq!(
            local_part_hash("Joe.Doe").unwrap(),
            "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
        );
        assert_eq!(
            local_part_hash("joe.doe").unwrap(),
            "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
        );
    }
}
