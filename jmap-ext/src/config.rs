//! The `[jmap]` and `[auth]` sections of the config file. Every key is documented with
//! its default in deploy/sealpost.example.toml.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// `[jmap]`: the JMAP extension service.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JmapConfig {
    /// Address the service listens on (`HOST:PORT`); empty disables the service in
    /// `sealpost serve`. Put a TLS-terminating reverse proxy in front.
    pub listen: String,
    /// The public base URL clients reach the service at (scheme, host, optional path
    /// prefix, no trailing slash), used to build the URLs in the session object. Empty:
    /// derived from the request's Host header.
    pub base_url: String,
    /// Web origins (e.g. `https://webmail.example.org`) allowed to call the API from a
    /// browser. Empty: no CORS headers, so browsers only allow same-origin calls.
    pub cors_origins: Vec<String>,
    /// Core limits announced in the session and enforced.
    pub limits: LimitsConfig,
    /// Which recovery models users may choose, escrow policy, upload checks.
    pub keys: KeysConfig,
    /// Milliseconds a public-key listing and the officer keys may be served from this
    /// process's cache. Writes through the service drop the entry at once; changes made
    /// elsewhere (CLI, other nodes) show within this time. 0 disables the cache.
    pub cache_ms: u64,
    /// Web Key Directory publication (`[jmap.wkd]`).
    pub wkd: crate::wkd::WkdConfig,
    /// Serve the reference web client (jmap-ext/web/, built into the binary) at `/web/`.
    pub serve_web: bool,
}

impl Default for JmapConfig {
    fn default() -> Self {
        JmapConfig {
            listen: "127.0.0.1:8747".into(),
            base_url: String::new(),
            cors_origins: Vec::new(),
            limits: LimitsConfig::default(),
            keys: KeysConfig::default(),
            cache_ms: 1000,
            wkd: Default::default(),
            serve_web: false,
        }
    }
}

/// `[jmap.limits]`: RFC 8620 core capability limits.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted (bytes).
    pub max_size_request: u64,
    /// Requests processed at the same time; more are refused with a `limit` problem.
    pub max_concurrent_requests: u64,
    /// Method calls in one request.
    pub max_calls_in_request: u64,
    /// Objects one /get may return or name in `ids`.
    pub max_objects_in_get: u64,
    /// Creates, updates and destroys in one /set.
    pub max_objects_in_set: u64,
    /// Largest armored private key or escrow blob accepted (bytes).
    pub max_blob_size: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_size_request: 2_097_152,
            max_concurrent_requests: 8,
            max_calls_in_request: 16,
            max_objects_in_get: 256,
            max_objects_in_set: 64,
            max_blob_size: 262_144,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// argon2id passwords stored in the keystore (`sealpost accounts passwd`).
    Static,
    /// HTTP Basic credentials verified by an IMAP login at the mail server.
    Imap,
    /// Bearer JWTs from an OpenID Connect provider.
    Oidc,
    /// A trusted reverse proxy authenticates and passes the user in a header.
    Proxy,
}

