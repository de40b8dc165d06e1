//! The security-officer commands (`sealpost escrow …`), run as the built binary on SQLite and
//! a real PostgreSQL, with GnuPG checking the results from the outside.
//!
//! One test drives the real JMAP service (client uploads for model 4, server generation for
//! model 5); the others store a user's protected private key and escrow the way that service
//! does, through the keystore's verification and storage functions.

mod e2e;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use sealpost_keystore::protection::{
    encrypt_to_officers, verify_escrow, verify_private_key, ProtectionConfig,
};
use sealpost_keystore::{Actor, Address, DatabaseConfig, Keystore, LookupConfig, PolicyConfig};
use sealpost_test_support::{
    capture_logs, field_strs, fixture, fresh_postgres, need_program, register_private_key,
    register_secret,
};
use sequoia_openpgp as openpgp;

use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;

const OFFICER_PASS: &str = "officer-pass-Xq7";
const USER_PASS: &str = "fixture-pass";
const NEW_PASS: &str = "new-user-pass-Zr4";
const SHARE_PASSES: [&str; 3] = ["share-one-Pa1", "share-two-Pb2", "share-three-Pc3"];

struct Env {
    url: String,
    dir: tempfile::TempDir,
    /// Everything the binary printed, to check that no secret ever shows.
    transcript: Mutex<Vec<u8>>,
}

impl Env {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn file(&self, rel: &str, content: &str) -> String {
        let p = self.path(rel);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    }

    fn sealpost(&self, args: &[&str]) -> Output {
        self.sealpost_stdin(args, None)
    }

    fn sealpost_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(args)
            .env("SEALPOST_DATABASE_URL", &self.url)
            .env_remove("SEALPOST_CONFIG")
            .env_remove("SUDO_USER")
            .env("USER", "officer1")
            .env("SEALPOST_LOG", "debug")
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sealpost");
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "sealpost {args:?} panicked: {stderr}"
        );
        let mut t = self.transcript.lock().unwrap();
        t.extend_from_slice(&out.stdout);
        t.extend_from_slice(&out.stderr);
        out
    }

    /// No test secret appears in anything the binary printed.
    fn assert_no_secret_printed(&self) {
        let t = String::from_utf8_lossy(&self.transcript.lock().unwrap()).to_string();
        for secret in [OFFICER_PASS, USER_PASS, NEW_PASS]
            .iter()
            .chain(SHARE_PASSES.iter())
        {
            assert!(!t.contains(secret), "a secret was printed: {secret}");
        }
        assert!(!t.contains("PRIVATE KEY BLOCK"), "key material was printed");
    }

    async fn keystore(&self) -> Keystore {
        let cfg = DatabaseConfig {
            url: self.url.clone(),
            ..DatabaseConfig::default()
        };
        Keystore::open(&cfg, LookupConfig::default(), PolicyConfig::default())
            .await
            .unwrap()
    }

    /// Stores a protected private key and its escrow like the JMAP service does for a
    /// client upload (recovery model 4).
    async fn upload(&self, address: &str, secret: &[u8], password: &[u8]) -> String {
        self.upload_with(address, secret, Some(password)).await
    }

    /// Like [`Env::upload`]; `escrowed` is what the client escrows (None: no escrow, model 3).
    async fn upload_with(&self, address: &str, secret: &[u8], escrowed: Option<&[u8]>) -> String {
        let ks = self.keystore().await;
        let id = ks
            .require_account(&Address::parse(address).unwrap())
            .await
            .unwrap();
        let publics: Vec<(String, String)> = ks
            .public_keys_of(&id)
            .await
            .unwrap()
            .into_iter()
            .map(|k| (k.fingerprint, k.armored))
            .collect();
        let cfg = ProtectionConfig::default();
        let actor = Actor("jmap:test".into());
        let key = verify_private_key(secret, &publics, None, &cfg).unwrap();
        ks.create_private_key(&id, &key, Some("laptop"), &actor)
            .await
            .unwrap();
        let officers: Vec<Cert> = ks
            .active_officer_keys()
            .await
            .unwrap()
            .iter()
            .map(|o| Cert::from_bytes(o.armored.as_bytes()).unwrap())
            .collect();
        if let Some(password) = escrowed {
            let blob = encrypt_to_officers(password, &officers).unwrap();
            let escrow = verify_escrow(blob.as_bytes(), &officers, &cfg).unwrap();
            ks.put_escrow(&id, &key.fingerprint, &escrow, &actor)
                .await
                .unwrap();
        }
        ks.close().await;
        key.fingerprint
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Exit code and the one-line error of a failed run.
fn fails(out: &Output) -> (i32, String) {
    assert!(
        !out.status.success(),
        "expected failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    (out.status.code().unwrap(), err)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

async fn envs(test: &str) -> Vec<Env> {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vec![Env {
        url: format!("sqlite://{}/ks.db", dir.path().display()),
        dir,
        transcript: Mutex::new(Vec::new()),
    }];
    if let Some(url) = fresh_postgres(test).await {
        v.push(Env {
            url,
            dir: tempfile::tempdir().unwrap(),
            transcript: Mutex::new(Vec::new()),
        });
    }
    v
}

async fn sqlite_env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    Env {
        url: format!("sqlite://{}/ks.db", dir.path().display()),
        dir,
        transcript: Mutex::new(Vec::new()),
    }
}

fn key(name: &str) -> String {
    fixture(&format!("keys/{name}")).display().to_string()
}

/// A private GnuPG home.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Gpg { home }
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run gpg");
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// A key made and protected by GnuPG itself: `gpg --export-secret-keys` with a passphrase
/// (its own S2K and count). Writes `NAME.pub.asc` and `NAME.sec.asc` into the test directory.
fn gpg_protected_key(env: &Env, uid: &str, name: &str, pass: &str) -> (PathBuf, PathBuf) {
    let gpg = Gpg::new();
    let pf = env.file(&format!("{name}-gen-pass.txt"), &format!("{pass}\n"));
    let gen = gpg.run(
        &[
            "--passphrase-file",
            &pf,
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign,cert",
            "2y",
        ],
        None,
    );
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let list = gpg.run(&["--with-colons", "--list-keys", uid], None);
    let fpr = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|r| r.trim_matches(':').to_string())
        })
        .unwrap();
    let sub = gpg.run(
        &[
            "--passphrase-file",
            &pf,
            "--quick-add-key",
            &fpr,
            "cv25519",
            "encr",
            "2y",
        ],
        None,
    );
    assert!(
        sub.status.success(),
        "{}",
        String::from_utf8_lossy(&sub.stderr)
    );
    let public = gpg.run(&["--armor", "--export", uid], None);
    let secret = gpg.run(
        &[
            "--passphrase-file",
            &pf,
            "--armor",
            "--export-secret-keys",
            uid,
        ],
        None,
    );
    assert!(
        secret.status.success(),
        "{}",
        String::from_utf8_lossy(&secret.stderr)
    );
    let (p, s) = (
        env.path(&format!("{name}.pub.asc")),
        env.path(&format!("{name}.sec.asc")),
    );
    std::fs::write(&p, public.stdout).unwrap();
    register_private_key(&String::from_utf8_lossy(&secret.stdout));
    std::fs::write(&s, secret.stdout).unwrap();
    (p, s)
}

