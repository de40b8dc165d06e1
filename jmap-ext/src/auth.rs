//! Authentication of API requests: HTTP Basic against the keystore's argon2id passwords
//! (`static`) or an IMAP server (`imap`), OIDC bearer tokens (`oidc`), or a header set by
//! a trusted reverse proxy (`proxy`). Failed logins are rate-limited per user and per
//! source address. Passwords are never logged, stored or echoed; successful Basic
//! verifications are cached under a keyed hash of user and password.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sealpost_keystore::{Actor, Address, Keystore};
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, AuthMode};
use crate::error::Problem;

/// The authenticated user: their login name and the one account they may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The account's primary address (the session's `username`).
    pub username: String,
    pub account_id: String,
}

impl Principal {
    /// The audit-log actor for changes made through the API.
    pub fn actor(&self) -> Actor {
        Actor(format!("jmap:{}", self.username))
    }
}

/// An IPv4 or IPv6 network in CIDR notation (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> anyhow::Result<Cidr> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b.trim().parse::<u8>()?,
            None => max,
        };
        if bits > max {
            anyhow::bail!("prefix length {bits} is longer than {max}");
        }
        Ok(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.bits)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.bits)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug)]
pub enum AuthError {
    /// No or wrong credentials: 401 with a challenge.
    Unauthorized(String),
    /// Too many failures: 429 with Retry-After.
    RateLimited(u64),
    /// Authenticated, but the request may not proceed (untrusted proxy source).
    Forbidden(String),
    /// The back end (database, IMAP server, JWKS) failed: 503.
    Unavailable(String),
}

