//! `sealpost maildir encrypt`: encrypts the messages already stored in a Maildir, in place.
//!
//! Per message: the milter's transform writes the encrypted message to a new file in the
//! folder's tmp/, which gets the original's owner, mode and times and is flushed to disk; then
//! the two files are swapped atomically (`renameat2(RENAME_EXCHANGE)`, so a message that an
//! IMAP server moved meanwhile is noticed instead of duplicated), the directory is flushed,
//! and the plaintext, now in tmp/, is removed. Readers see the old or the new message, never
//! a partial one. Messages the transform skips (already encrypted) are not touched, which makes
//! a rerun resume where an interrupted run stopped.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use sealpost_escrow::progress::Progress;
use sealpost_milter::transform::{encrypt_message, Outcome, Recipients, TransformOptions};
use serde::Serialize;

use super::{open_keystore, print_json};
use crate::cli::{MaildirCmd, MaildirDecryptArgs, MaildirEncryptArgs};
use crate::config::Config;

/// Suffix of the files this command writes into tmp/; leftovers of an interrupted run carry
/// it and are removed by the next run.
const PARTIAL_SUFFIX: &str = ".sealpost-partial";

pub async fn run(config: &Config, cmd: MaildirCmd) -> Result<ExitCode> {
    match cmd {
        MaildirCmd::Encrypt(args) => encrypt(config, args).await,
        MaildirCmd::Decrypt(args) => decrypt(args),
    }
}

/// `sealpost maildir decrypt`: the owner's own key, no keystore.
fn decrypt(args: MaildirDecryptArgs) -> Result<ExitCode> {
    use sealpost_escrow::recover::UnlockedKey;
    use sealpost_escrow::{maildir, secret_io};
    // Refused before any passphrase is asked for.
    if args.out.exists() && fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} exists and is not empty; give a new directory for the decrypted mail",
            args.out.display()
        );
    }
    let bytes = secret_io::read_limited(&args.key, 1 << 20, "secret key")?;
    let key = if sealpost_keystore::protection::pkcs12_der(&bytes).is_some() {
        // An S/MIME key: a password-protected PKCS#12 bundle.
        let password = match &args.passphrase_file {
            Some(f) => secret_io::read_passphrase_file(f)?,
            None => secret_io::prompt("Password of the PKCS#12 bundle: ")?,
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let stored = if text.starts_with("-----BEGIN") {
            text
        } else {
            sealpost_keystore::protection::pkcs12_pem(&bytes)
        };
        UnlockedKey::Smime(
            sealpost_escrow::smime::unlock(&stored, &password)
                .map_err(|e| anyhow::anyhow!("{}: {e}", args.key.display()))?,
        )
    } else {
        UnlockedKey::OpenPgp(Box::new(openpgp_key(&args, &bytes)?))
    };
    let mut bar = Progress::new("decrypting");
    let r = maildir::decrypt_maildir(&args.dir, &args.out, &key, |d, t| bar.update(d, t))?;
    bar.finish();
    report(&r, &args)
}