/// Officer key without shares, installed; the user ed@example.org with the gpg fixture key
/// (passphrase "fixture-pass") stored and escrowed. Returns (officer fingerprint, officer
/// secret key path, user key fingerprint).
async fn setup_plain(env: &Env) -> (String, String, String) {
    let pf = env.file("officer-pass.txt", &format!("{OFFICER_PASS}\n"));
    let r = json(&env.sealpost(&[
        "escrow",
        "officer-init",
        "--out",
        "offline",
        "--passphrase-file",
        &pf,
        "--json",
    ]));
    let fpr = r["fingerprint"].as_str().unwrap().to_string();
    let secret = env
        .dir
        .path()
        .join(r["secret_key"].as_str().unwrap())
        .display()
        .to_string();
    register_private_key(&std::fs::read_to_string(&secret).unwrap());
    let public = env
        .dir
        .path()
        .join(r["public_key"].as_str().unwrap())
        .display()
        .to_string();
    let out = ok(&env.sealpost(&["escrow", "officer-add", &public]));
    assert!(out.contains(&fpr), "{out}");
    let (public, secret_key) = gpg_protected_key(env, "Ed User <ed@example.org>", "ed", USER_PASS);
    ok(&env.sealpost(&["keys", "import", "ed@example.org", public.to_str().unwrap()]));
    let secret_key = std::fs::read(secret_key).unwrap();
    // GnuPG protected it: iterated+salted S2K.
    let cert = Cert::from_bytes(&secret_key).unwrap();
    assert!(cert.keys().secret().all(|k| matches!(
        k.key().optional_secret(),
        Some(openpgp::packet::key::SecretKeyMaterial::Encrypted(_))
    )));
    let user = env
        .upload("ed@example.org", &secret_key, USER_PASS.as_bytes())
        .await;
    (fpr, secret, user)
}

#[tokio::test]
async fn officer_key_export_recover_reprotect_reinstate() {
    if need_program("escrow_full_flow", "gpg").is_none() {
        return;
    }
    for env in envs("escrow_full_flow").await {
        let (officer, officer_key, user_fpr) = setup_plain(&env).await;

        // The officer files: the secret and the revocation are private, the public key not.
        let offline = env.path("offline");
        assert_eq!(mode(&offline), 0o700);
        for e in std::fs::read_dir(&offline).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let expect = if name.ends_with(".pub.asc") {
                0o644
            } else {
                0o600
            };
            assert_eq!(mode(&p), expect, "{name}");
        }
        let pf = env.path("officer-pass.txt").display().to_string();

        let list = json(&env.sealpost(&["escrow", "officer-list", "--json"]));
        assert_eq!(list[0]["fingerprint"], officer.as_str());
        assert_eq!(list[0]["active"], true);
        // A secret key is not an officer public key.
        let (code, err) = fails(&env.sealpost(&["escrow", "officer-add", &officer_key]));
        assert_eq!(code, 1);
        assert!(err.contains("holds a secret key"), "{err}");

        // Export: a reason is required (usage error without, failure when blank).
        let out = env.sealpost(&[
            "escrow",
            "export",
            "--account",
            "ed@example.org",
            "--out",
            "b0",
        ]);
        assert_eq!(out.status.code(), Some(2));
        let (code, err) = fails(&env.sealpost(&[
            "escrow",
            "export",
            "--account",
            "ed@example.org",
            "--reason",
            " ",
            "--out",
            "b0",
        ]));
        assert_eq!(code, 1);
        assert!(err.contains("--reason"), "{err}");
        assert!(!env.path("b0").exists());
        let (_, err) = fails(&env.sealpost(&[
            "escrow",
            "export",
            "--account",
            "nobody@example.org",
            "--reason",
            "x",
            "--out",
            "b0",
        ]));
        assert!(err.contains("no account"), "{err}");

        let r = json(&env.sealpost(&[
            "escrow",
            "export",
            "--account",
            "ed@example.org",
            "--reason",
            "ticket 4711: lost password",
            "--out",
            "ed.bundle",
            "--json",
        ]));
        assert_eq!(r["entries"], 1);
        assert_eq!(r["with_escrow"], 1);
        let bundle_path = env.path("ed.bundle");
        assert_eq!(mode(&bundle_path), 0o600);
        let bundle: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&bundle_path).unwrap()).unwrap();
        let entry = &bundle["entries"][0];
        assert_eq!(entry["account"], "ed@example.org");
        assert_eq!(entry["fingerprint"], user_fpr.as_str());
        assert_eq!(entry["officer_fingerprint"], officer.as_str());
        assert_eq!(bundle["exported_by"], "cli:officer1");
        assert!(entry["public_key"]
            .as_str()
            .unwrap()
            .contains("PUBLIC KEY BLOCK"));
        // An existing bundle is never overwritten.
        let (_, err) = fails(&env.sealpost(&[
            "escrow",
            "export",
            "--account",
            "ed@example.org",
            "--reason",
            "again",
            "--out",
            "ed.bundle",
        ]));
        assert!(err.contains("already exists"), "{err}");

        // The export is audited with the operator and the reason.
        let audit =
            json(&env.sealpost(&["audit", "show", "--account", "ed@example.org", "--json"]));
        let row = audit
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["action"] == "escrow.export")
            .expect("export audit row");
        assert_eq!(row["actor"], "cli:officer1");
        assert_eq!(row["object"], user_fpr.as_str());
        assert!(row["reason"]
            .as_str()
            .unwrap()
            .contains("ticket 4711: lost password"));

        // The escrow was made to the officer key: GnuPG decrypts it with the officer's key.
        let gpg = Gpg::new();
        let imp = gpg.run(&["--passphrase-file", &pf, "--import", &officer_key], None);
        assert!(
            imp.status.success(),
            "{}",
            String::from_utf8_lossy(&imp.stderr)
        );
        let dec = gpg.run(
            &["--passphrase-file", &pf, "--decrypt"],
            Some(entry["escrow"].as_str().unwrap().as_bytes()),
        );
        assert!(
            dec.status.success(),
            "{}",
            String::from_utf8_lossy(&dec.stderr)
        );
        assert_eq!(dec.stdout, USER_PASS.as_bytes());

        // Reveal: never to a pipe; to a 0600 file on request.
        let recover = |extra: &[&str]| {
            let mut a = vec![
                "escrow",
                "recover",
                "--bundle",
                "ed.bundle",
                "--officer-key",
                &officer_key,
                "--passphrase-file",
                &pf,
            ];
            a.extend_from_slice(extra);
            env.sealpost(&a)
        };
        let (code, err) = fails(&recover(&["--reveal-password"]));
        assert_eq!(code, 1);
        assert!(err.contains("refusing to print a password"), "{err}");
        ok(&recover(&["--reveal-password", "--out", "pw.txt"]));
        assert_eq!(mode(&env.path("pw.txt")), 0o600);
        assert_eq!(
            std::fs::read_to_string(env.path("pw.txt")).unwrap(),
            format!("{USER_PASS}\n")
        );
        let (_, err) = fails(&recover(&["--reveal-password", "--out", "pw.txt"]));
        assert!(err.contains("already exists"), "{err}");

        // A wrong officer passphrase is named as such.
        let wrong = env.file("wrong.txt", "not-it\n");
        let (code, err) = fails(&env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "ed.bundle",
            "--officer-key",
            &officer_key,
            "--passphrase-file",
            &wrong,
            "--reveal-password",
            "--out",
            "pw2.txt",
        ]));
        assert_eq!(code, 1);
        assert!(
            err.contains("wrong passphrase for the officer key"),
            "{err}"
        );
        assert!(!env.path("pw2.txt").exists());
        // No action, or two: usage errors.
        assert_eq!(recover(&[]).status.code(), Some(2));
        assert_eq!(
            recover(&["--reveal-password", "--reprotect", "--out", "x"])
                .status
                .code(),
            Some(2)
        );

        // Re-protect under a new password: GnuPG unlocks the result with it, not the old one.
        let newpw = env.file("new-pass.txt", &format!("{NEW_PASS}\n"));
        ok(&recover(&[
            "--reprotect",
            "--new-password-file",
            &newpw,
            "--out",
            "ed-new.asc",
        ]));
        let new_key = env.path("ed-new.asc");
        assert_eq!(mode(&new_key), 0o600);
        let cert = Cert::from_file(&new_key).unwrap();
        assert_eq!(cert.fingerprint().to_hex(), user_fpr);
        for ka in cert.keys().secret() {
            match ka.key().optional_secret().unwrap() {
                openpgp::packet::key::SecretKeyMaterial::Encrypted(e) => {
                    #[allow(deprecated)]
                    let strong = matches!(e.s2k(), openpgp::crypto::S2K::Iterated { hash: openpgp::types::HashAlgorithm::SHA256, hash_bytes, .. } if *hash_bytes >= 60_000_000);
                    assert!(strong, "{:?}", e.s2k());
                }
                _ => panic!("re-protected key has an unprotected secret"),
            }
        }
        let gpg2 = Gpg::new();
        let imp = gpg2.run(&["--import", new_key.to_str().unwrap()], None);
        assert!(
            imp.status.success(),
            "{}",
            String::from_utf8_lossy(&imp.stderr)
        );
        let enc = gpg2.run(
            &[
                "--trust-model",
                "always",
                "--armor",
                "--encrypt",
                "-r",
                "ed@example.org",
            ],
            Some(b"hello after recovery\n"),
        );
        assert!(
            enc.status.success(),
            "{}",
            String::from_utf8_lossy(&enc.stderr)
        );
        let old = env.file("old-pass.txt", &format!("{USER_PASS}\n"));
        let bad = gpg2.run(&["--passphrase-file", &old, "--decrypt"], Some(&enc.stdout));
        assert!(
            !bad.status.success(),
            "the old password still unlocks the key"
        );
        let good = gpg2.run(
            &["--passphrase-file", &newpw, "--decrypt"],
            Some(&enc.stdout),
        );
        assert!(
            good.status.success(),
            "{}",
            String::from_utf8_lossy(&good.stderr)
        );
        assert_eq!(good.stdout, b"hello after recovery\n");

        // Reinstate: the stored key is the new one, the stale escrow is gone, all audited.
        let (code, err) = fails(&env.sealpost(&[
            "escrow",
            "reinstate",
            "--account",
            "ed@example.org",
            &key("sq-cv25519-secret.pgp"),
        ]));
        assert_eq!(code, 1);
        assert!(err.contains("not encrypted"), "{err}");
        let out = ok(&env.sealpost(&[
            "escrow",
            "reinstate",
            "--account",
            "ed@example.org",
            new_key.to_str().unwrap(),
            "--reason",
            "ticket 4711",
        ]));
        assert!(out.contains("removed its escrow"), "{out}");
        let ks = env.keystore().await;
        let id = ks
            .require_account(&Address::parse("ed@example.org").unwrap())
            .await
            .unwrap();
        let stored = ks
            .private_key_armored(&id, &user_fpr)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, std::fs::read_to_string(&new_key).unwrap());
        assert!(ks.escrow(&id, &user_fpr).await.unwrap().is_none());
        let rec = ks.private_key(&id, &user_fpr).await.unwrap().unwrap();
        assert_eq!(rec.protection.s2k, "iterated-salted");
        assert_eq!(rec.label.as_deref(), Some("laptop"));
        ks.close().await;
        let audit = json(&env.sealpost(&["audit", "show", "--json"]));
        let actions = field_strs(audit.as_array().unwrap(), "action");
        for a in [
            "officer.add",
            "escrow.create",
            "escrow.export",
            "escrow.destroy",
            "private_key.reinstate",
        ] {
            assert!(actions.contains(&a), "{a} missing in {actions:?}");
        }
        ok(&env.sealpost(&["audit", "verify"]));

        // Retire the officer key: listed as retired.
        let out = ok(&env.sealpost(&["escrow", "officer-retire", &officer]));
        assert!(out.contains("retired"), "{out}");
        let list = json(&env.sealpost(&["escrow", "officer-list", "--json"]));
        assert_eq!(list[0]["active"], false);

        env.assert_no_secret_printed();
    }
}

