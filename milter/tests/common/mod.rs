//! Shared helpers for the transform tests: the corpus, test keys, decryption, and an
//! independent check of the encrypted payload and the outer message.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use sealpost_milter::transform::{encrypt_message, Outcome, Recipients, TransformOptions};
use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, KeyHandle, Profile};

pub const PROTECTED: &[&str] = &[
    "Subject",
    "From",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
];

/// The corpus lives in the milter crate; the workspace's end-to-end tests share it.
pub fn corpus_dir() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let milter = if here.ends_with("milter") {
        here
    } else {
        here.join("milter")
    };
    milter.join("tests/corpus")
}

fn read_dir_eml(dir: PathBuf) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The messages that must be encrypted.
pub fn corpus() -> Vec<(String, Vec<u8>)> {
    sealpost_test_support::capture_logs();
    let c = read_dir_eml(corpus_dir());
    assert!(c.len() >= 15, "corpus incomplete");
    c
}

/// Already-encrypted messages; the file name starts with the skip reason.
pub fn skip_corpus() -> Vec<(String, Vec<u8>)> {
    read_dir_eml(corpus_dir().join("skip"))
}

pub fn is_crlf(raw: &[u8]) -> bool {
    match raw.iter().position(|b| *b == b'\n') {
        Some(i) => i > 0 && raw[i - 1] == b'\r',
        None => false,
    }
}

pub fn to_lf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

pub fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
    for b in to_lf(raw) {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Both line-ending variants of a corpus message.
pub fn variants(raw: &[u8]) -> [(&'static str, Vec<u8>); 2] {
    [("lf", to_lf(raw)), ("crlf", to_crlf(raw))]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Cv25519,
    Rsa3k,
    V6,
}

pub const ALL_KEYS: [KeyKind; 3] = [KeyKind::Cv25519, KeyKind::Rsa3k, KeyKind::V6];

/// A secret test key of the given kind, generated once per test binary.
pub fn test_key(kind: KeyKind) -> &'static Cert {
    sealpost_test_support::capture_logs();
    static KEYS: [OnceLock<Cert>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let (slot, suite, profile) = match kind {
        KeyKind::Cv25519 => (0, CipherSuite::Cv25519, Profile::RFC4880),
        KeyKind::Rsa3k => (1, CipherSuite::RSA3k, Profile::RFC4880),
        KeyKind::V6 => (2, CipherSuite::Cv25519, Profile::RFC9580),
    };
    KEYS[slot].get_or_init(|| {
        let (cert, _) =
            CertBuilder::general_purpose(Some(format!("Test {kind:?} <alice@example.org>")))
                .set_cipher_suite(suite)
                .set_profile(profile)
                .expect("profile")
                .set_creation_time(SystemTime::now() - std::time::Duration::from_secs(3600))
                .generate()
                .expect("key generation");
        use openpgp::serialize::SerializeInto;
        let armored = cert.as_tsk().armored().to_vec().expect("armor");
        sealpost_test_support::register_private_key(&String::from_utf8_lossy(&armored));
        cert
    })
}

pub fn recipients(certs: &[&Cert]) -> Recipients {
    let public: Vec<Cert> = certs
        .iter()
        .map(|c| (*c).clone().strip_secret_key_material())
        .collect();
    Recipients::new(&public, SystemTime::now()).expect("recipients")
}

/// Runs the whole-message transform into memory.
pub fn encrypt(raw: &[u8], recips: &Recipients, opts: &TransformOptions) -> (Outcome, Vec<u8>) {
    let mut out = Vec::new();
    let outcome = encrypt_message(raw, &mut out, recips, opts).expect("encrypt_message");
    (outcome, out)
}

/// The ASCII-armored block of a PGP/MIME message.
pub fn armored_part(outer: &[u8]) -> &[u8] {
    let begin = find(outer, b"-----BEGIN PGP MESSAGE-----").expect("armor begin");
    let end_marker = b"-----END PGP MESSAGE-----";
    let end = find(&outer[begin..], end_marker).expect("armor end") + begin + end_marker.len();
    &outer[begin..end]
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Helper<'a> {
    key: &'a Cert,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }
    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        let p = StandardPolicy::new();
        for ka in self
            .key
            .keys()
            .with_policy(&p, None)
            .for_transport_encryption()
            .for_storage_encryption()
            .secret()
        {
            let mut pair = ka.key().clone().into_keypair()?;
            for pkesk in pkesks {
                if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym_algo) {
                    if decrypt(algo, &sk) {
                        return Ok(None);
                    }
                }
            }
        }
        Err(anyhow::anyhow!("no key to decrypt"))
    }
}

