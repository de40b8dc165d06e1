//! The streaming encryptor: header fields in, body chunks in, header edits and a new body out.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use sequoia_openpgp as openpgp;

use super::armor::ArmorWriter;
use openpgp::crypto::SessionKey;
use openpgp::packet::pkesk::{PKESK3, PKESK6};
use openpgp::packet::Packet;
use openpgp::serialize::stream::{Compressor, Encryptor, LiteralWriter, Message};
use openpgp::serialize::Serialize;
use openpgp::types::{AEADAlgorithm, CompressionAlgorithm, SymmetricAlgorithm};

use super::cms::{Base64Lines, CmsOptions, CmsWriter, ContentCipher};
use super::headers::{HeaderEdit, HeaderField};
use super::skip::{check_body_start, check_headers, HeaderVerdict, SkipReason};
use super::spool::Spool;
use super::{
    Outcome, RecipientSet, Recipients, Result, TransformError, TransformOptions, OBSCURED_SUBJECT,
    TRACE_HEADER,
};
use openssl::x509::X509;

/// Header fields copied into the encrypted payload (RFC 9788's user-facing fields that a
/// reader needs), in the order they appear in the original.
const PROTECTED: &[&str] = &[
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

/// Parameters added to the payload's Content-Type: `hp` is RFC 9788's marker, and
/// `protected-headers` the older one that Thunderbird, K-9 and Enigmail-era clients read.
const HP_PARAMS: &[(&str, &str)] = &[("hp", "cipher"), ("protected-headers", "v1")];

/// Where the transform stands after the bytes seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A plain-text body has to show its first line first (a few KiB at most).
    Pending,
    /// The message is being encrypted.
    Encrypt,
    /// The message is already encrypted and stays as it is; further body chunks are ignored.
    Skip(SkipReason),
}

/// Result of [`MessageEncryptor::finish`].
#[derive(Debug)]
pub struct Transformed {
    pub outcome: Outcome,
    /// Edits to the outer header section, to apply in order.
    pub header_edits: Vec<HeaderEdit>,
    /// The replacement body; `None` when the original body stays.
    pub body: Option<Spool>,
    /// Body bytes received.
    pub bytes_in: u64,
}

/// Encrypts one message as it streams past.
///
/// Create it at the end of the header section, feed the body with
/// [`write_body`](Self::write_body), and call [`finish`](Self::finish) at the end of the
/// message. The type is `Send`, so the work can move to a blocking thread.
pub struct MessageEncryptor {
    fields: Vec<HeaderField>,
    recipients: Recipients,
    options: TransformOptions,
    crlf: bool,
    state: State,
    bytes_in: u64,
}

enum State {
    Pending(Vec<u8>),
    Skipped(SkipReason),
    Encrypting(Box<Active>),
    Poisoned,
}

struct Active {
    payload: Payload,
    spool: Arc<Mutex<Spool>>,
    last_cr: bool,
    scratch: Vec<u8>,
}

/// The writer stack the payload goes into.
enum Payload {
    /// OpenPGP message inside ASCII armor inside a multipart/encrypted body.
    PgpMime {
        literal: Message<'static>,
        armor: ArmorSink,
        boundary: String,
    },
    /// CMS (Auth)EnvelopedData, base64-encoded as the whole body.
    Smime {
        cms: Box<CmsWriter<Base64Lines<SinkWriter>>>,
        cipher: ContentCipher,
    },
}

impl MessageEncryptor {
    /// Starts a message from its header fields, as (name, value) pairs with the value as a
    /// milter delivers it. The new body uses CRLF line endings, as the milter protocol wants.
    pub fn new<I, N, V>(
        headers: I,
        recipients: &Recipients,
        options: &TransformOptions,
    ) -> Result<MessageEncryptor>
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: AsRef<[u8]>,
    {
        let fields = headers
            .into_iter()
            .map(|(n, v)| HeaderField::new(n, v))
            .collect();
        MessageEncryptor::from_fields(fields, recipients, options, true)
    }

