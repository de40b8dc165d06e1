//! Fuzz-style property tests of the message transform, on stable Rust.
//!
//! Inputs come from three sources: the seed corpus in `tests/fuzz-corpus/transform/` (plus
//! the transform corpus), messages built by a structured generator from random bytes with
//! `arbitrary`, and byte-level mutations of the seeds. Everything is driven by a
//! deterministic PRNG, so a run is reproducible; the budget and the seed can be raised for
//! longer runs:
//!
//! ```text
//! SEALPOST_FUZZ_ITERS=20000 SEALPOST_FUZZ_SEED=7 \
//!     cargo test --release -p sealpost-milter --test fuzz_transform
//! ```
//!
//! For every input, through the whole-message path ([`encrypt_message`]) and through the
//! streaming [`MessageEncryptor`] fed in random chunks, as a milter is:
//! - nothing panics and the transform succeeds;
//! - an encrypted result parses with mail-parser as RFC 3156 PGP/MIME, its body holds
//!   nothing but the PGP/MIME framing and ASCII armor, and the decrypted payload's body
//!   equals the input's body byte for byte (line endings made CRLF);
//! - a skipped message keeps its body byte for byte;
//! - the decision (encrypt, or skip and why) and the payload do not depend on how the body
//!   was chunked.
//!
//! A failing input is written under the target directory and named in the panic message;
//! it then belongs in the seed corpus as a regression test.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use arbitrary::Unstructured;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sealpost_milter::transform::{
    encrypt_message, HeaderEdit, MessageEncryptor, Outcome, Recipients, TransformOptions,
};
use sequoia_openpgp::Cert;

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/transform")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(seed_dir())
        .expect("seed corpus")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty seed corpus");
    out.extend(corpus());
    out.extend(skip_corpus());
    out
}

// ---------------------------------------------------------------------------------------
// An independent reading of the input: header fields and body, by the transform's
// documented rule (an empty line ends the header section; a line that is neither a field
// nor a continuation starts the body).

struct Parsed {
    /// (name, value) as a milter hands them over: the name, and the value without the
    /// whitespace after the colon, folds kept.
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn is_field_start(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return false;
    };
    let mut name = &line[..colon];
    while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = name {
        name = rest;
    }
    !name.is_empty() && name.iter().all(|b| (33..=126).contains(b))
}

fn parse(raw: &[u8]) -> Parsed {
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut pos = 0;
    let mut body_start = raw.len();
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        if line == b"\n" || line == b"\r\n" {
            body_start = end;
            break;
        }
        if matches!(line[0], b' ' | b'\t') && !fields.is_empty() {
            fields.last_mut().unwrap().extend_from_slice(line);
        } else if !matches!(line[0], b' ' | b'\t') && is_field_start(line) {
            fields.push(line.to_vec());
        } else {
            body_start = pos;
            break;
        }
        pos = end;
    }
    let fields = fields
        .into_iter()
        .map(|mut f| {
            while f.last().is_some_and(|b| *b == b'\r' || *b == b'\n') {
                f.pop();
            }
            let colon = f.iter().position(|b| *b == b':').unwrap();
            let mut name = &f[..colon];
            while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = name {
                name = rest;
            }
            let mut value = &f[colon + 1..];
            while let [b' ' | b'\t', rest @ ..] = value {
                value = rest;
            }
            (
                String::from_utf8(name.to_vec()).unwrap(),
                // Postfix hands folded values over with LF.
                to_lf(value),
            )
        })
        .collect();
    Parsed {
        fields,
        body: raw[body_start..].to_vec(),
    }
}

// ---------------------------------------------------------------------------------------
// Checks.

fn key() -> &'static Cert {
    test_key(KeyKind::Cv25519)
}

/// The options for an input, derived from its bytes so a replay is identical.
fn options_for(raw: &[u8]) -> (TransformOptions, u64) {
    // FNV-1a.
    let h = raw.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let opts = TransformOptions {
        protect_subject: h & 1 == 1,
        compress: h & 6 == 2,
        // Now and then a tiny threshold, so the output spills to a file.
        spill_threshold: if h & 24 == 8 {
            512
        } else {
            TransformOptions::default().spill_threshold
        },
        spill_dir: None,
    };
    (opts, h)
}

