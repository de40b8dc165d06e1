//! The JMAP API endpoint (RFC 8620 §3): request parsing, capability and limit checks,
//! result references and method dispatch.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::auth::Principal;
use crate::error::{MethodError, Problem};
use crate::methods::{self, Ctx};
use crate::{JmapState, CAP_CORE, CAP_KEYS, CAP_PGP};

pub const KNOWN_CAPABILITIES: &[&str] = &[CAP_CORE, CAP_PGP, CAP_KEYS];

pub async fn not_found() -> Response {
    Problem::http(
        StatusCode::NOT_FOUND,
        "no such resource: the session is at /.well-known/jmap, the API at /jmap",
    )
    .into_response()
}

pub async fn handler(
    State(state): State<JmapState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let inner = state.inner();
    let principal = match inner.auth.authenticate(&headers, peer).await {
        Ok(p) => p,
        Err(e) => return inner.auth.error_response(e),
    };
    let Ok(_permit) = inner.requests.try_acquire() else {
        return Problem::limit(
            "maxConcurrentRequests",
            format!(
                "more than {} requests at once; retry when one has finished",
                inner.config.limits.max_concurrent_requests
            ),
        )
        .into_response();
    };
    let max = inner.config.limits.max_size_request as usize;
    let too_large = || {
        Problem::limit(
            "maxSizeRequest",
            format!("the request body is larger than maxSizeRequest ({max} bytes)"),
        )
        .into_response()
    };
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > max {
            return too_large();
        }
    }
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        if !ct.starts_with("application/json") {
            return Problem::not_json(format!(
                "the request must be application/json, not {:?}",
                ct.chars().take(80).collect::<String>()
            ))
            .into_response();
        }
    }
    match process(&state, &principal, &bytes).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(p) => p.into_response(),
    }
}

/// A parsed JMAP request.
pub struct Request {
    pub using: Vec<String>,
    pub calls: Vec<(String, Map<String, Value>, String)>,
    pub created_ids: Option<Map<String, Value>>,
}