/// `[auth]`: how API users authenticate.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Realm announced in `WWW-Authenticate`.
    pub realm: String,
    /// Domain appended to a user name without `@` (imap, oidc, proxy modes).
    pub default_domain: String,
    /// Create a keystore account for an authenticated user who has none yet (imap, oidc,
    /// proxy modes: the identity was verified by the mail server or identity provider).
    pub create_accounts: bool,
    /// Seconds a successful Basic verification is cached (keyed hash of user and password,
    /// never the password). 0 disables the cache.
    pub cache_seconds: u64,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` header names
    /// the client, so failed logins are counted per real client rather than per proxy.
    pub trusted_proxies: Vec<String>,
    pub rate_limit: RateLimitConfig,
    pub imap: ImapAuthConfig,
    pub oidc: OidcAuthConfig,
    pub proxy: ProxyAuthConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Static,
            realm: "sealpost".into(),
            default_domain: String::new(),
            create_accounts: true,
            cache_seconds: 60,
            trusted_proxies: vec!["127.0.0.1/32".into(), "::1/128".into()],
            rate_limit: RateLimitConfig::default(),
            imap: ImapAuthConfig::default(),
            oidc: OidcAuthConfig::default(),
            proxy: ProxyAuthConfig::default(),
        }
    }
}

/// `[auth.rate_limit]`: failed-login limits.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Failed logins allowed per user name within the window.
    pub max_failures_per_user: u32,
    /// Failed logins allowed per source address within the window.
    pub max_failures_per_source: u32,
    pub window_seconds: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            max_failures_per_user: 5,
            max_failures_per_source: 20,
            window_seconds: 300,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImapTls {
    /// Plain connection upgraded with STARTTLS (port 143).
    Starttls,
    /// TLS from the first byte (port 993).
    Implicit,
    /// No TLS: only allowed when the server is on a loopback address.
    None,
}

/// `[auth.imap]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImapAuthConfig {
    /// `HOST:PORT` of the IMAP server.
    pub server: String,
    pub tls: ImapTls,
    /// PEM file with CA certificates to trust in addition to the system's (for a private CA).
    pub ca_file: String,
    /// Name to verify the server certificate against; default: the host of `server`.
    pub tls_server_name: String,
    pub timeout_seconds: u64,
}

impl Default for ImapAuthConfig {
    fn default() -> Self {
        ImapAuthConfig {
            server: "127.0.0.1:143".into(),
            tls: ImapTls::Starttls,
            ca_file: String::new(),
            tls_server_name: String::new(),
            timeout_seconds: 10,
        }
    }
}

/// `[auth.oidc]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcAuthConfig {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim (the client id registered for the webmail).
    pub audience: String,
    /// URL of the provider's JWKS document (`jwks_uri` in its discovery document).
    pub jwks_url: String,
    /// Claim holding the user's mail address.
    pub email_claim: String,
    /// Refuse tokens whose `email_verified` claim is present and false.
    pub require_email_verified: bool,
    /// Accepted signature algorithms (never `none` or HMAC).
    pub algorithms: Vec<String>,
    /// Seconds the JWKS document is cached (an unknown `kid` refreshes it sooner).
    pub jwks_cache_seconds: u64,
    /// Clock skew tolerated for `exp`/`nbf`, seconds.
    pub leeway_seconds: u64,
}

impl Default for OidcAuthConfig {
    fn default() -> Self {
        OidcAuthConfig {
            issuer: String::new(),
            audience: String::new(),
            jwks_url: String::new(),
            email_claim: "email".into(),
            require_email_verified: true,
            algorithms: vec![
                "RS256".into(),
                "RS384".into(),
                "RS512".into(),
                "PS256".into(),
                "ES256".into(),
                "ES384".into(),
                "EdDSA".into(),
            ],
            jwks_cache_seconds: 300,
            leeway_seconds: 30,
        }
    }
}

/// `[auth.proxy]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyAuthConfig {
    /// Request header carrying the authenticated user's address.
    pub header: String,
    /// Source addresses or CIDR ranges of the trusted proxies. Requests from anywhere
    /// else are refused.
    pub trusted_sources: Vec<String>,
}

impl Default for ProxyAuthConfig {
    fn default() -> Self {
        ProxyAuthConfig {
            header: "X-Remote-User".into(),
            trusted_sources: vec!["127.0.0.1/32".into(), "::1/128".into()],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EscrowMode {
    Off,
    Optional,
    Required,
}

impl EscrowMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EscrowMode::Off => "off",
            EscrowMode::Optional => "optional",
            EscrowMode::Required => "required",
        }
    }
}