/// Everything after the header section of a message whose header section ends with an
/// empty line.
fn after_headers(msg: &[u8]) -> (&[u8], &[u8]) {
    for i in memchr_lf(msg) {
        let rest = &msg[i + 1..];
        if rest.starts_with(b"\n") {
            return (&msg[..i + 1], &rest[1..]);
        }
        if rest.starts_with(b"\r\n") {
            return (&msg[..i + 1], &rest[2..]);
        }
    }
    panic!("no end of the header section")
}

fn memchr_lf(msg: &[u8]) -> impl Iterator<Item = usize> + '_ {
    msg.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
}

/// The body of an encrypted message holds only PGP/MIME framing and ASCII armor: no byte of
/// the original content can be there in the clear.
fn check_outer_body_is_framing(out: &[u8], what: &str) {
    let (_, body) = after_headers(out);
    let text = std::str::from_utf8(body).unwrap_or_else(|_| panic!("{what}: outer body not ASCII"));
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        let framing = matches!(
            line,
            "" | "This is an OpenPGP/MIME encrypted message (RFC 3156)."
                | "Content-Type: application/pgp-encrypted"
                | "Content-Description: PGP/MIME version identification"
                | "Version: 1"
                | "Content-Type: application/octet-stream; name=\"encrypted.asc\""
                | "Content-Description: OpenPGP encrypted message"
                | "Content-Disposition: inline; filename=\"encrypted.asc\""
                | "-----BEGIN PGP MESSAGE-----"
                | "-----END PGP MESSAGE-----"
        ) || line.starts_with("--sealpost-")
            || line
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        assert!(
            framing,
            "{what}: unexpected line in the outer body: {line:?}"
        );
    }
}

/// Decrypts the payload of an encrypted message and returns it. `one_content_type` says
/// whether the input had one clean Content-Type field (or none): only then is it clear which
/// one a reader takes, and so that it carries the header-protection marker.
fn payload_of(out: &[u8], one_content_type: bool, what: &str) -> Vec<u8> {
    if mail_parser_reads(out) {
        check_mime_structure(out, what);
    } else {
        let outer = parse(out);
        let cts: Vec<&Vec<u8>> = outer
            .fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(cts.len(), 1, "{what}: one outer Content-Type");
        let ct = String::from_utf8_lossy(cts[0]);
        assert!(
            ct.starts_with("multipart/encrypted;")
                && ct.contains("protocol=\"application/pgp-encrypted\""),
            "{what}: outer Content-Type {ct:?}"
        );
    }
    check_outer_body_is_framing(out, what);
    // The armor in the body (a header field may quote an armor line too).
    let payload = decrypt(key(), armored_part(after_headers(out).1));
    assert!(
        payload
            .iter()
            .enumerate()
            .all(|(i, b)| *b != b'\n' || (i > 0 && payload[i - 1] == b'\r')),
        "{what}: payload has a bare LF"
    );
    if one_content_type && mail_parser_reads(&payload) {
        let inner = mail_parser_parse(&payload).expect("read above");
        let ct = inner.headers().iter().find_map(|h| match h.name() {
            n if n.eq_ignore_ascii_case("Content-Type") => h.value().as_content_type(),
            _ => None,
        });
        let ct = ct.unwrap_or_else(|| panic!("{what}: payload has no Content-Type"));
        assert_eq!(ct.attribute("hp"), Some("cipher"), "{what}: hp parameter");
    }
    payload
}

fn payload_body(payload: &[u8]) -> &[u8] {
    let i = payload
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("payload header section ends");
    &payload[i + 4..]
}

