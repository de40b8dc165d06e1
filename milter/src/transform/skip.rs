//! Recognising mail that is already encrypted, which is delivered unchanged.

use super::headers::{ContentType, HeaderField};

/// Why a message was left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// PGP/MIME: top-level `multipart/encrypted` or `application/pgp-encrypted`.
    PgpMime,
    /// A plain-text body that starts with `-----BEGIN PGP MESSAGE-----`.
    InlinePgp,
    /// S/MIME `enveloped-data` or `authEnveloped-data`.
    Smime,
}

impl SkipReason {
    /// The token used in the trace header and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::PgpMime => "pgp-mime",
            SkipReason::InlinePgp => "inline-pgp",
            SkipReason::Smime => "smime",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the header section alone says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderVerdict {
    Skip(SkipReason),
    Encrypt,
    /// A plain-text (or untyped) body: its first line decides.
    NeedBody,
}

pub(crate) fn check_headers(fields: &[HeaderField]) -> HeaderVerdict {
    // The first Content-Type is the one MIME parsers use.
    let ct = fields
        .iter()
        .find(|f| f.is("Content-Type"))
        .map(|f| ContentType::parse(f.value()))
        .unwrap_or_default();
    match ct.mime.as_str() {
        "multipart/encrypted" | "application/pgp-encrypted" => {
            HeaderVerdict::Skip(SkipReason::PgpMime)
        }
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
            let enveloped = ct.param("smime-type").is_some_and(|t| {
                t.eq_ignore_ascii_case("enveloped-data")
                    || t.eq_ignore_ascii_case("authenveloped-data")
            });
            if enveloped {
                HeaderVerdict::Skip(SkipReason::Smime)
            } else {
                HeaderVerdict::Encrypt
            }
        }
        // RFC 2045: a missing or unreadable Content-Type means text/plain.
        "" | "text/plain" => HeaderVerdict::NeedBody,
        _ => HeaderVerdict::Encrypt,
    }
}

/// How much of a plain-text body is looked at before deciding it is not inline PGP.
pub(crate) const BODY_WINDOW: usize = 4096;

const PGP_BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";

/// Looks at the start of a plain-text body. `None` means "need more bytes"; `eof` says no
/// more will come.
///
/// Only the first [`BODY_WINDOW`] bytes count, so the verdict is the same however the body
/// is cut into chunks (the milter's chunks, or the reads of `sealpost encrypt`).
pub(crate) fn check_body_start(buf: &[u8], eof: bool) -> Option<HeaderVerdict> {
    let full = buf.len() >= BODY_WINDOW;
    let mut rest = &buf[..buf.len().min(BODY_WINDOW)];
    loop {
        let (line, newline) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        // A line cut by the window is not complete, even at the end of the body.
        let complete = newline || (eof && !full);
        let trimmed = super::headers::trim_end(super::headers::trim_start(line));
        if !trimmed.is_empty() && complete {
            return Some(if trimmed == PGP_BEGIN {
                HeaderVerdict::Skip(SkipReason::InlinePgp)
            } else {
                HeaderVerdict::Encrypt
            });
        }
        if !newline {
            // Only blank lines so far, or an incomplete first line: wait for more, within
            // the window.
            return if eof || full {
                Some(HeaderVerdict::Encrypt)
            } else {
                None
            };
        }
        rest = &rest[line.len() + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> HeaderField {
        HeaderField::new(name, value)
    }

    #[test]
    fn header_verdicts() {
        use HeaderVerdict::*;
        let v = |ct: &str| check_headers(&[h("Subject", "x"), h("Content-Type", ct)]);
        assert_eq!(
            v("multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x"),
            Skip(SkipReason::PgpMime)
        );
        assert_eq!(v("application/pgp-encrypted"), Skip(SkipReason::PgpMime));
        assert_eq!(
            v("application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m"),
            Skip(SkipReason::Smime)
        );
        assert_eq!(
            v("application/x-pkcs7-mime; smime-type=\"authEnveloped-data\""),
            Skip(SkipReason::Smime)
        );
        assert_eq!(v("application/pkcs7-mime; smime-type=signed-data"), Encrypt);
        assert_eq!(
            v("multipart/signed; protocol=\"application/pgp-signature\""),
            Encrypt
        );
        assert_eq!(v("text/plain; charset=utf-8"), NeedBody);
        assert_eq!(v("Text/Plain"), NeedBody);
        assert_eq!(v("text/html"), Encrypt);
        assert_eq!(check_headers(&[h("Subject", "x")]), NeedBody);
    }

    #[test]
    fn body_verdicts() {
        use HeaderVerdict::*;
        let pgp = b"\r\n  \r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEM";
        assert_eq!(
            check_body_start(pgp, false),
            Some(Skip(SkipReason::InlinePgp))
        );
        assert_eq!(check_body_start(b"\r\n\r\n-----BEGIN PGP", false), None);
        assert_eq!(
            check_body_start(b"-----BEGIN PGP MESSAGE-----", true),
            Some(Skip(SkipReason::InlinePgp))
        );
        assert_eq!(check_body_start(b"Hello\n", false), Some(Encrypt));
        assert_eq!(
            check_body_start(b"-----BEGIN PGP SIGNED MESSAGE-----\n", false),
            Some(Encrypt)
        );
        assert_eq!(check_body_start(b"", true), Some(Encrypt));
        assert_eq!(check_body_start(b"\r\n\r\n", true), Some(Encrypt));
        assert_eq!(
            check_body_start(&[b' '; BODY_WINDOW + 1], false),
            Some(Encrypt)
        );
        assert_eq!(check_body_start(&[b'x'; 100], false), None);
        // The armor line after blank lines that fill the window does not count, whether
        // the body comes in one piece or in chunks.
        let mut late = b"\r\n".repeat(BODY_WINDOW / 2);
        late.extend_from_slice(b"-----BEGIN PGP MESSAGE-----\r\n");
        assert_eq!(check_body_start(&late, false), Some(Encrypt));
        assert_eq!(check_body_start(&late, true), Some(Encrypt));
        assert_eq!(check_body_start(&late[..BODY_WINDOW], false), Some(Encrypt));
        // Within the window it does.
        let mut early = b"\r\n".repeat(BODY_WINDOW / 2 - 20);
        early.extend_from_slice(b"-----BEGIN PGP MESSAGE-----\r\n");
        assert_eq!(
            check_body_start(&early, false),
            Some(Skip(SkipReason::InlinePgp))
        );
    }
}