/// The owner's OpenPGP secret key, unlocked.
fn openpgp_key(args: &MaildirDecryptArgs, bytes: &[u8]) -> Result<sequoia_openpgp::Cert> {
    use sealpost_escrow::{officer, secret_io};
    use sequoia_openpgp::parse::Parse;
    let cert = sequoia_openpgp::Cert::from_bytes(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not an OpenPGP key", args.key.display()))?;
    if !cert.is_tsk() {
        bail!(
            "{} holds only a public key; decrypting needs the secret key",
            args.key.display()
        );
    }
    let protected = cert
        .keys()
        .secret()
        .any(|ka| !ka.key().has_unencrypted_secret());
    if !protected {
        return Ok(cert);
    }
    let password = match &args.passphrase_file {
        Some(f) => secret_io::read_passphrase_file(f)?,
        None => secret_io::prompt("Passphrase of the secret key: ")?,
    };
    officer::unlock_cert(cert, &password)
        .map_err(|_| anyhow::anyhow!("wrong passphrase for {}", args.key.display()))
}

fn report(
    r: &sealpost_escrow::maildir::MaildirReport,
    args: &MaildirDecryptArgs,
) -> Result<ExitCode> {
    if args.json {
        print_json(r)?;
    } else {
        println!(
            "{} decrypted, {} copied unchanged, {} for another key, {} failed; written to {}",
            r.decrypted,
            r.copied,
            r.other_key,
            r.failed.len(),
            args.out.display()
        );
        for (file, why) in &r.failed {
            eprintln!("sealpost: {file}: {why}");
        }
    }
    Ok(if r.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Debug, Default, Serialize)]
struct Report {
    dry_run: bool,
    /// Messages encrypted (with --dry-run: that would be encrypted).
    encrypted: u64,
    already_encrypted: u64,
    failed: u64,
    failures: Vec<Failure>,
}

#[derive(Debug, Serialize)]
struct Failure {
    /// Path relative to the Maildir.
    file: String,
    error: String,
}

async fn encrypt(config: &Config, args: MaildirEncryptArgs) -> Result<ExitCode> {
    let folders = maildir_folders(&args.dir)?;
    let ks = open_keystore(config).await?;
    let (keys, settings) = super::encrypt::account_keys(&ks, &args.account).await?;
    let protect_subject =
        config.milter.protect_subject || settings.protect_subject.unwrap_or(false);
    ks.close().await;
    let recipients = Recipients::for_keys(&keys, SystemTime::now(), config.milter.smime)
        .with_context(|| format!("cannot encrypt to the keys of {}", args.account))?;
    let options = TransformOptions {
        protect_subject,
        compress: config.milter.compress,
        spill_threshold: config.milter.spill_threshold_bytes,
        spill_dir: config.milter.spill_dir.clone(),
    };
    let root = args.dir.clone();
    let dry_run = args.dry_run;
    let report = tokio::task::spawn_blocking(move || {
        migrate(&root, &folders, &recipients, &options, dry_run)
    })
    .await
    .context("the encryption task failed")??;

    if args.json {
        print_json(&report)?;
    } else {
        for f in &report.failures {
            eprintln!("sealpost: cannot encrypt {}: {}", f.file, f.error);
        }
        println!(
            "{} {}, already encrypted {}, failed {}{}",
            if dry_run {
                "would encrypt"
            } else {
                "encrypted"
            },
            report.encrypted,
            report.already_encrypted,
            report.failed,
            if dry_run {
                " (dry run: nothing changed)"
            } else {
                ""
            }
        );
    }
    Ok(if report.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The Maildir itself and its Maildir++ folders (`.Sent`, `.Archive.2024`, …), each with
/// cur/ or new/, and tmp/.
fn maildir_folders(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if !is_maildir(dir) {
        bail!(
            "{} is not a Maildir (it needs tmp/ and cur/ or new/)",
            dir.display()
        );
    }
    let mut folders = vec![dir.to_path_buf()];
    let mut subs: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.as_bytes();
            name.len() > 1 && name[0] == b'.' && name != b".."
        })
        .map(|e| e.path())
        .filter(|p| p.is_dir() && is_maildir(p))
        .collect();
    subs.sort();
    folders.extend(subs);
    Ok(folders)
}

fn is_maildir(dir: &Path) -> bool {
    dir.join("tmp").is_dir() && (dir.join("cur").is_dir() || dir.join("new").is_dir())
}

/// One message file to process.
struct Item {
    folder: PathBuf,
    /// "cur" or "new".
    sub: &'static str,
    name: OsString,
}

impl Item {
    fn path(&self) -> PathBuf {
        self.folder.join(self.sub).join(&self.name)
    }

    fn display(&self, root: &Path) -> String {
        let p = self.path();
        p.strip_prefix(root).unwrap_or(&p).display().to_string()
    }
}

fn migrate(
    root: &Path,
    folders: &[PathBuf],
    recipients: &Recipients,
    options: &TransformOptions,
    dry_run: bool,
) -> Result<Report> {
    let mut items = Vec::new();
    for folder in folders {
        if !dry_run {
            remove_stale_partials(&folder.join("tmp"))?;
        }
        for sub in ["cur", "new"] {
            let dir = folder.join(sub);
            if !dir.is_dir() {
                continue;
            }
            let mut names: Vec<OsString> = Vec::new();
            for e in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
                let e = e.with_context(|| format!("cannot read {}", dir.display()))?;
                // Messages are regular files; hidden names are not messages (Maildir).
                if e.file_name().as_bytes().first() == Some(&b'.') {
                    continue;
                }
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    names.push(e.file_name());
                }
            }
            names.sort();
            items.extend(names.into_iter().map(|name| Item {
                folder: folder.clone(),
                sub,
                name,
            }));
        }
    }

    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    let total = items.len() as u64;
    let mut bar = Progress::new(if dry_run { "checking" } else { "encrypting" });
    for (i, item) in items.iter().enumerate() {
        let result = if dry_run {
            check_one(item, recipients, options)
        } else {
            encrypt_one(item, recipients, options)
        };
        match result {
            Ok(Done::Encrypted) => report.encrypted += 1,
            Ok(Done::AlreadyEncrypted) => report.already_encrypted += 1,
            Err(e) => {
                report.failed += 1;
                report.failures.push(Failure {
                    file: item.display(root),
                    error: one_line(&e),
                });
            }
        }
        bar.update(i as u64 + 1, total);
    }
    bar.finish();
    Ok(report)
}

