//! OpenID Connect bearer tokens: a JWT signed by the provider's key (from its JWKS
//! document), with the configured issuer and audience, unexpired, naming the user's mail
//! address in the configured claim.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

use crate::auth::AuthError;
use crate::config::OidcAuthConfig;

pub struct Verifier {
    cfg: OidcAuthConfig,
    algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    /// The JWKS document and when it was fetched.
    jwks: tokio::sync::Mutex<Option<(JwkSet, Instant)>>,
}

/// An unknown `kid` refreshes the JWKS at most this often.
const MIN_REFRESH: Duration = Duration::from_secs(10);

impl Verifier {
    pub fn new(cfg: &OidcAuthConfig) -> anyhow::Result<Verifier> {
        let algorithms = cfg
            .algorithms
            .iter()
            .map(|a| {
                a.parse::<Algorithm>().map_err(|_| {
                    anyhow::anyhow!("[auth.oidc] algorithms: {a:?} is not a JWS algorithm")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Verifier {
            cfg: cfg.clone(),
            algorithms,
            http,
            jwks: tokio::sync::Mutex::new(None),
        })
    }

    async fn fetch(&self) -> Result<JwkSet, AuthError> {
        let fail = |e: &dyn std::fmt::Display| {
            tracing::error!(url = %self.cfg.jwks_url, error = %e, "cannot fetch the OIDC JWKS");
            AuthError::Unavailable(
                "the identity provider's keys are unavailable; try again later".into(),
            )
        };
        let resp = self
            .http
            .get(&self.cfg.jwks_url)
            .send()
            .await
            .map_err(|e| fail(&e))?;
        if !resp.status().is_success() {
            return Err(fail(&format!("HTTP status {}", resp.status())));
        }
        resp.json::<JwkSet>().await.map_err(|e| fail(&e))
    }

    /// The decoding key for `kid`, refreshing the JWKS when it is stale or lacks the key.
    async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        let mut cache = self.jwks.lock().await;
        let ttl = Duration::from_secs(self.cfg.jwks_cache_seconds);
        let find = |set: &JwkSet| -> Option<DecodingKey> {
            let jwk = match kid {
                Some(k) => set.find(k),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            }?;
            DecodingKey::from_jwk(jwk).ok()
        };
        if let Some((set, at)) = cache.as_ref() {
            if at.elapsed() < ttl {
                if let Some(k) = find(set) {
                    return Ok(k);
                }
                if at.elapsed() < MIN_REFRESH {
                    return Err(AuthError::Unauthorized(
                        "the token is signed by a key the identity provider does not publish"
                            .into(),
                    ));
                }
            }
        }
        let set = self.fetch().await?;
        let key = find(&set);
        *cache = Some((set, Instant::now()));
        key.ok_or_else(|| {
            AuthError::Unauthorized(
                "the token is signed by a key the identity provider does not publish".into(),
            )
        })
    }

    /// Verifies the token; returns the user's mail address.
    pub async fn verify(&self, token: &str) -> Result<String, AuthError> {
        let header = decode_header(token)
            .map_err(|_| AuthError::Unauthorized("the bearer token is not a JWT".into()))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::Unauthorized(format!(
                "tokens signed with {:?} are not accepted",
                header.alg
            )));
        }
        let key = self.key(header.kid.as_deref()).await?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = self.cfg.leeway_seconds;
        v.validate_nbf = true;
        let data = decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            AuthError::Unauthorized(
                match e.kind() {
                    K::ExpiredSignature => "the token has expired",
                    K::ImmatureSignature => "the token is not valid yet",
                    K::InvalidAudience => "the token is for another audience",
                    K::InvalidIssuer => "the token is from another issuer",
                    K::InvalidSignature => "the token's signature does not verify",
                    K::MissingRequiredClaim(_) => {
                        "the token lacks a required claim (exp, iss, aud)"
                    }
                    _ => "the token is not valid",
                }
                .into(),
            )
        })?;
        let claims = data.claims;
        if self.cfg.require_email_verified
            && claims.get("email_verified").and_then(|v| v.as_bool()) == Some(false)
        {
            return Err(AuthError::Unauthorized(
                "the token's mail address is not verified".into(),
            ));
        }
        claims
            .get(&self.cfg.email_claim)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                AuthError::Unauthorized(format!(
                    "the token has no {:?} claim",
                    self.cfg.email_claim
                ))
            })
    }
}
