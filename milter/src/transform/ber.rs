//! Small DER/BER helpers for the CMS writer: definite-length TLV encoding, the
//! indefinite-length markers, object identifiers, and a minimal DER reader that picks
//! fields out of a certificate without re-encoding them.

pub const TAG_INTEGER: u8 = 0x02;
pub const TAG_BIT_STRING: u8 = 0x03;
pub const TAG_OCTET_STRING: u8 = 0x04;
pub const TAG_NULL: u8 = 0x05;
pub const TAG_OID: u8 = 0x06;
pub const TAG_SEQUENCE: u8 = 0x30;
pub const TAG_SET: u8 = 0x31;

/// Context-specific constructed tag `[n]` (n < 31).
pub const fn context_constructed(n: u8) -> u8 {
    0xA0 | n
}

/// The identifier and length octets opening an indefinite-length constructed value.
pub fn indefinite(tag: u8) -> [u8; 2] {
    [tag, 0x80]
}

/// End-of-contents octets closing an indefinite-length value.
pub const END_OF_CONTENTS: [u8; 2] = [0x00, 0x00];

/// Appends the DER length octets for `len`.
pub fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Appends the identifier and length octets of a definite-length value.
pub fn push_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    push_length(out, len);
}

/// A definite-length TLV.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    push_header(&mut out, tag, content.len());
    out.extend_from_slice(content);
    out
}

/// A definite-length constructed value from already encoded parts.
pub fn constructed(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 6);
    push_header(&mut out, tag, len);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

pub fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    constructed(TAG_SEQUENCE, parts)
}

/// A DER SET OF: the element encodings sorted as X.690 11.6 requires.
pub fn set_of(mut elements: Vec<Vec<u8>>) -> Vec<u8> {
    elements.sort();
    let parts: Vec<&[u8]> = elements.iter().map(Vec::as_slice).collect();
    constructed(TAG_SET, &parts)
}

pub fn octet_string(content: &[u8]) -> Vec<u8> {
    tlv(TAG_OCTET_STRING, content)
}

/// A BIT STRING with no unused bits.
pub fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(content.len() + 1);
    body.push(0);
    body.extend_from_slice(content);
    tlv(TAG_BIT_STRING, &body)
}

/// A non-negative INTEGER from a small value.
pub fn small_integer(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let mut skip = bytes.iter().take_while(|b| **b == 0).count().min(3);
    // Keep a leading zero octet when the next one has its high bit set.
    if skip > 0 && bytes[skip] & 0x80 != 0 {
        skip -= 1;
    }
    tlv(TAG_INTEGER, &bytes[skip..])
}

pub fn null() -> Vec<u8> {
    vec![TAG_NULL, 0x00]
}

/// Encodes a dotted object identifier. Panics on a malformed literal (they are constants).
pub fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|a| a.parse().expect("numeric OID arc"))
        .collect();
    assert!(arcs.len() >= 2 && arcs[0] <= 2, "malformed OID {dotted}");
    let mut body = Vec::new();
    let mut push_arc = |mut v: u64| {
        let mut tmp = [0u8; 10];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                break;
            }
        }
        let last = tmp.len() - 1;
        for (j, b) in tmp.iter().enumerate().skip(i) {
            body.push(if j == last { *b } else { *b | 0x80 });
        }
    };
    push_arc(arcs[0] * 40 + arcs[1]);
    for a in &arcs[2..] {
        push_arc(*a);
    }
    tlv(TAG_OID, &body)
}

/// An AlgorithmIdentifier with the given parameters (already encoded), or none.
pub fn algorithm(oid_dotted: &str, params: Option<&[u8]>) -> Vec<u8> {
    let o = oid(oid_dotted);
    match params {
        Some(p) => sequence(&[&o, p]),
        None => sequence(&[&o]),
    }
}

/// One DER element as read by [`Reader`].
#[derive(Clone, Copy, Debug)]
pub struct Element<'a> {
    pub tag: u8,
    /// The whole TLV.
    pub raw: &'a [u8],
    /// The contents octets.
    pub content: &'a [u8],
}

/// A minimal reader for definite-length DER with single-octet tags.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// Reads the next element; `None` on truncated or unsupported encodings.
    pub fn next_element(&mut self) -> Option<Element<'a>> {
        let d = self.data;
        let tag = *d.first()?;
        if tag & 0x1F == 0x1F {
            return None;
        }
        let first = *d.get(1)? as usize;
        let (len, header) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7F;
            if n == 0 || n > 8 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = len.checked_mul(256)?.checked_add(*d.get(2 + i)? as usize)?;
            }
            (len, 2 + n)
        };
        let end = header.checked_add(len)?;
        if end > d.len() {
            return None;
        }
        self.data = &d[end..];
        Some(Element {
            tag,
            raw: &d[..end],
            content: &d[header..end],
        })
    }

    /// Reads the next element and checks its tag.
    pub fn expect(&mut self, tag: u8) -> Option<Element<'a>> {
        let e = self.next_element()?;
        (e.tag == tag).then_some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids() {
        assert_eq!(
            oid("1.2.840.113549.1.7.3"),
            [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x03]
        );
        assert_eq!(
            oid("2.16.840.1.101.3.4.1.42"),
            [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2A]
        );
        assert_eq!(
            oid("1.3.132.1.11.1"),
            [0x06, 0x06, 0x2B, 0x81, 0x04, 0x01, 0x0B, 0x01]
        );
    }

    #[test]
    fn lengths_and_integers() {
        let mut v = Vec::new();
        push_length(&mut v, 0x7F);
        push_length(&mut v, 0x80);
        push_length(&mut v, 0x1234);
        assert_eq!(v, [0x7F, 0x81, 0x80, 0x82, 0x12, 0x34]);
        assert_eq!(small_integer(0), [0x02, 0x01, 0x00]);
        assert_eq!(small_integer(16), [0x02, 0x01, 0x10]);
        assert_eq!(small_integer(128), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(small_integer(256), [0x02, 0x02, 0x01, 0x00]);
    }

    #[test]
    fn reader_roundtrip() {
        let inner = octet_string(&[7u8; 300]);
        let outer = sequence(&[&small_integer(3), &inner]);
        let mut r = Reader::new(&outer);
        let seq = r.expect(TAG_SEQUENCE).unwrap();
        assert!(r.next_element().is_none());
        let mut r = Reader::new(seq.content);
        assert_eq!(r.expect(TAG_INTEGER).unwrap().content, [3]);
        assert_eq!(r.expect(TAG_OCTET_STRING).unwrap().raw, inner.as_slice());
    }

    #[test]
    fn set_of_is_sorted() {
        let s = set_of(vec![vec![0x04, 0x01, 0x02], vec![0x02, 0x01, 0x05]]);
        assert_eq!(s, [0x31, 0x06, 0x02, 0x01, 0x05, 0x04, 0x01, 0x02]);
    }
}
