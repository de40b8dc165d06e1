//! Header fields as the transform sees them, the header edits it asks for, and a small
//! Content-Type parser (enough to classify a message; nothing is rewritten through it).

/// One header field of the original message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderField {
    name: String,
    /// Field body without the separating colon and the whitespace after it; folds kept.
    value: Vec<u8>,
    /// The whole field as it appeared (name, colon, body, folds), without the final line
    /// ending. Inner copies are made from this so they stay byte-exact.
    raw: Vec<u8>,
}

impl HeaderField {
    /// A field as a milter receives it: the name, and the value without the space after the
    /// colon. Folded values may use LF or CRLF before the continuation whitespace.
    pub fn new(name: impl Into<String>, value: impl AsRef<[u8]>) -> HeaderField {
        let name = name.into();
        let value = value.as_ref();
        let mut raw = Vec::with_capacity(name.len() + 2 + value.len());
        raw.extend_from_slice(name.as_bytes());
        raw.push(b':');
        // No space when the value starts with whitespace or a fold of its own.
        if !value
            .first()
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            raw.push(b' ');
        }
        raw.extend_from_slice(value);
        HeaderField {
            name,
            value: trim_start(value).to_vec(),
            raw,
        }
    }

    /// Parses one unfolded-or-folded field exactly as it appeared in a message, without the
    /// final line ending. `None` when it is not a header field.
    pub(crate) fn parse_raw(raw: Vec<u8>) -> Option<HeaderField> {
        let colon = raw.iter().position(|b| *b == b':')?;
        let name = trim_end(&raw[..colon]);
        if name.is_empty() || !name.iter().all(|b| (33..=126).contains(b)) {
            return None;
        }
        let name = String::from_utf8(name.to_vec()).ok()?;
        let value = trim_start(&raw[colon + 1..]).to_vec();
        Some(HeaderField { name, value, raw })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The field body, leading whitespace removed, folds kept.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    pub(crate) fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// MIME content header fields (`Content-*`): they describe the body and move inside the
    /// encrypted entity with it.
    pub fn is_content(&self) -> bool {
        self.name.len() > 8 && self.name[..8].eq_ignore_ascii_case("content-")
    }
}

/// A change the milter applies to the outer header section, in order.
///
/// Indexes are 1-based among the fields with the same name (case-insensitive), as in the
/// milter `chgheader` request. Deletions of several same-named fields come highest index
/// first, so the result is the same whether or not the MTA renumbers after a deletion.
/// Values are unfolded or folded with a bare LF followed by whitespace, which is what the
/// milter protocol expects; [`encrypt_message`](super::encrypt_message) converts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replace the value of the `index`-th field called `name`.
    Change {
        name: String,
        index: usize,
        value: String,
    },
    /// Remove the `index`-th field called `name`.
    Delete { name: String, index: usize },
    /// Append a field at the end of the header section.
    Add { name: String, value: String },
}

/// Applies edits to a header list the way an MTA does, producing (name, replacement) pairs:
/// `None` keeps the original raw field.
pub(crate) fn apply_edits<'a>(
    fields: &'a [HeaderField],
    edits: &'a [HeaderEdit],
) -> Vec<OutField<'a>> {
    let mut out: Vec<Option<OutField<'a>>> =
        fields.iter().map(|f| Some(OutField::Raw(f))).collect();
    let nth = |name: &str, index: usize| {
        fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is(name))
            .nth(index.wrapping_sub(1))
            .map(|(i, _)| i)
    };
    let mut added = Vec::new();
    for e in edits {
        match e {
            HeaderEdit::Change { name, index, value } => match nth(name, *index) {
                Some(i) => out[i] = Some(OutField::New(name, value)),
                None => added.push(OutField::New(name, value)),
            },
            HeaderEdit::Delete { name, index } => {
                if let Some(i) = nth(name, *index) {
                    out[i] = None;
                }
            }
            HeaderEdit::Add { name, value } => added.push(OutField::New(name, value)),
        }
    }
    out.into_iter().flatten().chain(added).collect()
}

pub(crate) enum OutField<'a> {
    Raw(&'a HeaderField),
    New(&'a str, &'a str),
}

pub(crate) fn trim_start(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(b.len());
    &b[n..]
}

