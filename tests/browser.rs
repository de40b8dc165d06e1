//! The reference web client (jmap-ext/web/, served at `/web/` with `[jmap] serve_web = true`)
//! in a real browser: Playwright (npm `playwright-core`, tests/js/browser.mjs) drives
//! Debian's Chromium against `sealpost jmap` with a SQLite keystore, an account with a
//! password and an installed security-officer key.
//!
//! In the page the user signs in, creates two keys with OpenPGP.js (protected with their
//! password, the password escrowed to the officer key), deactivates the older one and
//! exports the newer one's protected private key. The test then checks on the server that
//! both keys, both protected private keys and both escrows are stored and the right key is
//! active; the officer recovers the password with `sealpost escrow export` + `recover
//! --reveal-password`; `sealpost encrypt --account` makes a PGP/MIME message (the milter's
//! transform), and the page decrypts it with the stored key, refuses a wrong password, and
//! decrypts it with the exported key file.
//!
//! Screenshots of every step go to `target/browser-screenshots/`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sealpost_test_support::postfix::free_port;
use sealpost_test_support::{
    missing, need_program, register_private_key, run_with_input, which, workspace_root,
};
use sequoia_openpgp as openpgp;

use openpgp::crypto::Password;
use openpgp::packet::key::SecretKeyMaterial;
use openpgp::parse::Parse;
use openpgp::Cert;
use serde_json::Value;

const TEST: &str = "browser_web_client";
const ADDR: &str = "alice@example.org";
/// Spaces, a colon and non-ASCII: the page must build the Basic header from UTF-8 bytes.
const PASSWORD: &str = "Correct: horse, battery staple – 9!";
const OFFICER_PASS: &str = "officer passphrase for the browser test";
/// The key password the officer sets when the user lost theirs.
const NEW_KEY_PASSWORD: &str = "new key password from the officer 4417";
const MARKER: &str = "browser-marker-5d1c";

fn js_dir() -> PathBuf {
    workspace_root().join("tests/js")
}

/// Where the screenshots go: `target/browser-screenshots/` (next to `target/tmp`).
fn screenshot_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target directory")
        .join("browser-screenshots")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// Node with tests/js/node_modules installed from the lock file, once per test binary
/// (`npm ci` replaces node_modules, so the tests must not run it side by side).
fn node() -> Option<PathBuf> {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let node = which("node").ok_or("`node` is not installed")?;
        let npm = which("npm").ok_or("`npm` is not installed")?;
        let out = Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
            .current_dir(js_dir())
            .output()
            .map_err(|e| format!("cannot run npm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`npm ci` in tests/js failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(node)
    });
    match ready {
        Ok(node) => Some(node.clone()),
        Err(why) => missing(TEST, why),
    }
}

