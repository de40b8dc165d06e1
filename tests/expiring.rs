//! `sealpost keys expiring`, run as the built binary against SQLite and a real PostgreSQL,
//! with keys whose primary key or encryption subkey expires at known times.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sealpost_test_support::fresh_postgres;
use sequoia_openpgp as openpgp;

use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::serialize::SerializeInto;
use openpgp::types::KeyFlags;
use openpgp::Cert;

const DAY: u64 = 86_400;

fn sealpost(url: &str, dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(args)
        .env("SEALPOST_DATABASE_URL", url)
        .env_remove("SEALPOST_CONFIG")
        .current_dir(dir)
        .output()
        .expect("run sealpost");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "sealpost {args:?}: {stderr}");
    out
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A certificate for `addr` created a minute ago whose primary key lives `primary` and whose
/// one encryption subkey lives `subkey` (None: no expiry).
fn cert(addr: &str, created: SystemTime, primary: Option<u64>, subkey: Option<u64>) -> Cert {
    let (cert, _) = CertBuilder::new()
        .add_userid(format!("<{addr}>"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_creation_time(created)
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .set_validity_period(primary.map(Duration::from_secs))
        .add_subkey(
            KeyFlags::empty()
                .set_transport_encryption()
                .set_storage_encryption(),
            subkey.map(Duration::from_secs),
            None,
        )
        .generate()
        .unwrap();
    cert
}

fn import(url: &str, dir: &Path, addr: &str, cert: &Cert) -> String {
    let path = dir.join(format!("{addr}.asc"));
    std::fs::write(&path, cert.armored().to_vec().unwrap()).unwrap();
    ok(&sealpost(
        url,
        dir,
        &["keys", "import", addr, path.to_str().unwrap()],
    ));
    cert.fingerprint().to_hex()
}

fn expiring_json(url: &str, dir: &Path, days: &str) -> Vec<serde_json::Value> {
    let out = ok(&sealpost(
        url,
        dir,
        &["keys", "expiring", "--days", days, "--json"],
    ));
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
}

fn addresses(list: &[serde_json::Value]) -> Vec<&str> {
    sealpost_test_support::field_strs(list, "address")
}

#[tokio::test]
async fn keys_expiring_lists_active_keys_by_their_encryption_deadline() {
    let sqlite_dir = tempfile::tempdir().unwrap();
    let mut envs = vec![(
        format!("sqlite://{}/ks.db", sqlite_dir.path().display()),
        sqlite_dir,
    )];
    if let Some(url) = fresh_postgres("keys_expiring").await {
        envs.push((url, tempfile::tempdir().unwrap()));
    }
    for (url, dir) in &envs {
        let dir = dir.path();
        let created = SystemTime::now() - Duration::from_secs(60);
        let c0 = unix(created);

        // Valid for a few seconds after import: already unusable when listed.
        let gone_at = SystemTime::now() + Duration::from_secs(5);
        let gone = cert(
            "gone@example.org",
            created,
            Some(gone_at.duration_since(created).unwrap().as_secs()),
            None,
        );
        let gone_fpr = import(url, dir, "gone@example.org", &gone);

        let soon_fpr = import(
            url,
            dir,
            "soon@example.org",
            &cert("soon@example.org", created, Some(10 * DAY), None),
        );
        // The certificate never expires, its only encryption subkey does.
        let sub_fpr = import(
            url,
            dir,
            "sub@example.org",
            &cert("sub@example.org", created, None, Some(20 * DAY)),
        );
        import(
            url,
            dir,
            "later@example.org",
            &cert("later@example.org", created, Some(60 * DAY), None),
        );
        import(
            url,
            dir,
            "never@example.org",
            &cert("never@example.org", created, None, None),
        );
        // Expires first of all, but mail is no longer encrypted to it.
        let off = import(
            url,
            dir,
            "off@example.org",
            &cert("off@example.org", created, Some(2 * DAY), None),
        );
        ok(&sealpost(url, dir, &["keys", "deactivate", &off]));

        if let Ok(wait) = (gone_at + Duration::from_secs(1)).duration_since(SystemTime::now()) {
            std::thread::sleep(wait);
        }

        // 30 days: the expired key first, then by deadline; the subkey's date counts.
        let list = expiring_json(url, dir, "30");
        assert_eq!(
            addresses(&list),
            ["gone@example.org", "soon@example.org", "sub@example.org"],
            "{list:#?}"
        );
        assert_eq!(list[0]["fingerprint"], gone_fpr.as_str());
        assert_eq!(list[0]["expired"], true);
        assert_eq!(list[1]["fingerprint"], soon_fpr.as_str());
        assert_eq!(list[1]["expired"], false);
        assert_eq!(list[1]["expires"], c0 + 10 * DAY as i64);
        assert_eq!(list[2]["fingerprint"], sub_fpr.as_str());
        assert_eq!(list[2]["expires"], c0 + 20 * DAY as i64);
        let at = list[1]["expires_at"].as_str().unwrap();
        assert!(at.len() == 20 && at.ends_with('Z'), "{at}");

        // The window moves the cut-off.
        assert_eq!(
            addresses(&expiring_json(url, dir, "15")),
            ["gone@example.org", "soon@example.org"]
        );
        assert_eq!(
            addresses(&expiring_json(url, dir, "0")),
            ["gone@example.org"]
        );
        assert_eq!(
            addresses(&expiring_json(url, dir, "90")),
            [
                "gone@example.org",
                "soon@example.org",
                "sub@example.org",
                "later@example.org"
            ]
        );
        // A key without any expiry never shows up; inactive keys neither.
        let all = expiring_json(url, dir, "36500");
        assert!(!addresses(&all).contains(&"never@example.org"));
        assert!(!addresses(&all).contains(&"off@example.org"));

        // Text: one line per key with address, fingerprint and date.
        let text = ok(&sealpost(url, dir, &["keys", "expiring", "--days", "15"]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("gone@example.org  ") && lines[0].contains(" expired "),
            "{text}"
        );
        assert!(
            lines[1].starts_with(&format!("soon@example.org  {soon_fpr}  expires ")),
            "{text}"
        );

        // Nothing in the window once the expired key is removed.
        ok(&sealpost(url, dir, &["keys", "remove", &gone_fpr]));
        let text = ok(&sealpost(url, dir, &["keys", "expiring", "--days", "5"]));
        assert_eq!(text, "no active key expires within 5 days\n");
        assert_eq!(expiring_json(url, dir, "5").len(), 0);
    }
}

#[test]
fn keys_expiring_refuses_a_bad_window_as_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ks.db", dir.path().display());
    for bad in ["-1", "soon", "36501"] {
        let out = sealpost(&url, dir.path(), &["keys", "expiring", "--days", bad]);
        assert_eq!(out.status.code(), Some(2), "--days {bad}");
    }
}

/// --notify through a real Postfix: the owner of an expiring key finds the notice in their
/// Maildir; a sendmail that cannot run is reported and makes the exit status 1.
#[test]
fn keys_expiring_notify_mails_the_owner_through_the_local_mta() {
    use sealpost_test_support::postfix::Postfix;
    use std::os::unix::fs::PermissionsExt;

    let Some(pf) = Postfix::start_with("keys_expiring_notify", None, &["soon"], "", "") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ks.db", dir.path().display());
    let created = SystemTime::now() - Duration::from_secs(60);
    let fpr = import(
        &url,
        dir.path(),
        "soon@example.org",
        &cert("soon@example.org", created, Some(10 * DAY), None),
    );
    import(
        &url,
        dir.path(),
        "never@example.org",
        &cert("never@example.org", created, None, None),
    );
    let expected_day = &ok(&sealpost(
        &url,
        dir.path(),
        &["keys", "expiring", "--days", "30", "--json"],
    ))
    .split("\"expires_at\": \"")
    .nth(1)
    .unwrap()[..10]
        .to_string();

    // The instance's own sendmail (its configuration directory is not the default one).
    let sendmail = dir.path().join("sendmail");
    std::fs::write(
        &sendmail,
        format!(
            "#!/bin/sh\nexec /usr/sbin/sendmail -C {} \"$@\"\n",
            pf.config_dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&sendmail, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = ok(&sealpost(
        &url,
        dir.path(),
        &[
            "keys",
            "expiring",
            "--days",
            "30",
            "--notify",
            "--from",
            "postmaster@example.org",
            "--sendmail",
            sendmail.to_str().unwrap(),
        ],
    ));
    assert_eq!(out, format!("notified soon@example.org about {fpr}\n"));

    let files = pf.wait_for("soon", 1, Duration::from_secs(60));
    assert_eq!(files.len(), 1, "{}", pf.log());
    let mail = String::from_utf8(std::fs::read(&files[0]).unwrap()).unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(mail.as_bytes())
        .unwrap();
    assert_eq!(
        parsed.subject(),
        Some(format!("Your OpenPGP key for soon@example.org expires on {expected_day}").as_str())
    );
    assert_eq!(
        parsed.return_address(),
        Some("postmaster@example.org"),
        "{mail}"
    );
    assert_eq!(
        parsed.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    let body = parsed.body_text(0).unwrap();
    assert!(body.contains(&format!("  {fpr}\n")), "{body}");
    assert!(
        body.contains(&format!("gpg --quick-set-expire {fpr} 2y")),
        "{body}"
    );
    // Nothing for the key that does not expire.
    assert!(pf.delivered("never").is_empty());

    // A sendmail that cannot be run: reported per owner, exit status 1.
    let out = sealpost(
        &url,
        dir.path(),
        &[
            "keys",
            "expiring",
            "--days",
            "30",
            "--notify",
            "--sendmail",
            "/nonexistent/sendmail",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "sealpost: cannot notify soon@example.org: cannot run /nonexistent/sendmail"
        ),
        "{err}"
    );
    // --from must be a plain address (it goes into a header and onto a command line).
    let out = sealpost(
        &url,
        dir.path(),
        &["keys", "expiring", "--notify", "--from", "x\nBcc: y"],
    );
    assert_eq!(out.status.code(), Some(1));
}