#[tokio::test]
async fn shares_two_of_three_recover_and_one_is_not_enough() {
    for env in envs("escrow_shares").await {
        let spf: Vec<String> = SHARE_PASSES
            .iter()
            .enumerate()
            .map(|(i, p)| env.file(&format!("share-pass-{i}.txt"), &format!("{p}\n")))
            .collect();
        let r = json(&env.sealpost(&[
            "escrow",
            "officer-init",
            "--out",
            "offline",
            "--algo",
            "cv25519",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--share-passphrase-file",
            &spf[0],
            "--share-passphrase-file",
            &spf[1],
            "--share-passphrase-file",
            &spf[2],
            "--json",
        ]));
        let officer = r["fingerprint"].as_str().unwrap().to_string();
        assert!(
            r["secret_key"].is_null(),
            "with shares no whole key is written"
        );
        let shares: Vec<String> = r["shares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| env.path(s.as_str().unwrap()).display().to_string())
            .collect();
        assert_eq!(shares.len(), 3);
        for (i, s) in shares.iter().enumerate() {
            assert_eq!(mode(Path::new(s)), 0o600);
            let f: serde_json::Value = serde_json::from_slice(&std::fs::read(s).unwrap()).unwrap();
            assert_eq!(f["index"], i + 1);
            assert_eq!(f["threshold"], 2);
            assert_eq!(f["shares"], 3);
            assert_eq!(f["officer_fingerprint"], officer.as_str());
            assert_eq!(f["protected"], true);
        }
        let public = env.path(r["public_key"].as_str().unwrap());
        ok(&env.sealpost(&["escrow", "officer-add", public.to_str().unwrap()]));
        let (public, secret_key) =
            gpg_protected_key(&env, "Ed User <ed@example.org>", "ed", USER_PASS);
        ok(&env.sealpost(&["keys", "import", "ed@example.org", public.to_str().unwrap()]));
        let secret_key = std::fs::read(secret_key).unwrap();
        env.upload("ed@example.org", &secret_key, USER_PASS.as_bytes())
            .await;
        ok(&env.sealpost(&[
            "escrow",
            "export",
            "--all",
            "--reason",
            "drill",
            "--out",
            "all.bundle",
        ]));

        // Any two shares recover: 1+3 and 3+2, passphrases in the order of the shares.
        for (n, (a, b)) in [(0usize, 2usize), (2, 1)].into_iter().enumerate() {
            let out = format!("pw-{n}.txt");
            ok(&env.sealpost(&[
                "escrow",
                "recover",
                "--bundle",
                "all.bundle",
                "--account",
                "ed@example.org",
                "--share",
                &shares[a],
                "--share",
                &shares[b],
                "--share-passphrase-file",
                &spf[a],
                "--share-passphrase-file",
                &spf[b],
                "--reveal-password",
                "--out",
                &out,
            ]));
            assert_eq!(
                std::fs::read_to_string(env.path(&out)).unwrap(),
                format!("{USER_PASS}\n")
            );
        }
        // One share is not enough, and says so.
        let (code, err) = fails(&env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "all.bundle",
            "--share",
            &shares[1],
            "--share-passphrase-file",
            &spf[1],
            "--reveal-password",
            "--out",
            "pw-x.txt",
        ]));
        assert_eq!(code, 1);
        assert!(
            err.contains("1 share(s) given, but 2 of officer key"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        // The same share twice is not two shares.
        let (_, err) = fails(&env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "all.bundle",
            "--share",
            &shares[1],
            "--share",
            &shares[1],
            "--share-passphrase-file",
            &spf[1],
            "--share-passphrase-file",
            &spf[1],
            "--reveal-password",
            "--out",
            "pw-x.txt",
        ]));
        assert!(err.contains("the same share was given twice"), "{err}");
        // A wrong share passphrase is named.
        let (_, err) = fails(&env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "all.bundle",
            "--share",
            &shares[0],
            "--share",
            &shares[1],
            "--share-passphrase-file",
            &spf[1],
            "--share-passphrase-file",
            &spf[0],
            "--reveal-password",
            "--out",
            "pw-x.txt",
        ]));
        assert!(err.contains("wrong passphrase or damaged file"), "{err}");
        // Shares of another officer key do not mix.
        let other = json(&env.sealpost(&[
            "escrow",
            "officer-init",
            "--out",
            "other",
            "--shares",
            "2",
            "--threshold",
            "2",
            "--json",
        ]));
        let foreign = env
            .path(other["shares"][0].as_str().unwrap())
            .display()
            .to_string();
        let (_, err) = fails(&env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "all.bundle",
            "--share",
            &shares[0],
            "--share",
            &foreign,
            "--share-passphrase-file",
            &spf[0],
            "--reveal-password",
            "--out",
            "pw-x.txt",
        ]));
        assert!(err.contains("belongs to officer key"), "{err}");
        assert!(!env.path("pw-x.txt").exists());
        // Bad numbers are refused before anything is written.
        let (_, err) = fails(&env.sealpost(&[
            "escrow",
            "officer-init",
            "--out",
            "bad",
            "--shares",
            "2",
            "--threshold",
            "3",
        ]));
        assert!(err.contains("at least --threshold"), "{err}");
        assert!(!env.path("bad").exists());

        env.assert_no_secret_printed();
    }
}