/// Debian's `chromium` (a wrapper script) or another Chromium on PATH.
fn chromium() -> Option<PathBuf> {
    which("chromium")
        .or_else(|| which("chromium-browser"))
        .or_else(|| need_program(TEST, "chromium"))
}

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Env {
    fn sealpost(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealpost"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("SEALPOST_CONFIG")
            .env_remove("SEALPOST_DATABASE_URL")
            .env("USER", "browser-test")
            .current_dir(self.dir.path());
        cmd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ok(what: &str, out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {stderr}",
        out.status.code()
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `sealpost jmap`, killed on drop.
struct Service {
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(env: &Env, port: u16) -> Service {
    let child = env
        .sealpost(&["jmap"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sealpost jmap");
    let mut service = Service { child };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = service.child.try_wait() {
            let mut err = String::new();
            let _ = service
                .child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err);
            panic!("sealpost jmap exited with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "sealpost jmap is not listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    service
}

/// A plain HTTP/1.1 GET: (status line, headers, body).
fn get(port: u16, path: &str) -> (String, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        raw[split + 4..].to_vec(),
    )
}

/// Runs one phase of tests/js/browser.mjs; returns its JSON result.
fn browser(node: &Path, phase: &str, opts: &Value) -> Value {
    let out = Command::new(node)
        .arg("browser.mjs")
        .arg(phase)
        .arg(opts.to_string())
        .current_dir(js_dir())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "browser.mjs {phase}: no JSON result ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && result.get("failure").is_none(),
        "browser.mjs {phase} failed: {}\nbrowser console: {:#}\n{}",
        result["failure"],
        result["console"],
        String::from_utf8_lossy(&out.stderr)
    );
    // The page ran without script errors or failed loads.
    for line in result["console"].as_array().unwrap() {
        let line = line.as_str().unwrap();
        if opts["wrongSignIn"] == true && line.contains("status of 401") {
            continue; // the deliberately wrong sign-in
        }
        assert!(
            !line.starts_with("error") && !line.starts_with("pageerror"),
            "browser console in phase {phase}: {line}"
        );
    }
    result
}

/// Every secret key packet of the exported file is encrypted, and opens with `password`.
fn check_exported_key(file: &Path, fingerprint: &str, password: &str) {
    let cert = Cert::from_file(file).expect("the exported key parses");
    assert_eq!(cert.fingerprint().to_hex(), fingerprint);
    assert!(cert.is_tsk(), "the export holds the secret key");
    let password = Password::from(password);
    let mut n = 0;
    for ka in cert.keys().secret() {
        let key = ka.key().clone();
        assert!(
            matches!(key.optional_secret(), Some(SecretKeyMaterial::Encrypted(_))),
            "secret key {} is not protected",
            key.fingerprint()
        );
        key.decrypt_secret(&password)
            .expect("the exported key opens with the user's password");
        n += 1;
    }
    assert_eq!(n, 2, "primary key and encryption subkey");
}

/// A running `sealpost jmap` with the web client on, an installed officer key and the
/// account ADDR with PASSWORD; the browser options for tests/js/browser.mjs.
struct Setup {
    env: Env,
    node: PathBuf,
    shots: PathBuf,
    officer_key: String,
    opts: Value,
    _service: Service,
}

/// `keys` is the `[jmap.keys]` section. None when a component is missing (see `missing`).
fn prepare(test: &str, keys: &str) -> Option<Setup> {
    let node = node()?;
    let chromium = chromium()?;

    // The page ships the OpenPGP.js build the tests pin (tests/js/package-lock.json).
    let vendored = workspace_root().join("jmap-ext/web/vendor/openpgp.min.mjs");
    let pinned = js_dir().join("node_modules/openpgp/dist/openpgp.min.mjs");
    assert!(
        std::fs::read(&vendored).unwrap() == std::fs::read(&pinned).unwrap(),
        "jmap-ext/web/vendor/openpgp.min.mjs differs from the openpgp package in tests/js: \
         copy node_modules/openpgp/dist/openpgp.min.mjs there after an upgrade"
    );

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("sealpost.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}/keystore.db\"\n\n[jmap]\nlisten = \"127.0.0.1:{port}\"\n\
             serve_web = true\n\n[jmap.keys]\n{keys}\n\n[metrics]\nlisten = \"\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let env = Env { dir, config };
    let shots = screenshot_dir(test);

    // The security officer's key, made offline and installed on the server.
    std::fs::write(env.path("officer-pass.txt"), format!("{OFFICER_PASS}\n")).unwrap();
    let officer: Value = serde_json::from_str(&ok(
        "escrow officer-init",
        env.sealpost(&[
            "escrow",
            "officer-init",
            "--out",
            "offline",
            "--passphrase-file",
            "officer-pass.txt",
            "--json",
        ])
        .output()
        .unwrap(),
    ))
    .unwrap();
    let officer_pub = officer["public_key"].as_str().unwrap();
    let officer_key = officer["secret_key"].as_str().unwrap().to_string();
    register_private_key(&std::fs::read_to_string(env.path(&officer_key)).unwrap());
    ok(
        "escrow officer-add",
        env.sealpost(&["escrow", "officer-add", officer_pub])
            .output()
            .unwrap(),
    );
    // The account and its password (static auth).
    ok(
        "accounts add",
        env.sealpost(&["accounts", "add", ADDR]).output().unwrap(),
    );
    ok(
        "accounts passwd",
        run_with_input(
            &mut env.sealpost(&["accounts", "passwd", ADDR]),
            format!("{PASSWORD}\n").as_bytes(),
        ),
    );

    let service = start(&env, port);
    let (status, headers, body) = get(port, "/web/");
    assert!(status.contains(" 200"), "{status}");
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(headers.contains("content-security-policy:"), "{headers}");
    assert!(String::from_utf8_lossy(&body).contains("<script type=\"module\" src=\"app.js\">"));

    let opts = serde_json::json!({
        "chromium": chromium,
        "url": format!("http://127.0.0.1:{port}/web/"),
        "address": ADDR,
        "password": PASSWORD,
        "out": shots,
    });
    Some(Setup {
        env,
        node,
        shots,
        officer_key,
        opts,
        _service: service,
    })
}

/// The officer exports the account's bundle and recovers the password of key `fpr`.
fn officer_recovers_password(setup: &Setup, fpr: &str) -> Value {
    let env = &setup.env;
    ok(
        "escrow export",
        env.sealpost(&[
            "escrow",
            "export",
            "--account",
            ADDR,
            "--reason",
            "browser test: user lost the password",
            "--out",
            "alice.bundle",
        ])
        .output()
        .unwrap(),
    );
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(env.path("alice.bundle")).unwrap()).unwrap();
    ok(
        "escrow recover",
        env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "alice.bundle",
            "--officer-key",
            &setup.officer_key,
            "--passphrase-file",
            "officer-pass.txt",
            "--key",
            fpr,
            "--reveal-password",
            "--out",
            "recovered.txt",
        ])
        .output()
        .unwrap(),
    );
    assert_eq!(
        std::fs::read_to_string(env.path("recovered.txt")).unwrap(),
        format!("{PASSWORD}\n"),
        "the officer recovers the user's password from the page's escrow"
    );
    bundle
}

/// The account's public keys as `sealpost keys list --json` shows them.
fn server_keys(env: &Env) -> Vec<Value> {
    let keys: Value = serde_json::from_str(&ok(
        "keys list",
        env.sealpost(&["keys", "list", ADDR, "--json"])
            .output()
            .unwrap(),
    ))
    .unwrap();
    keys.as_array().unwrap().clone()
}

/// Standard base64 with padding (a MIME body for the page to decode).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A message for ADDR made by the milter's transform (`sealpost encrypt --account`), to the
/// active key `active` only, saved as `delivered.eml`. Returns its path and text. `rich`:
/// multipart/alternative with a base64 text part, and the Subject protected (moved inside).
fn deliver(env: &Env, shots: &Path, active: &str, rich: bool) -> (PathBuf, String) {
    let head = format!(
        "From: Bob <bob@example.net>\r\nTo: {ADDR}\r\nSubject: =?utf-8?q?Caf=C3=A9_plans?=\r\n\
         Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <browser-1@example.net>\r\n\
         MIME-Version: 1.0\r\n"
    );
    let text = format!("Hello Alice, the marker is {MARKER}.\r\nSee you at the café.\r\n");
    let plain = if rich {
        let b64 = base64(text.as_bytes());
        format!(
            "{head}Content-Type: multipart/alternative; boundary=\"alt-1\"\r\n\r\n\
             --alt-1\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n\
             --alt-1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
             <p>Hello Alice (HTML part)</p>\r\n--alt-1--\r\n"
        )
    } else {
        format!(
            "{head}Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n\
             Hello Alice, the marker is {MARKER}.\r\nSee you at the caf=C3=A9.\r\n"
        )
    };
    let mut args = vec!["encrypt", "--account", ADDR];
    if rich {
        args.push("--protect-subject");
    }
    let sealed = ok(
        "encrypt",
        run_with_input(&mut env.sealpost(&args), plain.as_bytes()),
    );
    assert!(sealed.contains("multipart/encrypted"), "{sealed}");
    assert!(sealed.contains(&format!("fpr={active}")), "{sealed}");
    assert!(!sealed.contains(MARKER), "the body is in clear: {sealed}");
    if rich {
        assert!(
            !sealed.contains("Caf=C3=A9_plans"),
            "subject in clear: {sealed}"
        );
    }
    let eml = shots.join("delivered.eml");
    std::fs::write(&eml, &sealed).unwrap();
    (eml, sealed)
}

/// The page showed the decrypted message (`how`: "stored" or "keyFile").
fn shows_message(read: &Value, how: &str) {
    let body = read[how]["body"].as_str().unwrap_or_default();
    assert!(
        body.contains(&format!("Hello Alice, the marker is {MARKER}."))
            && body.contains("See you at the café."),
        "{how}: {read:#}"
    );
    let headers = read[how]["headers"].as_str().unwrap_or_default();
    assert!(headers.contains("Café plans"), "{how}: {read:#}");
    assert!(headers.contains("Bob <bob@example.net>"), "{how}: {read:#}");
}

/// Escrow optional: two keys, one deactivated, export, officer recovery, reading mail with
/// the stored key and the exported file.
#[test]
fn browser_web_client() {
    let Some(s) = prepare("full-flow", "escrow = \"optional\"") else {
        return;
    };
    let (env, node, shots) = (&s.env, &s.node, &s.shots);
    let mut opts = s.opts.clone();
    opts["wrongSignIn"] = Value::from(true);

    // 1. Key setup in the page.
    let setup = browser(node, "setup", &opts);
    assert!(
        setup["wrongSignIn"]
            .as_str()
            .is_some_and(|e| e.contains("Wrong address or password")),
        "{setup:#}"
    );
    assert_eq!(setup["focused"], "setup-title", "{setup:#}");
    assert_eq!(setup["escrowChoiceVisible"], true, "{setup:#}");
    assert!(
        setup["statusAfterCreate"]
            .as_str()
            .unwrap()
            .contains("the security officer can recover your password"),
        "{setup:#}"
    );
    let active = setup["active"].as_str().unwrap().to_string();
    let inactive = setup["inactive"].as_str().unwrap().to_string();
    for row in setup["keys"].as_array().unwrap() {
        assert_eq!(row["recovery"], "escrowed", "{setup:#}");
        assert!(
            row["privateKey"].as_str().unwrap().starts_with("stored"),
            "{setup:#}"
        );
    }
    assert_eq!(
        setup["exportName"],
        format!("sealpost-{active}.sec.asc"),
        "{setup:#}"
    );

    // 2. On the server: two public keys, the newer active, the older not.
    let keys = server_keys(env);
    assert_eq!(keys.len(), 2, "{keys:#?}");
    for k in &keys {
        let fpr = k["fingerprint"].as_str().unwrap();
        assert_eq!(k["active"], fpr == active, "{k:#}");
        assert!(fpr == active || fpr == inactive, "{k:#}");
        assert_eq!(k["user_ids"], serde_json::json!([format!("<{ADDR}>")]));
    }

    // Both protected private keys and both escrows are stored (the officer's export), and
    // the officer recovers the user's password from the escrow the page made.
    let bundle = officer_recovers_password(&s, &active);
    let entries = bundle["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{bundle:#}");
    for e in entries {
        assert!(
            e["private_key"]
                .as_str()
                .is_some_and(|k| k.contains("BEGIN PGP PRIVATE KEY BLOCK")),
            "no private key in {e:#}"
        );
        assert!(
            e["escrow"]
                .as_str()
                .is_some_and(|k| k.contains("BEGIN PGP MESSAGE")),
            "no escrow in {e:#}"
        );
    }
    // The exported file is the stored protected key, and opens with the password.
    let exported = PathBuf::from(setup["exported"].as_str().unwrap());
    let stored = entries
        .iter()
        .find(|e| e["fingerprint"] == active.as_str())
        .unwrap()["private_key"]
        .as_str()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&exported).unwrap().trim(),
        stored.trim()
    );
    check_exported_key(&exported, &active, PASSWORD);

    // 3. A delivered message: the milter's transform to the account's active key.
    let (eml, sealed) = deliver(env, shots, &active, false);
    assert!(!sealed.contains(&inactive), "encrypted to the inactive key");

    // 4. Reading it in the page.
    opts["wrongSignIn"] = Value::from(false);
    opts["eml"] = Value::from(eml.display().to_string());
    opts["keyFile"] = Value::from(exported.display().to_string());
    register_private_key(&std::fs::read_to_string(&exported).unwrap());
    let read = browser(node, "read", &opts);
    shows_message(&read, "stored");
    shows_message(&read, "keyFile");
    assert!(
        read["wrongPassword"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Wrong password")),
        "{read:#}"
    );

    let shots_taken = setup["screenshots"].as_array().unwrap().len()
        + read["screenshots"].as_array().unwrap().len();
    assert!(shots_taken >= 8, "{setup:#} {read:#}");

    // 5. The user lost the password: the officer unlocks the key with the escrowed password,
    // protects it under a new one (escrowed again) and reinstates it; the page reads the
    // mail with the new key password.
    let env = &s.env;
    std::fs::write(env.path("new-pass.txt"), format!("{NEW_KEY_PASSWORD}\n")).unwrap();
    ok(
        "escrow recover --reprotect",
        env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "alice.bundle",
            "--officer-key",
            &s.officer_key,
            "--passphrase-file",
            "officer-pass.txt",
            "--key",
            &active,
            "--reprotect",
            "--new-password-file",
            "new-pass.txt",
            "--escrow-out",
            "new-escrow.asc",
            "--out",
            "alice-new.asc",
        ])
        .output()
        .unwrap(),
    );
    ok(
        "escrow reinstate",
        env.sealpost(&[
            "escrow",
            "reinstate",
            "--account",
            ADDR,
            "alice-new.asc",
            "--escrow",
            "new-escrow.asc",
            "--reason",
            "browser test: new password",
        ])
        .output()
        .unwrap(),
    );
    let mut opts = s.opts.clone();
    opts["eml"] = Value::from(eml.display().to_string());
    opts["keyPassword"] = Value::from(NEW_KEY_PASSWORD);
    opts["shotStart"] = Value::from(40);
    let reread = browser(node, "read", &opts);
    shows_message(&reread, "stored");
    let shots_taken = shots_taken + reread["screenshots"].as_array().unwrap().len();
    eprintln!(
        "browser_web_client: {shots_taken} screenshots in {}",
        shots.display()
    );
}

