//! The whole-message form of the transform: an RFC 5322 message in, the transformed message
//! out, streaming, for `sealpost encrypt` and delivery filters.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};

use super::encryptor::{Decision, MessageEncryptor};
use super::headers::{apply_edits, HeaderField, OutField};
use super::{Outcome, Recipients, Result, TransformError, TransformOptions};

/// Largest header section accepted; the header section is the only part held in memory.
pub const MAX_HEADER_BYTES: usize = 4 * 1024 * 1024;

/// Body read size once the decision is made; matches the milter chunk size.
const BODY_CHUNK: usize = 64 * 1024;

/// Read size while deciding, so little of a skipped body is held before copying resumes.
const PEEK_CHUNK: usize = 4 * 1024;

/// Reads one message from `reader` and writes the transformed message to `writer`.
///
/// Line endings of the output follow the input (judged by the first line): CRLF in, CRLF
/// out; LF in, LF out. The outer header fields keep their order and bytes apart from the
/// edits; a message that is already encrypted is copied unchanged apart from the trace
/// header. Memory use is bounded by the header section, a few KiB of body, and the spill
/// threshold.
pub fn encrypt_message<R: Read, W: Write>(
    reader: R,
    writer: W,
    recipients: &Recipients,
    options: &TransformOptions,
) -> Result<Outcome> {
    let mut r = BufReader::with_capacity(BODY_CHUNK, reader);
    let head = read_header_section(&mut r)?;
    let eol: &[u8] = if head.crlf { b"\r\n" } else { b"\n" };
    let mut enc =
        MessageEncryptor::from_fields(head.fields.clone(), recipients, options, head.crlf)?;

    // Body bytes read while undecided; needed again if the message turns out to be skipped.
    let mut held = head.body_start;
    enc.write_body(&held)?;
    let mut buf = vec![0u8; BODY_CHUNK];
    while enc.decision() == Decision::Pending {
        let n = read_some(&mut r, &mut buf[..PEEK_CHUNK])?;
        if n == 0 {
            break;
        }
        held.extend_from_slice(&buf[..n]);
        enc.write_body(&buf[..n])?;
    }
    // Still undecided here means the body ended within the look-ahead: `finish` decides,
    // and a skipped body is then the held bytes, which must be kept.
    if enc.decision() == Decision::Encrypt {
        held = Vec::new();
        loop {
            let n = read_some(&mut r, &mut buf)?;
            if n == 0 {
                break;
            }
            enc.write_body(&buf[..n])?;
        }
    }
    let done = enc.finish()?;

    let mut w = BufWriter::with_capacity(BODY_CHUNK, writer);
    for field in apply_edits(&head.fields, &done.header_edits) {
        match field {
            OutField::Raw(f) => w.write_all(f.raw())?,
            OutField::New(name, value) => {
                w.write_all(name.as_bytes())?;
                w.write_all(b": ")?;
                // Edit values fold with bare LF (the milter convention).
                for (i, part) in value.split('\n').enumerate() {
                    if i > 0 {
                        w.write_all(eol)?;
                    }
                    w.write_all(part.as_bytes())?;
                }
            }
        }
        w.write_all(eol)?;
    }
    match done.body {
        Some(spool) => {
            w.write_all(eol)?;
            io::copy(&mut spool.into_reader()?, &mut w)?;
        }
        None => {
            // Untouched: the separator only if there was one, then the body as read.
            if head.separator {
                w.write_all(&head.separator_bytes)?;
            }
            w.write_all(&held)?;
            io::copy(&mut r, &mut w)?;
        }
    }
    w.flush()?;
    Ok(done.outcome)
}

struct HeaderSection {
    fields: Vec<HeaderField>,
    crlf: bool,
    /// Whether an empty line ended the header section, and its bytes.
    separator: bool,
    separator_bytes: Vec<u8>,
    /// A first body line that was read while looking for more header fields.
    body_start: Vec<u8>,
}

fn read_header_section<R: BufRead>(r: &mut R) -> Result<HeaderSection> {
    let mut fields = Vec::new();
    let mut crlf = None;
    let mut total = 0usize;
    let mut current: Option<Vec<u8>> = None;
    let mut section = HeaderSection {
        fields: Vec::new(),
        crlf: false,
        separator: false,
        separator_bytes: Vec::new(),
        body_start: Vec::new(),
    };
    loop {
        let mut line = Vec::new();
        let limit = (MAX_HEADER_BYTES - total) as u64 + 1;
        let n = r.by_ref().take(limit).read_until(b'\n', &mut line)?;
        total += n;
        if total > MAX_HEADER_BYTES {
            return Err(TransformError::HeaderTooLarge(MAX_HEADER_BYTES));
        }
        if n == 0 {
            break;
        }
        if crlf.is_none() {
            crlf = Some(line.ends_with(b"\r\n"));
        }
        if line == b"\n" || line == b"\r\n" {
            section.separator = true;
            section.separator_bytes = line;
            break;
        }
        let continuation = matches!(line[0], b' ' | b'\t');
        if continuation {
            if let Some(cur) = &mut current {
                cur.extend_from_slice(&line);
                continue;
            }
        }
        if let Some(done) = current.take() {
            fields.push(finish_field(done));
        }
        if !continuation && starts_field(&line) {
            current = Some(line);
        } else {
            // Not a header field: the body starts here without an empty line.
            section.body_start = line;
            break;
        }
    }
    if let Some(done) = current.take() {
        fields.push(finish_field(done));
    }
    section.fields = fields;
    section.crlf = crlf.unwrap_or(false);
    Ok(section)
}

fn starts_field(line: &[u8]) -> bool {
    match line.iter().position(|b| *b == b':') {
        Some(colon) => {
            let name = super::headers::trim_end(&line[..colon]);
            !name.is_empty() && name.iter().all(|b| (33..=126).contains(b))
        }
        None => false,
    }
}

fn finish_field(mut raw: Vec<u8>) -> HeaderField {
    let keep = super::headers::trim_end_eol(&raw).len();
    raw.truncate(keep);
    HeaderField::parse_raw(raw).expect("checked by starts_field")
}

fn read_some<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> HeaderSection {
        read_header_section(&mut io::Cursor::new(s)).unwrap()
    }

    #[test]
    fn reads_folded_fields_and_the_separator() {
        let h = parse(b"Subject: a\r\n b\r\nTo: x\r\n\r\nbody");
        assert!(h.crlf && h.separator);
        assert_eq!(h.fields.len(), 2);
        assert_eq!(h.fields[0].raw(), b"Subject: a\r\n b");
        assert_eq!(h.fields[0].value(), b"a\r\n b");
    }

    #[test]
    fn header_only_and_unterminated() {
        let h = parse(b"Subject: a\nTo: x");
        assert!(!h.crlf && !h.separator);
        assert_eq!(h.fields.len(), 2);
        assert_eq!(h.fields[1].raw(), b"To: x");
    }

    #[test]
    fn a_non_header_line_starts_the_body() {
        let h = parse(b"Subject: a\nthis is body\nmore\n");
        assert_eq!(h.fields.len(), 1);
        assert_eq!(h.body_start, b"this is body\n");
        assert!(!h.separator);
    }
}