/// A v6 key protected the way OpenPGP.js 6 protects keys (Argon2 with AEAD), made here with
/// sequoia since no installed tool writes one.
fn argon2_v6_key(uid: &str, password: &str) -> (Cert, Vec<u8>) {
    use openpgp::cert::prelude::*;
    use openpgp::packet::Packet;
    use openpgp::types::{AEADAlgorithm, SymmetricAlgorithm};
    let (cert, _) = CertBuilder::general_purpose(Some(uid))
        .set_profile(openpgp::Profile::RFC9580)
        .unwrap()
        .generate()
        .unwrap();
    let pw = openpgp::crypto::Password::from(password);
    let mut packets: Vec<Packet> = Vec::new();
    let argon = || openpgp::crypto::S2K::Argon2 {
        salt: [7u8; 16],
        t: 1,
        p: 4,
        m: 15,
    };
    let primary = cert
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .unwrap();
    let (p, s) = primary.take_secret();
    let s = s
        .encrypt_with(
            &p,
            argon(),
            SymmetricAlgorithm::AES256,
            Some(AEADAlgorithm::OCB),
            &pw,
        )
        .unwrap();
    packets.push(p.add_secret(s).0.into());
    for ka in cert.keys().subkeys().secret() {
        let (p, s) = ka.key().clone().take_secret();
        let s = s
            .encrypt_with(
                &p,
                argon(),
                SymmetricAlgorithm::AES256,
                Some(AEADAlgorithm::OCB),
                &pw,
            )
            .unwrap();
        packets.push(p.add_secret(s).0.into());
    }
    let cert = cert.insert_packets(packets).unwrap().0;
    let armored = cert.as_tsk().armored().to_vec().unwrap();
    (cert, armored)
}

#[tokio::test]
async fn argon2_v6_key_recovers_and_is_reprotected_with_argon2() {
    for env in envs("escrow_argon2_v6").await {
        let pf = env.file("officer-pass.txt", &format!("{OFFICER_PASS}\n"));
        let r = json(&env.sealpost(&[
            "escrow",
            "officer-init",
            "--out",
            "offline",
            "--algo",
            "rsa4096",
            "--passphrase-file",
            &pf,
            "--json",
        ]));
        let officer_key = env.path(r["secret_key"].as_str().unwrap());
        register_private_key(&std::fs::read_to_string(&officer_key).unwrap());
        let public = env.path(r["public_key"].as_str().unwrap());
        ok(&env.sealpost(&["escrow", "officer-add", public.to_str().unwrap()]));

        let (cert, secret) = argon2_v6_key("<six@example.org>", USER_PASS);
        let public_key = env.path("six.asc");
        std::fs::write(&public_key, cert.armored().to_vec().unwrap()).unwrap();
        ok(&env.sealpost(&[
            "keys",
            "import",
            "six@example.org",
            public_key.to_str().unwrap(),
        ]));
        let fpr = env
            .upload("six@example.org", &secret, USER_PASS.as_bytes())
            .await;
        ok(&env.sealpost(&[
            "escrow",
            "export",
            "--account",
            "six@example.org",
            "--reason",
            "device lost",
            "--out",
            "six.bundle",
        ]));
        let newpw = env.file("new-pass.txt", &format!("{NEW_PASS}\n"));
        ok(&env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "six.bundle",
            "--officer-key",
            officer_key.to_str().unwrap(),
            "--passphrase-file",
            &pf,
            "--reprotect",
            "--new-password-file",
            &newpw,
            "--out",
            "six-new.asc",
        ]));
        let new = Cert::from_file(env.path("six-new.asc")).unwrap();
        assert_eq!(new.fingerprint().to_hex(), fpr);
        let mut n = 0;
        for ka in new.keys().secret() {
            let key = ka.key().clone();
            assert_eq!(key.version(), 6);
            match key.optional_secret().unwrap() {
                openpgp::packet::key::SecretKeyMaterial::Encrypted(e) => {
                    assert!(
                        matches!(e.s2k(), openpgp::crypto::S2K::Argon2 { .. }),
                        "{:?}",
                        e.s2k()
                    );
                }
                _ => panic!("unprotected secret"),
            }
            // Argon2 is slow in a debug build: try the old password on the primary only.
            if n == 0 {
                assert!(key.clone().decrypt_secret(&USER_PASS.into()).is_err());
            }
            key.decrypt_secret(&NEW_PASS.into()).unwrap();
            n += 1;
        }
        assert_eq!(n, 3);
        ok(&env.sealpost(&[
            "escrow",
            "reinstate",
            "--account",
            "six@example.org",
            env.path("six-new.asc").to_str().unwrap(),
        ]));
        let ks = env.keystore().await;
        let id = ks
            .require_account(&Address::parse("six@example.org").unwrap())
            .await
            .unwrap();
        let rec = ks.private_key(&id, &fpr).await.unwrap().unwrap();
        assert_eq!(rec.protection.s2k, "argon2");
        ks.close().await;
        env.assert_no_secret_printed();
    }
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let m = std::fs::metadata(&p).unwrap().modified().unwrap();
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    (std::fs::read(&p).unwrap(), m),
                );
            }
        }
    }
    out
}

