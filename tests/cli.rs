//! The operator CLI, run as the built binary against SQLite and a real PostgreSQL.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sealpost_test_support::{field_strs, fixture, fresh_postgres};

struct Env {
    url: String,
    _dir: tempfile::TempDir,
}

impl Env {
    fn sealpost(&self, args: &[&str]) -> Output {
        self.sealpost_stdin(args, None)
    }

    fn sealpost_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(args)
            .env("SEALPOST_DATABASE_URL", &self.url)
            .env_remove("SEALPOST_CONFIG")
            .env("USER", "operator1")
            .current_dir(self._dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sealpost");
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "sealpost {args:?} panicked: {stderr}"
        );
        out
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

/// Exit code and the stderr text of a failed run, which must be a single line.
fn fails(out: &Output) -> (i32, String) {
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    (out.status.code().unwrap(), err)
}

async fn envs(test: &str) -> Vec<Env> {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vec![Env {
        url: format!("sqlite://{}/ks.db", dir.path().display()),
        _dir: dir,
    }];
    if let Some(url) = fresh_postgres(test).await {
        v.push(Env {
            url,
            _dir: tempfile::tempdir().unwrap(),
        });
    }
    v
}

fn key(name: &str) -> String {
    fixture(&format!("keys/{name}")).display().to_string()
}

#[tokio::test]
async fn keys_import_accepts_good_keys_and_refuses_bad_ones() {
    for env in envs("cli_keys_import").await {
        // A gpg ed25519/cv25519 key and an RSA key with an encryption subkey.
        let out = ok(&env.sealpost(&["keys", "import", "ed@example.org", &key("gpg-ed25519.asc")]));
        assert!(out.starts_with("imported "), "{out}");
        let out = ok(&env.sealpost(&[
            "keys",
            "import",
            "rsa@example.org",
            &key("gpg-rsa3072.asc"),
            "--json",
        ]));
        let rsa: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(rsa["account"], "rsa@example.org");
        assert_eq!(rsa["algorithm"], "RSA3072");

        // Standard input.
        let text = std::fs::read_to_string(key("sq-cv25519.asc")).unwrap();
        ok(&env.sealpost_stdin(&["keys", "import", "sq@example.org", "-"], Some(&text)));

        // Sign-only key: refused with the reason.
        let (code, err) = fails(&env.sealpost(&[
            "keys",
            "import",
            "signonly@example.org",
            &key("gpg-sign-only.asc"),
        ]));
        assert_eq!(code, 1);
        assert!(err.contains("no valid encryption-capable subkey"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");

        // Secret key: refused, never stored, and the message says what to do.
        let (code, err) = fails(&env.sealpost(&[
            "keys",
            "import",
            "ed@example.org",
            &key("gpg-ed25519-secret.asc"),
        ]));
        assert_eq!(code, 1);
        assert!(err.contains("secret key material"), "{err}");
        assert!(err.contains("gpg --export"), "{err}");

        // Expired, revoked, wrong user ID, two certificates, empty file, missing file.
        for (addr, file, expect) in [
            (
                "expired@example.org",
                key("gpg-expired.asc"),
                "expired on 2020-01-02",
            ),
            ("revoked@example.org", key("gpg-revoked.asc"), "revoked"),
            ("alice@example.org", key("gpg-ed25519.asc"), "no user ID"),
            ("ed@example.org", key("gpg-two-certs.asc"), "2 certificates"),
            ("ed@example.org", "/dev/null".to_string(), "empty"),
            (
                "ed@example.org",
                "/nonexistent.asc".to_string(),
                "cannot open key file",
            ),
        ] {
            let (code, err) = fails(&env.sealpost(&["keys", "import", addr, &file]));
            assert_eq!(code, 1, "{file}");
            assert!(err.contains(expect), "{file}: {err}");
            assert!(err.starts_with("sealpost: error: "), "{err}");
        }

        let list: serde_json::Value =
            serde_json::from_str(&ok(&env.sealpost(&["keys", "list", "--json"]))).unwrap();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 3, "refused keys must not be stored");
        for k in list {
            for field in [
                "fingerprint",
                "account",
                "active",
                "algorithm",
                "user_ids",
                "created",
                "expires",
            ] {
                assert!(k.get(field).is_some(), "missing {field} in {k}");
            }
            let fpr = k["fingerprint"].as_str().unwrap();
            assert!(fpr
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
            assert!(
                k.get("armored").is_none(),
                "list must not dump key material"
            );
        }
        // Refused imports created no accounts either.
        let accounts: serde_json::Value =
            serde_json::from_str(&ok(&env.sealpost(&["accounts", "list", "--json"]))).unwrap();
        assert_eq!(accounts.as_array().unwrap().len(), 3);
    }
}

#[tokio::test]
async fn keys_show_activate_deactivate_remove() {
    for env in envs("cli_keys_lifecycle").await {
        let out = ok(&env.sealpost(&[
            "keys",
            "import",
            "ed@example.org",
            &key("gpg-ed25519.asc"),
            "--json",
        ]));
        let k: serde_json::Value = serde_json::from_str(&out).unwrap();
        let fpr = k["fingerprint"].as_str().unwrap().to_string();
        let spaced: String = fpr
            .to_lowercase()
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");

        let show = ok(&env.sealpost(&["keys", "show", &spaced]));
        assert!(
            show.contains(&fpr) && show.contains("active:      yes"),
            "{show}"
        );
        let armor = ok(&env.sealpost(&["keys", "show", &fpr, "--armor"]));
        assert!(armor.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));

        ok(&env.sealpost(&["keys", "deactivate", &fpr]));
        let list: serde_json::Value = serde_json::from_str(&ok(&env.sealpost(&[
            "keys",
            "list",
            "ed@example.org",
            "--json",
        ])))
        .unwrap();
        assert_eq!(list[0]["active"], false);
        ok(&env.sealpost(&["keys", "activate", &fpr]));
        let show: serde_json::Value =
            serde_json::from_str(&ok(&env.sealpost(&["keys", "show", &fpr, "--json"]))).unwrap();
        assert_eq!(show["key"]["active"], true);
        let events = field_strs(show["history"].as_array().unwrap(), "event");
        assert_eq!(events, ["imported", "deactivated", "activated"]);
        assert_eq!(show["history"][0]["actor"], "cli:operator1");

        ok(&env.sealpost(&["keys", "remove", &fpr]));
        let (code, err) = fails(&env.sealpost(&["keys", "show", &fpr]));
        assert_eq!(code, 1);
        assert!(err.contains("no public key"), "{err}");
        let (code, err) = fails(&env.sealpost(&["keys", "remove", "zz"]));
        assert_eq!(code, 1);
        assert!(err.contains("not a key fingerprint"), "{err}");

        let audit = ok(&env.sealpost(&["audit", "verify"]));
        assert!(audit.contains("hash chain verified"), "{audit}");
        let rows: serde_json::Value = serde_json::from_str(&ok(&env.sealpost(&[
            "audit",
            "show",
            "--account",
            "ed@example.org",
            "--json",
        ])))
        .unwrap();
        let actions = field_strs(rows.as_array().unwrap(), "action");
        assert_eq!(
            actions,
            [
                "account.add",
                "key.imported",
                "key.deactivate",
                "key.activate",
                "key.remove"
            ]
        );
    }
}

#[tokio::test]
async fn accounts_add_list_passwd_remove() {
    for env in envs("cli_accounts").await {
        let out = ok(&env.sealpost(&[
            "accounts",
            "add",
            "alice@Example.org",
            "--alias",
            "a.smith@example.org",
            "--alias",
            "al@example.org",
        ]));
        assert!(out.contains("alice@example.org"), "{out}");
        let (code, err) = fails(&env.sealpost(&["accounts", "add", "al@example.org"]));
        assert_eq!(code, 1);
        assert!(
            err.contains("already belongs to account alice@example.org"),
            "{err}"
        );

        ok(&env.sealpost_stdin(
            &["accounts", "passwd", "alice@example.org"],
            Some("pw-123 with spaces\n"),
        ));
        let list: serde_json::Value =
            serde_json::from_str(&ok(&env.sealpost(&["accounts", "list", "--json"]))).unwrap();
        assert_eq!(list[0]["primary"], "alice@example.org");
        assert_eq!(list[0]["aliases"].as_array().unwrap().len(), 2);
        assert_eq!(list[0]["has_password"], true);
        let (code, err) =
            fails(&env.sealpost_stdin(&["accounts", "passwd", "alice@example.org"], Some("")));
        assert_eq!(code, 1);
        assert!(err.contains("no password"), "{err}");

        ok(&env.sealpost(&["accounts", "remove", "al@example.org"]));
        let list = ok(&env.sealpost(&["accounts", "list"]));
        assert_eq!(list.trim(), "no accounts");
        let (code, err) = fails(&env.sealpost(&["accounts", "remove", "al@example.org"]));
        assert_eq!(code, 1);
        assert!(
            err.contains("no account has the address al@example.org"),
            "{err}"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_bad_config_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        url: format!("sqlite://{}/ks.db", dir.path().display()),
        _dir: dir,
    };
    for args in [
        vec!["accounts", "add", "not-an-address"],
        vec!["keys", "frobnicate"],
        vec!["--no-such-flag"],
        vec![],
    ] {
        let out = env.sealpost(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let help = ok(&env.sealpost(&["keys", "import", "--help"]));
    assert!(help.contains("Example"), "{help}");

    let cfg = env._dir.path().join("bad.toml");
    for (text, expect) in [
        ("[database\nurl = 1", "not valid TOML"),
        ("[database]\nurl = \"mysql://x\"", "not supported"),
        ("[databse]\nurl = \"sqlite://x\"", "unknown field `databse`"),
        ("[policy]\nmin_rsa_bits = 1024", "below 2048"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(["--config", cfg.to_str().unwrap(), "check"])
            .env_remove("SEALPOST_DATABASE_URL")
            .current_dir(env._dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{text}: {err}");
        assert!(!err.contains("panicked"));
    }
}

#[tokio::test]
async fn check_reports_keys_that_expired_since_import() {
    use openpgp::serialize::SerializeInto;
    use sequoia_openpgp as openpgp;
    for env in envs("cli_check").await {
        assert!(ok(&env.sealpost(&["check"])).contains("migrations applied"));
        // A key that is valid for two seconds.
        let (cert, _) = openpgp::cert::CertBuilder::general_purpose(Some("<soon@example.org>"))
            .set_creation_time(std::time::SystemTime::now())
            .set_validity_period(std::time::Duration::from_secs(2))
            .generate()
            .unwrap();
        let path = env._dir.path().join("soon.asc");
        std::fs::write(&path, cert.armored().to_vec().unwrap()).unwrap();
        ok(&env.sealpost(&["keys", "import", "soon@example.org", path.to_str().unwrap()]));
        std::thread::sleep(std::time::Duration::from_secs(3));
        let (code, err) = fails(&env.sealpost(&["check"]));
        assert_eq!(code, 1);
        assert!(
            err.contains("no longer passes the policy") && err.contains("expired"),
            "{err}"
        );
        // It cannot be re-activated either.
        let fpr = cert.fingerprint().to_hex();
        ok(&env.sealpost(&["keys", "deactivate", &fpr]));
        ok(&env.sealpost(&["check"]));
        let (code, err) = fails(&env.sealpost(&["keys", "activate", &fpr]));
        assert_eq!(code, 1);
        assert!(err.contains("expired"), "{err}");
    }
}

#[test]
fn default_database_lives_in_sealpost_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(["accounts", "list"])
        .env_remove("SEALPOST_DATABASE_URL")
        .env_remove("SEALPOST_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(Path::new(&dir.path().join("sealpost-data/keystore.db")).is_file());
}

#[tokio::test]
async fn check_warns_about_an_escrow_policy_without_officer_key() {
    for env in envs("cli_check_escrow").await {
        // Default policy: escrow optional; without an officer key that is a warning only.
        let out = ok(&env.sealpost(&["check"]));
        assert!(
            out.contains("warning: [jmap.keys] escrow = \"optional\" but no officer key"),
            "{out}"
        );
        let required = |env: &Env| {
            Command::new(env!("CARGO_BIN_EXE_sealpost"))
                .arg("check")
                .env("SEALPOST_DATABASE_URL", &env.url)
                .env("SEALPOST_JMAP_KEYS_ESCROW", "required")
                .env_remove("SEALPOST_CONFIG")
                .current_dir(env._dir.path())
                .output()
                .unwrap()
        };
        let (code, err) = fails(&required(&env));
        assert_eq!(code, 1);
        assert!(
            err.contains("escrow = \"required\" but no officer key is active"),
            "{err}"
        );
        ok(&env.sealpost(&["escrow", "officer-add", &key("gpg-ed25519.asc")]));
        let out = ok(&required(&env));
        assert!(
            out.contains("escrow required: 1 active officer key(s)"),
            "{out}"
        );
    }
}

#[tokio::test]
async fn check_says_whether_the_milter_answers() {
    let env = &envs("cli_check_milter").await[0];
    let check = |listen: &str| {
        Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .arg("check")
            .env("SEALPOST_DATABASE_URL", &env.url)
            .env("SEALPOST_MILTER_LISTEN", listen)
            .env_remove("SEALPOST_CONFIG")
            .current_dir(env._dir.path())
            .output()
            .unwrap()
    };
    let closed = sealpost_test_support::postfix::free_port();
    let out = ok(&check(&format!("127.0.0.1:{closed}")));
    assert!(
        out.contains(&format!(
            "warning: nothing answers on the milter address 127.0.0.1:{closed}"
        )),
        "{out}"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let out = ok(&check(&addr.to_string()));
    assert!(
        out.contains(&format!("ok: milter answers on {addr}")),
        "{out}"
    );
}