/// `[jmap.keys]`: which recovery models users may choose.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Recovery models (1–5, see DESIGN.md) users may choose. Private keys are stored only
    /// when 3, 4 or 5 is allowed.
    pub allowed_models: Vec<u8>,
    /// Password escrow to the security officer: "off", "optional" or "required".
    pub escrow: EscrowMode,
    /// Model 5: the server generates key pairs (the password transits the server).
    pub server_key_generation: bool,
    /// Algorithm of server-generated keys: "cv25519", "rsa3072" or "rsa4096".
    pub key_algorithm: String,
    /// Smallest iterated+salted S2K count accepted for uploaded private keys. gpg's
    /// default export (iterated+salted SHA-1, count calibrated to about 65 million) passes.
    pub min_s2k_count: u32,
    /// Accept S/MIME private keys (PKCS#12) protected with the legacy 3DES PBE that older
    /// Windows and macOS versions export; otherwise only PBES2 with AES is accepted.
    pub allow_legacy_pkcs12: bool,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            allowed_models: vec![1, 2, 3, 4],
            escrow: EscrowMode::Optional,
            server_key_generation: false,
            key_algorithm: "cv25519".into(),
            min_s2k_count: 1_048_576,
            allow_legacy_pkcs12: false,
        }
    }
}

impl KeysConfig {
    /// Whether private keys may be stored at all.
    pub fn stores_private_keys(&self) -> bool {
        self.allowed_models.iter().any(|m| matches!(m, 3..=5))
    }

    pub fn generation_enabled(&self) -> bool {
        self.server_key_generation
            && self.allowed_models.contains(&5)
            && self.escrow != EscrowMode::Off
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for m in &self.allowed_models {
            if !(1..=5).contains(m) {
                bail!("[jmap.keys] allowed_models: {m} is not a recovery model (1 to 5)");
            }
        }
        if self.escrow == EscrowMode::Required && !self.allowed_models.iter().any(|m| *m >= 4) {
            bail!("[jmap.keys] escrow = \"required\" needs model 4 or 5 in allowed_models");
        }
        if self.server_key_generation && !self.allowed_models.contains(&5) {
            bail!("[jmap.keys] server_key_generation = true needs model 5 in allowed_models");
        }
        if self.server_key_generation && self.escrow == EscrowMode::Off {
            bail!("[jmap.keys] server_key_generation = true needs escrow \"optional\" or \"required\" (model 5 escrows the generated password)");
        }
        self.algorithm()?;
        Ok(())
    }

    pub fn algorithm(&self) -> anyhow::Result<sealpost_keystore::protection::GenerateAlgorithm> {
        use sealpost_keystore::protection::GenerateAlgorithm as G;
        Ok(match self.key_algorithm.as_str() {
            "cv25519" => G::Cv25519,
            "rsa3072" => G::Rsa3072,
            "rsa4096" => G::Rsa4096,
            other => bail!(
                "[jmap.keys] key_algorithm = {other:?}: use \"cv25519\", \"rsa3072\" or \"rsa4096\""
            ),
        })
    }
}

impl JmapConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.listen.is_empty() {
            self.listen.parse::<SocketAddr>().with_context(|| {
                format!("[jmap] listen = {:?} is not ADDRESS:PORT", self.listen)
            })?;
        }
        if !(self.base_url.is_empty()
            || self.base_url.starts_with("https://")
            || self.base_url.starts_with("http://"))
        {
            bail!(
                "[jmap] base_url = {:?} must start with https:// or http://",
                self.base_url
            );
        }
        for o in &self.cors_origins {
            if !(o.starts_with("https://") || o.starts_with("http://")) || o.ends_with('/') {
                bail!(
                    "[jmap] cors_origins: {o:?} is not an origin like https://webmail.example.org"
                );
            }
            http::HeaderValue::from_str(o)
                .with_context(|| format!("[jmap] cors_origins: {o:?} is not a valid origin"))?;
        }
        let l = &self.limits;
        for (name, v) in [
            ("max_size_request", l.max_size_request),
            ("max_concurrent_requests", l.max_concurrent_requests),
            ("max_calls_in_request", l.max_calls_in_request),
            ("max_objects_in_get", l.max_objects_in_get),
            ("max_objects_in_set", l.max_objects_in_set),
            ("max_blob_size", l.max_blob_size),
        ] {
            if v == 0 {
                bail!("[jmap.limits] {name} must be at least 1");
            }
        }
        self.keys.validate()?;
        Ok(())
    }

    /// The CORS layer for the configured origins; `None` when no origin is allowed.
    pub fn cors_layer(&self) -> Option<tower_http::cors::CorsLayer> {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        if self.cors_origins.is_empty() {
            return None;
        }
        let origins: Vec<http::HeaderValue> = self
            .cors_origins
            .iter()
            .filter_map(|o| http::HeaderValue::from_str(o).ok())
            .collect();
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([http::Method::GET, http::Method::POST, http::Method::OPTIONS])
                .allow_headers([http::header::AUTHORIZATION, http::header::CONTENT_TYPE])
                .expose_headers([http::header::WWW_AUTHENTICATE, http::header::RETRY_AFTER])
                .max_age(std::time::Duration::from_secs(600)),
        )
    }
}