    /// As [`new`](Self::new), from already built fields; `crlf` selects the line ending of
    /// the new body.
    pub(crate) fn from_fields(
        fields: Vec<HeaderField>,
        recipients: &Recipients,
        options: &TransformOptions,
        crlf: bool,
    ) -> Result<MessageEncryptor> {
        let state = match check_headers(&fields) {
            HeaderVerdict::Skip(r) => State::Skipped(r),
            HeaderVerdict::NeedBody => State::Pending(Vec::new()),
            HeaderVerdict::Encrypt => {
                State::Encrypting(Box::new(start(&fields, recipients, options, crlf)?))
            }
        };
        Ok(MessageEncryptor {
            fields,
            recipients: recipients.clone(),
            options: options.clone(),
            crlf,
            state,
            bytes_in: 0,
        })
    }

    pub fn decision(&self) -> Decision {
        match &self.state {
            State::Pending(_) => Decision::Pending,
            State::Skipped(r) => Decision::Skip(*r),
            State::Encrypting(_) | State::Poisoned => Decision::Encrypt,
        }
    }

    /// Whether feeding `more` body bytes (and finishing) stays in memory: the output has not
    /// spilled to disk and will not reach the spill threshold. Such work is short and does
    /// no file I/O, so a caller on an async runtime may do it without a thread hop.
    pub fn stays_in_memory(&self, more: usize) -> bool {
        let spooled = match &self.state {
            State::Encrypting(a) => match a.spool.lock() {
                Ok(s) if !s.is_spilled() => s.len(),
                _ => return false,
            },
            State::Pending(buf) => buf.len() as u64,
            State::Skipped(_) => 0,
            State::Poisoned => return false,
        };
        // Armor or base64 grows the output by 4/3, plus framing: twice the input is ample.
        spooled + 2 * more as u64 + 4096 < self.options.spill_threshold as u64
    }

    /// Feeds the next piece of the body. Line endings may be CRLF or LF; the payload gets
    /// CRLF.
    pub fn write_body(&mut self, chunk: &[u8]) -> Result<()> {
        self.bytes_in += chunk.len() as u64;
        let r = self.advance(chunk, false);
        if r.is_err() {
            self.state = State::Poisoned;
        }
        r
    }

    fn advance(&mut self, chunk: &[u8], eof: bool) -> Result<()> {
        match &mut self.state {
            State::Poisoned => Err(TransformError::Poisoned),
            State::Skipped(_) => Ok(()),
            State::Encrypting(a) => a.feed(chunk),
            State::Pending(buf) => {
                buf.extend_from_slice(chunk);
                match check_body_start(buf, eof) {
                    None => Ok(()),
                    Some(HeaderVerdict::Skip(r)) => {
                        self.state = State::Skipped(r);
                        Ok(())
                    }
                    Some(_) => {
                        let buf = std::mem::take(buf);
                        let mut a =
                            start(&self.fields, &self.recipients, &self.options, self.crlf)?;
                        a.feed(&buf)?;
                        self.state = State::Encrypting(Box::new(a));
                        Ok(())
                    }
                }
            }
        }
    }

    /// Ends the message and returns what to change.
    pub fn finish(mut self) -> Result<Transformed> {
        self.advance(&[], true)?;
        let mut edits = delete_all(&self.fields, TRACE_HEADER);
        match std::mem::replace(&mut self.state, State::Poisoned) {
            State::Skipped(reason) => {
                edits.push(HeaderEdit::Add {
                    name: TRACE_HEADER.into(),
                    value: format!("skipped; reason={}", reason.as_str()),
                });
                Ok(Transformed {
                    outcome: Outcome::Skipped(reason),
                    header_edits: edits,
                    body: None,
                    bytes_in: self.bytes_in,
                })
            }
            State::Encrypting(a) => {
                let Active { payload, spool, .. } = *a;
                let content_type = match payload {
                    Payload::PgpMime {
                        literal,
                        armor,
                        boundary,
                    } => {
                        literal.finalize().map_err(TransformError::from_openpgp)?;
                        armor.finish()?;
                        let mut tail = SinkWriter::new(spool.clone(), self.crlf);
                        write!(tail, "\n--{boundary}--\n")?;
                        OuterType::PgpMime(boundary)
                    }
                    Payload::Smime { cms, cipher } => {
                        cms.finish()?.finish()?;
                        OuterType::Smime(cipher)
                    }
                };
                let spool = Arc::try_unwrap(spool)
                    .map_err(|_| TransformError::Crypto("output still in use".into()))?
                    .into_inner()
                    .map_err(|_| TransformError::Poisoned)?;
                edits.extend(outer_edits(&self.fields, &content_type, &self.options));
                let fingerprints = self.recipients.fingerprints().to_vec();
                edits.push(HeaderEdit::Add {
                    name: TRACE_HEADER.into(),
                    value: format!("encrypted; fpr={}", fingerprints.join(",")),
                });
                Ok(Transformed {
                    outcome: Outcome::Encrypted { fingerprints },
                    header_edits: edits,
                    body: Some(spool),
                    bytes_in: self.bytes_in,
                })
            }
            State::Pending(_) | State::Poisoned => Err(TransformError::Poisoned),
        }
    }
}

