//! Who may change what, on PostgreSQL: the read-only milter role of docs/postgresql.md (its
//! GRANTs are taken from that file) runs `sealpost milter` and encrypts mail through a real
//! Postfix, while every CLI command that changes an account, or reads private keys, escrows
//! or the audit log, is refused with a one-line "permission denied" and changes nothing.
//! Needs root, Postfix and the test PostgreSQL server from tests/run.

mod e2e;

use std::process::Output;

use e2e::{Keystore, Milter, ED, MAILBOXES, SENDER, WAIT};
use sealpost_test_support::postfix::Postfix;
use sealpost_test_support::{field_strs, fixture, fresh_postgres, random_hex};

/// The GRANT statements of docs/postgresql.md for `role` on database `db`.
fn documented_grants(role: &str, db: &str) -> Vec<String> {
    let doc =
        std::fs::read_to_string(sealpost_test_support::workspace_root().join("docs/postgresql.md"))
            .unwrap();
    let grants: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("GRANT "))
        .map(|l| {
            l.replace("sealpost_milter", role)
                .replace("DATABASE sealpost", &format!("DATABASE {db}"))
        })
        .collect();
    assert!(grants.len() >= 3, "no GRANT lines in docs/postgresql.md");
    grants
}

fn stderr_line(out: &Output, what: &str) -> String {
    assert!(!out.status.success(), "{what}: allowed for the milter role");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{what}: {err}");
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_only_milter_role_encrypts_mail_and_can_change_nothing() {
    let test = "postgres roles";
    let Some(owner_url) = fresh_postgres(test).await else {
        return;
    };
    let ks = Keystore::new(Some(owner_url.clone()), "");
    // Owner-side state the milter role must not touch or read.
    let out = ks.sealpost(&["accounts", "add", "sqrsa@example.org"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let role = format!("milter_{}", random_hex(4));
    let (base, db) = owner_url.rsplit_once('/').unwrap();
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&owner_url).await.unwrap();
        sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
            .execute(&mut conn)
            .await
            .unwrap();
        for g in documented_grants(&role, db) {
            sqlx::query(&g).execute(&mut conn).await.unwrap();
        }
    }
    // The same configuration, as the milter role.
    let milter_url = base.replacen("sealpost@", &format!("{role}@"), 1) + "/" + db;
    let config = std::fs::read_to_string(&ks.config).unwrap();
    assert!(config.contains(&owner_url));
    std::fs::write(&ks.config, config.replace(&owner_url, &milter_url)).unwrap();

    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let milter = Milter::start(&ks);
    let raw = e2e::big_message(0);
    let r = pf.send(SENDER, &[ED], &raw);
    assert_eq!(r.data.as_ref().map(|d| d.0), Some(250), "{r:?}");
    let got = std::fs::read(&pf.wait_for("ed", 1, WAIT)[0]).unwrap();
    assert!(String::from_utf8_lossy(&got).contains("X-Sealpost: encrypted; fpr="));
    drop(milter);

    // Reading what the milter reads works.
    let listed = ks.sealpost(&["keys", "list", ED]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let fpr = ks.fingerprint(ED);
    let key = fixture("keys/sq-rsa3k.asc");
    let key = key.to_str().unwrap();
    for args in [
        vec!["accounts", "add", "new@example.org"],
        vec!["accounts", "remove", "sqrsa@example.org"],
        vec!["keys", "import", "sqrsa@example.org", key],
        vec!["keys", "deactivate", &fpr],
        vec!["keys", "remove", &fpr],
        vec!["audit", "show"],
        vec![
            "escrow",
            "export",
            "--account",
            ED,
            "--reason",
            "role test",
            "--out",
            "b",
        ],
    ] {
        let err = stderr_line(&ks.sealpost(&args), &args.join(" "));
        assert!(err.contains("permission denied"), "{args:?}: {err}");
    }
    let passwd = sealpost_test_support::run_with_input(
        &mut ks.command(&["accounts", "passwd", ED]),
        b"some new password\n",
    );
    assert!(stderr_line(&passwd, "accounts passwd").contains("permission denied"));

    // Nothing changed: the owner still sees the same accounts, keys and audit chain.
    std::fs::write(&ks.config, config).unwrap();
    let accounts = ks.sealpost(&["accounts", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&accounts.stdout).unwrap();
    let names = field_strs(v.as_array().unwrap(), "primary");
    assert!(names.contains(&"sqrsa@example.org") && !names.contains(&"new@example.org"));
    let keys = ks.sealpost(&["keys", "list", ED, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    assert_eq!(v[0]["active"], true);
    let verify = ks.sealpost(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
