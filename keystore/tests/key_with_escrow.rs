//! The keystore functions the JMAP service adds: password hashes for off-reactor
//! verification, and a private key stored together with its escrow (escrow "required"),
//! on SQLite and on a real PostgreSQL server.

use sealpost_keystore::protection::{
    encrypt_to_officers, verify_escrow, verify_private_key, ProtectionConfig,
};
use sealpost_keystore::{
    Actor, Address, DatabaseConfig, Keystore, LookupConfig, ObjectType, PolicyConfig,
};
use sealpost_test_support::fresh_postgres;
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::crypto::Password;
use sequoia_openpgp::serialize::SerializeInto;

async fn backends(test: &str) -> Vec<(Keystore, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = DatabaseConfig {
        url: format!("sqlite://{}/ks.db", dir.path().display()),
        ..DatabaseConfig::default()
    };
    let mut out = vec![(
        Keystore::open(&sqlite, LookupConfig::default(), PolicyConfig::default())
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
            Keystore::open(&pg, LookupConfig::default(), PolicyConfig::default())
                .await
                .unwrap(),
            None,
        ));
    }
    out
}

fn gen(uid: &str, pw: Option<&str>) -> sequoia_openpgp::Cert {
    CertBuilder::general_purpose(Some(uid))
        .set_password(pw.map(Password::from))
        .generate()
        .unwrap()
        .0
}

#[tokio::test]
async fn password_hash_lookup() {
    for (ks, _d) in backends("password_hash_lookup").await {
        let a = Address::parse("alice@example.org").unwrap();
        let actor = Actor("test".into());
        assert_eq!(ks.password_hash_of(&a).await.unwrap(), None);
        let acc = ks.add_account(&a, &[], &actor).await.unwrap();
        assert_eq!(
            ks.password_hash_of(&a).await.unwrap(),
            Some((acc.id.clone(), None))
        );
        ks.set_password(&a, "pw", &actor).await.unwrap();
        let (id, hash) = ks.password_hash_of(&a).await.unwrap().unwrap();
        assert_eq!(id, acc.id);
        assert!(sealpost_keystore::password::verify(&hash.unwrap(), "pw"));
    }
}

#[tokio::test]
async fn public_keys_with_state_is_one_snapshot() {
    let cert = gen("<alice@example.org>", None);
    let public = String::from_utf8(cert.armored().to_vec().unwrap()).unwrap();
    for (ks, _d) in backends("public_keys_with_state_is_one_snapshot").await {
        let actor = Actor("test".into());
        let a = Address::parse("alice@example.org").unwrap();
        let acc = ks.add_account(&a, &[], &actor).await.unwrap();
        assert_eq!(
            ks.public_keys_with_state(&acc.id).await.unwrap(),
            (0, vec![])
        );
        ks.add_public_key(&acc.id, public.as_bytes(), &actor)
            .await
            .unwrap();
        let (state, keys) = ks.public_keys_with_state(&acc.id).await.unwrap();
        assert_eq!(
            state,
            ks.state(&acc.id, ObjectType::PublicKey).await.unwrap()
        );
        assert!(state > 0);
        assert_eq!(keys, ks.public_keys_of(&acc.id).await.unwrap());
        assert_eq!(keys[0].account, "alice@example.org");
        // Another account's keys and states are not mixed in.
        let b = ks
            .add_account(&Address::parse("bob@example.org").unwrap(), &[], &actor)
            .await
            .unwrap();
        assert_eq!(ks.public_keys_with_state(&b.id).await.unwrap(), (0, vec![]));
    }
}

#[tokio::test]
async fn private_key_with_escrow_is_atomic() {
    let user = gen("<alice@example.org>", Some("key-pw"));
    let officer = gen("<cso@example.org>", None);
    let cfg = ProtectionConfig::default();
    let public = String::from_utf8(user.armored().to_vec().unwrap()).unwrap();
    let tsk = user.as_tsk().armored().to_vec().unwrap();
    let fpr = user.fingerprint().to_hex();
    for (ks, _d) in backends("private_key_with_escrow_is_atomic").await {
        let actor = Actor("test".into());
        let a = Address::parse("alice@example.org").unwrap();
        let acc = ks.add_account(&a, &[], &actor).await.unwrap();
        ks.add_public_key(&acc.id, public.as_bytes(), &actor)
            .await
            .unwrap();
        let key = verify_private_key(&tsk, &[(fpr.clone(), public.clone())], None, &cfg).unwrap();
        let blob = encrypt_to_officers(b"key-pw", std::slice::from_ref(&officer)).unwrap();
        let escrow = verify_escrow(blob.as_bytes(), std::slice::from_ref(&officer), &cfg).unwrap();

        // The officer key is not installed: the escrow write fails, so the private key
        // is not stored either.
        assert!(ks
            .create_private_key_with_escrow(&acc.id, &key, None, &escrow, &actor)
            .await
            .is_err());
        assert!(ks.private_keys_of(&acc.id).await.unwrap().is_empty());
        assert_eq!(ks.state(&acc.id, ObjectType::PrivateKey).await.unwrap(), 0);

        ks.add_officer_key(officer.armored().to_vec().unwrap().as_slice(), &actor)
            .await
            .unwrap();
        let rec = ks
            .create_private_key_with_escrow(&acc.id, &key, Some("laptop"), &escrow, &actor)
            .await
            .unwrap();
        assert_eq!(rec.fingerprint, fpr);
        assert_eq!(rec.label.as_deref(), Some("laptop"));
        let e = ks.escrow(&acc.id, &fpr).await.unwrap().unwrap();
        assert_eq!(e.officer_fingerprint, officer.fingerprint().to_hex());
        assert!(ks.state(&acc.id, ObjectType::Escrow).await.unwrap() > 0);
        let actions: Vec<String> = ks
            .audit_rows(Some("alice@example.org"))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect();
        assert!(actions.contains(&"private_key.create".to_string()));
        assert!(actions.contains(&"escrow.create".to_string()));
        assert!(ks.audit_verify().await.unwrap().problems.is_empty());
    }
}