impl std::fmt::Debug for MessageEncryptor {
    // Deliberately shows no header values: they are message content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageEncryptor")
            .field("decision", &self.decision())
            .field("bytes_in", &self.bytes_in)
            .finish_non_exhaustive()
    }
}

impl Active {
    fn feed(&mut self, data: &[u8]) -> Result<()> {
        self.scratch.clear();
        self.last_cr = normalize_crlf(data, self.last_cr, &mut self.scratch);
        self.payload.write_all(&self.scratch)?;
        Ok(())
    }
}

impl Payload {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Payload::PgpMime { literal, .. } => literal.write_all(data),
            Payload::Smime { cms, .. } => cms.write_all(data),
        }
    }
}

/// Sets up the CMS writer stack for S/MIME recipients and writes the payload headers.
fn start_smime(
    fields: &[HeaderField],
    certs: &[X509],
    cms_options: CmsOptions,
    options: &TransformOptions,
    crlf: bool,
) -> Result<Active> {
    let spool = Arc::new(Mutex::new(Spool::new(
        options.spill_threshold,
        options.spill_dir.as_deref(),
    )));
    let b64 = Base64Lines::new(SinkWriter::new(spool.clone(), crlf));
    let mut cms = CmsWriter::new(b64, certs, cms_options).map_err(smime_error)?;
    cms.write_all(&payload_headers(fields, options))?;
    Ok(Active {
        payload: Payload::Smime {
            cms: Box::new(cms),
            cipher: cms_options.cipher,
        },
        spool,
        last_cr: false,
        scratch: Vec::new(),
    })
}

/// An unusable certificate is a key problem, not an I/O one.
fn smime_error(e: io::Error) -> TransformError {
    if e.kind() == io::ErrorKind::InvalidInput {
        TransformError::Crypto(e.to_string())
    } else {
        TransformError::Io(e)
    }
}

/// Sets up the MIME framing and the OpenPGP writer stack, and writes the payload headers.
fn start(
    fields: &[HeaderField],
    recipients: &Recipients,
    options: &TransformOptions,
    crlf: bool,
) -> Result<Active> {
    if let RecipientSet::Smime {
        certs,
        options: cms_options,
    } = &recipients.keys
    {
        return start_smime(fields, certs, *cms_options, options, crlf);
    }
    let boundary = new_boundary()?;
    let spool = Arc::new(Mutex::new(Spool::new(
        options.spill_threshold,
        options.spill_dir.as_deref(),
    )));
    let mut head = SinkWriter::new(spool.clone(), crlf);
    write!(
        head,
        "This is an OpenPGP/MIME encrypted message (RFC 3156).\n\
         --{boundary}\n\
         Content-Type: application/pgp-encrypted\n\
         Content-Description: PGP/MIME version identification\n\
         \n\
         Version: 1\n\
         \n\
         --{boundary}\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"\n\
         Content-Description: OpenPGP encrypted message\n\
         Content-Disposition: inline; filename=\"encrypted.asc\"\n\
         \n"
    )?;
    drop(head);

    let crypto = TransformError::from_openpgp;
    let armor = ArmorSink::new(SinkWriter::new(spool.clone(), crlf))?;
    let message = Message::new(armor.clone());
    let message = encrypt_to(message, recipients).map_err(crypto)?;
    let message = if options.compress {
        Compressor::new(message)
            .algo(CompressionAlgorithm::Zip)
            .build()
            .map_err(crypto)?
    } else {
        message
    };
    let mut literal = LiteralWriter::new(message).build().map_err(crypto)?;
    literal.write_all(&payload_headers(fields, options))?;
    Ok(Active {
        payload: Payload::PgpMime {
            literal,
            armor,
            boundary,
        },
        spool,
        last_cr: false,
        scratch: Vec::new(),
    })
}