enum Done {
    Encrypted,
    AlreadyEncrypted,
}

/// --dry-run: runs the transform into nowhere, so the counts (and failures) are the real ones.
fn check_one(item: &Item, recipients: &Recipients, options: &TransformOptions) -> Result<Done> {
    let file = File::open(item.path()).context("cannot open the message")?;
    match encrypt_message(BufReader::new(file), io::sink(), recipients, options)? {
        Outcome::Encrypted { .. } => Ok(Done::Encrypted),
        Outcome::Skipped(_) => Ok(Done::AlreadyEncrypted),
    }
}

fn encrypt_one(item: &Item, recipients: &Recipients, options: &TransformOptions) -> Result<Done> {
    let path = item.path();
    let dir = item.folder.join(item.sub);
    let tmp_dir = item.folder.join("tmp");
    let file = File::open(&path).context("cannot open the message")?;
    let meta = file
        .metadata()
        .context("cannot read the message's metadata")?;

    let tmp_path = tmp_dir.join(partial_name());
    let mut guard = RemoveOnDrop(Some(tmp_path.clone()));
    let tmp = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp_path)
        .with_context(|| format!("cannot create a file in {}", tmp_dir.display()))?;
    let mut out = SizeCounter::new(&tmp);
    let outcome = encrypt_message(BufReader::new(&file), &mut out, recipients, options)?;
    if let Outcome::Skipped(_) = outcome {
        drop(guard);
        // A run interrupted between the swap and the size rename left a stale ,S=/,W=.
        if size_field(&item.name).is_some_and(|s| s != meta.len()) {
            if let Some(fixed) = size_fixed_name(&item.name, meta.len(), || virtual_size(&file))? {
                rename_noreplace(&path, &dir.join(fixed))?;
                sync_dir(&dir)?;
            }
        }
        return Ok(Done::AlreadyEncrypted);
    }
    out.flush().context("cannot write the encrypted message")?;
    let (size, vsize) = (out.bytes, out.virtual_bytes());

    // The new file takes the original's place for the IMAP server: same owner, mode and
    // times (Dovecot reads a Maildir message's arrival time from its mtime).
    if meta.uid() != tmp.metadata()?.uid() || meta.gid() != tmp.metadata()?.gid() {
        std::os::unix::fs::fchown(&tmp, Some(meta.uid()), Some(meta.gid()))
            .context("cannot give the encrypted message the original's owner")?;
    }
    tmp.set_permissions(meta.permissions())
        .context("cannot give the encrypted message the original's mode")?;
    let times = FileTimes::new()
        .set_accessed(meta.accessed()?)
        .set_modified(meta.modified()?);
    tmp.set_times(times)
        .context("cannot give the encrypted message the original's times")?;
    tmp.sync_all()
        .context("cannot flush the encrypted message to disk")?;
    drop(tmp);

    // Swap: the encrypted file under the message's name, the original at the tmp/ path.
    swap(&tmp_path, &path, meta.ino())?;
    sync_dir(&dir)?;
    // The plaintext is now at tmp_path.
    guard.take_and_remove()?;
    sync_dir(&tmp_dir)?;

    if let Some(fixed) = size_fixed_name(&item.name, size, || Ok(vsize))? {
        rename_noreplace(&path, &dir.join(fixed))?;
        sync_dir(&dir)?;
    }
    Ok(Done::Encrypted)
}

