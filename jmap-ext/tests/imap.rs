//! The "imap" auth mode against a real Dovecot started by the test (passwd-file users,
//! clear text on loopback only).
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use sealpost_jmap::{AuthConfig, AuthMode, ImapTls, JmapConfig};
use sealpost_test_support::need_program;
use sealpost_test_support::postfix::free_port;

struct Dovecot {
    child: Child,
    port: u16,
    /// The implicit-TLS port (when started with a certificate).
    tls_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dovecot's master binary: on PATH, or in /usr/sbin (not on every user's PATH).
fn dovecot(test: &str) -> Option<std::path::PathBuf> {
    let sbin = std::path::PathBuf::from("/usr/sbin/dovecot");
    if sbin.is_file() {
        return Some(sbin);
    }
    need_program(test, "dovecot")
}

/// A self-signed certificate for "localhost": (certificate PEM path, key PEM path).
fn self_signed(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let openssl = need_program("imap_auth_over_tls", "openssl")?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new(openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl could not make a certificate");
    Some((cert, key))
}

fn start_dovecot(program: &std::path::Path, users: &[(&str, &str)]) -> Dovecot {
    start_dovecot_tls(program, users, None)
}

fn start_dovecot_tls(
    program: &std::path::Path,
    users: &[(&str, &str)],
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> Dovecot {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for sub in ["run", "state", "home"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let passwd: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
        .collect();
    std::fs::write(d.join("passwd"), passwd).unwrap();
    let port = free_port();
    let tls_port = if tls.is_some() { free_port() } else { 0 };
    let ssl = match tls {
        // Logins only after STARTTLS (or on the TLS port).
        Some((cert, key)) => format!(
            "ssl = required\nssl_cert = <{}\nssl_key = <{}\ndisable_plaintext_auth = yes\n",
            cert.display(),
            key.display()
        ),
        None => "ssl = no\ndisable_plaintext_auth = no\n".to_string(),
    };
    // As root Dovecot drops to its own users; otherwise everything runs as the caller.
    let me = std::env::var("USER").unwrap_or_default();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let users_conf = if root {
        "userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=HOME/%u\n}\n".to_string()
    } else {
        format!(
            "default_internal_user = {me}\ndefault_login_user = {me}\n\
             userdb {{\n  driver = static\n  args = home=HOME/%u\n}}\n"
        )
    };
    let conf = format!(
        "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
         protocols = imap\nlisten = 127.0.0.1\n{ssl}\
         auth_mechanisms = plain login\n\
         passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/passwd\n}}\n\
         {users}\
         service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n  }}\n}}\n\
         service anvil {{\n  chroot =\n}}\n",
        d = d.display(),
        users = users_conf.replace("HOME", &d.join("home").display().to_string()),
    );
    std::fs::write(d.join("dovecot.conf"), conf).unwrap();
    let conf = d.join("dovecot.conf");
    let log = d.join("dovecot.log");
    let dovecot = Dovecot {
        child: Command::new(program)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .spawn()
            .unwrap(),
        port,
        tls_port,
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return dovecot;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    drop(dovecot);
    panic!("Dovecot did not start listening: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_auth_against_dovecot() {
    let Some(program) = dovecot("imap_auth_against_dovecot") else {
        return;
    };
    let dovecot = start_dovecot(
        &program,
        &[
            ("alice@example.org", "alice-imap-pw"),
            ("dave@example.org", "dave imap \"pw\" {3}"),
        ],
    );
    for (backend, ks, _dir) in backends("imap_auth_against_dovecot").await {
        eprintln!("backend: {backend}");
        users(&ks).await;
        let mut auth = AuthConfig::default();
        auth.mode = AuthMode::Imap;
        auth.imap.server = format!("127.0.0.1:{}", dovecot.port);
        auth.imap.tls = ImapTls::None;
        auth.cache_seconds = 60;
        let server = start(ks.clone(), JmapConfig::default(), auth.clone()).await;
        let http = reqwest::Client::new();
        let session = |u: &str, p: &str| {
            http.get(format!("{}/.well-known/jmap", server.base))
                .basic_auth(u, Some(p))
                .send()
        };
        let r = session("alice@example.org", "alice-imap-pw").await.unwrap();
        assert_eq!(r.status(), 200);
        let s: serde_json::Value = r.json().await.unwrap();
        assert_eq!(s["username"], "alice@example.org");
        // The keystore password is not what counts in this mode.
        assert_eq!(
            session("alice@example.org", "alice-login-pw")
                .await
                .unwrap()
                .status(),
            401
        );
        assert_eq!(
            session("alice@example.org", "wrong")
                .await
                .unwrap()
                .status(),
            401
        );
        // A password with spaces, quotes and braces; the account is created on first login.
        let r = session("dave@example.org", "dave imap \"pw\" {3}")
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(ks
            .account_for_address(&addr("dave@example.org"))
            .await
            .unwrap()
            .is_some());
        drop(server);

        // Without a reachable IMAP server: 503, not 401.
        auth.imap.server = format!("127.0.0.1:{}", free_port());
        let server = start(ks.clone(), JmapConfig::default(), auth.clone()).await;
        let r = reqwest::Client::new()
            .get(format!("{}/.well-known/jmap", server.base))
            .basic_auth("alice@example.org", Some("alice-imap-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
    }
    drop(dovecot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_auth_over_tls() {
    let Some(program) = dovecot("imap_auth_over_tls") else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        certs.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let Some((cert, key)) = self_signed(certs.path()) else {
        return;
    };
    let dovecot = start_dovecot_tls(
        &program,
        &[("alice@example.org", "alice-imap-pw")],
        Some((&cert, &key)),
    );
    let (_, ks, _dir) = backends("imap_auth_over_tls").await.remove(0);
    users(&ks).await;
    for (tls, port) in [
        (ImapTls::Starttls, dovecot.port),
        (ImapTls::Implicit, dovecot.tls_port),
    ] {
        let mut auth = AuthConfig::default();
        auth.mode = AuthMode::Imap;
        auth.imap.server = format!("localhost:{port}");
        auth.imap.tls = tls;
        auth.imap.ca_file = cert.display().to_string();
        let server = start(ks.clone(), JmapConfig::default(), auth.clone()).await;
        let http = reqwest::Client::new();
        let session = |u: &str, p: &str| {
            http.get(format!("{}/.well-known/jmap", server.base))
                .basic_auth(u, Some(p))
                .send()
        };
        let r = session("alice@example.org", "alice-imap-pw").await.unwrap();
        assert_eq!(r.status(), 200, "{tls:?}");
        let r = session("alice@example.org", "wrong").await.unwrap();
        assert_eq!(r.status(), 401, "{tls:?}");
        drop(server);

        // A certificate that is not trusted: the login is not attempted (503).
        auth.imap.ca_file = String::new();
        let server = start(ks.clone(), JmapConfig::default(), auth).await;
        let r = reqwest::Client::new()
            .get(format!("{}/.well-known/jmap", server.base))
            .basic_auth("alice@example.org", Some("alice-imap-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{tls:?} with an untrusted certificate");
    }
    drop(dovecot);
}