/// Failed-login counters in a fixed window.
struct Failures {
    window: Duration,
    by_key: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Failures {
    fn new(window: Duration) -> Failures {
        Failures {
            window,
            by_key: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `key` may try again, when it has reached `max` failures.
    fn blocked(&self, key: &str, max: u32) -> Option<u64> {
        let map = self.by_key.lock().expect("failure map");
        let (start, n) = map.get(key)?;
        let elapsed = start.elapsed();
        if elapsed >= self.window || *n < max {
            return None;
        }
        Some((self.window - elapsed).as_secs().max(1))
    }

    fn record(&self, key: &str) {
        let mut map = self.by_key.lock().expect("failure map");
        let now = Instant::now();
        if map.len() > 100_000 {
            let w = self.window;
            map.retain(|_, (s, _)| now.duration_since(*s) < w);
        }
        let e = map.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 += 1;
    }

    fn clear(&self, key: &str) {
        self.by_key.lock().expect("failure map").remove(key);
    }
}

pub struct Authenticator {
    config: AuthConfig,
    ks: Keystore,
    failures: Failures,
    /// Keyed hash of (user, password) → principal and expiry.
    cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    cache_key: [u8; 32],
    trusted: Vec<Cidr>,
    proxies: Vec<Cidr>,
    oidc: Option<crate::oidc::Verifier>,
}

impl Authenticator {
    pub fn new(config: AuthConfig, ks: Keystore) -> anyhow::Result<Authenticator> {
        let trusted = config
            .proxy
            .trusted_sources
            .iter()
            .map(|s| Cidr::parse(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let proxies = config
            .trusted_proxies
            .iter()
            .map(|s| Cidr::parse(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let oidc = match config.mode {
            AuthMode::Oidc => Some(crate::oidc::Verifier::new(&config.oidc)?),
            _ => None,
        };
        let mut cache_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut cache_key);
        Ok(Authenticator {
            failures: Failures::new(Duration::from_secs(config.rate_limit.window_seconds)),
            config,
            ks,
            cache: Mutex::new(HashMap::new()),
            cache_key,
            trusted,
            proxies,
            oidc,
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.config.mode
    }

    /// The `WWW-Authenticate` challenge for this mode.
    pub fn challenge(&self) -> String {
        let realm = self.config.realm.replace(['"', '\\'], "");
        match self.config.mode {
            AuthMode::Oidc => format!("Bearer realm=\"{realm}\""),
            AuthMode::Proxy => format!("Basic realm=\"{realm}\""),
            _ => format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
        }
    }

    /// Authenticates one request.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<Principal, AuthError> {
        let source = format!("ip:{}", self.client_ip(headers, peer));
        let rl = &self.config.rate_limit;
        if let Some(s) = self.failures.blocked(&source, rl.max_failures_per_source) {
            return Err(AuthError::RateLimited(s));
        }
        match self.config.mode {
            AuthMode::Proxy => self.proxy(headers, peer).await,
            AuthMode::Oidc => {
                let token = bearer(headers).ok_or_else(|| {
                    AuthError::Unauthorized("send Authorization: Bearer <token>".into())
                })?;
                let oidc = self.oidc.as_ref().expect("oidc verifier in oidc mode");
                match oidc.verify(token).await {
                    Ok(email) => self.principal_for(&email, true).await,
                    Err(AuthError::Unauthorized(why)) => {
                        self.failures.record(&source);
                        Err(AuthError::Unauthorized(why))
                    }
                    Err(e) => Err(e),
                }
            }
            AuthMode::Static | AuthMode::Imap => {
                let (user, password) = basic(headers)?;
                let user_key = format!("user:{}", user.to_lowercase());
                if let Some(s) = self.failures.blocked(&user_key, rl.max_failures_per_user) {
                    return Err(AuthError::RateLimited(s));
                }
                let digest = self.cache_digest(&user, &password);
                if let Some(p) = self.cached(&digest) {
                    return Ok(p);
                }
                let verified = match self.config.mode {
                    AuthMode::Static => self.verify_static(&user, &password).await?,
                    _ => self.verify_imap(&user, &password).await?,
                };
                match verified {
                    Some(p) => {
                        self.failures.clear(&user_key);
                        if self.config.cache_seconds > 0 {
                            let until =
                                Instant::now() + Duration::from_secs(self.config.cache_seconds);
                            let mut c = self.cache.lock().expect("auth cache");
                            if c.len() > 100_000 {
                                let now = Instant::now();
                                c.retain(|_, (_, u)| *u > now);
                            }
                            c.insert(digest, (p.clone(), until));
                        }
                        Ok(p)
                    }
                    None => {
                        self.failures.record(&user_key);
                        self.failures.record(&source);
                        Err(AuthError::Unauthorized(
                            "wrong user name or password".into(),
                        ))
                    }
                }
            }
        }
    }

    /// The client's address: the peer, or the nearest untrusted address in
    /// `X-Forwarded-For` when the peer is a trusted reverse proxy.
    pub fn client_ip(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        let ip = peer.ip();
        if !self.proxies.iter().any(|c| c.contains(ip)) {
            return ip;
        }
        let mut hops: Vec<IpAddr> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            let Ok(v) = v.to_str() else { return ip };
            for part in v.split(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(a) => hops.push(a),
                    Err(_) => return ip,
                }
            }
        }
        hops.into_iter()
            .rev()
            .find(|a| !self.proxies.iter().any(|c| c.contains(*a)))
            .unwrap_or(ip)
    }

    fn cache_digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Principal> {
        let c = self.cache.lock().expect("auth cache");
        c.get(digest)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(p, _)| p.clone())
    }

    async fn verify_static(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<Principal>, AuthError> {
        let Ok(addr) = Address::parse(&self.qualify(user)) else {
            return Ok(None);
        };
        let found = self
            .ks
            .password_hash_of(&addr)
            .await
            .map_err(|e| unavailable("keystore", &e))?;
        let password = password.to_string();
        let (ok, id) = match found {
            Some((id, Some(hash))) => {
                let ok = tokio::task::spawn_blocking(move || {
                    sealpost_keystore::password::verify(&hash, &password)
                })
                .await
                .unwrap_or(false);
                (ok, Some(id))
            }
            _ => {
                // Same work as a real check, so timing does not reveal accounts.
                let _ = tokio::task::spawn_blocking(move || {
                    sealpost_keystore::password::burn(&password)
                })
                .await;
                (false, None)
            }
        };
        match (ok, id) {
            (true, Some(id)) => self.principal_by_id(&id).await.map(Some),
            _ => Ok(None),
        }
    }

    async fn verify_imap(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<Principal>, AuthError> {
        let login = user.to_string();
        match crate::imap::verify(&self.config.imap, &login, password).await {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, "IMAP authentication back end failed");
                return Err(AuthError::Unavailable(
                    "the mail server could not verify the login; try again later".into(),
                ));
            }
        }
        self.principal_for(&self.qualify(user), true)
            .await
            .map(Some)
    }

    async fn proxy(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<Principal, AuthError> {
        if !self.trusted.iter().any(|c| c.contains(peer.ip())) {
            tracing::warn!(source = %peer.ip(), "request from an untrusted source in proxy auth mode");
            return Err(AuthError::Forbidden(
                "requests must come through the authenticating reverse proxy".into(),
            ));
        }
        let user = headers
            .get(self.config.proxy.header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                AuthError::Unauthorized(format!(
                    "the reverse proxy did not send the {} header",
                    self.config.proxy.header
                ))
            })?;
        self.principal_for(&self.qualify(user), true).await
    }

    fn qualify(&self, user: &str) -> String {
        if user.contains('@') || self.config.default_domain.is_empty() {
            user.to_string()
        } else {
            format!("{user}@{}", self.config.default_domain)
        }
    }

    async fn principal_by_id(&self, id: &str) -> Result<Principal, AuthError> {
        let acc = self
            .ks
            .account_by_id(id)
            .await
            .map_err(|e| unavailable("keystore", &e))?
            .ok_or_else(|| AuthError::Unauthorized("the account no longer exists".into()))?;
        Ok(Principal {
            username: acc.primary,
            account_id: acc.id,
        })
    }

    /// The account of an identity verified elsewhere (IMAP, OIDC, proxy); created when
    /// missing and `create_accounts` is set.
    async fn principal_for(&self, user: &str, may_create: bool) -> Result<Principal, AuthError> {
        let addr = Address::parse(user).map_err(|e| {
            AuthError::Unauthorized(format!("the user name is not a mail address: {e}"))
        })?;
        let found = self
            .ks
            .resolve_recipient(&addr)
            .await
            .map_err(|e| unavailable("keystore", &e))?;
        if let Some(id) = found {
            return self.principal_by_id(&id).await;
        }
        if !(may_create && self.config.create_accounts) {
            return Err(AuthError::Unauthorized(
                "no key account exists for this user".into(),
            ));
        }
        let actor = Actor(format!("jmap:{addr}"));
        match self.ks.add_account(&addr, &[], &actor).await {
            Ok(acc) => Ok(Principal {
                username: acc.primary,
                account_id: acc.id,
            }),
            // Created concurrently by another request: use it.
            Err(_) => match self
                .ks
                .resolve_recipient(&addr)
                .await
                .map_err(|e| unavailable("keystore", &e))?
            {
                Some(id) => self.principal_by_id(&id).await,
                None => Err(AuthError::Unavailable(
                    "cannot create the account; try again later".into(),
                )),
            },
        }
    }

    /// The 401/403/429/503 response for a failed authentication.
    pub fn error_response(&self, e: AuthError) -> Response {
        match e {
            AuthError::Unauthorized(why) => {
                let mut r = Problem::http(StatusCode::UNAUTHORIZED, why).into_response();
                if let Ok(v) = HeaderValue::from_str(&self.challenge()) {
                    r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
                }
                r
            }
            AuthError::RateLimited(secs) => {
                let mut p = Problem::http(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed logins; try again later",
                );
                p.retry_after = Some(secs);
                p.into_response()
            }
            AuthError::Forbidden(why) => Problem::http(StatusCode::FORBIDDEN, why).into_response(),
            AuthError::Unavailable(why) => {
                Problem::http(StatusCode::SERVICE_UNAVAILABLE, why).into_response()
            }
        }
    }
}

fn unavailable(what: &str, e: &dyn std::fmt::Display) -> AuthError {
    tracing::error!(back_end = what, error = %e, "authentication back end failed");
    AuthError::Unavailable("authentication is unavailable; try again later".into())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The user name and password of an `Authorization: Basic` header.
fn basic(headers: &HeaderMap) -> Result<(String, String), AuthError> {
    let missing = || AuthError::Unauthorized("send Authorization: Basic credentials".into());
    let v = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let (scheme, b64) = v.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(missing());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| AuthError::Unauthorized("the Basic credentials are not base64".into()))?;
    let text = String::from_utf8(raw)
        .map_err(|_| AuthError::Unauthorized("the Basic credentials are not UTF-8".into()))?;
    let (user, password) = text.split_once(':').ok_or_else(|| {
        AuthError::Unauthorized("the Basic credentials have no user:password form".into())
    })?;
    if user.is_empty() || password.is_empty() {
        return Err(AuthError::Unauthorized(
            "the user name or password is empty".into(),
        ));
    }
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()));
        let one = Cidr::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn failures_block_after_max() {
        let f = Failures::new(Duration::from_secs(60));
        for _ in 0..3 {
            assert!(f.blocked("k", 3).is_none());
            f.record("k");
        }
        assert!(f.blocked("k", 3).is_some());
        f.clear("k");
        assert!(f.blocked("k", 3).is_none());
    }
}