/// Decrypts an (armored or binary) OpenPGP message with a secret test key.
pub fn decrypt(key: &Cert, message: &[u8]) -> Vec<u8> {
    let p = StandardPolicy::new();
    let mut d = DecryptorBuilder::from_bytes(message)
        .expect("parse")
        .with_policy(&p, None, Helper { key })
        .expect("decrypt");
    let mut out = Vec::new();
    d.read_to_end(&mut out).expect("read plaintext");
    out
}

/// A message split independently of the library: header fields (raw, folds kept, no final
/// line ending) and the body.
pub struct Split {
    pub fields: Vec<Vec<u8>>,
    pub body: Vec<u8>,
}

pub fn split_message(raw: &[u8]) -> Split {
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        if line == b"\n" || line == b"\r\n" {
            pos = end;
            break;
        }
        if matches!(line[0], b' ' | b'\t') && !fields.is_empty() {
            fields.last_mut().unwrap().extend_from_slice(line);
        } else {
            fields.push(line.to_vec());
        }
        pos = end;
    }
    for f in &mut fields {
        while f.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            f.pop();
        }
    }
    Split {
        fields,
        body: raw[pos..].to_vec(),
    }
}

pub fn field_name(raw: &[u8]) -> String {
    let colon = raw
        .iter()
        .position(|b| *b == b':')
        .expect("field has a colon");
    String::from_utf8_lossy(&raw[..colon]).trim().to_string()
}

fn field_value(raw: &[u8]) -> Vec<u8> {
    let colon = raw.iter().position(|b| *b == b':').unwrap();
    let v = &raw[colon + 1..];
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let mut v = v[start..].to_vec();
    while v.last().is_some_and(|b| b.is_ascii_whitespace()) {
        v.pop();
    }
    v
}

fn is_named(raw: &[u8], name: &str) -> bool {
    field_name(raw).eq_ignore_ascii_case(name)
}

fn is_protected(raw: &[u8]) -> bool {
    PROTECTED.iter().any(|p| is_named(raw, p))
}

fn is_content(raw: &[u8]) -> bool {
    field_name(raw).to_ascii_lowercase().starts_with("content-")
}

/// Checks a decrypted payload against the original message, byte for byte: the body, the
/// content header fields (the Content-Type with the two parameters appended), the copies of
/// the protected fields, and the HP-Outer fields.
pub fn check_payload(original: &[u8], payload: &[u8], protect_subject: bool, what: &str) {
    assert!(
        payload
            .iter()
            .enumerate()
            .all(|(i, b)| *b != b'\n' || (i > 0 && payload[i - 1] == b'\r')),
        "{what}: payload has a bare LF"
    );
    let orig = split_message(original);
    let inner = split_message(payload);
    assert!(
        inner.body == to_crlf(&orig.body),
        "{what}: payload body differs from the original body"
    );

    let mut expected: Vec<Vec<u8>> = Vec::new();
    for f in orig.fields.iter().filter(|f| is_protected(f)) {
        expected.push(to_crlf(f));
    }
    let mut seen_ct = false;
    for f in orig.fields.iter().filter(|f| is_content(f)) {
        let mut f = to_crlf(f);
        if is_named(&f, "Content-Type") && !seen_ct {
            seen_ct = true;
            while f.last().is_some_and(|b| b.is_ascii_whitespace()) {
                f.pop();
            }
            if f.last() != Some(&b';') {
                f.push(b';');
            }
            f.extend_from_slice(b"\r\n hp=\"cipher\"; protected-headers=\"v1\"");
        }
        expected.push(f);
    }
    if !seen_ct {
        expected.push(
            b"Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"; protected-headers=\"v1\""
                .to_vec(),
        );
    }
    let mut subject_seen = false;
    for f in orig.fields.iter().filter(|f| is_protected(f)) {
        let name = field_name(f);
        let value = if is_named(f, "Subject") && protect_subject {
            if subject_seen {
                continue;
            }
            subject_seen = true;
            b"[...]".to_vec()
        } else {
            to_crlf(&field_value(f))
        };
        let mut line = format!("HP-Outer: {name}: ").into_bytes();
        line.extend_from_slice(&value);
        expected.push(line);
    }
    if inner.fields != expected {
        let show = |v: &[Vec<u8>]| {
            v.iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "{what}: payload header section differs\n--- got:\n{}\n--- expected:\n{}",
            show(&inner.fields),
            show(&expected)
        );
    }
}

