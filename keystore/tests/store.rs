//! Every keystore operation, on SQLite and on a real PostgreSQL server.

use sealpost_keystore::{
    Actor, Address, DatabaseConfig, Error, Keystore, LocalPartMatch, LookupConfig, ObjectType,
    PolicyConfig,
};
use sealpost_test_support::{fixture, fresh_postgres};

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn key(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("keys/{name}"))).unwrap()
}

fn actor() -> Actor {
    Actor("test".into())
}

/// One keystore per backend: SQLite always, PostgreSQL when a server is available.
async fn backends(test: &str, lookup: LookupConfig) -> Vec<(Keystore, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = DatabaseConfig {
        url: format!("sqlite://{}/ks.db", dir.path().display()),
        ..DatabaseConfig::default()
    };
    let mut out = vec![(
        Keystore::open(&sqlite, lookup.clone(), PolicyConfig::default())
            .await
            .unwrap(),
        Some(dir),
    )];
    if let Some(url) = fresh_postgres(test).await {
        let pg = DatabaseConfig {
            url,
            ..DatabaseConfig::default()
        };
        out.push((
            Keystore::open(&pg, lookup, PolicyConfig::default())
                .await
                .unwrap(),
            None,
        ));
    }
    out
}

#[tokio::test]
async fn accounts_addresses_and_lookup() {
    for (ks, _d) in backends("accounts_addresses_and_lookup", LookupConfig::default()).await {
        let a = ks
            .add_account(
                &addr("alice@Example.org"),
                &[addr("a.smith@example.org")],
                &actor(),
            )
            .await
            .unwrap();
        assert_eq!(a.primary, "alice@example.org");
        assert_eq!(a.aliases, vec!["a.smith@example.org".to_string()]);

        // Domain case-insensitive, local part exact by default.
        assert_eq!(
            ks.resolve_recipient(&addr("alice@EXAMPLE.ORG"))
                .await
                .unwrap(),
            Some(a.id.clone())
        );
        assert_eq!(
            ks.resolve_recipient(&addr("Alice@example.org"))
                .await
                .unwrap(),
            None
        );
        // Aliases and recipient extensions resolve to the account.
        assert_eq!(
            ks.resolve_recipient(&addr("a.smith@example.org"))
                .await
                .unwrap(),
            Some(a.id.clone())
        );
        assert_eq!(
            ks.resolve_recipient(&addr("alice+lists@example.org"))
                .await
                .unwrap(),
            Some(a.id.clone())
        );
        assert_eq!(
            ks.resolve_recipient(&addr("bob@example.org"))
                .await
                .unwrap(),
            None
        );

        // An address can belong to one account only.
        let e = ks
            .add_account(
                &addr("bob@example.org"),
                &[addr("alice@example.org")],
                &actor(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert!(e.to_string().contains("alice@example.org"));
        // ... and the failed add left nothing behind.
        assert_eq!(
            ks.resolve_recipient(&addr("bob@example.org"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(ks.list_accounts().await.unwrap().len(), 1);

        ks.remove_account(&addr("a.smith@example.org"), &actor())
            .await
            .unwrap();
        assert!(ks.list_accounts().await.unwrap().is_empty());
        assert_eq!(
            ks.resolve_recipient(&addr("alice@example.org"))
                .await
                .unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn insensitive_local_parts_and_custom_delimiters() {
    let lookup = LookupConfig {
        local_part: LocalPartMatch::Insensitive,
        recipient_delimiter: "+-".into(),
    };
    for (ks, _d) in backends("insensitive_local_parts", lookup).await {
        let a = ks
            .add_account(&addr("Carol@example.org"), &[], &actor())
            .await
            .unwrap();
        for r in [
            "carol@example.org",
            "CAROL@example.org",
            "carol-x@example.org",
            "carol+y@EXAMPLE.org",
        ] {
            assert_eq!(
                ks.resolve_recipient(&addr(r)).await.unwrap(),
                Some(a.id.clone()),
                "{r}"
            );
        }
    }
}

#[tokio::test]
async fn key_import_list_activate_remove_with_history_and_changes() {
    for (ks, _d) in backends("key_lifecycle", LookupConfig::default()).await {
        // Importing for an unknown address creates the account.
        let k = ks
            .import_public_key(
                &addr("ed@example.org"),
                &key("gpg-ed25519.asc"),
                &actor(),
                true,
            )
            .await
            .unwrap();
        assert!(k.active);
        assert_eq!(k.account, "ed@example.org");
        assert_eq!(k.kind, "openpgp");
        assert!(k
            .armored
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        let id = k.account_id.clone();
        let s0 = ks.state(&id, ObjectType::PublicKey).await.unwrap();
        assert!(s0 > 0);

        // A second key for the same account, via its alias-less primary.
        let rsa = ks
            .import_public_key(
                &addr("ed@example.org"),
                &key("gpg-rsa3072.asc"),
                &actor(),
                true,
            )
            .await;
        assert!(
            matches!(rsa, Err(Error::Policy(_))),
            "wrong UID must be refused"
        );

        // Refused keys are never stored.
        for bad in [
            "gpg-sign-only.asc",
            "gpg-ed25519-secret.asc",
            "gpg-expired.asc",
        ] {
            let e = ks
                .import_public_key(&addr("ed@example.org"), &key(bad), &actor(), true)
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Policy(_)), "{bad}: {e}");
        }
        assert_eq!(ks.list_public_keys(None).await.unwrap().len(), 1);
        assert_eq!(ks.state(&id, ObjectType::PublicKey).await.unwrap(), s0);

        // Re-import updates in place.
        let again = ks
            .import_public_key(
                &addr("ed@example.org"),
                &key("gpg-ed25519.asc"),
                &actor(),
                true,
            )
            .await
            .unwrap();
        assert_eq!(again.fingerprint, k.fingerprint);
        let s1 = ks.state(&id, ObjectType::PublicKey).await.unwrap();
        assert!(s1 > s0);

        // Without create_account an unknown address is an error.
        let e = ks
            .import_public_key(
                &addr("rsa@example.org"),
                &key("gpg-rsa3072.asc"),
                &actor(),
                false,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound(_)));

        let off = ks
            .set_key_active(&k.fingerprint.to_lowercase(), false, &actor())
            .await
            .unwrap();
        assert!(!off.active);
        assert!(ks.active_keys_of(&id).await.unwrap().is_empty());
        let on = ks
            .set_key_active(&k.fingerprint, true, &actor())
            .await
            .unwrap();
        assert!(on.active);
        assert_eq!(ks.active_keys_of(&id).await.unwrap().len(), 1);

        let changes = ks
            .changes_since(&id, ObjectType::PublicKey, s1, 100)
            .await
            .unwrap();
        assert_eq!(changes.len(), 2);
        assert!(changes
            .iter()
            .all(|c| c.op == "updated" && c.object_id == k.fingerprint));
        assert!(changes[0].modseq < changes[1].modseq);

        ks.remove_public_key(&k.fingerprint, &actor())
            .await
            .unwrap();
        assert!(ks.public_key(&k.fingerprint).await.unwrap().is_none());
        let history: Vec<String> = ks
            .key_history(&k.fingerprint)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.event)
            .collect();
        assert_eq!(
            history,
            ["imported", "updated", "deactivated", "activated", "removed"]
        );
        let last = ks
            .changes_since(&id, ObjectType::PublicKey, 0, 100)
            .await
            .unwrap();
        assert_eq!(last.last().unwrap().op, "destroyed");
        // Other types have their own states.
        assert_eq!(ks.state(&id, ObjectType::PrivateKey).await.unwrap(), 0);

        let e = ks
            .remove_public_key(&k.fingerprint, &actor())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound(_)));
        assert!(ks.public_key("not-hex").await.is_err());
    }
}

#[tokio::test]
async fn a_key_belongs_to_one_account() {
    for (ks, _d) in backends("a_key_belongs_to_one_account", LookupConfig::default()).await {
        ks.add_account(&addr("ed@example.org"), &[], &actor())
            .await
            .unwrap();
        ks.add_account(&addr("twin@example.org"), &[], &actor())
            .await
            .unwrap();
        ks.import_public_key(
            &addr("ed@example.org"),
            &key("gpg-ed25519.asc"),
            &actor(),
            false,
        )
        .await
        .unwrap();
        let relaxed = Keystore::connect(
            &DatabaseConfig {
                url: ks.url().to_string(),
                ..DatabaseConfig::default()
            },
            LookupConfig::default(),
            PolicyConfig {
                require_uid_match: false,
                ..PolicyConfig::default()
            },
        )
        .await
        .unwrap();
        let e = relaxed
            .import_public_key(
                &addr("twin@example.org"),
                &key("gpg-ed25519.asc"),
                &actor(),
                false,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert!(
            !e.to_string().contains("ed@example.org"),
            "must not reveal the owner"
        );
    }
}

#[tokio::test]
async fn passwords_are_hashed_and_verified() {
    for (ks, _d) in backends("passwords", LookupConfig::default()).await {
        ks.add_account(&addr("dave@example.org"), &[], &actor())
            .await
            .unwrap();
        assert_eq!(
            ks.verify_password(&addr("dave@example.org"), "pw")
                .await
                .unwrap(),
            None
        );
        ks.set_password(&addr("dave@example.org"), "s3cret pass", &actor())
            .await
            .unwrap();
        assert!(ks
            .verify_password(&addr("dave@example.org"), "s3cret pass")
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            ks.verify_password(&addr("dave@example.org"), "wrong")
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            ks.verify_password(&addr("nobody@example.org"), "x")
                .await
                .unwrap(),
            None
        );
        let accounts = ks.list_accounts().await.unwrap();
        assert!(accounts[0].has_password);
        // Never stored in clear.
        let rows = ks.audit_rows(None).await.unwrap();
        assert!(rows.iter().all(|r| !format!("{r:?}").contains("s3cret")));
    }
}

#[tokio::test]
async fn audit_chain_detects_modified_and_deleted_rows() {
    for (ks, _d) in backends("audit_chain", LookupConfig::default()).await {
        for who in ["a", "b", "c", "d"] {
            ks.add_account(&addr(&format!("{who}@example.org")), &[], &actor())
                .await
                .unwrap();
        }
        ks.audit(
            &actor(),
            Some("a@example.org"),
            "export",
            None,
            Some("court order 12"),
        )
        .await
        .unwrap();
        let v = ks.audit_verify().await.unwrap();
        assert_eq!(v.rows, 5);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        let rows = ks.audit_rows(Some("a@example.org")).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].reason.as_deref(), Some("court order 12"));

        // Modify a row in the middle.
        sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
            .execute(ks.pool())
            .await
            .unwrap();
        let v = ks.audit_verify().await.unwrap();
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("row 2") && p.contains("modified")),
            "{:?}",
            v.problems
        );
        sqlx::query("UPDATE audit_log SET actor = 'test' WHERE seq = 2")
            .execute(ks.pool())
            .await
            .unwrap();
        assert!(ks.audit_verify().await.unwrap().problems.is_empty());

        // Delete a row in the middle.
        sqlx::query("DELETE FROM audit_log WHERE seq = 3")
            .execute(ks.pool())
            .await
            .unwrap();
        let v = ks.audit_verify().await.unwrap();
        assert!(
            v.problems.iter().any(|p| p.contains("row 4")),
            "{:?}",
            v.problems
        );

        // Delete the last row (the head still remembers it).
        let (ks2, _d2) = backends("audit_chain_tail", LookupConfig::default())
            .await
            .into_iter()
            .next()
            .unwrap();
        ks2.add_account(&addr("x@example.org"), &[], &actor())
            .await
            .unwrap();
        ks2.add_account(&addr("y@example.org"), &[], &actor())
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_log WHERE seq = 2")
            .execute(ks2.pool())
            .await
            .unwrap();
        let v = ks2.audit_verify().await.unwrap();
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("removed from the end")),
            "{:?}",
            v.problems
        );
    }
}

#[tokio::test]
async fn concurrent_writers_keep_the_chain_and_modseq_consistent() {
    for (ks, _d) in backends("concurrent_writers", LookupConfig::default()).await {
        let acc = ks
            .add_account(&addr("e@example.org"), &[], &actor())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let ks = ks.clone();
            tasks.push(tokio::spawn(async move {
                ks.add_account(&addr(&format!("w{i}@example.org")), &[], &Actor("t".into()))
                    .await
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let v = ks.audit_verify().await.unwrap();
        assert_eq!(v.rows, 17);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(ks.state(&acc.id, ObjectType::PublicKey).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_reported() {
    for (ks, _d) in backends("migrations", LookupConfig::default()).await {
        ks.migrate().await.unwrap();
        assert!(ks.pending_migrations().await.unwrap().is_empty());
    }
}