impl AuthConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.mode {
            AuthMode::Static => {}
            AuthMode::Imap => {
                let (host, _port) = split_host_port(&self.imap.server).with_context(|| {
                    format!(
                        "[auth.imap] server = {:?} is not HOST:PORT",
                        self.imap.server
                    )
                })?;
                if self.imap.tls == ImapTls::None && !is_loopback_host(&host) {
                    bail!("[auth.imap] tls = \"none\" is only allowed for a server on a loopback address; {host} is not: use \"starttls\" or \"implicit\"");
                }
            }
            AuthMode::Oidc => {
                let o = &self.oidc;
                if o.issuer.is_empty() || o.audience.is_empty() || o.jwks_url.is_empty() {
                    bail!("[auth.oidc] issuer, audience and jwks_url must all be set for mode = \"oidc\"");
                }
                if !(o.jwks_url.starts_with("https://") || o.jwks_url.starts_with("http://")) {
                    bail!(
                        "[auth.oidc] jwks_url = {:?} is not an http(s) URL",
                        o.jwks_url
                    );
                }
                if o.algorithms.is_empty() {
                    bail!("[auth.oidc] algorithms is empty");
                }
                for a in &o.algorithms {
                    let alg: jsonwebtoken::Algorithm = a.parse().map_err(|_| {
                        anyhow::anyhow!("[auth.oidc] algorithms: {a:?} is not a JWS algorithm")
                    })?;
                    if matches!(
                        alg,
                        jsonwebtoken::Algorithm::HS256
                            | jsonwebtoken::Algorithm::HS384
                            | jsonwebtoken::Algorithm::HS512
                    ) {
                        bail!("[auth.oidc] algorithms: {a} (a shared-secret algorithm) is not allowed; use the provider's public-key algorithm");
                    }
                }
            }
            AuthMode::Proxy => {
                if self.proxy.header.is_empty() {
                    bail!("[auth.proxy] header is empty");
                }
                http::HeaderName::from_bytes(self.proxy.header.as_bytes()).with_context(|| {
                    format!(
                        "[auth.proxy] header = {:?} is not a header name",
                        self.proxy.header
                    )
                })?;
                if self.proxy.trusted_sources.is_empty() {
                    bail!("[auth.proxy] trusted_sources is empty: no request could be trusted");
                }
                for s in &self.proxy.trusted_sources {
                    crate::auth::Cidr::parse(s).with_context(|| {
                        format!(
                            "[auth.proxy] trusted_sources: {s:?} is not an address or CIDR range"
                        )
                    })?;
                }
            }
        }
        for s in &self.trusted_proxies {
            crate::auth::Cidr::parse(s).with_context(|| {
                format!("[auth] trusted_proxies: {s:?} is not an address or CIDR range")
            })?;
        }
        if self.rate_limit.window_seconds == 0 {
            bail!("[auth.rate_limit] window_seconds must be at least 1");
        }
        Ok(())
    }
}

pub(crate) fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let (h, p) = s.rsplit_once(':').context("no port")?;
    let port: u16 = p.parse().context("bad port")?;
    if h.is_empty() {
        bail!("no host");
    }
    Ok((h.trim_matches(['[', ']']).to_string(), port))
}

pub(crate) fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
