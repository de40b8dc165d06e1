//! Private keys, escrows and officer keys (the functions the escrow commands and the JMAP
//! service share), on SQLite and on a real PostgreSQL server.

use sealpost_keystore::protection::{
    check_secret_protection, encrypt_to_officers, verify_escrow, verify_private_key,
    ProtectionConfig, ProtectionError,
};
use sealpost_keystore::{
    Actor, Address, DatabaseConfig, Error, Keystore, LookupConfig, ObjectType, PolicyConfig,
};
use sealpost_test_support::fresh_postgres;
use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::Password;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;

fn actor() -> Actor {
    Actor("test".into())
}

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

fn make(uid: &str, password: Option<&str>) -> Cert {
    CertBuilder::general_purpose(Some(uid))
        .set_password(password.map(Password::from))
        .generate()
        .unwrap()
        .0
}

fn public(c: &Cert) -> Vec<u8> {
    c.armored().to_vec().unwrap()
}

fn secret(c: &Cert) -> Vec<u8> {
    c.as_tsk().armored().to_vec().unwrap()
}

/// Re-protects every secret of `c` with an iterated+salted S2K of `count` bytes.
fn with_count(c: &Cert, password: &str, count: u32) -> Cert {
    use openpgp::crypto::S2K;
    use openpgp::packet::Packet;
    use openpgp::types::{HashAlgorithm, SymmetricAlgorithm};
    let pw = Password::from(password);
    let mut packets: Vec<Packet> = Vec::new();
    let p = c.primary_key().key().clone().parts_into_secret().unwrap();
    let (p, s) = p.take_secret();
    let s = s
        .decrypt(&p, &pw)
        .unwrap()
        .encrypt_with(
            &p,
            S2K::new_iterated(HashAlgorithm::SHA256, count).unwrap(),
            SymmetricAlgorithm::AES256,
            None,
            &pw,
        )
        .unwrap();
    packets.push(p.add_secret(s).0.into());
    for ka in c.keys().subkeys().secret() {
        let (k, s) = ka.key().clone().take_secret();
        let s = s
            .decrypt(&k, &pw)
            .unwrap()
            .encrypt_with(
                &k,
                S2K::new_iterated(HashAlgorithm::SHA256, count).unwrap(),
                SymmetricAlgorithm::AES256,
                None,
                &pw,
            )
            .unwrap();
        packets.push(k.add_secret(s).0.into());
    }
    c.clone().insert_packets(packets).unwrap().0
}

#[test]
fn protection_rules() {
    let cfg = ProtectionConfig::default();
    let c = make("<a@example.org>", Some("pw"));
    let p = check_secret_protection(&c, &cfg).unwrap();
    assert_eq!(p.kind, "s2k");
    assert_eq!(p.s2k, "iterated-salted");
    assert!(p.count.unwrap() >= cfg.min_s2k_count);

    // A count below the minimum is refused and named.
    let weak = with_count(&c, "pw", 1024);
    match check_secret_protection(&weak, &cfg).unwrap_err() {
        ProtectionError::WeakS2k { what, min, .. } => {
            assert!(what.contains("iterated+salted"), "{what}");
            assert_eq!(min, cfg.min_s2k_count);
        }
        e => panic!("{e}"),
    }
    // Exactly the minimum is enough (the count is rounded to what OpenPGP can express).
    let ok = with_count(&c, "pw", 65_011_712);
    assert_eq!(
        check_secret_protection(&ok, &cfg).unwrap().count,
        Some(65_011_712)
    );

    // A password-encrypted message holding a key (Autocrypt Setup style) needs a claimed id.
    let fpr = c.fingerprint().to_hex();
    let publics = vec![(fpr.clone(), String::from_utf8(public(&c)).unwrap())];
    let msg = {
        use openpgp::serialize::stream::*;
        let mut out = Vec::new();
        let m = Message::new(&mut out);
        let m = Armorer::new(m).build().unwrap();
        let m = Encryptor::with_passwords(m, Some(Password::from("setup-code")))
            .build()
            .unwrap();
        let mut w = LiteralWriter::new(m).build().unwrap();
        std::io::Write::write_all(&mut w, &secret(&make("<a@example.org>", None))).unwrap();
        w.finalize().unwrap();
        out
    };
    let e = verify_private_key(&msg, &publics, None, &cfg).unwrap_err();
    assert!(matches!(e, ProtectionError::NoMatchingPublicKey(_)), "{e}");
    let v = verify_private_key(&msg, &publics, Some(&fpr.to_lowercase()), &cfg).unwrap();
    assert_eq!(v.protection.kind, "skesk");
    assert_eq!(v.fingerprint, fpr);

    // Too large.
    let small = ProtectionConfig {
        max_blob_size: 100,
        ..cfg.clone()
    };
    assert!(matches!(
        verify_private_key(&secret(&c), &publics, None, &small).unwrap_err(),
        ProtectionError::TooLarge { .. }
    ));
}

