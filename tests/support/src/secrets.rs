//! Secrets must never reach the logs. `tests/run` has every sealpost process, and every test
//! that runs the services in-process ([`capture_logs`]), append its debug log to one
//! directory, then `tests/scan-secrets` looks there for any marker:
//!
//! - the test passwords, passphrases and message-body texts listed in
//!   tests/fixtures/secret-markers.txt;
//! - secrets tests make at run time, which they [`register_secret`] (or
//!   [`register_private_key`]) in the file named by `SEALPOST_SECRET_MARKERS`;
//! - the passphrases in tests/fixtures/keys/openpgpjs/manifest.json;
//! - fragments of every private key under tests/fixtures and jmap-ext/tests/fixtures
//!   (armored/PEM: base64 lines from the middle of the body; binary PKCS#12/DER: pieces of
//!   its base64), and the private-key armor header lines themselves.
//!
//! Marker files: one marker a line; a line starting with `#` is a comment that names where
//! the markers after it come from; a marker that itself starts with `#` or `\` is written
//! with one more `\` in front.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;

/// The variable naming the file tests append run-time secrets to.
pub const MARKERS_ENV: &str = "SEALPOST_SECRET_MARKERS";

/// Markers shorter than this are ignored: they would match ordinary log text.
pub const MIN_MARKER_LEN: usize = 6;

/// The armor lines that start a private key.
pub const PRIVATE_KEY_ARMOR: &[&str] = &[
    "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    "-----BEGIN PRIVATE KEY-----",
    "-----BEGIN ENCRYPTED PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----BEGIN EC PRIVATE KEY-----",
    "-----BEGIN DSA PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
];

/// One thing that must not appear in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Where it comes from, printed instead of the secret.
    pub name: String,
    pub text: String,
}

impl Marker {
    /// The first few characters, enough to tell markers apart without revealing them.
    pub fn prefix(&self) -> String {
        let n = (self.text.chars().count() / 4).clamp(1, 4);
        self.text.chars().take(n).collect()
    }
}

/// Records a secret a test made at run time (a generated password, a passphrase read from
/// a command's output), so the log scan looks for it. Does nothing unless
/// `SEALPOST_SECRET_MARKERS` is set. Multi-line secrets count line by line.
#[track_caller]
pub fn register_secret(secret: &str) {
    let at = std::panic::Location::caller();
    let lines: Vec<&str> = secret.lines().collect();
    register(&format!("{}:{}", at.file(), at.line()), &lines);
}

/// Records fragments of an armored or PEM private key a test generated (see
/// [`key_fragments`]); the same as [`register_secret`] otherwise.
#[track_caller]
pub fn register_private_key(armored: &str) {
    let at = std::panic::Location::caller();
    let fragments = key_fragments(armored);
    let lines: Vec<&str> = fragments.iter().map(String::as_str).collect();
    register(
        &format!("private key generated at {}:{}", at.file(), at.line()),
        &lines,
    );
}

fn register(source: &str, lines: &[&str]) {
    let Some(path) = std::env::var_os(MARKERS_ENV) else {
        return;
    };
    let mut text = format!("# {source}\n");
    for line in lines {
        let line = line.trim_end_matches('\r');
        if line.chars().count() < MIN_MARKER_LEN {
            continue;
        }
        if line.starts_with('#') || line.starts_with('\\') {
            text.push('\\');
        }
        text.push_str(line);
        text.push('\n');
    }
    // One write to a file opened for appending: tests running in parallel, in this and in
    // other processes, cannot interleave their entries.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {MARKERS_ENV}={}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot append to {}: {e}", path.display()));
}

/// Reads a marker file (format in the module documentation). Markers are named
/// `FILE:LINE (COMMENT)` after the comment above them.
pub fn parse_markers(label: &str, text: &str) -> Vec<Marker> {
    let mut out = vec![];
    let mut comment = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if let Some(c) = line.strip_prefix('#') {
            comment = c.trim().to_string();
            continue;
        }
        let text = line.strip_prefix('\\').unwrap_or(line);
        if text.trim().is_empty() || text.chars().count() < MIN_MARKER_LEN {
            continue;
        }
        let name = if comment.is_empty() {
            format!("{label}:{}", i + 1)
        } else {
            format!("{label}:{} ({comment})", i + 1)
        };
        out.push(Marker {
            name,
            text: text.to_string(),
        });
    }
    out
}