#[tokio::test]
async fn decrypt_maildir_restores_the_original_messages() {
    let env = sqlite_env().await;
    let (_officer, officer_key, _user) = setup_plain(&env).await;
    let pf = env.path("officer-pass.txt").display().to_string();
    ok(&env.sealpost(&[
        "escrow",
        "export",
        "--account",
        "ed@example.org",
        "--reason",
        "mail recovery",
        "--out",
        "ed.bundle",
    ]));

    let plain = "Return-Path: <bob@example.net>\n\
Delivered-To: ed@example.org\n\
From: Bob <bob@example.net>\n\
To: Ed <ed@example.org>\n\
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\n\
Date: Wed, 25 Nov 2026 10:00:00 +0000\n\
Message-ID: <m1@example.net>\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: 8bit\n\
\n\
Grüße aus Berlin.\n\
-- \n\
Bob\n";
    let multipart = "From: Carol <carol@example.net>\n\
To: ed@example.org\n\
Subject: report\n\
Message-ID: <m2@example.net>\n\
MIME-Version: 1.0\n\
Content-Type: multipart/mixed;\n boundary=\"b1\"\n\
\n\
preamble\n\
--b1\n\
Content-Type: text/plain\n\
\n\
see attachment\n\
--b1\n\
Content-Type: application/octet-stream; name=\"a.bin\"\n\
Content-Transfer-Encoding: base64\n\
\n\
AAECAwQFBgcICQ==\n\
--b1--\n";
    let secret_subject = "From: Dan <dan@example.net>\n\
To: ed@example.org\n\
Subject: the merger\n\
Message-ID: <m3@example.net>\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=us-ascii\n\
\n\
Confidential.\n";
    let unencrypted =
        "From: eve@example.net\nTo: ed@example.org\nSubject: old mail\n\nfrom before sealpost\n";
    // CRLF line endings and a folded Content-Type. (One that ends in ";" comes back
    // without it: the transform's inner field is the same either way.)
    let crlf = "From: Fay <fay@example.net>\r\nTo: ed@example.org\r\nSubject: crlf\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain;\r\n charset=utf-8\r\n\r\nline one\r\nline two\r\n";
    // No Content-Type at all.
    let bare = "From: gus@example.net\nTo: ed@example.org\nSubject: bare\nMIME-Version: 1.0\n\nbare body\n";

    let encrypt = |msg: &str, extra: &[&str], to: &str| -> Vec<u8> {
        let mut args = vec!["encrypt", "--to", to];
        args.extend_from_slice(extra);
        let out = env.sealpost_stdin(&args, Some(msg.as_bytes()));
        ok(&out);
        out.stdout
    };
    let ed = env.path("ed.pub.asc").display().to_string();
    let other = key("sq-cv25519.asc");
    let md = env.path("Maildir");
    for d in [
        "cur",
        "new",
        "tmp",
        ".Archive/cur",
        ".Archive/new",
        ".Archive/tmp",
    ] {
        std::fs::create_dir_all(md.join(d)).unwrap();
    }
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("new/1.m1.host", encrypt(plain, &[], &ed)),
        ("cur/2.m2.host:2,S", encrypt(multipart, &[], &ed)),
        (
            "cur/3.m3.host:2,S",
            encrypt(secret_subject, &["--protect-subject"], &ed),
        ),
        ("cur/4.m4.host:2,S", unencrypted.as_bytes().to_vec()),
        (".Archive/cur/5.m5.host:2,", encrypt(plain, &[], &other)),
        ("dovecot-uidlist", b"3 V1 N6\n".to_vec()),
        ("cur/6.m6.host:2,S", encrypt(crlf, &[], &ed)),
        ("cur/7.m7.host:2,S", encrypt(bare, &[], &ed)),
    ];
    for (name, data) in &files {
        std::fs::write(md.join(name), data).unwrap();
    }
    assert!(String::from_utf8_lossy(&files[2].1).contains("Subject: [...]"));
    let before = snapshot(&md);

    let out = json(&env.sealpost(&[
        "escrow",
        "recover",
        "--bundle",
        "ed.bundle",
        "--officer-key",
        &officer_key,
        "--passphrase-file",
        &pf,
        "--decrypt-maildir",
        md.to_str().unwrap(),
        "--out",
        "Recovered",
        "--json",
    ]));
    assert_eq!(out["decrypted"], 5, "{out}");
    assert_eq!(out["other_key"], 1, "{out}");
    assert_eq!(out["copied"], 2, "{out}");
    assert_eq!(out["failed"].as_array().unwrap().len(), 0, "{out}");

    // The source is untouched.
    assert_eq!(snapshot(&md), before);
    let rec = env.path("Recovered");
    let read = |n: &str| std::fs::read(rec.join(n)).unwrap();
    // Decrypted messages are the originals, byte for byte.
    assert_eq!(String::from_utf8(read("new/1.m1.host")).unwrap(), plain);
    assert_eq!(
        String::from_utf8(read("cur/2.m2.host:2,S")).unwrap(),
        multipart
    );
    assert_eq!(
        String::from_utf8(read("cur/3.m3.host:2,S")).unwrap(),
        secret_subject
    );
    assert_eq!(String::from_utf8(read("cur/6.m6.host:2,S")).unwrap(), crlf);
    assert_eq!(String::from_utf8(read("cur/7.m7.host:2,S")).unwrap(), bare);
    // Everything else is copied unchanged.
    assert_eq!(read("cur/4.m4.host:2,S"), files[3].1);
    assert_eq!(read(".Archive/cur/5.m5.host:2,"), files[4].1);
    assert_eq!(read("dovecot-uidlist"), files[5].1);
    assert!(rec.join(".Archive/tmp").is_dir());
    assert_eq!(mode(&rec.join("new/1.m1.host")), 0o600);

    // The output must be new.
    let (code, err) = fails(&env.sealpost(&[
        "escrow",
        "recover",
        "--bundle",
        "ed.bundle",
        "--officer-key",
        &officer_key,
        "--passphrase-file",
        &pf,
        "--decrypt-maildir",
        md.to_str().unwrap(),
        "--out",
        "Recovered",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
    env.assert_no_secret_printed();
}

#[tokio::test]
async fn drill_catches_forged_and_missing_escrows() {
    if need_program("escrow_drill", "gpg").is_none() {
        return;
    }
    for env in envs("escrow_drill").await {
        let (officer, officer_key, _) = setup_plain(&env).await;
        let pf = env.path("officer-pass.txt").display().to_string();
        // A client escrowed a wrong password (the server cannot tell), another none at all.
        for (addr, name, escrowed) in [
            (
                "forged@example.org",
                "forged",
                Some(&b"not-the-password"[..]),
            ),
            ("model3@example.org", "model3", None),
        ] {
            let (public, secret) =
                gpg_protected_key(&env, &format!("User <{addr}>"), name, USER_PASS);
            ok(&env.sealpost(&["keys", "import", addr, public.to_str().unwrap()]));
            env.upload_with(addr, &std::fs::read(secret).unwrap(), escrowed)
                .await;
        }
        ok(&env.sealpost(&[
            "escrow",
            "export",
            "--all",
            "--reason",
            "quarterly drill",
            "--out",
            "all.bundle",
        ]));
        let out = env.sealpost(&[
            "escrow",
            "audit",
            "--bundle",
            "all.bundle",
            "--officer-key",
            &officer_key,
            "--passphrase-file",
            &pf,
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(1), "the drill must fail");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["officer"], officer.as_str());
        assert_eq!(r["checked"], 3);
        assert_eq!(r["failures"], 2);
        let verdict = |account: &str| {
            r["results"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["account"] == account)
                .unwrap()["verdict"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(verdict("ed@example.org"), "ok");
        assert_eq!(verdict("forged@example.org"), "password-wrong");
        assert_eq!(verdict("model3@example.org"), "escrow-missing");
        // The text report names each account with its verdict.
        let out = env.sealpost(&[
            "escrow",
            "audit",
            "--bundle",
            "all.bundle",
            "--officer-key",
            &officer_key,
            "--passphrase-file",
            &pf,
        ]);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("forged@example.org"), "{text}");
        assert!(text.contains("password wrong"), "{text}");
        assert!(text.contains("escrow missing"), "{text}");
        assert!(text.contains("1 ok, 2 failed"), "{text}");

        // Another officer key cannot open the escrows: undecryptable.
        let other_pf = env.file("other-pass.txt", &format!("{OFFICER_PASS}\n"));
        let o = json(&env.sealpost(&[
            "escrow",
            "officer-init",
            "--out",
            "other",
            "--passphrase-file",
            &other_pf,
            "--json",
        ]));
        let out = env.sealpost(&[
            "escrow",
            "audit",
            "--bundle",
            "all.bundle",
            "--officer-key",
            env.path(o["secret_key"].as_str().unwrap())
                .to_str()
                .unwrap(),
            "--passphrase-file",
            &other_pf,
            "--json",
        ]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ed = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["account"] == "ed@example.org")
            .unwrap();
        assert_eq!(ed["verdict"], "escrow-undecryptable");
        assert!(ed["detail"]
            .as_str()
            .unwrap()
            .contains("not addressed to officer key"));
        env.assert_no_secret_printed();
    }
}

#[tokio::test]
async fn rotation_moves_escrows_to_the_new_officer_key() {
    if need_program("escrow_rotation", "gpg").is_none() {
        return;
    }
    for env in envs("escrow_rotation").await {
        let (old, old_key, _) = setup_plain(&env).await;
        let pf = env.path("officer-pass.txt").display().to_string();
        // A model-3 user (key on the server, no escrow) has nothing to rotate.
        let (public, secret) = gpg_protected_key(&env, "M <m3@example.org>", "m3", USER_PASS);
        ok(&env.sealpost(&["keys", "import", "m3@example.org", public.to_str().unwrap()]));
        env.upload_with("m3@example.org", &std::fs::read(secret).unwrap(), None)
            .await;
        let spf: Vec<String> = SHARE_PASSES[..2]
            .iter()
            .enumerate()
            .map(|(i, p)| env.file(&format!("share-pass-{i}.txt"), &format!("{p}\n")))
            .collect();
        // The new officer key is split into shares this time.
        let n = json(&env.sealpost(&[
            "escrow",
            "officer-init",
            "--out",
            "new-officer",
            "--shares",
            "2",
            "--threshold",
            "2",
            "--share-passphrase-file",
            &spf[0],
            "--share-passphrase-file",
            &spf[1],
            "--json",
        ]));
        let new = n["fingerprint"].as_str().unwrap().to_string();
        let new_public = env.path(n["public_key"].as_str().unwrap());
        let new_shares: Vec<String> = n["shares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| env.path(s.as_str().unwrap()).display().to_string())
            .collect();
        ok(&env.sealpost(&[
            "escrow",
            "export",
            "--all",
            "--reason",
            "rotation",
            "--out",
            "all.bundle",
        ]));
        let r = json(&env.sealpost(&[
            "escrow",
            "rotate",
            "--bundle",
            "all.bundle",
            "--officer-key",
            &old_key,
            "--passphrase-file",
            &pf,
            "--new-public",
            new_public.to_str().unwrap(),
            "--out",
            "reescrows.json",
            "--json",
        ]));
        assert_eq!(r["rotated"], 1);
        assert_eq!(r["without_escrow"], 1);
        assert_eq!(r["skipped"], serde_json::json!([]));
        assert_eq!(mode(&env.path("reescrows.json")), 0o600);

        // The new key must be installed first.
        let (code, err) = fails(&env.sealpost(&["escrow", "import-rotation", "reescrows.json"]));
        assert_eq!(code, 1);
        assert!(err.contains("not installed and active"), "{err}");
        ok(&env.sealpost(&["escrow", "officer-add", new_public.to_str().unwrap()]));
        let r = json(&env.sealpost(&["escrow", "import-rotation", "reescrows.json", "--json"]));
        assert_eq!(r["imported"], 1);
        assert_eq!(r["old_retired"], true);
        let list = json(&env.sealpost(&["escrow", "officer-list", "--json"]));
        for k in list.as_array().unwrap() {
            let expect = k["fingerprint"] == new.as_str();
            assert_eq!(k["active"], expect, "{k}");
        }
        assert!(list
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["fingerprint"] == old.as_str()));

        // A fresh export now recovers with the new key's shares, and no longer with the old key.
        ok(&env.sealpost(&[
            "escrow",
            "export",
            "--account",
            "ed@example.org",
            "--reason",
            "after rotation",
            "--out",
            "ed.bundle",
        ]));
        ok(&env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "ed.bundle",
            "--share",
            &new_shares[1],
            "--share",
            &new_shares[0],
            "--share-passphrase-file",
            &spf[1],
            "--share-passphrase-file",
            &spf[0],
            "--reveal-password",
            "--out",
            "pw.txt",
        ]));
        assert_eq!(
            std::fs::read_to_string(env.path("pw.txt")).unwrap(),
            format!("{USER_PASS}\n")
        );
        let (code, err) = fails(&env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "ed.bundle",
            "--officer-key",
            &old_key,
            "--passphrase-file",
            &pf,
            "--reveal-password",
            "--out",
            "pw-old.txt",
        ]));
        assert_eq!(code, 1);
        assert!(err.contains("not addressed to officer key"), "{err}");
        let audit = json(&env.sealpost(&["audit", "show", "--json"]));
        assert!(audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "escrow.rotate" && r["actor"] == "cli:officer1"));
        ok(&env.sealpost(&["audit", "verify"]));
        env.assert_no_secret_printed();
    }
}