fn parse_request(bytes: &[u8]) -> Result<Request, Problem> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        Problem::not_json(format!(
            "the request body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(mut obj) = v else {
        return Err(Problem::not_request("the request must be a JSON object"));
    };
    for k in obj.keys() {
        if !matches!(k.as_str(), "using" | "methodCalls" | "createdIds") {
            return Err(Problem::not_request(format!(
                "unknown request property {:?} (expected using, methodCalls, createdIds)",
                k.chars().take(64).collect::<String>()
            )));
        }
    }
    let using = match obj.remove("using") {
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|c| match c {
                Value::String(s) => Ok(s),
                _ => Err(Problem::not_request("using must be an array of strings")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(Problem::not_request("using must be an array of strings")),
        None => return Err(Problem::not_request("the request has no using property")),
    };
    let calls = match obj.remove("methodCalls") {
        Some(Value::Array(a)) => a
            .into_iter()
            .enumerate()
            .map(|(i, c)| match c {
                Value::Array(mut inv) if inv.len() == 3 => {
                    let id = inv.pop().expect("3");
                    let args = inv.pop().expect("3");
                    let name = inv.pop().expect("3");
                    match (name, args, id) {
                        (Value::String(n), Value::Object(a), Value::String(id)) => Ok((n, a, id)),
                        _ => Err(Problem::not_request(format!(
                            "methodCalls[{i}] must be [name: String, arguments: Object, callId: String]"
                        ))),
                    }
                }
                _ => Err(Problem::not_request(format!(
                    "methodCalls[{i}] must be an array of three: name, arguments, callId"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(Problem::not_request("methodCalls must be an array")),
        None => {
            return Err(Problem::not_request(
                "the request has no methodCalls property",
            ))
        }
    };
    let created_ids = match obj.remove("createdIds") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.values().all(Value::is_string) => Some(m),
        Some(_) => {
            return Err(Problem::not_request(
                "createdIds must be an object of creation ids to ids",
            ))
        }
    };
    Ok(Request {
        using,
        calls,
        created_ids,
    })
}

pub async fn process(
    state: &JmapState,
    principal: &Principal,
    bytes: &[u8],
) -> Result<Value, Problem> {
    let req = parse_request(bytes)?;
    for cap in &req.using {
        if !KNOWN_CAPABILITIES.contains(&cap.as_str()) {
            return Err(Problem::unknown_capability(cap));
        }
    }
    let limits = &state.config().limits;
    if req.calls.len() as u64 > limits.max_calls_in_request {
        return Err(Problem::limit(
            "maxCallsInRequest",
            format!(
                "the request has {} method calls; at most {} are allowed",
                req.calls.len(),
                limits.max_calls_in_request
            ),
        ));
    }
    let mut created: HashMap<String, String> = req
        .created_ids
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
        .collect();
    let mut responses: Vec<Value> = Vec::new();
    let mut ctx = Ctx::new(state, principal, &req);
    for (index, (name, args, call_id)) in req.calls.iter().enumerate() {
        ctx.index = index;
        ctx.created_ids = std::mem::take(&mut created);
        let outcome = match resolve_references(args, &responses) {
            Ok(args) => run_method(&mut ctx, &req.using, name, args).await,
            Err(e) => Err(e),
        };
        created = std::mem::take(&mut ctx.created_ids);
        match outcome {
            Ok(result) => responses.push(json!([name, result, call_id])),
            Err(e) => responses.push(json!(["error", e.to_json(), call_id])),
        }
    }
    let session_state = match crate::session::keys_capability(state).await {
        Ok(keys) => crate::session::session_state(principal, &keys),
        Err(_) => {
            return Err(Problem::http(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is unavailable; try again later",
            ))
        }
    };
    let mut out = json!({
        "methodResponses": responses,
        "sessionState": session_state,
    });
    if req.created_ids.is_some() {
        out["createdIds"] = json!(created);
    }
    Ok(out)
}

/// The capability a method needs in `using`.
fn capability_of(name: &str) -> Option<&'static str> {
    let (ty, _) = name.split_once('/')?;
    Some(match ty {
        "Core" => CAP_CORE,
        "Keystore" => CAP_PGP,
        "PublicKey" | "PrivateKey" | "Escrow" | "KeySettings" | "KeyPair" => CAP_KEYS,
        _ => return None,
    })
}

async fn run_method(
    ctx: &mut Ctx<'_>,
    using: &[String],
    name: &str,
    args: Map<String, Value>,
) -> Result<Value, MethodError> {
    let Some(cap) = capability_of(name) else {
        return Err(MethodError::new(
            "unknownMethod",
            format!(
                "unknown method {:?}",
                name.chars().take(64).collect::<String>()
            ),
        ));
    };
    if !using.iter().any(|u| u == cap) {
        return Err(MethodError::new(
            "unknownMethod",
            format!("{name} needs the capability {cap:?} in using"),
        ));
    }
    methods::dispatch(ctx, name, args).await
}

/// Replaces `#name` arguments by the values their result references point to (§3.7).
fn resolve_references(
    args: &Map<String, Value>,
    responses: &[Value],
) -> Result<Map<String, Value>, MethodError> {
    let mut out = Map::new();
    for (k, v) in args {
        let Some(plain) = k.strip_prefix('#') else {
            continue;
        };
        if args.contains_key(plain) {
            return Err(MethodError::invalid_arguments(format!(
                "both {plain:?} and \"#{plain}\" are given"
            )));
        }
        let bad = |d: String| MethodError::new("invalidResultReference", d);
        let r = v
            .as_object()
            .ok_or_else(|| bad(format!("#{plain} must be a ResultReference object")))?;
        let (
            Some(Value::String(result_of)),
            Some(Value::String(ref_name)),
            Some(Value::String(path)),
        ) = (r.get("resultOf"), r.get("name"), r.get("path"))
        else {
            return Err(bad(format!(
                "#{plain} needs resultOf, name and path, all strings"
            )));
        };
        let found = responses.iter().find(|resp| resp[2] == *result_of);
        let Some(resp) = found else {
            return Err(bad(format!(
                "#{plain}: no earlier method call has the call id {result_of:?}"
            )));
        };
        if resp[0] != *ref_name {
            return Err(bad(format!(
                "#{plain}: the response to {result_of:?} is {}, not {ref_name}",
                resp[0]
            )));
        }
        let value = evaluate_pointer(&resp[1], path).ok_or_else(|| {
            bad(format!(
                "#{plain}: the path {path:?} does not resolve in the result of {result_of:?}"
            ))
        })?;
        out.insert(plain.to_string(), value);
    }
    for (k, v) in args {
        if !k.starts_with('#') {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

/// JSON Pointer with JMAP's `*` extension (RFC 8620 §3.7).
pub fn evaluate_pointer(value: &Value, path: &str) -> Option<Value> {
    if path.is_empty() {
        return Some(value.clone());
    }
    let rest = path.strip_prefix('/')?;
    let (token, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let token = token.replace("~1", "/").replace("~0", "~");
    match value {
        Value::Array(items) if token == "*" => {
            let mut out = Vec::new();
            for item in items {
                match evaluate_pointer(item, tail)? {
                    Value::Array(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            Some(Value::Array(out))
        }
        Value::Array(items) => {
            let i: usize = token.parse().ok()?;
            evaluate_pointer(items.get(i)?, tail)
        }
        Value::Object(map) => evaluate_pointer(map.get(&token)?, tail),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_with_wildcard() {
        let v = json!({"list": [{"id": "a", "x": [1, 2]}, {"id": "b", "x": [3]}], "ids": ["p"]});
        assert_eq!(evaluate_pointer(&v, "/list/*/id"), Some(json!(["a", "b"])));
        assert_eq!(evaluate_pointer(&v, "/list/*/x"), Some(json!([1, 2, 3])));
        assert_eq!(evaluate_pointer(&v, "/ids/0"), Some(json!("p")));
        assert_eq!(evaluate_pointer(&v, "/nope"), None);
        assert_eq!(evaluate_pointer(&v, "list"), None);
    }
}