/// Applies milter header edits the way an MTA does (indexes count the original fields).
fn apply(fields: &[(String, Vec<u8>)], edits: &[HeaderEdit]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<Option<(String, Vec<u8>)>> = fields.iter().cloned().map(Some).collect();
    let nth = |name: &str, index: usize| {
        fields
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name))
            .nth(index.wrapping_sub(1))
            .map(|(i, _)| i)
    };
    let mut added = Vec::new();
    for e in edits {
        match e {
            HeaderEdit::Change { name, index, value } => match nth(name, *index) {
                Some(i) => out[i] = Some((name.clone(), value.clone().into_bytes())),
                None => added.push((name.clone(), value.clone().into_bytes())),
            },
            HeaderEdit::Delete { name, index } => {
                if let Some(i) = nth(name, *index) {
                    out[i] = None;
                }
            }
            HeaderEdit::Add { name, value } => {
                added.push((name.clone(), value.clone().into_bytes()))
            }
        }
    }
    out.into_iter().flatten().chain(added).collect()
}

#[derive(PartialEq, Eq)]
enum Result {
    Encrypted { payload_body: Vec<u8> },
    Skipped(String),
}

impl std::fmt::Debug for Result {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Result::Encrypted { payload_body } => {
                let head = &payload_body[..payload_body.len().min(48)];
                write!(
                    f,
                    "Encrypted({} body bytes, starting {:?})",
                    payload_body.len(),
                    String::from_utf8_lossy(head)
                )
            }
            Result::Skipped(reason) => write!(f, "Skipped({reason})"),
        }
    }
}

/// The streaming path: milter-style header pairs, the body in random chunks (some empty).
fn streaming(
    parsed: &Parsed,
    recips: &Recipients,
    opts: &TransformOptions,
    rng: &mut StdRng,
    what: &str,
) -> (Result, Vec<u8>) {
    let mut enc = MessageEncryptor::new(parsed.fields.iter().cloned(), recips, opts)
        .unwrap_or_else(|e| panic!("{what}: MessageEncryptor::new: {e}"));
    let mut rest = &parsed.body[..];
    let max = *[1usize, 3, 64, 4096, 70_000][..]
        .get(rng.gen_range(0..5))
        .unwrap();
    while !rest.is_empty() {
        let n = rng.gen_range(0..=max.min(rest.len()));
        enc.write_body(&rest[..n])
            .unwrap_or_else(|e| panic!("{what}: write_body: {e}"));
        rest = &rest[n..];
    }
    let done = enc
        .finish()
        .unwrap_or_else(|e| panic!("{what}: finish: {e}"));
    assert_eq!(done.bytes_in, parsed.body.len() as u64, "{what}: bytes_in");
    let headers = apply(&parsed.fields, &done.header_edits);
    let traces: Vec<&Vec<u8>> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("X-Sealpost"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(traces.len(), 1, "{what}: one trace header");
    match done.outcome {
        Outcome::Skipped(reason) => {
            assert!(done.body.is_none(), "{what}: skipped but body replaced");
            (Result::Skipped(reason.to_string()), Vec::new())
        }
        Outcome::Encrypted { fingerprints } => {
            assert_eq!(fingerprints, recips.fingerprints(), "{what}");
            let mut reader = done
                .body
                .unwrap_or_else(|| panic!("{what}: encrypted without a body"))
                .into_reader()
                .unwrap();
            let mut body = Vec::new();
            while let Some(chunk) = reader.next_chunk().unwrap() {
                assert!(chunk.len() <= sealpost_milter::transform::MAX_BODY_CHUNK);
                body.extend_from_slice(&chunk);
            }
            let mut msg = Vec::new();
            for (n, v) in &headers {
                msg.extend_from_slice(n.as_bytes());
                msg.extend_from_slice(b": ");
                msg.extend_from_slice(&to_crlf(v));
                msg.extend_from_slice(b"\r\n");
            }
            msg.extend_from_slice(b"\r\n");
            msg.extend_from_slice(&body);
            let one_ct = clear_content_type(&parsed.fields);
            let payload = payload_of(&msg, one_ct, &format!("{what} (streaming)"));
            (
                Result::Encrypted {
                    payload_body: payload_body(&payload).to_vec(),
                },
                payload,
            )
        }
    }
}

/// mail-parser's reading of a message. Its debug builds assert on some damaged nested
/// multiparts (`debug_assert!` in its part walker); the payload holds the original body,
/// damage included, so such a message counts as one mail-parser cannot read.
fn mail_parser_parse(msg: &[u8]) -> Option<mail_parser::Message<'_>> {
    catch_unwind(AssertUnwindSafe(|| {
        mail_parser::MessageParser::default().parse(msg)
    }))
    .ok()
    .flatten()
}