#[test]
fn escrow_rules() {
    let cfg = ProtectionConfig::default();
    let officer = make("<cso@example.org>", None);
    let other = make("<other@example.org>", None);
    let blob = encrypt_to_officers(b"pw", &[officer.clone(), other.clone()]).unwrap();
    // Addressed to two officers: both named; only one active is not enough.
    let v = verify_escrow(blob.as_bytes(), &[officer.clone(), other.clone()], &cfg).unwrap();
    assert_eq!(v.officer_fingerprints.len(), 2);
    let e = verify_escrow(blob.as_bytes(), std::slice::from_ref(&officer), &cfg).unwrap_err();
    assert!(matches!(e, ProtectionError::ForeignRecipient(_)), "{e}");
    assert_eq!(
        verify_escrow(blob.as_bytes(), &[], &cfg).unwrap_err(),
        ProtectionError::NoOfficerKey
    );
    // A password-encrypted blob is not an escrow.
    let pw_msg = {
        use openpgp::serialize::stream::*;
        let mut out = Vec::new();
        let m = Message::new(&mut out);
        let m = Encryptor::with_passwords(m, Some(Password::from("x")))
            .build()
            .unwrap();
        let mut w = LiteralWriter::new(m).build().unwrap();
        std::io::Write::write_all(&mut w, b"pw").unwrap();
        w.finalize().unwrap();
        out
    };
    assert_eq!(
        verify_escrow(&pw_msg, std::slice::from_ref(&officer), &cfg).unwrap_err(),
        ProtectionError::EscrowWithPassword
    );
    // A key is not an escrow.
    assert!(verify_escrow(&public(&officer), std::slice::from_ref(&officer), &cfg).is_err());
    // A sign-only officer key cannot be escrowed to.
    let sign_only = CertBuilder::new()
        .add_userid("<s@example.org>")
        .add_signing_subkey()
        .generate()
        .unwrap()
        .0;
    assert_eq!(
        encrypt_to_officers(b"pw", &[sign_only]).unwrap_err(),
        ProtectionError::NoOfficerKey
    );
}

