//! Decrypting a Maildir of sealpost-encrypted mail into a new Maildir.
//!
//! The source is only read. Every file is copied to the same relative path under the
//! destination; messages that sealpost encrypted (an `X-Sealpost: encrypted` trace field on a
//! PGP/MIME or S/MIME message) to the given key are replaced by the original message rebuilt from the
//! encrypted payload, everything else is copied byte for byte.
//!
//! Rebuilding inverts the transform: the outer header fields stay in order, the trace field
//! goes, the outer `Content-Type` is replaced by the original `Content-*` fields carried
//! inside (without the header-protection parameters the transform appended), an obscured
//! Subject gets its real value back, and the body is the original body.
//!
//! Two differences from the original can remain, both without meaning: a `MIME-Version`
//! field the transform added to a message that had none stays, and an original
//! `Content-Type` that ended in `;` comes back without it (the transform's inner field is
//! the same in both cases).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::recover::UnlockedKey;
use crate::smime::SmimeKey;
use crate::symmetric::{DecryptError, Keyring};

/// Largest message decrypted (larger ones are copied and reported).
const MAX_MESSAGE: usize = 1 << 30;

/// What happened to each file.
#[derive(Debug, Default, Serialize)]
pub struct MaildirReport {
    /// Messages decrypted.
    pub decrypted: u64,
    /// Files copied unchanged (not sealpost-encrypted, or not mail).
    pub copied: u64,
    /// sealpost-encrypted messages that are not addressed to this key (copied unchanged).
    pub other_key: u64,
    /// Messages that failed to decrypt (copied unchanged), with the reason.
    pub failed: Vec<(String, String)>,
}

/// Decrypts every sealpost-encrypted message of `src` into `dst` (which must not exist or
/// be empty). `progress` is called with (done, total) after each file.
pub fn decrypt_maildir(
    src: &Path,
    dst: &Path,
    key: &UnlockedKey,
    mut progress: impl FnMut(u64, u64),
) -> Result<MaildirReport> {
    if !src.is_dir() {
        bail!("{} is not a directory", src.display());
    }
    if !src.join("cur").is_dir() && !src.join("new").is_dir() {
        bail!(
            "{} is not a Maildir (it has neither cur/ nor new/)",
            src.display()
        );
    }
    let src_abs = src
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", src.display()))?;
    if dst.exists() {
        let empty = fs::read_dir(dst)
            .with_context(|| format!("cannot read {}", dst.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} exists and is not empty; give a new directory for the decrypted mail",
                dst.display()
            );
        }
        if dst.canonicalize()?.starts_with(&src_abs) {
            bail!("the output directory must not be inside the Maildir being read");
        }
    } else if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
        if parent.exists() && parent.canonicalize()?.starts_with(&src_abs) {
            bail!("the output directory must not be inside the Maildir being read");
        }
    }

    let mut files = Vec::new();
    let mut dirs = Vec::new();
    walk(src, Path::new(""), &mut files, &mut dirs)?;
    mkdir(dst)?;
    for d in &dirs {
        mkdir(&dst.join(d))?;
    }
    let key = match key {
        UnlockedKey::OpenPgp(cert) => MailKey::OpenPgp(Keyring::from_certs([cert.as_ref()])),
        UnlockedKey::Smime(k) => MailKey::Smime(k),
    };
    let mut report = MaildirReport::default();
    let total = files.len() as u64;
    for (i, rel) in files.iter().enumerate() {
        let from = src.join(rel);
        let to = dst.join(rel);
        let data = fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
        let in_mail_dir = rel
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "cur" || n == "new");
        let output = if in_mail_dir && is_sealpost_encrypted(&data) {
            match decrypt_message(&data, &key) {
                Ok(plain) => {
                    report.decrypted += 1;
                    plain
                }
                Err(MessageError::Decrypt(DecryptError::NotForUs(_)) | MessageError::OtherKey) => {
                    report.other_key += 1;
                    data
                }
                Err(e) => {
                    report
                        .failed
                        .push((rel.display().to_string(), e.to_string()));
                    data
                }
            }
        } else {
            report.copied += 1;
            data
        };
        write_private(&to, &output)?;
        progress(i as u64 + 1, total);
    }
    Ok(report)
}

fn walk(base: &Path, rel: &Path, files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) -> Result<()> {
    let dir = base.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ty = e.file_type()?;
        let r = rel.join(e.file_name());
        if ty.is_dir() {
            dirs.push(r.clone());
            walk(base, &r, files, dirs)?;
        } else if ty.is_file() {
            files.push(r);
        }
        // Symlinks and special files are not followed.
    }
    Ok(())
}

fn mkdir(p: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .with_context(|| format!("cannot create {}", p.display()))
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Why one message could not be decrypted.
#[derive(Debug)]
pub enum MessageError {
    Malformed(&'static str),
    Decrypt(DecryptError),
    /// A message that is not encrypted to this key (another format or certificate).
    OtherKey,
    Smime(String),
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageError::Malformed(why) => write!(f, "malformed encrypted message: {why}"),
            MessageError::Decrypt(e) => e.fmt(f),
            MessageError::OtherKey => write!(f, "the message is encrypted to another key"),
            MessageError::Smime(why) => f.write_str(why),
        }
    }
}