/// Whether mail-parser reads the header section of `msg` field for field as the transform
/// does. mail-parser 0.11 lets a malformed Date (`+00it`, `+0000M`) swallow a following
/// folded field; the transform keeps such a Date as it is, so on those messages mail-parser
/// cannot be the judge, and the structure is checked independently instead.
fn mail_parser_reads(msg: &[u8]) -> bool {
    let Some(m) = mail_parser_parse(msg) else {
        return false;
    };
    let theirs: Vec<String> = m
        .headers()
        .iter()
        .map(|h| h.name().to_ascii_lowercase())
        .collect();
    let ours: Vec<String> = parse(msg)
        .fields
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    theirs == ours
}

/// Whether the input has at most one Content-Type field and, if one, it is valid RFC 2045
/// syntax: `type/subtype` and `; attribute=value` parameters, values tokens or quoted
/// strings, folding whitespace between (comments are left out). Only then is it clear which
/// field a reader takes as the payload's Content-Type and how it reads the parameters, so
/// that it finds the header-protection marker; a broken or doubled field is kept as it is
/// (the payload still decrypts byte-exact). The transform also closes an unterminated
/// quoted-string or comment before appending the marker: `HP_SEEDS` checks that on seeds.
fn clear_content_type(fields: &[(String, Vec<u8>)]) -> bool {
    let cts: Vec<&Vec<u8>> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
        .map(|(_, v)| v)
        .collect();
    match cts.as_slice() {
        [] => true,
        [v] => valid_content_type(v),
        _ => false,
    }
}

fn valid_content_type(value: &[u8]) -> bool {
    // Unfold: a line break must be followed by whitespace.
    let mut v = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'\n' {
            if !matches!(value.get(i + 1), Some(b' ' | b'\t')) {
                return false;
            }
        } else {
            v.push(value[i]);
        }
        i += 1;
    }
    if !v
        .iter()
        .all(|b| b.is_ascii_graphic() || matches!(b, b' ' | b'\t'))
    {
        return false;
    }
    let is_token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b);
    let mut p = 0;
    let skip_ws = |p: &mut usize| {
        while *p < v.len() && matches!(v[*p], b' ' | b'\t') {
            *p += 1;
        }
    };
    let token = |p: &mut usize| {
        let start = *p;
        while *p < v.len() && is_token(v[*p]) {
            *p += 1;
        }
        *p > start
    };
    skip_ws(&mut p);
    if !token(&mut p) || v.get(p) != Some(&b'/') {
        return false;
    }
    p += 1;
    if !token(&mut p) {
        return false;
    }
    loop {
        skip_ws(&mut p);
        if p == v.len() {
            return true;
        }
        if v[p] != b';' {
            return false;
        }
        p += 1;
        skip_ws(&mut p);
        if p == v.len() {
            return true;
        }
        if !token(&mut p) {
            return false;
        }
        skip_ws(&mut p);
        if v.get(p) != Some(&b'=') {
            return false;
        }
        p += 1;
        skip_ws(&mut p);
        if v.get(p) == Some(&b'"') {
            p += 1;
            loop {
                match v.get(p) {
                    None => return false,
                    Some(b'"') => {
                        p += 1;
                        break;
                    }
                    Some(b'\\') => {
                        if p + 1 >= v.len() {
                            return false;
                        }
                        p += 2;
                    }
                    Some(_) => p += 1,
                }
            }
        } else if !token(&mut p) {
            return false;
        }
    }
}