/// Writes one PKESK per recipient key and starts the encryption container.
///
/// The PKESKs are written here rather than by sequoia's `Encryptor::for_recipients` because
/// that ties the lifetime of the writer stack to the borrowed keys; with the session key
/// made here the stack owns everything and can live across milter callbacks.
fn encrypt_to(
    mut message: Message<'static>,
    recipients: &Recipients,
) -> openpgp::Result<Message<'static>> {
    let sym = SymmetricAlgorithm::default();
    let sk = SessionKey::new(sym.key_size()?)?;
    // SEIPDv2 only when every recipient announces support (as sequoia decides it), so that
    // implementations that only know SEIPDv1, like GnuPG 2.2, can read the rest.
    let v2 = recipients.all_support_seipdv2();
    for key in recipients.keys() {
        if v2 {
            let mut pkesk = PKESK6::for_recipient(&sk, key)?;
            pkesk.set_recipient(Some(key.fingerprint()));
            Packet::from(pkesk).serialize(&mut message)?;
        } else {
            let mut pkesk = PKESK3::for_recipient(sym, &sk, key)?;
            pkesk.set_recipient(Some(key.keyid()));
            Packet::from(pkesk).serialize(&mut message)?;
        }
    }
    let enc = Encryptor::with_session_key(message, sym, sk)?;
    let enc = if v2 {
        enc.aead_algo(AEADAlgorithm::default())
    } else {
        enc
    };
    enc.build()
}

/// A boundary that cannot occur in the parts: armor lines never start with `--` followed
/// by anything but dashes, and the rest is fixed text.
fn new_boundary() -> Result<String> {
    let mut r = [0u8; 12];
    openpgp::crypto::random(&mut r).map_err(TransformError::from_openpgp)?;
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sealpost-{hex}"))
}

