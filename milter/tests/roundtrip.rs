//! Round trips through the transform: every corpus message, encrypted to each kind of test
//! key, decrypted again with sequoia and compared byte for byte with the original.

mod common;

use std::time::SystemTime;

use common::*;
use sealpost_milter::transform::{
    encrypt_message, Decision, HeaderEdit, MessageEncryptor, Outcome, Recipients, SkipReason,
    TransformError, TransformOptions, MAX_BODY_CHUNK,
};
use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;

#[test]
fn corpus_round_trips_for_every_key_kind() {
    for kind in ALL_KEYS {
        let key = test_key(kind);
        let recips = recipients(&[key]);
        for (name, raw) in corpus() {
            for (eol, input) in variants(&raw) {
                let what = format!("{name} ({eol}, {kind:?})");
                let (outcome, output) = encrypt(&input, &recips, &TransformOptions::default());
                let fprs = vec![key.fingerprint().to_hex()];
                assert_eq!(
                    outcome,
                    Outcome::Encrypted {
                        fingerprints: fprs.clone()
                    },
                    "{what}"
                );
                check_outer(&input, &output, &fprs, false, &what);
                let payload = decrypt(key, armored_part(&output));
                check_payload(&input, &payload, false, &what);
            }
        }
    }
}

#[test]
fn protected_subject_is_obscured_outside_and_kept_inside() {
    let key = test_key(KeyKind::Cv25519);
    let recips = recipients(&[key]);
    let opts = TransformOptions {
        protect_subject: true,
        ..Default::default()
    };
    for (name, raw) in corpus() {
        let (_, output) = encrypt(&raw, &recips, &opts);
        let fprs = vec![key.fingerprint().to_hex()];
        check_outer(&raw, &output, &fprs, true, &name);
        let payload = decrypt(key, armored_part(&output));
        check_payload(&raw, &payload, true, &name);
    }
}

#[test]
fn compression_when_asked() {
    let key = test_key(KeyKind::Rsa3k);
    let recips = recipients(&[key]);
    let opts = TransformOptions {
        compress: true,
        ..Default::default()
    };
    let raw = std::fs::read(corpus_dir().join("long-lines.eml")).unwrap();
    let (_, plain_out) = encrypt(&raw, &recips, &TransformOptions::default());
    let (_, output) = encrypt(&raw, &recips, &opts);
    // The long lines are repetitive, so compression must show.
    assert!(output.len() < plain_out.len() / 2);
    let payload = decrypt(key, armored_part(&output));
    check_payload(&raw, &payload, false, "compressed");
}

#[test]
fn one_pkesk_per_encryption_subkey_and_seipd_version_per_recipients() {
    let v4 = test_key(KeyKind::Cv25519);
    let rsa = test_key(KeyKind::Rsa3k);
    let v6 = test_key(KeyKind::V6);
    // A v4 certificate that does not announce SEIPDv2 (as GnuPG 2.2 makes them), with two
    // encryption subkeys.
    let (legacy, _) = CertBuilder::new()
        .add_userid("Legacy <legacy@example.org>")
        .set_features(openpgp::types::Features::empty().set_seipdv1())
        .unwrap()
        .set_creation_time(SystemTime::now() - std::time::Duration::from_secs(3600))
        .add_transport_encryption_subkey()
        .add_storage_encryption_subkey()
        .generate()
        .unwrap();
    let raw = std::fs::read(corpus_dir().join("plain-ascii.eml")).unwrap();

    let recips = recipients(&[v4, rsa, v6]);
    assert_eq!(recips.key_count(), 3);
    let (outcome, out) = encrypt(&raw, &recips, &TransformOptions::default());
    let fprs: Vec<String> = [v4, rsa, v6]
        .iter()
        .map(|c| c.fingerprint().to_hex())
        .collect();
    assert_eq!(
        outcome,
        Outcome::Encrypted {
            fingerprints: fprs.clone()
        }
    );
    check_outer(&raw, &out, &fprs, false, "three recipients");
    let armored = armored_part(&out);
    assert_eq!(packet_summary(armored), (3, 2));
    for k in [v4, rsa, v6] {
        check_payload(&raw, &decrypt(k, armored), false, "three recipients");
    }

    let recips = recipients(&[&legacy, v6]);
    assert_eq!(recips.key_count(), 3);
    let (_, out) = encrypt(&raw, &recips, &TransformOptions::default());
    let armored = armored_part(&out);
    assert_eq!(
        packet_summary(armored),
        (3, 1),
        "SEIPDv1 for a legacy recipient"
    );
    check_payload(&raw, &decrypt(&legacy, armored), false, "legacy");
    check_payload(&raw, &decrypt(v6, armored), false, "v6 with legacy");
}