/// Runs every property on one input.
fn check(raw: &[u8], what: &str) {
    let recips = recipients(&[key()]);
    let (opts, h) = options_for(raw);
    let parsed = parse(raw);
    let expected_body = to_crlf(&parsed.body);

    // The whole-message path.
    let mut out = Vec::new();
    let outcome = encrypt_message(raw, &mut out, &recips, &opts)
        .unwrap_or_else(|e| panic!("{what}: encrypt_message: {e}"));
    let whole = match &outcome {
        Outcome::Encrypted { .. } => {
            // Header fields are copied as they are, so only an input without bare LF
            // promises an output without.
            let bare_lf = raw
                .iter()
                .enumerate()
                .any(|(i, b)| *b == b'\n' && (i == 0 || raw[i - 1] != b'\r'));
            if is_crlf(raw) && !bare_lf {
                assert!(
                    out.iter()
                        .enumerate()
                        .all(|(i, b)| *b != b'\n' || (i > 0 && out[i - 1] == b'\r')),
                    "{what}: CRLF input, bare LF in the output"
                );
            }
            let one_ct = clear_content_type(&parsed.fields);
            let payload = payload_of(&out, one_ct, what);
            let body = payload_body(&payload);
            assert!(
                body == expected_body,
                "{what}: payload body differs from the input body"
            );
            Result::Encrypted {
                payload_body: body.to_vec(),
            }
        }
        Outcome::Skipped(reason) => {
            assert!(
                out.ends_with(&parsed.body),
                "{what}: skipped message body changed"
            );
            let trace = format!("X-Sealpost: skipped; reason={reason}");
            assert!(
                find(&out, trace.as_bytes()).is_some(),
                "{what}: no trace header"
            );
            Result::Skipped(reason.to_string())
        }
    };

    // The streaming path twice, in differently chunked pieces: same decision, same
    // payload body, and the same payload as each other.
    let mut rng = StdRng::seed_from_u64(h);
    let (a, payload_a) = streaming(&parsed, &recips, &opts, &mut rng, what);
    let (b, payload_b) = streaming(&parsed, &recips, &opts, &mut rng, what);
    assert_eq!(
        a, whole,
        "{what}: streaming and whole-message paths disagree"
    );
    assert_eq!(a, b, "{what}: the result depends on the chunking");
    assert!(
        payload_a == payload_b,
        "{what}: payload depends on the chunking"
    );
}

