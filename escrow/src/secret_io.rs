//! Reading passphrases and writing files that hold secrets.
//!
//! Passphrases come from the controlling terminal (never from the command line) or from a
//! file named on the command line; files with secrets are created with mode 0600 and never
//! overwrite an existing file.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sequoia_openpgp::crypto::Password;

/// Largest passphrase file accepted.
const MAX_PASSPHRASE_FILE: u64 = 64 * 1024;

/// Where a passphrase comes from.
#[derive(Clone, Debug)]
pub enum PassphraseSource {
    /// The first line of this file (the line ending is not part of the passphrase).
    File(PathBuf),
    /// The controlling terminal, with this prompt.
    Prompt(String),
}

impl PassphraseSource {
    pub fn from_option(file: Option<&Path>, prompt: impl Into<String>) -> PassphraseSource {
        match file {
            Some(f) => PassphraseSource::File(f.to_path_buf()),
            None => PassphraseSource::Prompt(prompt.into()),
        }
    }

    /// Reads the passphrase once (for unlocking).
    pub fn read(&self) -> Result<Password> {
        match self {
            PassphraseSource::File(f) => read_passphrase_file(f),
            PassphraseSource::Prompt(p) => prompt(p),
        }
    }

    /// Reads a new passphrase: from the file, or typed twice on the terminal.
    pub fn read_new(&self) -> Result<Password> {
        match self {
            PassphraseSource::File(f) => read_passphrase_file(f),
            PassphraseSource::Prompt(p) => {
                let first = prompt(p)?;
                let again = prompt("Repeat it: ")?;
                let same = first.map(|a| again.map(|b| a == b));
                if !same {
                    bail!("the two passphrases differ; nothing was written");
                }
                if first.map(|a| a.is_empty()) {
                    bail!("the passphrase is empty; nothing was written");
                }
                Ok(first)
            }
        }
    }
}

/// Reads the first line of a passphrase file. An empty passphrase is refused.
pub fn read_passphrase_file(path: &Path) -> Result<Password> {
    let mut buf = Vec::new();
    File::open(path)
        .with_context(|| format!("cannot open passphrase file {}", path.display()))?
        .take(MAX_PASSPHRASE_FILE + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read passphrase file {}", path.display()))?;
    if buf.len() as u64 > MAX_PASSPHRASE_FILE {
        bail!(
            "passphrase file {} is larger than {MAX_PASSPHRASE_FILE} bytes",
            path.display()
        );
    }
    let end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    let mut line = &buf[..end];
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    if line.is_empty() {
        bail!("passphrase file {} is empty", path.display());
    }
    let pw = Password::from(line);
    wipe(&mut buf);
    Ok(pw)
}

/// Reads a passphrase from the controlling terminal without echo.
pub fn prompt(text: &str) -> Result<Password> {
    // rpassword reads from /dev/tty; fail clearly when there is none rather than waiting.
    if File::open("/dev/tty").is_err() {
        bail!("no terminal to read the passphrase from; give it in a file (see --help)");
    }
    let mut s =
        rpassword::prompt_password(text).context("cannot read the passphrase from the terminal")?;
    let pw = Password::from(s.as_str());
    let mut bytes = std::mem::take(&mut s).into_bytes();
    wipe(&mut bytes);
    Ok(pw)
}

/// Overwrites a buffer that held a secret.
pub fn wipe(buf: &mut [u8]) {
    zeroize::Zeroize::zeroize(buf);
}

/// Creates `path` with mode 0600 (failing when it exists) and writes `data`.
pub fn write_secret_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            if path.exists() {
                format!(
                    "{} already exists; refusing to overwrite it",
                    path.display()
                )
            } else {
                format!("cannot create {}", path.display())
            }
        })?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Creates a file that holds no secret (mode 0644), failing when it exists.
pub fn write_public_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .with_context(|| {
            if path.exists() {
                format!(
                    "{} already exists; refusing to overwrite it",
                    path.display()
                )
            } else {
                format!("cannot create {}", path.display())
            }
        })?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// True when standard output is a terminal (where a password may be shown).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Reads a whole file of at most `max` bytes.
pub fn read_limited(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)
        .with_context(|| format!("cannot open {what} {}", path.display()))?
        .take(max + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if buf.len() as u64 > max {
        bail!("{what} {} is larger than {max} bytes", path.display());
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_files_take_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        for (content, want) in [
            (&b"secret\n"[..], Some(&b"secret"[..])),
            (b"secret\r\nsecond line\n", Some(b"secret")),
            (b"no newline", Some(b"no newline")),
            (b" spaces kept \n", Some(b" spaces kept ")),
            (b"\n", None),
            (b"", None),
        ] {
            std::fs::write(&p, content).unwrap();
            match (read_passphrase_file(&p), want) {
                (Ok(pw), Some(w)) => assert!(pw.map(|b| &b[..] == w)),
                (Err(e), None) => assert!(e.to_string().contains("is empty"), "{e}"),
                (r, w) => panic!("{:?} for {w:?}", r.is_ok()),
            }
        }
        assert!(read_passphrase_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("cannot open passphrase file"));
    }

    #[test]
    fn secret_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        write_secret_file(&p, b"x").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = write_secret_file(&p, b"y").unwrap_err();
        assert!(format!("{e:#}").contains("already exists"), "{e:#}");
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
    }
}
