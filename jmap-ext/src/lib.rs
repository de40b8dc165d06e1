//! sealpost's JMAP extension service (RFC 8620): webmail clients manage the account's
//! public keys, password-protected private keys, escrow blobs and key settings.
//!
//! Endpoints: the session resource at `/.well-known/jmap` and `/jmap/session`, the API at
//! `/jmap`, blob upload and download under `/jmap/upload/` and `/jmap/download/`, and
//! EventSource push at `/jmap/eventsource/`. Every request is authenticated ([`config::AuthMode`]); a user only ever sees
//! their own account.
//!
//! Build the state with [`JmapState::new`], then either [`router`] (tests, embedding) or
//! [`serve`] on a bound listener.

mod api;
pub mod auth;
mod blob;
mod cache;
pub mod config;
mod error;
mod imap;
mod methods;
mod oidc;
mod push;
mod session;
mod web;
pub mod wkd;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use sealpost_keystore::protection::ProtectionConfig;
use sealpost_keystore::Keystore;
use tokio::sync::Semaphore;

pub use auth::Principal;
pub use config::{
    AuthConfig, AuthMode, EscrowMode, ImapAuthConfig, ImapTls, JmapConfig, KeysConfig,
    LimitsConfig, OidcAuthConfig, ProxyAuthConfig, RateLimitConfig,
};

/// The capability of TMail's PGP keystore extension.
pub const CAP_PGP: &str = "com:linagora:params:jmap:pgp";
/// sealpost's own key-management capability.
pub const CAP_KEYS: &str = "org:sealpost:params:jmap:keys";
/// RFC 8620 core.
pub const CAP_CORE: &str = "urn:ietf:params:jmap:core";

/// Uploads processed at the same time (`maxConcurrentUpload`).
pub(crate) const MAX_CONCURRENT_UPLOAD: usize = 4;

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct JmapState {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub ks: Keystore,
    pub config: JmapConfig,
    pub auth: auth::Authenticator,
    pub protection: ProtectionConfig,
    pub requests: Semaphore,
    pub cache: cache::Cache,
    pub blobs: blob::BlobStore,
    pub uploads: Semaphore,
}

impl JmapState {
    /// Validates the configuration and builds the service state. Fails with a one-line
    /// reason naming the config key on a bad configuration.
    pub fn new(ks: Keystore, config: JmapConfig, auth: AuthConfig) -> anyhow::Result<JmapState> {
        config.validate()?;
        auth.validate()?;
        let protection = ProtectionConfig {
            min_s2k_count: config.keys.min_s2k_count,
            max_blob_size: config.limits.max_blob_size as usize,
            allow_legacy_pkcs12: config.keys.allow_legacy_pkcs12,
        };
        let requests = Semaphore::new(config.limits.max_concurrent_requests as usize);
        let auth = auth::Authenticator::new(auth, ks.clone())?;
        let cache = cache::Cache::new(config.cache_ms);
        let blobs = blob::BlobStore::new(config.limits.max_blob_size as usize);
        Ok(JmapState {
            inner: Arc::new(Inner {
                ks,
                config,
                auth,
                protection,
                requests,
                cache,
                blobs,
                uploads: Semaphore::new(MAX_CONCURRENT_UPLOAD),
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub fn config(&self) -> &JmapConfig {
        &self.inner.config
    }
}

/// The service's routes with CORS applied. Serve it with connect info
/// (`into_make_service_with_connect_info::<SocketAddr>()`), as [`serve`] does: the source
/// address is needed for rate limiting and the proxy auth mode.
pub fn router(state: JmapState) -> Router {
    let cors = state.inner.config.cors_layer();
    let mut r = Router::new()
        .route("/.well-known/jmap", get(session::handler))
        .route("/jmap/session", get(session::handler))
        .route("/jmap", post(api::handler))
        .route("/jmap/upload/{account}/", post(blob::upload))
        .route(
            "/jmap/download/{account}/{blob}/{name}",
            get(blob::download),
        )
        .route("/jmap/eventsource/", get(push::handler))
        .merge(wkd::routes(&state.inner.config.wkd))
        .merge(if state.inner.config.serve_web {
            web::routes()
        } else {
            Router::new()
        })
        .fallback(api::not_found)
        // The API handler reads the body itself, enforcing maxSizeRequest.
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    if let Some(c) = cors {
        r = r.layer(c);
    }
    r
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: JmapState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