/// Removes the file at the path when dropped (the temporary file on every error path).
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn take_and_remove(&mut self) -> Result<()> {
        if let Some(p) = self.0.take() {
            fs::remove_file(&p).context("cannot remove the original from tmp/")?;
        }
        Ok(())
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// A unique name in tmp/ (time, process id, sequence number, host-independent suffix).
fn partial_name() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}{PARTIAL_SUFFIX}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn remove_stale_partials(tmp: &Path) -> Result<()> {
    for e in fs::read_dir(tmp).with_context(|| format!("cannot read {}", tmp.display()))? {
        let e = e.with_context(|| format!("cannot read {}", tmp.display()))?;
        if e.file_name()
            .as_bytes()
            .ends_with(PARTIAL_SUFFIX.as_bytes())
        {
            fs::remove_file(e.path())
                .with_context(|| format!("cannot remove the leftover {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Atomically exchanges `tmp` and `target`; fails if the message at `target` is no longer the
/// file that was encrypted (moved by an IMAP server, or replaced).
fn swap(tmp: &Path, target: &Path, ino: u64) -> Result<()> {
    let a = CString::new(tmp.as_os_str().as_bytes())?;
    let b = CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: both arguments are valid NUL-terminated paths; AT_FDCWD resolves them
    // relative to the working directory like every other path here.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        // `tmp` now names the file that was at `target`: it must be the one we read.
        let moved = fs::symlink_metadata(tmp).context("cannot inspect the swapped file")?;
        if moved.ino() != ino {
            // Put it back; the message changed under us.
            // SAFETY: as above.
            let back = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if back != 0 {
                bail!(
                    "the message was replaced while being encrypted and could not be restored: {}",
                    io::Error::last_os_error()
                );
            }
            bail!("the message was replaced while being encrypted; run again");
        }
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOENT) => {
            bail!("the message was moved or removed while being encrypted; run again")
        }
        // File systems without RENAME_EXCHANGE: check, then replace.
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            replace_checked(tmp, target, ino)
        }
        _ => Err(err).context("cannot replace the message"),
    }
}

/// The fallback of [`swap`]: replaces `target` with `tmp` after checking that `target` is
/// still the file that was encrypted, leaving the original at `tmp` like an exchange would.
/// Between the check and the rename an IMAP server could move the message; the exchange
/// closes that window where the file system supports it.
fn replace_checked(tmp: &Path, target: &Path, ino: u64) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.ino() == ino => {}
        _ => bail!("the message was moved or replaced while being encrypted; run again"),
    }
    let keep = tmp.with_file_name(partial_name());
    fs::hard_link(target, &keep).context("cannot link the original into tmp/")?;
    if let Err(e) = fs::rename(tmp, target) {
        let _ = fs::remove_file(&keep);
        return Err(e).context("cannot replace the message");
    }
    fs::rename(&keep, tmp).context("cannot move the original within tmp/")?;
    Ok(())
}

fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        bail!(
            "cannot correct the size in the file name: {} exists",
            to.display()
        );
    }
    fs::rename(from, to).context("cannot correct the size in the file name")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot flush {} to disk", dir.display()))
}

/// The file name with its `,S=` (size) and `,W=` (size with CRLF line ends) fields set to
/// the given sizes, or None when it has no such fields or they are already right. Dovecot
/// trusts these fields; stale ones make it report the message as broken.
fn size_fixed_name(
    name: &OsStr,
    size: u64,
    vsize: impl FnOnce() -> Result<u64>,
) -> Result<Option<OsString>> {
    let Some(name) = name.to_str() else {
        return Ok(None);
    };
    let (base, info) = match name.find(':') {
        Some(i) => name.split_at(i),
        None => (name, ""),
    };
    let mut parts: Vec<String> = base.split(',').map(str::to_string).collect();
    let has_w = parts.iter().skip(1).any(|p| p.starts_with("W="));
    let has_s = parts.iter().skip(1).any(|p| p.starts_with("S="));
    if !has_s && !has_w {
        return Ok(None);
    }
    let vsize = if has_w { Some(vsize()?) } else { None };
    let mut changed = false;
    for p in parts.iter_mut().skip(1) {
        let new = if p.starts_with("S=") {
            format!("S={size}")
        } else if let (true, Some(v)) = (p.starts_with("W="), vsize) {
            format!("W={v}")
        } else {
            continue;
        };
        if *p != new {
            *p = new;
            changed = true;
        }
    }
    Ok(changed.then(|| OsString::from(format!("{}{info}", parts.join(",")))))
}

/// The `,S=` field of a Maildir file name.
fn size_field(name: &OsStr) -> Option<u64> {
    let name = name.to_str()?;
    let base = name.split(':').next()?;
    base.split(',')
        .skip(1)
        .find_map(|p| p.strip_prefix("S="))
        .and_then(|v| v.parse().ok())
}