/// Runs `check`, saving the input where a failure can be replayed from.
fn run(raw: &[u8], what: &str) {
    let r = catch_unwind(AssertUnwindSafe(|| check(raw, what)));
    if let Err(panic) = r {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let (_, h) = options_for(raw);
        let path = dir.join(format!("transform-{h:016x}.eml"));
        std::fs::write(&path, raw).unwrap();
        eprintln!(
            "{what}: failing input saved to {} (add it to tests/fuzz-corpus/transform/)",
            path.display()
        );
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------------------------
// The structured generator.

const NAMES: &[&str] = &[
    "Subject",
    "From",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "Reply-To",
    "References",
    "In-Reply-To",
    "Content-Type",
    "content-type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "Content-ID",
    "Content-",
    "MIME-Version",
    "X-Sealpost",
    "Received",
    "DKIM-Signature",
    "HP-Outer",
    "X-Spam",
];

const VALUES: &[&str] = &[
    "text/plain",
    "text/plain; charset=utf-8",
    "Text/Plain;charset=\"us-ascii\"",
    "text/plain; hp=\"cipher\"",
    "text/plain; protected-headers=\"v1\";",
    "text/html",
    "multipart/mixed; boundary=\"b1\"",
    "multipart/alternative; boundary=b2",
    "multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256; boundary=s",
    "multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x",
    "multipart/encrypted",
    "application/pgp-encrypted",
    "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
    "application/x-pkcs7-mime; smime-type=\"authEnveloped-data\"",
    "application/pkcs7-mime; smime-type=signed-data",
    "message/rfc822",
    "base64",
    "quoted-printable",
    "8bit",
    "7bit",
    "1.0",
    "encrypted; fpr=0000",
    "=?utf-8?b?w6TDtsO8?=",
    "Grüße, 日本語",
    "<id@example.org>",
    "Alice <alice@example.org>",
    "[...]",
    "",
    ";",
    "\"",
    "boundary=\"",
    "text/plain; charset=\"utf-8",
    "text/plain; x=\"a\\",
    "text/plain (comment",
    "text/plain; charset=utf-8 (a \"quoted\" comment)",
    "(",
];

const BODY_LINES: &[&str] = &[
    "-----BEGIN PGP MESSAGE-----",
    "-----END PGP MESSAGE-----",
    "-----BEGIN PGP SIGNED MESSAGE-----",
    "  -----BEGIN PGP MESSAGE-----  ",
    "--b1",
    "--b1--",
    "--x",
    "--sealpost-000000000000000000000000",
    "Content-Type: text/plain",
    "Version: 1",
    ".",
    "..",
    "From someone",
    "=2E",
    "=",
    "hello",
    "Grüße",
    "\t",
    " ",
    "\r",
    "\0",
];

fn pick<'a>(u: &mut Unstructured, list: &'a [&'a str]) -> arbitrary::Result<&'a str> {
    Ok(list[u.choose_index(list.len())?])
}

fn raw_bytes(u: &mut Unstructured, max: usize) -> arbitrary::Result<Vec<u8>> {
    let n = u.int_in_range(0..=max)?;
    Ok(u.bytes(n.min(u.len()))?.to_vec())
}

/// A message: header fields (known and odd names, odd separators, folds, 8-bit bytes),
/// maybe an empty line, and a body made of tricky lines, long lines, blank runs and raw
/// bytes, with LF, CRLF or mixed line endings.
fn gen_message(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let eol_mode: u8 = u.int_in_range(0..=2)?;
    let eol = |u: &mut Unstructured| -> arbitrary::Result<&'static [u8]> {
        Ok(match eol_mode {
            0 => b"\n",
            1 => b"\r\n",
            _ => {
                if u.arbitrary()? {
                    b"\n"
                } else {
                    b"\r\n"
                }
            }
        })
    };
    let mut m = Vec::new();
    for _ in 0..u.int_in_range(0..=12)? {
        match u.int_in_range(0..=9)? {
            0 => m.extend_from_slice(&raw_bytes(u, 20)?),
            1 => {
                let name = raw_bytes(u, 12)?;
                m.extend(name.into_iter().filter(|b| *b != b'\n'));
            }
            _ => m.extend_from_slice(pick(u, NAMES)?.as_bytes()),
        }
        m.extend_from_slice(u.choose(&[&b": "[..], b":", b" : ", b":\t", b":  "])?);
        for part in 0..u.int_in_range(1..=3)? {
            if part > 0 {
                m.extend_from_slice(eol(u)?);
                m.extend_from_slice(u.choose(&[&b" "[..], b"\t", b"   "])?);
            }
            if u.arbitrary()? {
                m.extend_from_slice(pick(u, VALUES)?.as_bytes());
            } else {
                let v = raw_bytes(u, 40)?;
                m.extend(v.into_iter().filter(|b| *b != b'\n'));
            }
        }
        m.extend_from_slice(eol(u)?);
    }
    match u.int_in_range(0..=7)? {
        0 => {} // no empty line: the body starts at the first non-field line, or is absent
        1 => m.extend_from_slice(b"\r\n"),
        _ => m.extend_from_slice(eol(u)?),
    }
    for _ in 0..u.int_in_range(0..=24)? {
        match u.int_in_range(0..=9)? {
            0 => m.extend_from_slice(&raw_bytes(u, 200)?),
            1 => {
                let n = u.int_in_range(0..=3000)?;
                let c = *u.choose(b"a =")?;
                m.extend(std::iter::repeat_n(c, n));
            }
            2 => {
                // A run of blank lines, long enough to cross the inline-PGP look-ahead.
                let n = u.int_in_range(0..=2500)?;
                for _ in 0..n {
                    m.extend_from_slice(eol(u)?);
                }
            }
            _ => m.extend_from_slice(pick(u, BODY_LINES)?.as_bytes()),
        }
        if u.ratio(7, 8)? {
            m.extend_from_slice(eol(u)?);
        }
    }
    Ok(m)
}

// ---------------------------------------------------------------------------------------
// Byte-level mutations of the seeds.

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut m = input.to_vec();
    for _ in 0..rng.gen_range(1..=8) {
        let len = m.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                m[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                m[i] = rng.gen();
            }
            2 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 64));
                m.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 256));
                let copy = m[a..b].to_vec();
                let at = rng.gen_range(0..=m.len());
                m.splice(at..at, copy);
            }
            4 => {
                let frag: &[u8] = match rng.gen_range(0..4) {
                    0 => BODY_LINES[rng.gen_range(0..BODY_LINES.len())].as_bytes(),
                    1 => VALUES[rng.gen_range(0..VALUES.len())].as_bytes(),
                    2 => b"\r\n",
                    _ => b"\n\n",
                };
                let at = rng.gen_range(0..=len);
                m.splice(at..at, frag.iter().copied());
            }
            5 if len > 0 => {
                m.truncate(rng.gen_range(0..len));
            }
            6 => m = to_lf(&m),
            _ => m = to_crlf(&m),
        }
    }
    m
}