#[tokio::test]
async fn private_keys_escrows_and_officer_keys() {
    for (ks, _d) in backends("keystore_secrets").await {
        let cfg = ProtectionConfig::default();
        let a = ks
            .add_account(&Address::parse("u@example.org").unwrap(), &[], &actor())
            .await
            .unwrap();
        let user = make("<u@example.org>", Some("user-pw"));
        ks.add_public_key(&a.id, &public(&user), &actor())
            .await
            .unwrap();
        let fpr = user.fingerprint().to_hex();
        let publics: Vec<(String, String)> = ks
            .public_keys_of(&a.id)
            .await
            .unwrap()
            .into_iter()
            .map(|k| (k.fingerprint, k.armored))
            .collect();
        let key = verify_private_key(&secret(&user), &publics, None, &cfg).unwrap();
        let rec = ks
            .create_private_key(&a.id, &key, Some("phone"), &actor())
            .await
            .unwrap();
        assert_eq!(rec.fingerprint, fpr);
        assert_eq!(rec.label.as_deref(), Some("phone"));
        assert_eq!(rec.size, key.armored.len() as i64);
        assert_eq!(
            ks.private_key_armored(&a.id, &fpr).await.unwrap().unwrap(),
            key.armored
        );
        // Twice is a conflict; another account sees nothing.
        assert!(matches!(
            ks.create_private_key(&a.id, &key, None, &actor())
                .await
                .unwrap_err(),
            Error::Conflict(_)
        ));
        let b = ks
            .add_account(&Address::parse("v@example.org").unwrap(), &[], &actor())
            .await
            .unwrap();
        assert!(ks.private_key_armored(&b.id, &fpr).await.unwrap().is_none());
        assert!(ks.private_key(&b.id, &fpr).await.unwrap().is_none());

        // Officer keys: add (public only), list, retire, re-activate.
        let officer = make("<cso@example.org>", None);
        assert!(ks
            .add_officer_key(&secret(&officer), &actor())
            .await
            .is_err());
        let o = ks
            .add_officer_key(&public(&officer), &actor())
            .await
            .unwrap();
        assert!(o.active);
        assert!(matches!(
            ks.add_officer_key(&public(&officer), &actor())
                .await
                .unwrap_err(),
            Error::Conflict(_)
        ));
        assert_eq!(ks.active_officer_keys().await.unwrap().len(), 1);

        // Escrow: stored, read back, replaced; refused to a retired officer key.
        let blob = encrypt_to_officers(b"user-pw", std::slice::from_ref(&officer)).unwrap();
        let esc = verify_escrow(blob.as_bytes(), std::slice::from_ref(&officer), &cfg).unwrap();
        let before = ks.state(&a.id, ObjectType::Escrow).await.unwrap();
        let (e, created) = ks.put_escrow(&a.id, &fpr, &esc, &actor()).await.unwrap();
        assert!(created);
        assert_eq!(e.officer_fingerprint, officer.fingerprint().to_hex());
        assert!(ks.state(&a.id, ObjectType::Escrow).await.unwrap() > before);
        assert_eq!(
            ks.escrow_armored(&a.id, &fpr).await.unwrap().unwrap(),
            esc.armored
        );
        let (_, created) = ks.put_escrow(&a.id, &fpr, &esc, &actor()).await.unwrap();
        assert!(!created);
        assert!(ks.put_escrow(&b.id, &fpr, &esc, &actor()).await.is_err());
        let retired = ks
            .set_officer_key_active(&o.fingerprint, false, &actor())
            .await
            .unwrap();
        assert!(!retired.active && retired.retired_at.is_some());
        assert!(ks.active_officer_keys().await.unwrap().is_empty());
        assert!(matches!(
            ks.put_escrow(&a.id, &fpr, &esc, &actor())
                .await
                .unwrap_err(),
            Error::Invalid(_)
        ));
        // Escrows to a retired key stay stored.
        assert!(ks.escrow(&a.id, &fpr).await.unwrap().is_some());
        let back = ks
            .set_officer_key_active(&o.fingerprint, true, &actor())
            .await
            .unwrap();
        assert!(back.active && back.retired_at.is_none());

        // Reinstating a re-protected key replaces the blob and drops the stale escrow.
        let reprotected = with_count(&user, "user-pw", 65_011_712);
        let key2 = verify_private_key(&secret(&reprotected), &publics, None, &cfg).unwrap();
        let (rec2, removed) = ks
            .reinstate_private_key(&a.id, &key2, Some("ticket 1"), &actor())
            .await
            .unwrap();
        assert!(removed);
        assert_eq!(rec2.label.as_deref(), Some("phone"));
        assert_eq!(rec2.protection.count, Some(65_011_712));
        assert_eq!(
            ks.private_key_armored(&a.id, &fpr).await.unwrap().unwrap(),
            key2.armored
        );
        assert!(ks.escrow(&a.id, &fpr).await.unwrap().is_none());
        // Not into another account.
        assert!(ks
            .reinstate_private_key(&b.id, &key2, None, &actor())
            .await
            .is_err());
        // Destroying the key removes it (and would remove its escrow).
        ks.put_escrow(&a.id, &fpr, &esc, &actor()).await.unwrap();
        ks.destroy_private_key(&a.id, &fpr, &actor()).await.unwrap();
        assert!(ks.private_key(&a.id, &fpr).await.unwrap().is_none());
        assert!(ks.escrow(&a.id, &fpr).await.unwrap().is_none());
        // Reinstating when none is stored stores it.
        let (_, removed) = ks
            .reinstate_private_key(&a.id, &key2, None, &actor())
            .await
            .unwrap();
        assert!(!removed);

        let actions: Vec<String> = ks
            .audit_rows(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect();
        for want in [
            "private_key.create",
            "officer.add",
            "escrow.create",
            "escrow.update",
            "officer.retire",
            "officer.activate",
            "escrow.destroy",
            "private_key.reinstate",
            "private_key.destroy",
        ] {
            assert!(actions.iter().any(|a| a == want), "{want}: {actions:?}");
        }
        assert!(ks.audit_verify().await.unwrap().problems.is_empty());
        ks.close().await;
    }
}