/// The key a Maildir is decrypted with.
pub enum MailKey<'a> {
    OpenPgp(Keyring),
    Smime(&'a SmimeKey),
}

/// One header field as it appears (folds included, line ending excluded).
struct Field<'a> {
    raw: &'a [u8],
}

impl Field<'_> {
    fn name(&self) -> &[u8] {
        let colon = self.raw.iter().position(|b| *b == b':').unwrap_or(0);
        trim(&self.raw[..colon])
    }
    fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }
    fn value(&self) -> &[u8] {
        let colon = self.raw.iter().position(|b| *b == b':').unwrap_or(0);
        trim(&self.raw[colon + 1..])
    }
    fn is_content(&self) -> bool {
        let n = self.name();
        n.len() > 8 && n[..8].eq_ignore_ascii_case(b"content-")
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// Splits a message into header fields and the body (after the empty line).
fn split_message(data: &[u8]) -> (Vec<Field<'_>>, &[u8]) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    let mut start: Option<usize> = None;
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |e| pos + e + 1);
        let line = &data[pos..end];
        let content = strip_eol(line);
        if content.is_empty() {
            if let Some(s) = start.take() {
                fields.push(Field {
                    raw: strip_eol(&data[s..pos]),
                });
            }
            return (fields, &data[end..]);
        }
        if content[0] == b' ' || content[0] == b'\t' {
            // Continuation of the field being read.
        } else {
            if let Some(s) = start.take() {
                fields.push(Field {
                    raw: strip_eol(&data[s..pos]),
                });
            }
            start = Some(pos);
        }
        pos = end;
    }
    if let Some(s) = start {
        fields.push(Field {
            raw: strip_eol(&data[s..]),
        });
    }
    (fields, &data[data.len()..])
}

fn strip_eol(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// True for a PGP/MIME or S/MIME message carrying sealpost's `encrypted` trace field.
pub fn is_sealpost_encrypted(data: &[u8]) -> bool {
    let (fields, _) = split_message(data);
    let traced = fields
        .iter()
        .any(|f| f.is("X-Sealpost") && f.value().starts_with(b"encrypted"));
    traced && outer_format(&fields).is_some()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    PgpMime,
    Smime,
}

fn outer_format(fields: &[Field]) -> Option<Format> {
    let ct = fields.iter().find(|f| f.is("Content-Type"))?;
    let v = ct.value().to_ascii_lowercase();
    if v.starts_with(b"multipart/encrypted") {
        Some(Format::PgpMime)
    } else if v.starts_with(b"application/pkcs7-mime") {
        Some(Format::Smime)
    } else {
        None
    }
}

/// The encrypted payload of a sealpost message: the MIME entity the transform encrypted.
fn payload(outer: &[Field], body: &[u8], key: &MailKey) -> Result<Vec<u8>, MessageError> {
    match (outer_format(outer), key) {
        (Some(Format::PgpMime), MailKey::OpenPgp(keyring)) => {
            let begin = find(body, b"-----BEGIN PGP MESSAGE-----")
                .ok_or(MessageError::Malformed("no armored OpenPGP message"))?;
            let end_marker = b"-----END PGP MESSAGE-----";
            let end = find(&body[begin..], end_marker)
                .map(|e| begin + e + end_marker.len())
                .ok_or(MessageError::Malformed("the armored message is cut off"))?;
            keyring
                .decrypt(&body[begin..end], MAX_MESSAGE)
                .map_err(MessageError::Decrypt)
        }
        (Some(Format::Smime), MailKey::Smime(k)) => {
            // The trace field names the certificates: mail for another one is no error.
            let for_us = outer.iter().any(|f| {
                f.is("X-Sealpost")
                    && String::from_utf8_lossy(f.value())
                        .split("fpr=")
                        .nth(1)
                        .is_some_and(|ids| ids.split(',').any(|id| id.trim() == k.id))
            });
            if !for_us {
                return Err(MessageError::OtherKey);
            }
            let b64: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            use base64::Engine;
            let der = base64::engine::general_purpose::STANDARD
                .decode(&b64)
                .map_err(|_| MessageError::Malformed("the S/MIME body is not base64"))?;
            crate::smime::decrypt_cms(&der, k).map_err(MessageError::Smime)
        }
        // A message of the other format is for another key of the account.
        (Some(_), _) => Err(MessageError::OtherKey),
        (None, _) => Err(MessageError::Malformed("not a PGP/MIME or S/MIME message")),
    }
}

/// The Content-Type the transform writes inside when the original had none.
const DEFAULT_INNER_CT: &[u8] =
    b"Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"; protected-headers=\"v1\"";

/// Rebuilds the original message from a sealpost-encrypted one.
pub fn decrypt_message(data: &[u8], key: &MailKey) -> Result<Vec<u8>, MessageError> {
    let (outer, body) = split_message(data);
    let payload = payload(&outer, body, key)?;
    let (inner, inner_body) = split_message(&payload);
    let first_line_end = data.iter().position(|b| *b == b'\n').unwrap_or(0);
    let eol: &[u8] = if first_line_end > 0 && data[first_line_end - 1] == b'\r' {
        b"\r\n"
    } else {
        b"\n"
    };

    // Inner fields: protected copies of user-facing fields, the original Content-* fields,
    // then HP-Outer records.
    let content: Vec<&Field> = inner.iter().filter(|f| f.is_content()).collect();
    let outer_subject_obscured = outer
        .iter()
        .find(|f| f.is("Subject"))
        .is_some_and(|f| f.value() == b"[...]");
    let inner_subject = inner.iter().find(|f| f.is("Subject"));

    let mut out: Vec<u8> = Vec::with_capacity(payload.len() + 1024);
    let mut content_done = false;
    for f in &outer {
        if f.is("X-Sealpost") {
            continue;
        }
        if f.is("Content-Type") {
            if !content_done {
                content_done = true;
                for c in &content {
                    let raw = original_content_field(c);
                    if c.is("Content-Type") && raw == DEFAULT_INNER_CT {
                        // The original had no Content-Type at all.
                        continue;
                    }
                    push_field(&mut out, raw, eol);
                }
            }
            continue;
        }
        if f.is("Subject") && outer_subject_obscured {
            if let Some(s) = inner_subject {
                push_field(&mut out, s.raw, eol);
                continue;
            }
        }
        push_field(&mut out, f.raw, eol);
    }
    out.extend_from_slice(eol);
    if eol == b"\n" {
        out.extend(crlf_to_lf(inner_body));
    } else {
        out.extend_from_slice(inner_body);
    }
    Ok(out)
}

/// The original Content-Type, without the parameters the transform appended on their own
/// folded line (the original bytes are a prefix of the inner field).
fn original_content_field<'a>(f: &Field<'a>) -> &'a [u8] {
    if !f.is("Content-Type") {
        return f.raw;
    }
    for suffix in [
        &b";\r\n hp=\"cipher\"; protected-headers=\"v1\""[..],
        &b";\r\n hp=\"cipher\""[..],
        &b";\r\n protected-headers=\"v1\""[..],
    ] {
        if let Some(p) = f.raw.strip_suffix(suffix) {
            return p;
        }
        // A Content-Type that ended in ";" got only the fold.
        if let Some(p) = f.raw.strip_suffix(&suffix[1..]) {
            if p.ends_with(b";") {
                return p;
            }
        }
    }
    f.raw
}