/// The header section of the encrypted payload, CRLF-terminated, ending with the empty line.
fn payload_headers(fields: &[HeaderField], options: &TransformOptions) -> Vec<u8> {
    let mut out = Vec::new();
    let protected = |f: &HeaderField| PROTECTED.iter().any(|p| f.is(p));
    for f in fields.iter().filter(|f| protected(f)) {
        push_line(&mut out, f.raw());
    }
    let mut seen_ct = false;
    for f in fields.iter().filter(|f| f.is_content()) {
        if f.is("Content-Type") && !seen_ct {
            seen_ct = true;
            push_line(&mut out, &with_hp_params(f));
        } else {
            push_line(&mut out, f.raw());
        }
    }
    if !seen_ct {
        push_line(
            &mut out,
            b"Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"; protected-headers=\"v1\"",
        );
    }
    // RFC 9788 section 2.2: with hp="cipher", one HP-Outer field per non-structural field
    // of the outer header section that corresponds to an inner one, carrying its outer
    // value, so a reader can tell which fields were obscured or removed outside.
    let mut subject_done = false;
    for f in fields.iter().filter(|f| protected(f)) {
        let mut line = b"HP-Outer: ".to_vec();
        line.extend_from_slice(f.name().as_bytes());
        line.extend_from_slice(b": ");
        if f.is("Subject") {
            if subject_done && options.protect_subject {
                // Extra Subject fields are deleted outside.
                continue;
            }
            subject_done = true;
            if options.protect_subject {
                line.extend_from_slice(OBSCURED_SUBJECT.as_bytes());
                push_line(&mut out, &line);
                continue;
            }
        }
        line.extend_from_slice(super::headers::trim_end(f.value()));
        push_line(&mut out, &line);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The original Content-Type field with the header-protection parameters appended on a
/// folded line; the original bytes stay a prefix.
fn with_hp_params(f: &HeaderField) -> Vec<u8> {
    let ct = super::headers::ContentType::parse(f.value());
    let missing: Vec<String> = HP_PARAMS
        .iter()
        .filter(|(k, _)| ct.param(k).is_none())
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    if missing.is_empty() {
        return f.raw().to_vec();
    }
    let mut out = super::headers::trim_end(f.raw()).to_vec();
    close_open_constructs(&mut out);
    if out.last() == Some(&b';') {
        out.extend_from_slice(b"\r\n ");
    } else {
        out.extend_from_slice(b";\r\n ");
    }
    out.extend_from_slice(missing.join("; ").as_bytes());
    out
}

/// Closes a quoted-string or comment that a header field leaves open at its end
/// (`charset="utf-8`, `text/plain (note`), which would otherwise swallow the parameters
/// appended after it. Comments nest; a backslash quotes the next character in both.
fn close_open_constructs(raw: &mut Vec<u8>) {
    let (mut quoted, mut depth, mut escaped) = (false, 0usize, false);
    for b in raw.iter() {
        if escaped {
            escaped = false;
        } else if *b == b'\\' && (quoted || depth > 0) {
            escaped = true;
        } else if quoted {
            quoted = *b != b'"';
        } else if *b == b'(' {
            depth += 1;
        } else if *b == b')' {
            depth = depth.saturating_sub(1);
        } else if *b == b'"' && depth == 0 {
            quoted = true;
        }
    }
    if escaped {
        // A trailing backslash quotes this character; what follows closes.
        raw.push(b'"');
    }
    if quoted {
        raw.push(b'"');
    }
    raw.extend(std::iter::repeat_n(b')', depth));
}

/// Appends a header line (possibly folded, any line endings) with CRLF everywhere.
fn push_line(out: &mut Vec<u8>, raw: &[u8]) {
    let raw = super::headers::trim_end_eol(raw);
    normalize_crlf(raw, false, out);
    out.extend_from_slice(b"\r\n");
}

/// Copies `data` to `out` turning bare LF into CRLF. `last_cr` says whether the previous
/// chunk ended in CR; the return value is the same for this chunk.
pub(crate) fn normalize_crlf(data: &[u8], last_cr: bool, out: &mut Vec<u8>) -> bool {
    out.reserve(data.len() + data.len() / 32 + 2);
    let mut start = 0;
    // memchr finds the line feeds with SIMD; this runs over every byte of every message.
    for i in memchr::memchr_iter(b'\n', data) {
        let prev_cr = if i == 0 {
            last_cr
        } else {
            data[i - 1] == b'\r'
        };
        if !prev_cr {
            out.extend_from_slice(&data[start..i]);
            out.extend_from_slice(b"\r\n");
            start = i + 1;
        }
    }
    out.extend_from_slice(&data[start..]);
    data.last().map_or(last_cr, |b| *b == b'\r')
}

/// The outer Content-Type of an encrypted message.
enum OuterType {
    /// RFC 3156 multipart/encrypted with this boundary.
    PgpMime(String),
    /// RFC 8551 application/pkcs7-mime.
    Smime(ContentCipher),
}

/// Edits for the outer header section of an encrypted message (the trace header aside).
fn outer_edits(
    fields: &[HeaderField],
    outer: &OuterType,
    options: &TransformOptions,
) -> Vec<HeaderEdit> {
    let mut edits = Vec::new();
    let content_type = match outer {
        OuterType::PgpMime(boundary) => format!(
            "multipart/encrypted;\n protocol=\"application/pgp-encrypted\";\n boundary=\"{boundary}\""
        ),
        OuterType::Smime(cipher) => format!(
            "application/pkcs7-mime; smime-type={};\n name=\"smime.p7m\"",
            cipher.smime_type()
        ),
    };
    let ct_count = count(fields, "Content-Type");
    if ct_count == 0 {
        edits.push(HeaderEdit::Add {
            name: "Content-Type".into(),
            value: content_type,
        });
    } else {
        edits.extend(delete_from(fields, "Content-Type", 2));
        edits.push(HeaderEdit::Change {
            name: "Content-Type".into(),
            index: 1,
            value: content_type,
        });
    }
    // Every other Content-* field described the original body, which is now inside.
    let mut names: Vec<&str> = Vec::new();
    for f in fields
        .iter()
        .filter(|f| f.is_content() && !f.is("Content-Type"))
    {
        if !names.iter().any(|n| f.is(n)) {
            names.push(f.name());
        }
    }
    for n in names {
        edits.extend(delete_all(fields, n));
    }
    if let OuterType::Smime(_) = outer {
        edits.push(HeaderEdit::Add {
            name: "Content-Transfer-Encoding".into(),
            value: "base64".into(),
        });
        edits.push(HeaderEdit::Add {
            name: "Content-Disposition".into(),
            value: "attachment; filename=\"smime.p7m\"".into(),
        });
    }
    if count(fields, "MIME-Version") == 0 {
        edits.push(HeaderEdit::Add {
            name: "MIME-Version".into(),
            value: "1.0".into(),
        });
    }
    if options.protect_subject && count(fields, "Subject") > 0 {
        edits.extend(delete_from(fields, "Subject", 2));
        edits.push(HeaderEdit::Change {
            name: "Subject".into(),
            index: 1,
            value: OBSCURED_SUBJECT.into(),
        });
    }
    edits
}

fn count(fields: &[HeaderField], name: &str) -> usize {
    fields.iter().filter(|f| f.is(name)).count()
}

/// Deletes the `from`-th and later fields called `name`, highest index first.
fn delete_from(fields: &[HeaderField], name: &str, from: usize) -> Vec<HeaderEdit> {
    (from..=count(fields, name))
        .rev()
        .map(|index| HeaderEdit::Delete {
            name: name.to_string(),
            index,
        })
        .collect()
}

fn delete_all(fields: &[HeaderField], name: &str) -> Vec<HeaderEdit> {
    delete_from(fields, name, 1)
}

/// The bottom of the writer stack: appends to the shared spool, turning the LF line endings
/// of the armor into CRLF when asked to.
/// The ASCII armor around the encrypted message: a writer below sequoia's writer stack
/// (instead of sequoia's stream `Armorer`, see [`super::armor`]), shared so that it can be
/// finished after the stack is.
#[derive(Clone)]
struct ArmorSink(Arc<Mutex<Option<ArmorWriter<SinkWriter>>>>);

impl ArmorSink {
    fn new(sink: SinkWriter) -> io::Result<ArmorSink> {
        Ok(ArmorSink(Arc::new(Mutex::new(Some(ArmorWriter::new(
            sink,
        )?)))))
    }

    /// Writes the last base64 line, the checksum and the END line.
    fn finish(&self) -> io::Result<()> {
        let w = self
            .0
            .lock()
            .map_err(|_| io::Error::other("armor writer lock poisoned"))?
            .take()
            .ok_or_else(|| io::Error::other("armor already finished"))?;
        w.finish()?;
        Ok(())
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut ArmorWriter<SinkWriter>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| io::Error::other("armor writer lock poisoned"))?;
        let w = guard
            .as_mut()
            .ok_or_else(|| io::Error::other("armor already finished"))?;
        f(w)
    }
}

impl Write for ArmorSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.with(|w| w.write(data))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.with(|w| w.flush())
    }
}