/// Base64 fragments of an armored (OpenPGP) or PEM private key: from up to four body lines
/// spread over the middle of each key block, 40 characters starting a little into the
/// line, so that they still match when a log wraps the base64 at another width or not
/// at all.
pub fn key_fragments(armored: &str) -> Vec<String> {
    let mut out = vec![];
    let mut body: Option<Vec<&str>> = None;
    for line in armored.lines().map(str::trim) {
        if line.starts_with("-----BEGIN ") && line.contains("PRIVATE KEY") {
            body = Some(vec![]);
        } else if line.starts_with("-----END ") {
            if let Some(lines) = body.take() {
                out.extend(pick_fragments(&lines));
            }
        } else if let Some(lines) = body.as_mut() {
            if line.len() >= 40 && line.bytes().all(is_base64) {
                lines.push(line);
            }
        }
    }
    out
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='
}

fn pick_fragments(lines: &[&str]) -> Vec<String> {
    // The first and the last line are the most alike between keys (packet headers,
    // padding); the middle is key material.
    let inner: &[&str] = if lines.len() > 3 {
        &lines[1..lines.len() - 1]
    } else {
        lines
    };
    let n = inner.len().min(4);
    (0..n)
        .map(|i| inner[(2 * i + 1) * inner.len() / (2 * n)])
        .map(|l| {
            let start = 12.min(l.len() - 40);
            l[start..start + 40].to_string()
        })
        .collect()
}

/// Pieces of a binary private key (PKCS#12, DER) as they would appear base64-encoded.
pub fn binary_key_fragments(bytes: &[u8]) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    if b64.len() < 120 {
        return vec![];
    }
    [1, 2, 3]
        .iter()
        .map(|q| {
            let at = (b64.len() * q / 4) & !3;
            b64[at..at + 40].to_string()
        })
        .collect()
}

/// Every marker the scan looks for, given the workspace root.
pub fn all_markers(root: &Path) -> std::io::Result<Vec<Marker>> {
    let mut markers = vec![];
    let listed = root.join("tests/fixtures/secret-markers.txt");
    markers.extend(parse_markers(
        "tests/fixtures/secret-markers.txt",
        &std::fs::read_to_string(&listed)?,
    ));
    if let Some(path) = std::env::var_os(MARKERS_ENV) {
        // Absent when no test registered anything.
        if let Ok(text) = std::fs::read_to_string(&path) {
            markers.extend(parse_markers(MARKERS_ENV, &text));
        }
    }
    let manifest = root.join("tests/fixtures/keys/openpgpjs/manifest.json");
    if let Ok(text) = std::fs::read_to_string(&manifest) {
        for (i, line) in text.lines().enumerate() {
            if let Some(rest) = line.trim().strip_prefix("\"passphrase\": \"") {
                let pass = rest.trim_end_matches(',').trim_end_matches('"');
                if pass.chars().count() >= MIN_MARKER_LEN {
                    markers.push(Marker {
                        name: format!("tests/fixtures/keys/openpgpjs/manifest.json:{}", i + 1),
                        text: pass.to_string(),
                    });
                }
            }
        }
    }
    for dir in ["tests/fixtures", "jmap-ext/tests/fixtures"] {
        for file in files_under(&root.join(dir))? {
            let rel = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            let bytes = std::fs::read(&file)?;
            let fragments = match std::str::from_utf8(&bytes) {
                Ok(text) if text.contains("PRIVATE KEY") => key_fragments(text),
                Ok(_) => vec![],
                Err(_) if is_binary_private_key(&file) => binary_key_fragments(&bytes),
                Err(_) => vec![],
            };
            markers.extend(fragments.into_iter().enumerate().map(|(i, text)| Marker {
                name: format!("private key {rel}, fragment {}", i + 1),
                text,
            }));
        }
    }
    markers.extend(PRIVATE_KEY_ARMOR.iter().map(|h| Marker {
        name: "private key armor header".into(),
        text: h.to_string(),
    }));
    Ok(markers)
}

