//! ASCII armor (RFC 4880 6.2, RFC 9580 6.2) for the encrypted message.
//!
//! sequoia's armor writer computes the CRC24 checksum one byte at a time, and in profiles of
//! the milter that was the largest single cost of encrypting a message. Leaving the
//! checksum out (as RFC 9580 allows) is not an option: GnuPG 2.2 and sq 0.27 fail on
//! armor without it. This writer produces the same RFC 4880 armor with a table-driven
//! CRC24 (the `crc` crate) and the `base64` crate's encoder.

use std::io::{self, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use crc::{Crc, Digest, Table, CRC_24_OPENPGP};

static CRC24: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_24_OPENPGP);

/// Raw bytes per armor line: 48 bytes make 64 base64 characters, as gpg and sequoia write.
const LINE_BYTES: usize = 48;

pub(crate) struct ArmorWriter<W: Write> {
    sink: W,
    /// Bytes of an unfinished line (fewer than `LINE_BYTES`).
    pending: Vec<u8>,
    /// Encoded lines waiting to be written, reused between writes.
    out: Vec<u8>,
    crc: Digest<'static, u32, Table<16>>,
}

impl<W: Write> ArmorWriter<W> {
    /// Starts a `PGP MESSAGE` block.
    pub(crate) fn new(mut sink: W) -> io::Result<Self> {
        sink.write_all(b"-----BEGIN PGP MESSAGE-----\n\n")?;
        Ok(ArmorWriter {
            sink,
            pending: Vec::with_capacity(LINE_BYTES),
            out: Vec::new(),
            crc: CRC24.digest(),
        })
    }

    fn encode_line(out: &mut Vec<u8>, bytes: &[u8]) {
        let start = out.len();
        out.resize(start + bytes.len().div_ceil(3) * 4, 0);
        let n = STANDARD
            .encode_slice(bytes, &mut out[start..])
            .expect("buffer sized for the encoding");
        out.truncate(start + n);
        out.push(b'\n');
    }

    /// Writes the last line, the checksum and the END line; returns the sink.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.clear();
        if !self.pending.is_empty() {
            Self::encode_line(&mut self.out, &self.pending);
        }
        let crc = self.crc.finalize().to_be_bytes();
        self.out.push(b'=');
        Self::encode_line(&mut self.out, &crc[1..]);
        self.out.extend_from_slice(b"-----END PGP MESSAGE-----\n");
        self.sink.write_all(&self.out)?;
        self.sink.flush()?;
        Ok(self.sink)
    }
}

impl<W: Write> Write for ArmorWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.crc.update(data);
        self.out.clear();
        let mut input = data;
        if !self.pending.is_empty() {
            let take = (LINE_BYTES - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() < LINE_BYTES {
                return Ok(data.len());
            }
            Self::encode_line(&mut self.out, &self.pending);
            self.pending.clear();
        }
        let whole = input.len() / LINE_BYTES * LINE_BYTES;
        self.out
            .reserve(whole / LINE_BYTES * (LINE_BYTES / 3 * 4 + 1));
        for line in input[..whole].chunks_exact(LINE_BYTES) {
            Self::encode_line(&mut self.out, line);
        }
        self.pending.extend_from_slice(&input[whole..]);
        self.sink.write_all(&self.out)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sequoia_openpgp::armor;

    fn ours(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut w = ArmorWriter::new(Vec::new()).unwrap();
        for c in data.chunks(chunk.max(1)) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap()
    }

    fn sequoias(data: &[u8]) -> Vec<u8> {
        let mut w = armor::Writer::new(Vec::new(), armor::Kind::Message).unwrap();
        w.write_all(data).unwrap();
        w.finalize().unwrap()
    }

    #[test]
    fn same_armor_as_sequoia_for_any_length_and_chunking() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        // (sequoia writes nothing at all for empty input; a message is never empty.)
        for len in [1, 2, 3, 47, 48, 49, 95, 96, 97, 1000, 5000] {
            for chunk in [1, 5, 48, 64, 4096] {
                assert_eq!(
                    String::from_utf8(ours(&data[..len], chunk)).unwrap(),
                    String::from_utf8(sequoias(&data[..len])).unwrap(),
                    "length {len}, chunks of {chunk}"
                );
            }
        }
    }

    #[test]
    fn sequoia_reads_it_back() {
        use std::io::Read;
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let armored = ours(&data, 1000);
        let mut r = armor::Reader::from_bytes(&armored, armor::ReaderMode::Tolerant(None));
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }
}