/// Size of the file with every bare LF counted as CRLF (what IMAP clients are sent).
fn virtual_size(file: &File) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut counter = SizeCounter::new(io::sink());
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    loop {
        let n = file
            .read_at(&mut buf, off)
            .context("cannot read the message")?;
        if n == 0 {
            break;
        }
        counter.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(counter.virtual_bytes())
}

/// Passes bytes through and counts them, and the LFs not preceded by CR.
struct SizeCounter<W> {
    inner: W,
    bytes: u64,
    bare_lf: u64,
    last_cr: bool,
}

impl<W: Write> SizeCounter<W> {
    fn new(inner: W) -> Self {
        SizeCounter {
            inner,
            bytes: 0,
            bare_lf: 0,
            last_cr: false,
        }
    }

    fn virtual_bytes(&self) -> u64 {
        self.bytes + self.bare_lf
    }
}

impl<W: Write> Write for SizeCounter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        for &b in &buf[..n] {
            if b == b'\n' && !self.last_cr {
                self.bare_lf += 1;
            }
            self.last_cr = b == b'\r';
        }
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_fields_follow_the_content() {
        let fix = |n: &str, s, w| {
            size_fixed_name(OsStr::new(n), s, || Ok(w))
                .unwrap()
                .map(|o| o.into_string().unwrap())
        };
        assert_eq!(
            fix("1700000000.M1P2.host,S=120,W=124:2,RS", 900, 930).as_deref(),
            Some("1700000000.M1P2.host,S=900,W=930:2,RS")
        );
        assert_eq!(
            fix("1700000000.M1P2.host,S=120", 900, 0).as_deref(),
            Some("1700000000.M1P2.host,S=900")
        );
        assert_eq!(fix("1700000000.M1P2.host:2,S", 900, 0), None);
        assert_eq!(fix("1700000000.M1P2.host,S=900:2,", 900, 0), None);
        assert_eq!(
            size_field(OsStr::new("1.M1P2.host,S=900,W=930:2,S")),
            Some(900)
        );
        assert_eq!(size_field(OsStr::new("1.M1P2.host:2,S=9")), None);
    }

    #[test]
    fn virtual_size_counts_bare_lf_as_crlf() {
        let mut c = SizeCounter::new(io::sink());
        c.write_all(b"a\nb\r").unwrap();
        c.write_all(b"\nc\n").unwrap();
        assert_eq!(c.bytes, 7);
        assert_eq!(c.virtual_bytes(), 9);
    }
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf, u64) {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join(partial_name());
        let target = d.path().join("msg");
        fs::write(&tmp, b"encrypted").unwrap();
        fs::write(&target, b"plain").unwrap();
        let ino = fs::metadata(&target).unwrap().ino();
        (d, tmp, target, ino)
    }

    #[test]
    fn swap_and_its_fallback_leave_the_original_at_the_tmp_path() {
        for f in [swap, replace_checked] {
            let (_d, tmp, target, ino) = setup();
            f(&tmp, &target, ino).unwrap();
            assert_eq!(fs::read(&target).unwrap(), b"encrypted");
            assert_eq!(fs::read(&tmp).unwrap(), b"plain");
        }
    }

    #[test]
    fn swap_refuses_a_message_that_moved_or_was_replaced() {
        for f in [swap, replace_checked] {
            // Moved away (an IMAP server set a flag): nothing is recreated.
            let (_d, tmp, target, ino) = setup();
            fs::rename(&target, target.with_file_name("msg:2,S")).unwrap();
            let e = f(&tmp, &target, ino).unwrap_err().to_string();
            assert!(e.contains("moved"), "{e}");
            assert!(!target.exists());
            assert_eq!(fs::read(&tmp).unwrap(), b"encrypted");

            // Replaced by another file of the same name: left as it is.
            let (_d, tmp, target, ino) = setup();
            fs::write(target.with_file_name("other"), b"other").unwrap();
            fs::rename(target.with_file_name("other"), &target).unwrap();
            assert_ne!(fs::metadata(&target).unwrap().ino(), ino);
            let e = f(&tmp, &target, ino).unwrap_err().to_string();
            assert!(e.contains("replaced"), "{e}");
            assert_eq!(fs::read(&target).unwrap(), b"other");
            assert_eq!(fs::read(&tmp).unwrap(), b"encrypted");
        }
    }
}