fn is_binary_private_key(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.ends_with(".p12")
        || name.ends_with(".pfx")
        || name.contains(".key.")
        || name.contains("secret")
        || name.contains(".sec.")
}

/// Every regular file under `dir`, sorted (none if `dir` does not exist).
pub fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if entry.file_name() != "node_modules" {
                    todo.push(entry.path());
                }
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A marker found in a log.
#[derive(Debug)]
pub struct Hit {
    pub file: PathBuf,
    pub line: usize,
    pub marker: usize,
}

/// What a scan saw.
#[derive(Debug, Default)]
pub struct Scan {
    pub files: usize,
    pub lines: usize,
    pub hits: Vec<Hit>,
}

/// Looks for every marker in every file under `dir`.
pub fn scan(dir: &Path, markers: &[Marker]) -> std::io::Result<Scan> {
    let finder = aho_corasick::AhoCorasick::new(markers.iter().map(|m| &m.text))
        .map_err(std::io::Error::other)?;
    let mut result = Scan::default();
    for file in files_under(dir)? {
        result.files += 1;
        let bytes = std::fs::read(&file)?;
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            result.lines += 1;
            let mut seen = vec![];
            for m in finder.find_overlapping_iter(line) {
                let marker = m.pattern().as_usize();
                if !seen.contains(&marker) {
                    seen.push(marker);
                    result.hits.push(Hit {
                        file: file.clone(),
                        line: i + 1,
                        marker,
                    });
                }
            }
        }
    }
    Ok(result)
}

/// Sends this process's tracing output at debug level (or `SEALPOST_LOG_FILE_LEVEL`) to
/// the file named by `SEALPOST_LOG_FILE` (`%p` = the process id), as `sealpost` does with
/// `[log] file`, for tests that run the services in-process. Does nothing when the
/// variable is unset or another subscriber is installed; safe to call from every test.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Ok(pattern) = std::env::var("SEALPOST_LOG_FILE") else {
            return;
        };
        if pattern.is_empty() {
            return;
        }
        let path = pattern.replace("%p", &std::process::id().to_string());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open SEALPOST_LOG_FILE={path}: {e}"));
        let level = std::env::var("SEALPOST_LOG_FILE_LEVEL")
            .ok()
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "debug".into());
        let filter = tracing_subscriber::EnvFilter::try_new(format!("{level},sqlx=warn"))
            .unwrap_or_else(|e| panic!("SEALPOST_LOG_FILE_LEVEL={level}: {e}"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .try_init();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_files_name_their_source() {
        let m = parse_markers(
            "f",
            "# escrow officer\nofficer-pass-1\n\\#hash-start\nshort\n\n# other\nsecond-one\n",
        );
        let names: Vec<_> = m
            .iter()
            .map(|m| (m.name.as_str(), m.text.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("f:2 (escrow officer)", "officer-pass-1"),
                ("f:3 (escrow officer)", "#hash-start"),
                ("f:7 (other)", "second-one"),
            ]
        );
        assert_eq!(m[0].prefix(), "off");
    }

    #[test]
    fn fragments_come_from_the_key_body() {
        let body: Vec<String> = (0..10)
            .map(|i| format!("{i}").repeat(64).replace('0', "A"))
            .collect();
        let armored = format!(
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nComment: x\n\n{}\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----\n",
            body.join("\n")
        );
        let f = key_fragments(&armored);
        assert_eq!(f.len(), 4);
        for frag in &f {
            assert_eq!(frag.len(), 40);
            assert!(body[1..9].iter().any(|l| l.contains(frag.as_str())));
        }
        assert!(key_fragments("-----BEGIN PGP PUBLIC KEY BLOCK-----\nAAAA\n").is_empty());
    }
}