/// Escrow required: the page offers no choice, and the private key and the escrow go up in
/// one request (the server refuses the key without it); the officer recovers the password.
#[test]
fn browser_escrow_required() {
    let Some(s) = prepare("escrow-required", "escrow = \"required\"") else {
        return;
    };
    // Signed in and set up with the keyboard alone.
    let mut opts = s.opts.clone();
    opts["keyboard"] = Value::from(true);
    let r = browser(&s.node, "one-key", &opts);
    assert_eq!(r["focused"], "setup-title", "{r:#}");
    assert_eq!(r["escrowChoiceVisible"], false, "{r:#}");
    assert_eq!(r["escrowRequiredVisible"], true, "{r:#}");
    assert!(r["policy"].as_str().unwrap().contains("required"), "{r:#}");
    let rows = r["keys"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{r:#}");
    assert_eq!(rows[0]["recovery"], "escrowed", "{r:#}");
    let fpr = rows[0]["fingerprint"].as_str().unwrap();
    let keys = server_keys(&s.env);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["fingerprint"], fpr);
    assert_eq!(keys[0]["active"], true);
    let bundle = officer_recovers_password(&s, fpr);
    assert_eq!(bundle["entries"].as_array().unwrap().len(), 1, "{bundle:#}");
}

/// Models 1 and 2 only (the server keeps no private keys): the page uploads the public key
/// and hands the protected private key to the user as a file.
#[test]
fn browser_key_on_device_only() {
    let Some(s) = prepare("device-only", "allowed_models = [1, 2]\nescrow = \"off\"") else {
        return;
    };
    let mut opts = s.opts.clone();
    opts["expectDownload"] = Value::from(true);
    let r = browser(&s.node, "one-key", &opts);
    assert_eq!(r["escrowChoiceVisible"], false, "{r:#}");
    assert_eq!(r["escrowRequiredVisible"], false, "{r:#}");
    assert!(
        r["policy"].as_str().unwrap().contains("kept by you"),
        "{r:#}"
    );
    let rows = r["keys"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{r:#}");
    assert_eq!(rows[0]["privateKey"], "not stored", "{r:#}");
    let fpr = rows[0]["fingerprint"].as_str().unwrap();
    assert_eq!(r["exportName"], format!("sealpost-{fpr}.sec.asc"), "{r:#}");
    check_exported_key(Path::new(r["exported"].as_str().unwrap()), fpr, PASSWORD);
    assert!(
        r["statusAfterCreate"]
            .as_str()
            .unwrap()
            .contains("saved as a file"),
        "{r:#}"
    );
    let keys = server_keys(&s.env);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["fingerprint"], fpr);

    // Mail to that key (multipart, protected subject) is read in the page with the
    // downloaded file.
    let (eml, _) = deliver(&s.env, &s.shots, fpr, true);
    opts["eml"] = Value::from(eml.display().to_string());
    opts["keyFile"] = r["exported"].clone();
    register_private_key(&std::fs::read_to_string(r["exported"].as_str().unwrap()).unwrap());
    opts["storedKey"] = Value::from(false);
    let read = browser(&s.node, "read", &opts);
    shows_message(&read, "keyFile");
    assert!(
        !read["keyFile"]["body"]
            .as_str()
            .unwrap()
            .contains("HTML part"),
        "the text part, not the HTML one: {read:#}"
    );
    assert!(
        read["wrongPassword"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Wrong password")),
        "{read:#}"
    );

    // Nothing for the officer: no private key and no escrow on the server.
    let out = s
        .env
        .sealpost(&[
            "escrow",
            "export",
            "--account",
            ADDR,
            "--reason",
            "browser test",
            "--out",
            "none.bundle",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing to export"), "{err}");
}