#[test]
fn recipients_refuse_unusable_certificates() {
    let (sign_only, _) = CertBuilder::new()
        .add_userid("Signer <s@example.org>")
        .add_signing_subkey()
        .generate()
        .unwrap();
    let err = Recipients::new(std::slice::from_ref(&sign_only), SystemTime::now()).unwrap_err();
    match err {
        TransformError::NoEncryptionKey(f) => assert_eq!(f, sign_only.fingerprint().to_hex()),
        e => panic!("unexpected {e}"),
    }
    assert!(matches!(
        Recipients::new(&[], SystemTime::now()),
        Err(TransformError::NoRecipients)
    ));
    // The same certificate twice counts once.
    let c = test_key(KeyKind::Cv25519)
        .clone()
        .strip_secret_key_material();
    let r = Recipients::new(&[c.clone(), c.clone()], SystemTime::now()).unwrap();
    assert_eq!(r.fingerprints(), [c.fingerprint().to_hex()]);
}

#[test]
fn already_encrypted_messages_are_left_alone() {
    let recips = recipients(&[test_key(KeyKind::Cv25519)]);
    let skips = skip_corpus();
    assert!(skips.len() >= 6);
    for (name, raw) in skips {
        let reason = if name.starts_with("pgp-mime") {
            SkipReason::PgpMime
        } else if name.starts_with("inline-pgp") {
            SkipReason::InlinePgp
        } else {
            SkipReason::Smime
        };
        for (eol, input) in variants(&raw) {
            let (outcome, output) = encrypt(&input, &recips, &TransformOptions::default());
            assert_eq!(outcome, Outcome::Skipped(reason), "{name} {eol}");
            // Unchanged apart from the trace header at the end of the header section.
            let orig = split_message(&input);
            let out = split_message(&output);
            let mut fields = orig.fields.clone();
            fields.push(format!("X-Sealpost: skipped; reason={}", reason.as_str()).into_bytes());
            assert!(out.fields == fields, "{name} {eol}: headers");
            assert!(out.body == orig.body, "{name} {eol}: body");
            let sep = if eol == "crlf" { &b"\r\n"[..] } else { b"\n" };
            let trace_len = out.fields.last().unwrap().len() + sep.len();
            assert_eq!(output.len(), input.len() + trace_len, "{name} {eol}: size");
        }
    }
}

#[test]
fn skip_decision_is_known_at_the_headers_when_possible() {
    let recips = recipients(&[test_key(KeyKind::Cv25519)]);
    let opts = TransformOptions::default();
    let enc = MessageEncryptor::new(
        [(
            "Content-Type",
            "multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x",
        )],
        &recips,
        &opts,
    )
    .unwrap();
    assert_eq!(enc.decision(), Decision::Skip(SkipReason::PgpMime));
    let done = enc.finish().unwrap();
    assert!(done.body.is_none());
    assert_eq!(
        done.header_edits,
        [HeaderEdit::Add {
            name: "X-Sealpost".into(),
            value: "skipped; reason=pgp-mime".into()
        }]
    );

    let enc = MessageEncryptor::new([("Content-Type", "text/html")], &recips, &opts).unwrap();
    assert_eq!(enc.decision(), Decision::Encrypt);

    // A plain-text body decides on its first non-blank line, fed a byte at a time.
    let mut enc = MessageEncryptor::new([("Subject", "x")], &recips, &opts).unwrap();
    assert_eq!(enc.decision(), Decision::Pending);
    for b in b"\r\n \r\n-----BEGIN PGP MESSAGE-----".iter() {
        enc.write_body(&[*b]).unwrap();
        assert_eq!(enc.decision(), Decision::Pending);
    }
    enc.write_body(b"\r\n").unwrap();
    assert_eq!(enc.decision(), Decision::Skip(SkipReason::InlinePgp));

    // Blank lines beyond the look-ahead window: decided without seeing any text.
    let mut enc = MessageEncryptor::new([("Subject", "x")], &recips, &opts).unwrap();
    enc.write_body(&b"\r\n".repeat(3000)).unwrap();
    assert_eq!(enc.decision(), Decision::Encrypt);
}

/// Feeds a message the way a milter does: header pairs (value without the leading space),
/// then CRLF body chunks of at most 64 KiB.
fn milter_style(
    raw: &[u8],
    recips: &Recipients,
    opts: &TransformOptions,
    chunk: usize,
) -> sealpost_milter::transform::Transformed {
    let crlf = to_crlf(raw);
    let split = split_message(&crlf);
    let pairs: Vec<(String, Vec<u8>)> = split
        .fields
        .iter()
        .map(|f| {
            let colon = f.iter().position(|b| *b == b':').unwrap();
            let mut v = &f[colon + 1..];
            if v.first() == Some(&b' ') {
                v = &v[1..];
            }
            // Postfix hands folded values over with LF.
            (field_name(f), to_lf(v))
        })
        .collect();
    let mut enc = MessageEncryptor::new(pairs, recips, opts).unwrap();
    for c in split.body.chunks(chunk.max(1)) {
        enc.write_body(c).unwrap();
    }
    enc.finish().unwrap()
}

