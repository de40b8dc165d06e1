//! EventSource push (RFC 8620 §7.3): `state` events when the account's type states change,
//! so a webmail learns of key changes. States are re-read every second, which also
//! catches changes made by other processes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use sealpost_keystore::ObjectType;
use serde_json::json;

use crate::error::Problem;
use crate::JmapState;

const TYPES: &[(&str, ObjectType)] = &[
    ("PublicKey", ObjectType::PublicKey),
    ("Keystore", ObjectType::PublicKey),
    ("PrivateKey", ObjectType::PrivateKey),
    ("Escrow", ObjectType::Escrow),
    ("KeySettings", ObjectType::KeySettings),
];

#[derive(serde::Deserialize)]
pub struct Params {
    types: Option<String>,
    closeafter: Option<String>,
    ping: Option<u64>,
}

pub async fn handler(
    State(state): State<JmapState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(p): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let inner = state.inner();
    let principal = match inner.auth.authenticate(&headers, peer).await {
        Ok(p) => p,
        Err(e) => return inner.auth.error_response(e),
    };
    let wanted: Vec<(&'static str, ObjectType)> = match p.types.as_deref() {
        None | Some("*") | Some("") => TYPES.to_vec(),
        Some(list) => {
            let mut out = Vec::new();
            for t in list.split(',') {
                match TYPES.iter().find(|(n, _)| *n == t) {
                    Some(x) => out.push(*x),
                    None => {
                        return Problem::http(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "unknown type {:?} in types",
                                t.chars().take(64).collect::<String>()
                            ),
                        )
                        .into_response()
                    }
                }
            }
            out
        }
    };
    let close_after_state = match p.closeafter.as_deref() {
        None | Some("no") => false,
        Some("state") => true,
        Some(_) => {
            return Problem::http(StatusCode::BAD_REQUEST, "closeafter must be state or no")
                .into_response()
        }
    };
    let ping = p.ping.unwrap_or(0);
    if ping > 0 && ping < 5 {
        return Problem::http(
            StatusCode::BAD_REQUEST,
            "ping must be 0 or at least 5 seconds",
        )
        .into_response();
    }
    let ks = inner.ks.clone();
    let account = principal.account_id.clone();
    let initial = read_states(&ks, &account, &wanted).await;
    let stream = futures_util::stream::unfold((initial, false), move |(last, done)| {
        let ks = ks.clone();
        let account = account.clone();
        let wanted = wanted.clone();
        async move {
            if done {
                return None;
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = read_states(&ks, &account, &wanted).await;
                if now != last {
                    let changed: BTreeMap<&String, &String> = now
                        .iter()
                        .filter(|(k, v)| last.get(*k) != Some(*v))
                        .collect();
                    let data =
                        json!({"@type": "StateChange", "changed": {account.clone(): changed}});
                    let ev = Event::default().event("state").data(data.to_string());
                    return Some((Ok::<Event, Infallible>(ev), (now, close_after_state)));
                }
            }
        }
    });
    let sse = Sse::new(stream);
    if ping > 0 {
        return sse
            .keep_alive(
                KeepAlive::new().interval(Duration::from_secs(ping)).event(
                    Event::default()
                        .event("ping")
                        .data(json!({"interval": ping}).to_string()),
                ),
            )
            .into_response();
    }
    sse.into_response()
}

async fn read_states(
    ks: &sealpost_keystore::Keystore,
    account: &str,
    wanted: &[(&'static str, ObjectType)],
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (name, ty) in wanted {
        if let Ok(s) = ks.state(account, *ty).await {
            m.insert(name.to_string(), s.to_string());
        }
    }
    m
}