/// Removes trailing CR and LF only.
pub(crate) fn trim_end_eol(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rposition(|c| !matches!(c, b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    &b[..n]
}

pub(crate) fn trim_end(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    &b[..n]
}

/// A parsed Content-Type: lower-cased `type/subtype` and parameters (lower-cased names,
/// unquoted values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ContentType {
    pub mime: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Lenient parse: comments and folding are ignored, unknown syntax yields what could be
    /// read. A value without `type/subtype` gives an empty `mime`.
    pub fn parse(value: &[u8]) -> ContentType {
        let s = String::from_utf8_lossy(value);
        // Split at top-level semicolons, dropping comments and honouring quotes.
        let mut parts: Vec<String> = vec![String::new()];
        let (mut in_quote, mut depth, mut escaped) = (false, 0usize, false);
        for c in s.chars() {
            let cur = parts.last_mut().expect("parts is never empty");
            if escaped {
                cur.push(c);
                escaped = false;
                continue;
            }
            match c {
                '\\' if in_quote || depth > 0 => {
                    escaped = true;
                    if in_quote {
                        cur.push(c);
                    }
                }
                '"' if depth == 0 => {
                    in_quote = !in_quote;
                    cur.push(c);
                }
                '(' if !in_quote => depth += 1,
                ')' if !in_quote && depth > 0 => depth -= 1,
                _ if depth > 0 => {}
                ';' if !in_quote => parts.push(String::new()),
                '\r' | '\n' => {}
                _ => cur.push(c),
            }
        }
        let mime = parts[0].trim().to_ascii_lowercase();
        let mime = if mime.contains('/') {
            mime
        } else {
            String::new()
        };
        let params = parts[1..]
            .iter()
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim();
                let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    Some(inner) => unescape(inner),
                    None => v.to_string(),
                };
                (!k.is_empty()).then_some((k, v))
            })
            .collect();
        ContentType { mime, params }
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_type() {
        let ct = ContentType::parse(
            b"Application/PKCS7-MIME;\r\n\tsmime-type=\"enveloped-data\" (old client); name=smime.p7m",
        );
        assert_eq!(ct.mime, "application/pkcs7-mime");
        assert_eq!(ct.param("smime-type"), Some("enveloped-data"));
        assert_eq!(ct.param("name"), Some("smime.p7m"));
        let ct = ContentType::parse(b"multipart/mixed; boundary=\"a;b\\\"c\"");
        assert_eq!(ct.param("boundary"), Some("a;b\"c"));
        assert_eq!(ContentType::parse(b"garbage").mime, "");
    }

    #[test]
    fn milter_style_fields_get_a_space() {
        let f = HeaderField::new("Subject", "hi");
        assert_eq!(f.raw(), b"Subject: hi");
        assert_eq!(f.value(), b"hi");
        let f = HeaderField::parse_raw(b"Content-Type :text/plain".to_vec()).unwrap();
        assert_eq!(f.name(), "Content-Type");
        assert_eq!(f.value(), b"text/plain");
        assert!(f.is_content());
        assert!(HeaderField::parse_raw(b"not a header".to_vec()).is_none());
    }

    #[test]
    fn applies_edits_like_an_mta() {
        let fields: Vec<HeaderField> = ["A: 1", "B: 2", "a: 3", "C: 4"]
            .iter()
            .map(|s| HeaderField::parse_raw(s.as_bytes().to_vec()).unwrap())
            .collect();
        let edits = vec![
            HeaderEdit::Delete {
                name: "A".into(),
                index: 2,
            },
            HeaderEdit::Change {
                name: "b".into(),
                index: 1,
                value: "x".into(),
            },
            HeaderEdit::Change {
                name: "D".into(),
                index: 1,
                value: "new".into(),
            },
            HeaderEdit::Add {
                name: "E".into(),
                value: "5".into(),
            },
        ];
        let out: Vec<String> = apply_edits(&fields, &edits)
            .into_iter()
            .map(|f| match f {
                OutField::Raw(f) => String::from_utf8_lossy(f.raw()).into_owned(),
                OutField::New(n, v) => format!("{n}: {v}"),
            })
            .collect();
        assert_eq!(out, ["A: 1", "b: x", "C: 4", "D: new", "E: 5"]);
    }
}