#[test]
fn streaming_api_matches_the_whole_message_path() {
    let key = test_key(KeyKind::V6);
    let recips = recipients(&[key]);
    let opts = TransformOptions::default();
    for (name, raw) in corpus() {
        for chunk in [1, 7, 4096, 65536] {
            if chunk == 1 && raw.len() > 2000 {
                continue;
            }
            let done = milter_style(&raw, &recips, &opts, chunk);
            assert!(matches!(done.outcome, Outcome::Encrypted { .. }));
            let body = done.body.expect("new body");
            assert!(!body.is_spilled());
            let mut new_body = Vec::new();
            for c in body.into_reader().unwrap() {
                let c = c.unwrap();
                assert!(c.len() <= MAX_BODY_CHUNK);
                new_body.extend_from_slice(&c);
            }
            // The milter body is CRLF throughout.
            assert!(new_body
                .iter()
                .enumerate()
                .all(|(i, b)| *b != b'\n' || new_body[i - 1] == b'\r'));
            let payload = decrypt(key, armored_part(&new_body));
            // Postfix-style values lose the byte-exact spelling only in the space after the
            // colon, which the corpus always has.
            check_payload(
                &to_crlf(&raw),
                &payload,
                false,
                &format!("{name} chunk {chunk}"),
            );
            let orig = split_message(&raw);
            let has = |n: &str| {
                orig.fields
                    .iter()
                    .any(|f| field_name(f).eq_ignore_ascii_case(n))
            };
            let edits = &done.header_edits;
            assert!(matches!(edits.last(), Some(HeaderEdit::Add { name, value })
                if name == "X-Sealpost" && value.starts_with("encrypted; fpr=")));
            assert_eq!(
                edits
                    .iter()
                    .any(|e| matches!(e, HeaderEdit::Add { name, .. } if name == "MIME-Version")),
                !has("MIME-Version"),
                "{name}"
            );
            let ct_edit = edits
                .iter()
                .find(|e| match e {
                    HeaderEdit::Change { name, .. } | HeaderEdit::Add { name, .. } => {
                        name == "Content-Type"
                    }
                    _ => false,
                })
                .unwrap();
            match ct_edit {
                HeaderEdit::Change {
                    index: 1, value, ..
                } => {
                    assert!(has("Content-Type"));
                    assert!(value.starts_with("multipart/encrypted;\n protocol=\"application/pgp-encrypted\";\n boundary=\"sealpost-"));
                }
                HeaderEdit::Add { .. } => assert!(!has("Content-Type")),
                e => panic!("{e:?}"),
            }
            for f in orig.fields.iter().map(|f| field_name(f)) {
                let lower = f.to_ascii_lowercase();
                if lower.starts_with("content-") && lower != "content-type" || lower == "x-sealpost"
                {
                    assert!(
                        edits.iter().any(|e| matches!(e, HeaderEdit::Delete { name, .. } if name.eq_ignore_ascii_case(&f))),
                        "{name}: {f} not deleted"
                    );
                }
            }
        }
    }
}

#[test]
fn output_spills_to_a_file_beyond_the_threshold() {
    let key = test_key(KeyKind::Cv25519);
    let recips = recipients(&[key]);
    let dir = tempfile::tempdir().unwrap();
    let opts = TransformOptions {
        spill_threshold: 16 * 1024,
        spill_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let raw = std::fs::read(corpus_dir().join("base64-attachment.eml")).unwrap();
    let mut big = raw.clone();
    for _ in 0..20 {
        big.extend_from_slice(b"padding line padding line padding line padding line\r\n");
        big.extend_from_slice(&raw[raw.len() - 3000..]);
    }
    let done = milter_style(&big, &recips, &opts, 65536);
    let body = done.body.unwrap();
    assert!(body.is_spilled());
    assert!(body.peak_memory() <= 16 * 1024);
    let mut out = Vec::new();
    for c in body.into_reader().unwrap() {
        out.extend_from_slice(&c.unwrap());
    }
    check_payload(&big, &decrypt(key, armored_part(&out)), false, "spilled");
}

#[test]
fn errors_poison_and_the_type_is_send() {
    fn is_send<T: Send + 'static>() {}
    is_send::<MessageEncryptor>();
    is_send::<sealpost_milter::transform::Transformed>();

    // A broken output: the error reaches the caller as I/O, not a panic.
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let recips = recipients(&[test_key(KeyKind::Cv25519)]);
    let raw = std::fs::read(corpus_dir().join("plain-ascii.eml")).unwrap();
    let err = encrypt_message(&raw[..], Broken, &recips, &TransformOptions::default()).unwrap_err();
    assert!(matches!(err, TransformError::Io(_)), "{err}");
}

#[test]
fn header_section_without_body_separator_and_odd_input() {
    let key = test_key(KeyKind::Cv25519);
    let recips = recipients(&[key]);
    // No line ending at all.
    let raw = b"Subject: only a header";
    let (_, out) = encrypt(raw, &recips, &TransformOptions::default());
    assert!(
        out.starts_with(b"Subject: only a header\nContent-Type: multipart/encrypted;\n protocol=")
    );
    let payload = decrypt(key, armored_part(&out));
    assert!(payload
        .starts_with(b"Subject: only a header\r\nContent-Type: text/plain; charset=us-ascii;"));
    assert!(payload.ends_with(b"HP-Outer: Subject: only a header\r\n\r\n"));

    // Completely empty input still yields valid PGP/MIME.
    let (_, out) = encrypt(b"", &recips, &TransformOptions::default());
    check_mime_structure(&out, "empty input");
}