fn push_field(out: &mut Vec<u8>, raw: &[u8], eol: &[u8]) {
    if eol == b"\n" {
        out.extend(crlf_to_lf(raw));
    } else {
        out.extend_from_slice(raw);
    }
    out.extend_from_slice(eol);
}

fn crlf_to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_folded_fields_and_the_body() {
        let m = b"A: 1\nB: two\n  folded\r\nC:3\n\nbody\n\nmore\n";
        let (fields, body) = split_message(m);
        let raws: Vec<&[u8]> = fields.iter().map(|f| f.raw).collect();
        assert_eq!(
            raws,
            vec![&b"A: 1"[..], &b"B: two\n  folded"[..], &b"C:3"[..]]
        );
        assert!(fields[1].is("b"));
        assert_eq!(fields[2].value(), b"3");
        assert_eq!(body, b"body\n\nmore\n");
        // No body at all.
        let (fields, body) = split_message(b"A: 1\nB: 2");
        assert_eq!(fields.len(), 2);
        assert!(body.is_empty());
    }

    #[test]
    fn strips_only_the_parameters_the_transform_added() {
        let f = |raw: &'static [u8]| Field { raw };
        assert_eq!(
            original_content_field(&f(
                b"Content-Type: text/plain; charset=utf-8;\r\n hp=\"cipher\"; protected-headers=\"v1\""
            )),
            b"Content-Type: text/plain; charset=utf-8"
        );
        // Already present parameters were not added, so nothing is stripped.
        assert_eq!(
            original_content_field(&f(b"Content-Type: text/plain; hp=\"cipher\"")),
            b"Content-Type: text/plain; hp=\"cipher\""
        );
        assert_eq!(
            original_content_field(&f(b"Content-Transfer-Encoding: 8bit")),
            b"Content-Transfer-Encoding: 8bit"
        );
    }

    #[test]
    fn recognises_sealpost_mail_only() {
        let enc = b"From: a\nX-Sealpost: encrypted; fpr=AB\nContent-Type: multipart/encrypted;\n protocol=\"application/pgp-encrypted\"\n\nx\n";
        assert!(is_sealpost_encrypted(enc));
        let skipped = b"From: a\nX-Sealpost: skipped; reason=encrypted\nContent-Type: multipart/encrypted\n\nx\n";
        assert!(!is_sealpost_encrypted(skipped));
        assert!(!is_sealpost_encrypted(b"From: a\n\nplain\n"));
        // Not sealpost's, and broken: no armored message inside.
        let keyring = MailKey::OpenPgp(Keyring::from_certs([]));
        assert!(matches!(
            decrypt_message(enc, &keyring),
            Err(MessageError::Malformed(_))
        ));
    }
}
