//! `sealpost serve`, `sealpost milter` and `sealpost jmap`: long-running services with a
//! metrics endpoint.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use sealpost_keystore::Keystore;
use sealpost_milter::{service, Metrics};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{open_keystore, redact_url};
use crate::config::Config;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// Everything this build serves.
    All,
    /// The milter alone (plus metrics).
    Milter,
    /// The JMAP key service alone (plus metrics).
    Jmap,
}

struct Health {
    registry: Registry,
    keystore: Keystore,
}

pub async fn run(config: &Config, parts: Parts) -> Result<ExitCode> {
    if parts == Parts::Jmap && config.jmap.listen.is_empty() {
        anyhow::bail!("[jmap] listen is empty, so there is nothing to serve");
    }
    let keystore = match parts {
        Parts::All | Parts::Jmap => open_keystore(config).await?,
        // Milter-only nodes may use a read-only role: no migrations there.
        Parts::Milter => Keystore::connect(
            &config.database,
            config.lookup.clone(),
            config.policy.clone(),
        )
        .await
        .with_context(|| {
            format!(
                "cannot open the keystore at {}",
                redact_url(&config.database.url)
            )
        })?,
    };
    if parts == Parts::Milter {
        let pending = keystore.pending_migrations().await?;
        if !pending.is_empty() {
            anyhow::bail!(
                "the keystore schema is not up to date ({} migrations pending); run `sealpost check` with the owner role first",
                pending.len()
            );
        }
    }

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });

    // The JMAP service; a configuration error stops the start-up with the key's name.
    let jmap = if parts != Parts::Milter && !config.jmap.listen.is_empty() {
        let state = sealpost_jmap::JmapState::new(
            keystore.clone(),
            config.jmap.clone(),
            config.auth.clone(),
        )?;
        let l = tokio::net::TcpListener::bind(&config.jmap.listen)
            .await
            .with_context(|| format!("cannot listen on {} ([jmap] listen)", config.jmap.listen))?;
        info!(listen = %config.jmap.listen, auth = ?config.auth.mode, "JMAP service listening");
        let mut rx = stop_rx.clone();
        Some(tokio::spawn(sealpost_jmap::serve(l, state, async move {
            let _ = rx.wait_for(|s| *s).await;
        })))
    } else {
        None
    };

    if !config.metrics.listen.is_empty() {
        let health = Arc::new(Health {
            registry,
            keystore: keystore.clone(),
        });
        let app = Router::new()
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .with_state(health);
        let l = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} ([metrics] listen)",
                    config.metrics.listen
                )
            })?;
        info!(listen = %config.metrics.listen, "metrics listening");
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        });
    }

    if parts == Parts::Jmap {
        let jmap = jmap.expect("the JMAP service was started");
        match jmap.await {
            Ok(r) => r.context("the JMAP service stopped")?,
            Err(e) => anyhow::bail!("the JMAP service failed: {e}"),
        }
        keystore.close().await;
        info!("stopped");
        return Ok(ExitCode::SUCCESS);
    }

    let mode = config.milter.socket_mode().map_err(anyhow::Error::msg)?;
    let listener = service::bind(&config.milter.listen, mode)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} ([milter] listen)",
                config.milter.listen
            )
        })?;
    info!(listen = %config.milter.listen, "milter listening");

    let grace = Duration::from_secs(config.milter.shutdown_grace_secs);
    let mut rx = stop_rx.clone();
    let shutdown = async move {
        let _ = rx.wait_for(|s| *s).await;
        info!("shutting down: no new connections; finishing messages in flight");
    };
    let milter = service::run(
        listener,
        keystore.clone(),
        config.milter.clone(),
        metrics,
        shutdown,
    );
    tokio::pin!(milter);
    let mut rx = stop_rx.clone();
    let deadline = async move {
        let _ = rx.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = &mut milter => r.context("the milter stopped")?,
        _ = deadline => warn!(grace_secs = grace.as_secs(), "messages still in flight after the grace period; exiting (Postfix retries them)"),
    }
    if let Some(j) = jmap {
        // Stopped by the same signal; in-flight API calls get a moment to finish.
        let _ = tokio::time::timeout(Duration::from_secs(5), j).await;
    }
    keystore.close().await;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn metrics_text(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &h.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            "cannot encode metrics\n".to_string(),
        ),
    }
}

async fn ready(State(h): State<Arc<Health>>) -> impl IntoResponse {
    match sqlx::query("SELECT 1").execute(h.keystore.pool()).await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "keystore unreachable\n"),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
