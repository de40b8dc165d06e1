//! A write-once, read-once byte buffer that keeps small outputs in memory and moves larger
//! ones to an anonymous temporary file, so memory stays bounded for any message size.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest chunk handed out by [`SpoolReader::next_chunk`]: the milter protocol limits a body
/// replacement packet to 65535 bytes of data.
pub const MAX_BODY_CHUNK: usize = 65535;

/// Smallest allocation for the in-memory part; avoids many tiny reallocations.
const MIN_ALLOC: usize = 8 * 1024;

/// Output of the transform: in memory up to a threshold, then in a temporary file.
///
/// The temporary file is created unlinked (`tempfile::tempfile_in`), so it disappears when
/// the spool is dropped, even after a crash.
#[derive(Debug)]
pub struct Spool {
    mem: Vec<u8>,
    file: Option<BufWriter<File>>,
    len: u64,
    threshold: usize,
    spill_dir: Option<PathBuf>,
    peak_mem: usize,
}

impl Spool {
    /// Creates an empty spool that spills once more than `threshold` bytes were written.
    /// The temporary file goes to `spill_dir`, or the system temporary directory.
    pub fn new(threshold: usize, spill_dir: Option<&Path>) -> Spool {
        Spool {
            mem: Vec::new(),
            file: None,
            len: 0,
            threshold,
            spill_dir: spill_dir.map(Path::to_path_buf),
            peak_mem: 0,
        }
    }

    /// Number of bytes written.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the content moved to a temporary file.
    pub fn is_spilled(&self) -> bool {
        self.file.is_some()
    }

    /// The largest amount of memory the in-memory part ever reserved, in bytes. Never more
    /// than the threshold.
    pub fn peak_memory(&self) -> usize {
        self.peak_mem
    }

    fn spill(&mut self) -> io::Result<()> {
        let file = match &self.spill_dir {
            Some(dir) => tempfile::tempfile_in(dir)?,
            None => tempfile::tempfile()?,
        };
        let mut w = BufWriter::with_capacity(64 * 1024, file);
        w.write_all(&self.mem)?;
        // Give the memory back now; the rest of the message goes to the file.
        self.mem = Vec::new();
        self.file = Some(w);
        Ok(())
    }

    /// Finishes writing and returns a reader positioned at the start.
    pub fn into_reader(self) -> io::Result<SpoolReader> {
        let inner = match self.file {
            Some(w) => {
                let mut file = w.into_inner().map_err(|e| e.into_error())?;
                file.seek(SeekFrom::Start(0))?;
                ReaderInner::File(file)
            }
            None => ReaderInner::Mem(io::Cursor::new(self.mem)),
        };
        Ok(SpoolReader {
            inner,
            remaining: self.len,
        })
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.file {
            f.write_all(buf)?;
        } else if self.mem.len() + buf.len() > self.threshold {
            self.spill()?;
            if let Some(f) = &mut self.file {
                f.write_all(buf)?;
            }
        } else {
            let needed = self.mem.len() + buf.len();
            if needed > self.mem.capacity() {
                // Grow geometrically but never past the threshold, so the reservation
                // itself stays bounded.
                let target = needed
                    .max(self.mem.capacity() * 2)
                    .max(MIN_ALLOC)
                    .min(self.threshold);
                self.mem.reserve_exact(target - self.mem.len());
                self.peak_mem = self.peak_mem.max(self.mem.capacity());
            }
            self.mem.extend_from_slice(buf);
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
enum ReaderInner {
    Mem(io::Cursor<Vec<u8>>),
    File(File),
}

/// Reads a finished [`Spool`] back.
#[derive(Debug)]
pub struct SpoolReader {
    inner: ReaderInner,
    remaining: u64,
}

impl SpoolReader {
    /// Whether the content is in memory (reading it does no I/O).
    pub fn in_memory(&self) -> bool {
        matches!(self.inner, ReaderInner::Mem(_))
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next chunk of at most [`MAX_BODY_CHUNK`] bytes, or `None` at the end.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let want = (self.remaining.min(MAX_BODY_CHUNK as u64)) as usize;
        if want == 0 {
            return Ok(None);
        }
        let mut buf = vec![0; want];
        self.read_exact(&mut buf)?;
        Ok(Some(buf))
    }
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            ReaderInner::Mem(c) => c.read(buf)?,
            ReaderInner::File(f) => f.read(buf)?,
        };
        self.remaining = self.remaining.saturating_sub(n as u64);
        Ok(n)
    }
}

impl Iterator for SpoolReader {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_in_memory_below_threshold() {
        let mut s = Spool::new(1000, None);
        s.write_all(&[b'a'; 600]).unwrap();
        s.write_all(&[b'b'; 400]).unwrap();
        assert!(!s.is_spilled());
        assert!(s.peak_memory() <= 1000);
        let mut out = Vec::new();
        s.into_reader().unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 1000);
    }

    #[test]
    fn spills_and_reads_back_in_bounded_chunks() {
        let mut s = Spool::new(10_000, None);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(777) {
            s.write_all(c).unwrap();
        }
        assert!(s.is_spilled());
        assert!(s.peak_memory() <= 10_000);
        assert_eq!(s.len(), data.len() as u64);
        let mut back = Vec::new();
        for chunk in s.into_reader().unwrap() {
            let chunk = chunk.unwrap();
            assert!(!chunk.is_empty() && chunk.len() <= MAX_BODY_CHUNK);
            back.extend_from_slice(&chunk);
        }
        assert_eq!(back, data);
    }
}