struct SinkWriter {
    spool: Arc<Mutex<Spool>>,
    crlf: bool,
    buf: Vec<u8>,
}

impl SinkWriter {
    fn new(spool: Arc<Mutex<Spool>>, crlf: bool) -> SinkWriter {
        SinkWriter {
            spool,
            crlf,
            buf: Vec::new(),
        }
    }
}

impl Write for SinkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut spool = self
            .spool
            .lock()
            .map_err(|_| io::Error::other("output spool lock poisoned"))?;
        if self.crlf {
            self.buf.clear();
            normalize_crlf(data, false, &mut self.buf);
            spool.write_all(&self.buf)?;
        } else {
            spool.write_all(data)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_line_endings_across_chunks() {
        let mut out = Vec::new();
        let cr = normalize_crlf(b"a\nb\r", false, &mut out);
        assert!(cr);
        let cr = normalize_crlf(b"\nc\r\n\n", cr, &mut out);
        assert!(!cr);
        assert_eq!(out, b"a\r\nb\r\nc\r\n\r\n");
    }

    #[test]
    fn appends_hp_params_after_the_original_bytes() {
        let f = HeaderField::new("Content-Type", "text/plain;\n charset=utf-8;");
        assert_eq!(
            with_hp_params(&f),
            b"Content-Type: text/plain;\n charset=utf-8;\r\n hp=\"cipher\"; protected-headers=\"v1\""
        );
        // An unterminated quoted-string or comment is closed first, or it would hide the
        // markers.
        let f = HeaderField::new("Content-Type", "text/plain; charset=\"utf-8");
        assert_eq!(
            with_hp_params(&f),
            b"Content-Type: text/plain; charset=\"utf-8\";\r\n hp=\"cipher\"; protected-headers=\"v1\""
        );
        let f = HeaderField::new("Content-Type", "text/plain; x=\"a\\");
        assert_eq!(
            with_hp_params(&f),
            b"Content-Type: text/plain; x=\"a\\\"\";\r\n hp=\"cipher\"; protected-headers=\"v1\""
        );
        let f = HeaderField::new("Content-Type", "text/plain (a (nested) \"note");
        assert_eq!(
            with_hp_params(&f),
            b"Content-Type: text/plain (a (nested) \"note);\r\n hp=\"cipher\"; protected-headers=\"v1\""
        );
        let f = HeaderField::new("Content-Type", "text/plain; protected-headers=\"v1\"");
        assert_eq!(
            with_hp_params(&f),
            b"Content-Type: text/plain; protected-headers=\"v1\";\r\n hp=\"cipher\""
        );
    }

    #[test]
    fn payload_headers_have_protected_then_content_then_hp_outer() {
        let fields = vec![
            HeaderField::new("Received", "from x"),
            HeaderField::new("Subject", "Hello"),
            HeaderField::new("From", "a@example.org"),
            HeaderField::new("Content-Transfer-Encoding", "8bit"),
            HeaderField::new("X-Other", "y"),
        ];
        let opts = TransformOptions {
            protect_subject: true,
            ..Default::default()
        };
        let h = payload_headers(&fields, &opts);
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "Subject: Hello\r\nFrom: a@example.org\r\nContent-Transfer-Encoding: 8bit\r\n\
             Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"; protected-headers=\"v1\"\r\n\
             HP-Outer: Subject: [...]\r\nHP-Outer: From: a@example.org\r\n\r\n"
        );
    }

    #[test]
    fn outer_edits_move_content_fields_and_hide_subject() {
        let fields = vec![
            HeaderField::new("Subject", "one"),
            HeaderField::new("Content-Type", "text/plain"),
            HeaderField::new("Content-Transfer-Encoding", "base64"),
            HeaderField::new("content-transfer-encoding", "7bit"),
            HeaderField::new("Subject", "two"),
        ];
        let opts = TransformOptions {
            protect_subject: true,
            ..Default::default()
        };
        let e = outer_edits(&fields, &OuterType::PgpMime("B".into()), &opts);
        let del = |n: &str, i| HeaderEdit::Delete {
            name: n.into(),
            index: i,
        };
        assert!(matches!(&e[0], HeaderEdit::Change { name, index: 1, value }
            if name == "Content-Type" && value.contains("boundary=\"B\"")));
        assert_eq!(e[1], del("Content-Transfer-Encoding", 2));
        assert_eq!(e[2], del("Content-Transfer-Encoding", 1));
        assert!(
            matches!(&e[3], HeaderEdit::Add { name, value } if name == "MIME-Version" && value == "1.0")
        );
        assert_eq!(e[4], del("Subject", 2));
        assert!(matches!(&e[5], HeaderEdit::Change { name, index: 1, value }
            if name == "Subject" && value == "[...]"));
        assert_eq!(e.len(), 6);
    }
}
