//! The reference web client's files at `/web/` (`[jmap] serve_web`): absent by default,
//! served from the binary with their types and a strict Content-Security-Policy when on,
//! and self-contained (the page loads nothing but its own files). The page itself runs in
//! a browser in tests/browser.rs.

mod common;

use sealpost_jmap::{AuthConfig, JmapConfig};
use sealpost_keystore::{DatabaseConfig, Keystore, LookupConfig, PolicyConfig};

async fn server(serve_web: bool) -> (common::Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = DatabaseConfig {
        url: format!("sqlite://{}/ks.db", dir.path().display()),
        ..DatabaseConfig::default()
    };
    let ks = Keystore::open(&db, LookupConfig::default(), PolicyConfig::default())
        .await
        .unwrap();
    let config = JmapConfig {
        serve_web,
        ..JmapConfig::default()
    };
    (common::start(ks, config, AuthConfig::default()).await, dir)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn web_client_is_off_by_default() {
    let (s, _dir) = server(false).await;
    for path in ["/web/", "/web/app.js", "/web"] {
        let r = client()
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn web_client_files_are_served_from_the_binary() {
    let (s, _dir) = server(true).await;
    let c = client();

    let r = c.get(format!("{}/web", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "web/");

    let mut bodies = Vec::new();
    for (path, ctype) in [
        ("/web/", "text/html; charset=utf-8"),
        ("/web/index.html", "text/html; charset=utf-8"),
        ("/web/app.js", "text/javascript; charset=utf-8"),
        ("/web/style.css", "text/css; charset=utf-8"),
        (
            "/web/vendor/openpgp.min.mjs",
            "text/javascript; charset=utf-8",
        ),
    ] {
        let r = c.get(format!("{}{path}", s.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["content-type"], ctype, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        bodies.push((path, r.text().await.unwrap()));
    }
    // Exactly the committed files.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/web/");
    for (path, body) in &bodies {
        let file = match path.trim_start_matches("/web/") {
            "" => "index.html",
            f => f,
        };
        assert_eq!(
            *body,
            std::fs::read_to_string(format!("{root}{file}")).unwrap(),
            "{path}"
        );
    }
    // Self-contained: no remote scripts, styles or imports.
    let html = &bodies[0].1;
    assert!(!html.contains("src=\"http") && !html.contains("href=\"//"));
    let app = &bodies[2].1;
    let imports: Vec<&str> = app.lines().filter(|l| l.starts_with("import ")).collect();
    assert_eq!(
        imports,
        ["import * as openpgp from './vendor/openpgp.min.mjs';"]
    );

    for path in ["/web/nothing.js", "/web/../Cargo.toml", "/web/vendor/"] {
        let r = c.get(format!("{}{path}", s.base)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // The API still answers next to it.
    let r = c
        .get(format!("{}/.well-known/jmap", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
