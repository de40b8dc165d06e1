//! tests/scan-secrets finds a planted secret and names it, and passes clean logs.

use std::path::Path;
use std::process::{Command, Output};

fn scan(dir: &Path, markers: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scan-secrets"));
    cmd.arg(dir);
    match markers {
        Some(m) => cmd.env("SEALPOST_SECRET_MARKERS", m),
        None => cmd.env_remove("SEALPOST_SECRET_MARKERS"),
    };
    cmd.output().expect("run scan-secrets")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const CLEAN: &str = "2026-11-25T20:00:00Z  INFO sealpost_milter: message encrypted recipients=1\n\
2026-11-25T20:00:01Z DEBUG sealpost_jmap: login ok user=alice@example.org\n";

#[test]
fn clean_logs_pass_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sealpost-1.log"), CLEAN).unwrap();
    std::fs::write(dir.path().join("sealpost-2.log"), CLEAN).unwrap();
    let out = scan(dir.path(), None);
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 files, 4 lines"), "{text}");
}

#[test]
fn an_empty_log_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = scan(dir.path(), None);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains("log capture is broken"), "{msg}");
    // Unless the caller expects no log (a run of a few chosen tests).
    let out = Command::new(env!("CARGO_BIN_EXE_scan-secrets"))
        .arg("--allow-empty")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_listed_password_fails_naming_the_marker_not_the_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sealpost-7.log"),
        format!("{CLEAN}2026-11-25T20:00:02Z DEBUG sealpost: unlocking with officer-pass-Xq7\n"),
    )
    .unwrap();
    let out = scan(dir.path(), None);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("sealpost-7.log:3: tests/fixtures/secret-markers.txt:"),
        "{text}"
    );
    assert!(text.contains("OFFICER_PASS"), "{text}");
    assert!(
        !text.contains("officer-pass-Xq7"),
        "the scan printed the secret: {text}"
    );
}

#[test]
fn a_private_key_fragment_and_armor_fail() {
    let root = sealpost_test_support::workspace_root();
    let key =
        std::fs::read_to_string(root.join("tests/fixtures/keys/gpg-ed25519-secret.asc")).unwrap();
    let fragment = &sealpost_test_support::secrets::key_fragments(&key)[0];
    let dir = tempfile::tempdir().unwrap();
    // The key's base64 in one long line, as a log of the raw request would show it.
    let body: String = key
        .lines()
        .filter(|l| !l.starts_with('-') && !l.contains(':') && !l.starts_with('='))
        .collect();
    assert!(body.contains(fragment.as_str()));
    std::fs::write(
        dir.path().join("a.log"),
        format!("{CLEAN}DEBUG request body={body}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.log"),
        "DEBUG -----BEGIN PGP PRIVATE KEY BLOCK-----\n",
    )
    .unwrap();
    let out = scan(dir.path(), None);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("a.log:3: private key tests/fixtures/keys/gpg-ed25519-secret.asc, fragment"),
        "{text}"
    );
    assert!(text.contains("b.log:1: private key armor header"), "{text}");
    assert!(!text.contains(fragment.as_str()), "{text}");
}

#[test]
fn secrets_registered_at_run_time_count() {
    let dir = tempfile::tempdir().unwrap();
    let markers = dir.path().join("markers.txt");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(
        logs.join("x.log"),
        format!("{CLEAN}generated=Zq81-random-pass\n"),
    )
    .unwrap();
    // Clean before registration.
    assert!(scan(&logs, Some(&markers)).status.success());
    std::env::set_var("SEALPOST_SECRET_MARKERS", &markers);
    sealpost_test_support::register_secret("Zq81-random-pass");
    std::env::remove_var("SEALPOST_SECRET_MARKERS");
    let out = scan(&logs, Some(&markers));
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("x.log:3: SEALPOST_SECRET_MARKERS:2 (tests/support/tests/scan_secrets.rs:"),
        "{text}"
    );
}