/// Checks the outer message: line endings as the input, the original non-content header
/// fields in order and unchanged (Subject aside when protected), the PGP/MIME structure as
/// mail-parser sees it, and the trace header.
pub fn check_outer(
    original: &[u8],
    output: &[u8],
    fingerprints: &[String],
    protect_subject: bool,
    what: &str,
) {
    if is_crlf(original) {
        assert!(
            output
                .iter()
                .enumerate()
                .all(|(i, b)| *b != b'\n' || (i > 0 && output[i - 1] == b'\r')),
            "{what}: CRLF input gave a bare LF in the output"
        );
    } else {
        assert!(
            !output.contains(&b'\r'),
            "{what}: LF input gave CR in the output"
        );
    }
    let orig = split_message(original);
    let out = split_message(output);

    let kept: Vec<Vec<u8>> = orig
        .fields
        .iter()
        .filter(|f| !is_content(f) && !is_named(f, "X-Sealpost"))
        .filter(|f| !(protect_subject && is_named(f, "Subject")))
        .cloned()
        .collect();
    let out_kept: Vec<Vec<u8>> = out
        .fields
        .iter()
        .filter(|f| !is_content(f) && !is_named(f, "X-Sealpost"))
        .filter(|f| !(protect_subject && is_named(f, "Subject")))
        // A MIME-Version the transform had to add is not an original field.
        .filter(|f| {
            let added = is_named(f, "MIME-Version")
                && !orig.fields.iter().any(|o| is_named(o, "MIME-Version"));
            !added
        })
        .cloned()
        .collect();
    assert!(kept == out_kept, "{what}: outer header fields changed");
    let contents: Vec<&Vec<u8>> = out.fields.iter().filter(|f| is_content(f)).collect();
    assert_eq!(contents.len(), 1, "{what}: one Content-* field outside");
    assert!(contents[0].starts_with(b"Content-Type: multipart/encrypted;"));
    assert_eq!(
        out.fields
            .iter()
            .filter(|f| is_named(f, "MIME-Version"))
            .count(),
        1,
        "{what}: MIME-Version"
    );
    if protect_subject && orig.fields.iter().any(|f| is_named(f, "Subject")) {
        let subjects: Vec<&Vec<u8>> = out
            .fields
            .iter()
            .filter(|f| is_named(f, "Subject"))
            .collect();
        assert_eq!(subjects, [&b"Subject: [...]".to_vec()], "{what}: subject");
    }
    let traces: Vec<&Vec<u8>> = out
        .fields
        .iter()
        .filter(|f| is_named(f, "X-Sealpost"))
        .collect();
    assert_eq!(
        traces,
        [&format!("X-Sealpost: encrypted; fpr={}", fingerprints.join(",")).into_bytes()],
        "{what}: trace header"
    );

    check_mime_structure(output, what);
}

/// The output parses as RFC 3156 PGP/MIME with mail-parser.
pub fn check_mime_structure(output: &[u8], what: &str) {
    use mail_parser::{MessageParser, MimeHeaders, PartType};
    let msg = MessageParser::default()
        .parse(output)
        .unwrap_or_else(|| panic!("{what}: mail-parser cannot parse the output"));
    let ct = msg.content_type().expect("content type");
    assert_eq!(ct.ctype(), "multipart", "{what}");
    assert_eq!(ct.subtype(), Some("encrypted"), "{what}");
    assert_eq!(ct.attribute("protocol"), Some("application/pgp-encrypted"));
    let root = msg.root_part();
    let parts = match &root.body {
        PartType::Multipart(p) => p.clone(),
        _ => panic!("{what}: root is not multipart"),
    };
    assert_eq!(parts.len(), 2, "{what}: two parts");
    let first = msg.part(parts[0]).unwrap();
    let ct = first.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("application", Some("pgp-encrypted"))
    );
    assert!(String::from_utf8_lossy(first.contents()).contains("Version: 1"));
    let second = msg.part(parts[1]).unwrap();
    let ct = second.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("application", Some("octet-stream"))
    );
    assert!(second
        .contents()
        .starts_with(b"-----BEGIN PGP MESSAGE-----"));
}

/// The PKESK packets and the SEIPD version of an encrypted message.
pub fn packet_summary(message: &[u8]) -> (usize, u8) {
    use openpgp::packet::Packet;
    use openpgp::parse::{PacketParserBuilder, PacketParserResult};
    let mut ppr = PacketParserBuilder::from_bytes(message)
        .unwrap()
        .build()
        .unwrap();
    let (mut pkesks, mut seip) = (0, 0);
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(_) => pkesks += 1,
            Packet::SEIP(s) => seip = s.version(),
            _ => {}
        }
        // Do not descend into the encrypted container.
        ppr = pp.next().unwrap().1;
    }
    (pkesks, seip)
}