/// Runs the binary on a pseudo-terminal (util-linux `script`), typing `input`.
fn on_terminal(env: &Env, args: &[&str], input: &str) -> Output {
    let mut cmd = String::from(env!("CARGO_BIN_EXE_sealpost"));
    for a in args {
        cmd.push_str(" '");
        cmd.push_str(&a.replace('\'', r"'\''"));
        cmd.push('\'');
    }
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("SEALPOST_DATABASE_URL", &env.url)
        .env_remove("SEALPOST_CONFIG")
        .current_dir(env.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn passphrases_from_the_terminal_and_passwords_only_to_it() {
    if need_program("escrow_terminal", "gpg").is_none()
        || need_program("escrow_terminal", "script").is_none()
        || need_program("escrow_terminal", "setsid").is_none()
    {
        return;
    }
    let env = sqlite_env().await;
    // officer-init asks twice on the terminal; the key then opens with that passphrase.
    let typed = "typed-officer-Tq9";
    let out = on_terminal(
        &env,
        &["escrow", "officer-init", "--out", "tty-officer", "--json"],
        &format!("{typed}\n{typed}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("New passphrase for the officer key"),
        "{text}"
    );
    let key_file = std::fs::read_dir(env.path("tty-officer"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".key.asc"))
        .unwrap();
    let cert = Cert::from_file(&key_file).unwrap();
    let primary = cert
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .unwrap();
    primary.clone().decrypt_secret(&typed.into()).unwrap();
    assert!(primary.decrypt_secret(&"other".into()).is_err());
    // Two different entries: nothing is written.
    let out = on_terminal(
        &env,
        &["escrow", "officer-init", "--out", "tty-mismatch"],
        "one-Aa1\ntwo-Bb2\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("the two passphrases differ"));
    assert!(!env.path("tty-mismatch").exists());

    // Without a terminal and without a file, the command says so instead of waiting.
    let out = Command::new("setsid")
        .args(["-w", env!("CARGO_BIN_EXE_sealpost")])
        .args(["escrow", "officer-init", "--out", "no-tty"])
        .env("SEALPOST_DATABASE_URL", &env.url)
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no terminal to read the passphrase"));

    // The password is shown on a terminal (and only there, see the other tests).
    let (_, officer_key, _) = setup_plain(&env).await;
    let pf = env.path("officer-pass.txt").display().to_string();
    ok(&env.sealpost(&[
        "escrow",
        "export",
        "--account",
        "ed@example.org",
        "--reason",
        "terminal test",
        "--out",
        "ed.bundle",
    ]));
    let out = on_terminal(
        &env,
        &[
            "escrow",
            "recover",
            "--bundle",
            "ed.bundle",
            "--officer-key",
            &officer_key,
            "--passphrase-file",
            &pf,
            "--reveal-password",
        ],
        "",
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("password of ed@example.org"), "{text}");
    assert!(text.contains(USER_PASS), "{text}");
    env.assert_no_secret_printed();
}

/// Mail that Postfix delivered through the milter decrypts back to what was sent.
#[test]
fn decrypt_maildir_delivered_by_postfix_through_the_milter() {
    use sealpost_test_support::postfix::Postfix;
    let test = "escrow_postfix_maildir";
    let ks = e2e::Keystore::new(None, "");
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), e2e::MAILBOXES) else {
        return;
    };
    let _milter = e2e::Milter::start(&ks);
    let dir = ks.dir.path();
    let run = |args: &[&str]| {
        let out = ks.sealpost(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for secret in [OFFICER_PASS, USER_PASS] {
            assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
            assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));
        }
        out
    };
    let pf_file = dir.join("officer-pass.txt");
    std::fs::write(&pf_file, format!("{OFFICER_PASS}\n")).unwrap();
    let init = run(&[
        "escrow",
        "officer-init",
        "--out",
        "offline",
        "--passphrase-file",
        pf_file.to_str().unwrap(),
        "--json",
    ]);
    let init: serde_json::Value = serde_json::from_slice(&init.stdout).unwrap();
    let officer_key = dir.join(init["secret_key"].as_str().unwrap());
    register_private_key(&std::fs::read_to_string(&officer_key).unwrap());
    run(&[
        "escrow",
        "officer-add",
        dir.join(init["public_key"].as_str().unwrap())
            .to_str()
            .unwrap(),
    ]);

    // ed@'s client stores its key, protected, and escrows the password.
    let open = Cert::from_file(fixture("keys/gpg-ed25519-secret.asc")).unwrap();
    let pw = openpgp::crypto::Password::from(USER_PASS);
    let mut packets: Vec<openpgp::Packet> = Vec::new();
    let primary = open
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .unwrap();
    packets.push(primary.encrypt_secret(&pw).unwrap().into());
    for ka in open.keys().subkeys().secret() {
        packets.push(ka.key().clone().encrypt_secret(&pw).unwrap().into());
    }
    let protected = open.insert_packets(packets).unwrap().0;
    let env = Env {
        url: format!("sqlite://{}/ks.db", dir.display()),
        dir: tempfile::tempdir().unwrap(),
        transcript: Mutex::new(Vec::new()),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(env.upload(
        e2e::ED,
        &protected.as_tsk().armored().to_vec().unwrap(),
        USER_PASS.as_bytes(),
    ));

    let messages = [
        "From: Sender <sender@example.net>\nTo: <ed@example.org>\nSubject: first\n\
Date: Wed, 25 Nov 2026 10:00:00 +0000\nMessage-ID: <p1@example.net>\nMIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
Hallo Ed,\n.leading dot\nGr\u{fc}\u{df}e\n",
        "From: Sender <sender@example.net>\nTo: <ed@example.org>\nSubject: second\n\
Date: Wed, 25 Nov 2026 10:01:00 +0000\nMessage-ID: <p2@example.net>\nMIME-Version: 1.0\n\
Content-Type: multipart/alternative; boundary=\"alt\"\n\n--alt\n\
Content-Type: text/plain\n\nplain\n--alt\nContent-Type: text/html\n\n<p>html</p>\n--alt--\n",
    ];
    for (i, m) in messages.iter().enumerate() {
        let crlf = m.replace('\n', "\r\n");
        let r = pf.send(e2e::SENDER, &[e2e::ED], crlf.as_bytes());
        assert_eq!(r.accepted(), vec![e2e::ED], "{r:?}");
        pf.wait_for("ed", i + 1, e2e::WAIT);
    }
    let maildir = pf.maildir_base.join("ed");
    for f in pf.delivered("ed") {
        let data = std::fs::read(&f).unwrap();
        assert!(
            String::from_utf8_lossy(&data).contains("X-Sealpost: encrypted"),
            "not encrypted by the milter"
        );
    }
    let before = snapshot(&maildir);

    run(&[
        "escrow",
        "export",
        "--account",
        e2e::ED,
        "--reason",
        "postfix test",
        "--out",
        "ed.bundle",
    ]);
    let out = dir.join("recovered");
    let r = run(&[
        "escrow",
        "recover",
        "--bundle",
        "ed.bundle",
        "--officer-key",
        officer_key.to_str().unwrap(),
        "--passphrase-file",
        pf_file.to_str().unwrap(),
        "--decrypt-maildir",
        maildir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(r["decrypted"], 2, "{r}");
    assert_eq!(snapshot(&maildir), before, "the Maildir was changed");

    // Each decrypted message is Postfix's trace fields followed by the message as sent.
    let mut found = 0;
    for (rel, (data, _)) in snapshot(&out) {
        let text = String::from_utf8(data).unwrap();
        let Some(original) = messages.iter().find(|m| text.ends_with(*m)) else {
            panic!("{} is not an original message:\n{text}", rel.display());
        };
        let prefix = &text[..text.len() - original.len()];
        for line in prefix.lines() {
            assert!(
                [
                    "Return-Path:",
                    "Delivered-To:",
                    "X-Original-To:",
                    "Received:",
                    " ",
                    "\t"
                ]
                .iter()
                .any(|p| line.starts_with(p)),
                "unexpected field before the original header: {line}"
            );
        }
        assert!(!text.contains("X-Sealpost"));
        found += 1;
    }
    assert_eq!(found, 2);
}

/// A throw-away certificate with an encryption subkey.
fn make_cert(uid: &str) -> Cert {
    openpgp::cert::CertBuilder::general_purpose(Some(uid))
        .generate()
        .unwrap()
        .0
}

/// Standard base64 (for an HTTP Basic header).
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
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One HTTP/1.1 request to the JMAP service; returns the status and the JSON body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    user: &str,
    password: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        base64(format!("{user}:{password}").as_bytes()),
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8(resp).unwrap();
    let (head, mut payload) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let decoded;
    if chunked {
        let mut out = String::new();
        let mut rest = payload;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        decoded = out;
        payload = &decoded;
    }
    (status, serde_json::from_str(payload).unwrap())
}

/// Recovery models 4 and 5 through the real JMAP service: the client stores its protected
/// key and escrow (model 4), the server generates a key and escrows its password (model 5);
/// the officer recovers both, and the re-protected key is what the client downloads next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jmap_clients_store_escrows_the_officer_recovers_them() {
    use sealpost_jmap::{AuthConfig, JmapConfig, JmapState, CAP_CORE, CAP_KEYS};
    use serde_json::json;
    // The service runs in this process: its log is captured like the binary's.
    capture_logs();
    if need_program("escrow_jmap", "gpg").is_none() {
        return;
    }
    for env in envs("escrow_jmap").await {
        let pf = env.file("officer-pass.txt", &format!("{OFFICER_PASS}\n"));
        let r = json(&env.sealpost(&[
            "escrow",
            "officer-init",
            "--out",
            "offline",
            "--passphrase-file",
            &pf,
            "--json",
        ]));
        let officer = r["fingerprint"].as_str().unwrap().to_string();
        let officer_key = env.path(r["secret_key"].as_str().unwrap());
        register_private_key(&std::fs::read_to_string(&officer_key).unwrap());
        ok(&env.sealpost(&[
            "escrow",
            "officer-add",
            env.path(r["public_key"].as_str().unwrap())
                .to_str()
                .unwrap(),
        ]));
        let (public, secret) = gpg_protected_key(&env, "Ann <ann@example.org>", "ann", USER_PASS);
        ok(&env.sealpost(&[
            "keys",
            "import",
            "ann@example.org",
            public.to_str().unwrap(),
        ]));
        ok(&env.sealpost(&["accounts", "add", "ben@example.org"]));
        for user in ["ann@example.org", "ben@example.org"] {
            ok(&env.sealpost_stdin(&["accounts", "passwd", user], Some(b"login-pw-Lx5\n")));
        }

        let mut config = JmapConfig::default();
        config.keys.allowed_models = vec![1, 2, 3, 4, 5];
        config.keys.server_key_generation = true;
        let state = JmapState::new(env.keystore().await, config, AuthConfig::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(sealpost_jmap::serve(listener, state, async move {
            let _ = stopped.await;
        }));

        // The session announces the officer key the clients escrow to.
        let (status, session) = http(
            addr,
            "GET",
            "/.well-known/jmap",
            "ann@example.org",
            "login-pw-Lx5",
            None,
        )
        .await;
        assert_eq!(status, 200, "{session}");
        let caps = &session["capabilities"][CAP_KEYS];
        assert_eq!(caps["officerKeys"][0]["fingerprint"], officer.as_str());
        let officer_cert = Cert::from_bytes(
            caps["officerKeys"][0]["armored"]
                .as_str()
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let ann_id = session["primaryAccounts"][CAP_KEYS]
            .as_str()
            .unwrap()
            .to_string();
        let call = |user: &'static str, calls: serde_json::Value| async move {
            let (status, body) = http(
                addr,
                "POST",
                "/jmap",
                user,
                "login-pw-Lx5",
                Some(&json!({"using": [CAP_CORE, CAP_KEYS], "methodCalls": calls})),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["methodResponses"].clone()
        };

        // Model 4: the client uploads its gpg-protected key and escrows the password.
        let secret_text = std::fs::read_to_string(&secret).unwrap();
        let escrow =
            encrypt_to_officers(USER_PASS.as_bytes(), std::slice::from_ref(&officer_cert)).unwrap();
        let r = call(
            "ann@example.org",
            json!([["PrivateKey/set", {"accountId": ann_id,
                "create": {"k": {"armored": secret_text, "label": "laptop"}}}, "a"]]),
        )
        .await;
        let ann_fpr = Cert::from_file(&public).unwrap().fingerprint().to_hex();
        assert_eq!(r[0][1]["created"]["k"]["id"], ann_fpr.as_str(), "{r:?}");
        let r = call(
            "ann@example.org",
            json!([["Escrow/set", {"accountId": ann_id,
                "create": {"e": {"privateKeyId": ann_fpr, "armored": escrow}}}, "b"]]),
        )
        .await;
        assert_eq!(
            r[0][1]["created"]["e"]["officerFingerprint"],
            officer.as_str(),
            "{r:?}"
        );

        // Model 5: the server generates ben's key and hands the password out once.
        let (_, ben_session) = http(
            addr,
            "GET",
            "/.well-known/jmap",
            "ben@example.org",
            "login-pw-Lx5",
            None,
        )
        .await;
        let ben_id = ben_session["primaryAccounts"][CAP_KEYS]
            .as_str()
            .unwrap()
            .to_string();
        let r = call(
            "ben@example.org",
            json!([["KeyPair/generate", {"accountId": ben_id, "label": "webmail"}, "g"]]),
        )
        .await;
        let ben_password = r[0][1]["password"]
            .as_str()
            .unwrap_or_else(|| panic!("{r:?}"))
            .to_string();
        register_secret(&ben_password);

        // The officer exports both and recovers both passwords offline.
        ok(&env.sealpost(&[
            "escrow",
            "export",
            "--all",
            "--reason",
            "jmap flow",
            "--out",
            "all.bundle",
        ]));
        for (account, want) in [
            ("ann@example.org", USER_PASS),
            ("ben@example.org", ben_password.as_str()),
        ] {
            let out = format!("{account}.pw");
            ok(&env.sealpost(&[
                "escrow",
                "recover",
                "--bundle",
                "all.bundle",
                "--account",
                account,
                "--officer-key",
                officer_key.to_str().unwrap(),
                "--passphrase-file",
                &pf,
                "--reveal-password",
                "--out",
                &out,
            ]));
            assert_eq!(
                std::fs::read_to_string(env.path(&out)).unwrap(),
                format!("{want}\n")
            );
        }
        let drill = env.sealpost(&[
            "escrow",
            "audit",
            "--bundle",
            "all.bundle",
            "--officer-key",
            officer_key.to_str().unwrap(),
            "--passphrase-file",
            &pf,
        ]);
        assert!(
            drill.status.success(),
            "{}",
            String::from_utf8_lossy(&drill.stdout)
        );

        // Ann gets a new password; her client downloads the re-protected key.
        let newpw = env.file("new-pass.txt", &format!("{NEW_PASS}\n"));
        ok(&env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "all.bundle",
            "--account",
            "ann@example.org",
            "--officer-key",
            officer_key.to_str().unwrap(),
            "--passphrase-file",
            &pf,
            "--reprotect",
            "--new-password-file",
            &newpw,
            "--out",
            "ann-new.asc",
        ]));
        ok(&env.sealpost(&[
            "escrow",
            "reinstate",
            "--account",
            "ann@example.org",
            "ann-new.asc",
            "--reason",
            "jmap flow",
        ]));
        let r = call(
            "ann@example.org",
            json!([
                ["PrivateKey/get", {"accountId": ann_id, "ids": [ann_fpr], "properties": ["armored"]}, "a"],
                ["Escrow/get", {"accountId": ann_id, "ids": [ann_fpr]}, "b"],
            ]),
        )
        .await;
        let armored = r[0][1]["list"][0]["armored"].as_str().unwrap();
        assert_eq!(
            armored,
            std::fs::read_to_string(env.path("ann-new.asc")).unwrap()
        );
        assert_eq!(r[1][1]["notFound"], json!([ann_fpr]), "{r:?}");
        let cert = Cert::from_bytes(armored.as_bytes()).unwrap();
        for ka in cert.keys().secret() {
            ka.key().clone().decrypt_secret(&NEW_PASS.into()).unwrap();
        }

        // Ben's key was generated by the server (model 5): his new password is escrowed
        // again with the re-protected key, so the officer can still help him next time.
        let ben_fpr = call(
            "ben@example.org",
            json!([["PrivateKey/get", {"accountId": ben_id, "ids": null}, "a"]]),
        )
        .await[0][1]["list"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        ok(&env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "all.bundle",
            "--account",
            "ben@example.org",
            "--officer-key",
            officer_key.to_str().unwrap(),
            "--passphrase-file",
            &pf,
            "--reprotect",
            "--new-password-file",
            &newpw,
            "--out",
            "ben-new.asc",
            "--escrow-out",
            "ben-escrow.asc",
        ]));
        assert_eq!(mode(&env.path("ben-escrow.asc")), 0o600);
        let out = ok(&env.sealpost(&[
            "escrow",
            "reinstate",
            "--account",
            "ben@example.org",
            "ben-new.asc",
            "--escrow",
            "ben-escrow.asc",
        ]));
        assert!(
            out.contains("stored the escrow of the new password"),
            "{out}"
        );
        let r = call(
            "ben@example.org",
            json!([["Escrow/get", {"accountId": ben_id, "ids": [ben_fpr]}, "a"]]),
        )
        .await;
        assert_eq!(
            r[0][1]["list"][0]["officerFingerprint"],
            officer.as_str(),
            "{r:?}"
        );
        ok(&env.sealpost(&[
            "escrow",
            "export",
            "--account",
            "ben@example.org",
            "--reason",
            "check",
            "--out",
            "ben.bundle",
        ]));
        ok(&env.sealpost(&[
            "escrow",
            "recover",
            "--bundle",
            "ben.bundle",
            "--officer-key",
            officer_key.to_str().unwrap(),
            "--passphrase-file",
            &pf,
            "--reveal-password",
            "--out",
            "ben-new.pw",
        ]));
        assert_eq!(
            std::fs::read_to_string(env.path("ben-new.pw")).unwrap(),
            format!("{NEW_PASS}\n")
        );
        // An escrow not addressed to an active officer key is refused, the key untouched.
        let stranger = make_cert("<x@example.org>");
        let bad = encrypt_to_officers(b"whatever", std::slice::from_ref(&stranger)).unwrap();
        std::fs::write(env.path("bad-escrow.asc"), bad).unwrap();
        let (code, err) = fails(&env.sealpost(&[
            "escrow",
            "reinstate",
            "--account",
            "ben@example.org",
            "ben-new.asc",
            "--escrow",
            "bad-escrow.asc",
        ]));
        assert_eq!(code, 1);
        assert!(err.contains("the escrow is refused"), "{err}");

        let _ = stop.send(());
        let _ = server.await;
        env.assert_no_secret_printed();
    }
}
