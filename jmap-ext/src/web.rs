//! The reference web client (jmap-ext/web/), built into the binary and served at `/web/`
//! when `[jmap] serve_web = true`. Static files only: the page talks to the API like any
//! other client, with the user's credentials, from the same origin.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The page's files: path under `/web/`, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_bytes!("../web/index.html"),
    ),
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/style.css"),
    ),
    (
        "vendor/openpgp.min.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/vendor/openpgp.min.mjs"),
    ),
];

/// Scripts only from this origin (OpenPGP.js compiles WebAssembly for Argon2), calls only
/// to this origin, no framing.
const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'";

fn file(path: &str) -> Response {
    let Some((_, ctype, body)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such file in the web client\n",
        )
            .into_response();
    };
    let mut r = (StatusCode::OK, *body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/web` (redirect), `/web/` and its files.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/web", get(|| async { Redirect::permanent("web/") }))
        .route("/web/", get(|| async { file("") }))
        .route(
            "/web/{*path}",
            get(|axum::extract::Path(p): axum::extract::Path<String>| async move { file(&p) }),
        )
}