// ---------------------------------------------------------------------------------------
// The tests.

/// Seeds with a broken Content-Type that the transform repairs before appending the
/// header-protection marker, which mail-parser must then find.
const HP_SEEDS: &[&str] = &["unterminated-quote.eml", "unclosed-comment.eml"];

#[test]
fn seed_corpus_holds_every_property() {
    let seeds = seeds();
    for (name, raw) in &seeds {
        run(raw, &format!("seed {name}"));
    }
    let recips = recipients(&[key()]);
    for name in HP_SEEDS {
        let (_, raw) = seeds.iter().find(|(n, _)| n == name).expect("HP seed");
        let mut out = Vec::new();
        encrypt_message(&raw[..], &mut out, &recips, &TransformOptions::default()).unwrap();
        // A single Content-Type, read by mail-parser: the marker must be there.
        payload_of(&out, true, name);
    }
}

#[test]
fn generated_messages_hold_every_property() {
    let iters = env_u64("SEALPOST_FUZZ_ITERS", 300);
    let seed = env_u64("SEALPOST_FUZZ_SEED", 1);
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..iters {
        let mut bytes = vec![0u8; rng.gen_range(0..8192)];
        rng.fill_bytes(&mut bytes);
        let mut u = Unstructured::new(&bytes);
        let raw = gen_message(&mut u).expect("the generator takes any bytes");
        run(&raw, &format!("generated #{i} (seed {seed})"));
    }
}

#[test]
fn mutated_seeds_hold_every_property() {
    let iters = env_u64("SEALPOST_FUZZ_ITERS", 300);
    let seed = env_u64("SEALPOST_FUZZ_SEED", 1);
    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(0x5eed));
    for i in 0..iters {
        let (name, raw) = &seeds[rng.gen_range(0..seeds.len())];
        let m = mutate(&mut rng, raw);
        run(&m, &format!("mutation #{i} of {name} (seed {seed})"));
    }
}

/// The raw-bytes check: arbitrary bytes as a message never panic the transform.
#[test]
fn random_bytes_never_panic() {
    let iters = env_u64("SEALPOST_FUZZ_ITERS", 300);
    let seed = env_u64("SEALPOST_FUZZ_SEED", 1);
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(0xb17e5));
    for i in 0..iters {
        let mut raw = vec![0u8; rng.gen_range(0..2048)];
        rng.fill_bytes(&mut raw);
        run(&raw, &format!("random #{i} (seed {seed})"));
    }
}

/// Regression: `sealpost encrypt` dropped the body of an inline-PGP message whose body
/// ended, without a final line break, before the transform had decided (the skip decision
/// came only at the end, after the held bytes were thrown away).
#[test]
fn skipped_body_that_ends_undecided_is_kept() {
    let recips = recipients(&[key()]);
    for raw in [
        &b"Subject: x\n\n-----BEGIN PGP MESSAGE-----"[..],
        b"Subject: x\r\n\r\n\r\n  -----BEGIN PGP MESSAGE-----",
    ] {
        let mut out = Vec::new();
        let outcome =
            encrypt_message(raw, &mut out, &recips, &TransformOptions::default()).unwrap();
        assert!(matches!(outcome, Outcome::Skipped(_)), "{outcome:?}");
        let parsed = parse(raw);
        assert!(
            out.ends_with(&parsed.body),
            "body lost: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
}

#[test]
fn generator_is_deterministic() {
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let a = gen_message(&mut Unstructured::new(&bytes)).unwrap();
    let b = gen_message(&mut Unstructured::new(&bytes)).unwrap();
    assert_eq!(a, b);
}
