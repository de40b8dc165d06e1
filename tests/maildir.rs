//! `sealpost maildir encrypt`, run as the built binary on a Maildir made from the milter's
//! test corpus; the result is decrypted with gpg and compared with the originals.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use sealpost_test_support::{fixture, need_program, workspace_root};

const ACCOUNT: &str = "ed@example.org";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A SQLite keystore in which ed@example.org has the gpg fixture key.
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        let key = fixture("keys/gpg-ed25519.asc");
        ok(&env.sealpost(&["keys", "import", ACCOUNT, key.to_str().unwrap()]));
        env
    }

    fn url(&self) -> String {
        format!("sqlite://{}/ks.db", self.dir.path().display())
    }

    fn sealpost(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(args)
            .env("SEALPOST_DATABASE_URL", self.url())
            .env_remove("SEALPOST_CONFIG")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run sealpost");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "sealpost {args:?}: {stderr}");
        out
    }

    fn maildir_encrypt(&self, maildir: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "maildir",
            "encrypt",
            maildir.to_str().unwrap(),
            "--account",
            ACCOUNT,
        ];
        args.extend_from_slice(extra);
        self.sealpost(&args)
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let g = Gpg {
            home: tempfile::Builder::new().prefix("gpg").tempdir().unwrap(),
        };
        let key = fixture("keys/gpg-ed25519-secret.asc");
        let out = g.run(&["--import", key.to_str().unwrap()], b"");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        g
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--pinentry-mode", "loopback"])
            .args(["--passphrase", "fixture-pass"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run gpg");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn decrypt(&self, armored: &[u8]) -> Vec<u8> {
        let out = self.run(&["--decrypt"], armored);
        assert!(
            out.status.success(),
            "gpg --decrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

fn corpus(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = workspace_root().join("milter/tests/corpus").join(sub);
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_str().unwrap().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no corpus in {}", dir.display());
    v
}

fn make_maildir(path: &Path) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(path.join(sub)).unwrap();
    }
}

/// Every file under cur/ and new/ of the Maildir and its folders, by relative path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                m.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    m
}

/// The body of a message: everything after the first empty line ("" when there is none).
fn body(msg: &[u8]) -> Vec<u8> {
    let text = lf(msg);
    match text.windows(2).position(|w| w == b"\n\n") {
        Some(i) => text[i + 2..].to_vec(),
        None => Vec::new(),
    }
}

fn lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn armored_block(msg: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg);
    let start = text
        .find("-----BEGIN PGP MESSAGE-----")
        .expect("armored message");
    let end = text.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    text[start..end].as_bytes().to_vec()
}

/// The one file in `dir` whose name starts with `unique`.
fn find(dir: &Path, unique: &str) -> PathBuf {
    let hits: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{unique},"))
                || p.file_name().unwrap().to_str().unwrap() == unique
                || p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(&format!("{unique}:"))
        })
        .collect();
    assert_eq!(hits.len(), 1, "{unique} in {}: {hits:?}", dir.display());
    hits.into_iter().next().unwrap()
}

#[test]
fn maildir_encrypt_encrypts_in_place_skips_what_is_done_and_resumes() {
    let Some(_) = need_program("maildir_encrypt", "gpg") else {
        return;
    };
    let env = Env::new();
    let md = env.dir.path().join("Maildir");
    make_maildir(&md);
    make_maildir(&md.join(".Sent"));

    // The corpus, alternately in cur/ (with flags and Dovecot's size fields) and new/.
    struct Placed {
        unique: String,
        sub: &'static str,
        info: &'static str,
        original: Vec<u8>,
    }
    let mut placed = Vec::new();
    for (i, (_name, data)) in corpus("").into_iter().enumerate() {
        let unique = format!("1700000000.M{i}P42.test");
        let (sub, file, info) = if i % 2 == 0 {
            let info = if i % 4 == 0 { ":2,S" } else { ":2,FRS" };
            let file = format!("{unique},S={}{info}", data.len());
            ("cur", file, info)
        } else {
            ("new", unique.clone(), "")
        };
        std::fs::write(md.join(sub).join(&file), &data).unwrap();
        placed.push(Placed {
            unique,
            sub,
            info,
            original: data,
        });
    }
    let encryptable = placed.len();
    // Already encrypted mail: left alone.
    let skipped = corpus("skip");
    for (i, (_, data)) in skipped.iter().enumerate() {
        std::fs::write(
            md.join("cur").join(format!("1600000000.M{i}P7.test:2,S")),
            data,
        )
        .unwrap();
    }
    // A Maildir++ folder.
    let sent = md.join(".Sent/cur/1710000000.M1P9.test:2,S");
    let (_, sent_original) = corpus("").remove(0);
    std::fs::write(&sent, &sent_original).unwrap();

    // Owner-visible attributes of one message that must survive: mode and mtime.
    let kept = find(&md.join("cur"), &placed[0].unique);
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    std::fs::File::options()
        .write(true)
        .open(&kept)
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    // Leftovers: one of an interrupted run (removed) and another program's (kept).
    std::fs::write(md.join("tmp/1.M1P1Q0.sealpost-partial"), b"half").unwrap();
    std::fs::write(md.join("tmp/1.M1P1.other-mda"), b"not ours").unwrap();

    let before = snapshot(&md);

    // Dry run: the counts, and nothing changes.
    let out = ok(&env.maildir_encrypt(&md, &["--dry-run"]));
    assert_eq!(
        out,
        format!(
            "would encrypt {}, already encrypted {}, failed 0 (dry run: nothing changed)\n",
            encryptable + 1,
            skipped.len()
        )
    );
    assert_eq!(snapshot(&md), before, "--dry-run changed the Maildir");

    // The real run.
    let out = ok(&env.maildir_encrypt(&md, &[]));
    assert_eq!(
        out,
        format!(
            "encrypted {}, already encrypted {}, failed 0\n",
            encryptable + 1,
            skipped.len()
        )
    );

    let gpg = Gpg::new();
    for p in &placed {
        let path = find(&md.join(p.sub), &p.unique);
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let data = std::fs::read(&path).unwrap();
        // Same name and flags; the size field tells the new size.
        assert!(name.ends_with(p.info), "{name}");
        if p.sub == "cur" {
            assert_eq!(
                name,
                format!("{},S={}{}", p.unique, data.len(), p.info),
                "size field"
            );
        } else {
            assert_eq!(name, p.unique);
        }
        let head = String::from_utf8_lossy(&data[..data.len().min(4096)]).to_lowercase();
        assert!(head.contains("multipart/encrypted"), "{name} not PGP/MIME");
        assert!(head.contains("x-sealpost: encrypted"), "{name}");
        let plain = lf(&gpg.decrypt(&armored_block(&data)));
        assert!(
            contains(&plain, &body(&p.original)),
            "{name}: the decrypted payload lacks the original body"
        );
    }
    let sent_now = std::fs::read(&sent).unwrap();
    assert!(contains(
        &lf(&gpg.decrypt(&armored_block(&sent_now))),
        &body(&sent_original)
    ));
    for (i, (_, data)) in skipped.iter().enumerate() {
        let path = md.join("cur").join(format!("1600000000.M{i}P7.test:2,S"));
        assert_eq!(
            &std::fs::read(path).unwrap(),
            data,
            "already encrypted mail changed"
        );
    }
    let kept = find(&md.join("cur"), &placed[0].unique);
    let meta = std::fs::metadata(&kept).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta.modified().unwrap(), mtime);
    let tmp: Vec<_> = std::fs::read_dir(md.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(tmp, ["1.M1P1.other-mda"], "tmp/ after the run");

    // Rerun: everything is already encrypted and nothing changes.
    let after = snapshot(&md);
    let out = ok(&env.maildir_encrypt(&md, &[]));
    assert_eq!(
        out,
        format!(
            "encrypted 0, already encrypted {}, failed 0\n",
            encryptable + 1 + skipped.len()
        )
    );
    assert_eq!(snapshot(&md), after, "a rerun changed the Maildir");

    // A run interrupted after the swap but before the size field was updated: the next run
    // corrects the name and nothing else.
    let p0 = &placed[0];
    let done = find(&md.join("cur"), &p0.unique);
    let stale = md
        .join("cur")
        .join(format!("{},S={}{}", p0.unique, p0.original.len(), p0.info));
    std::fs::rename(&done, &stale).unwrap();
    let out = ok(&env.maildir_encrypt(&md, &[]));
    assert!(out.starts_with("encrypted 0, "), "{out}");
    assert!(!stale.exists());
    assert_eq!(snapshot(&md), after, "the size field was not corrected");

    // JSON for scripts.
    let out = ok(&env.maildir_encrypt(&md, &["--json", "--dry-run"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["encrypted"], 0);
    assert_eq!(v["already_encrypted"], encryptable + 1 + skipped.len());
    assert_eq!(v["failed"], 0);
}

#[test]
fn maildir_encrypt_reports_failures_leaves_those_messages_alone_and_exits_1() {
    let env = Env::new();
    let md = env.dir.path().join("Maildir");
    make_maildir(&md);
    let good = md.join("cur/1.M1P1.test:2,S");
    std::fs::write(&good, b"Subject: fine\n\nhello\n").unwrap();
    // A header section over the transform's 4 MiB limit cannot be encrypted.
    let mut huge = b"Subject: x\nX-Filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 5 << 20));
    huge.extend_from_slice(b"\n\nbody\n");
    let bad = md.join("new/2.M1P1.test");
    std::fs::write(&bad, &huge).unwrap();

    let out = env.maildir_encrypt(&md, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "encrypted 1, already encrypted 0, failed 1\n"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("sealpost: cannot encrypt new/2.M1P1.test: ") && err.contains("header"),
        "{err}"
    );
    assert!(!err.contains("aaaa"), "message content in the error: {err}");
    assert_eq!(
        std::fs::read(&bad).unwrap(),
        huge,
        "the failed message changed"
    );
    assert!(std::fs::read(&good)
        .unwrap()
        .starts_with(b"Subject: fine\n"));
    assert!(String::from_utf8_lossy(&std::fs::read(&good).unwrap()).contains("multipart/encrypted"));
    assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);

    // Dry run reports the same failure.
    let out = env.maildir_encrypt(&md, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "would encrypt 0, already encrypted 1, failed 1 (dry run: nothing changed)\n"
    );
}

#[test]
fn maildir_encrypt_refuses_bad_input_with_one_line() {
    let env = Env::new();
    let cases: [(&[&str], &str); 3] = [
        (
            &["maildir", "encrypt", "nowhere", "--account", ACCOUNT],
            "nowhere is not a directory",
        ),
        (
            &["maildir", "encrypt", ".", "--account", ACCOUNT],
            "is not a Maildir",
        ),
        (
            &[
                "maildir",
                "encrypt",
                "Maildir",
                "--account",
                "nobody@example.org",
            ],
            "nobody@example.org",
        ),
    ];
    make_maildir(&env.dir.path().join("Maildir"));
    for (args, expect) in cases {
        let out = env.sealpost(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    // Usage errors: no account.
    let out = env.sealpost(&["maildir", "encrypt", "Maildir"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The migration of a Maildir as Postfix delivered it (no milter yet): every message is
/// encrypted, keeps its owner, and decrypts to exactly the delivered body.
#[test]
fn maildir_encrypt_migrates_a_maildir_delivered_by_postfix() {
    use sealpost_test_support::postfix::Postfix;
    use std::os::unix::fs::MetadataExt;

    let Some(_) = need_program("maildir_delivered", "gpg") else {
        return;
    };
    let Some(pf) = Postfix::start_with("maildir_delivered", None, &["ed"], "", "") else {
        return;
    };
    let messages = corpus("");
    for (name, data) in &messages {
        let r = pf.send("bob@example.net", &[ACCOUNT], data);
        assert_eq!(r.accepted(), [ACCOUNT], "{name}: {r:?}");
    }
    let files = pf.wait_for("ed", messages.len(), Duration::from_secs(120));
    assert_eq!(files.len(), messages.len(), "{}", pf.log());
    let md = pf.maildir_base.join("ed");
    let delivered: Vec<(Vec<u8>, u32)> = files
        .iter()
        .map(|f| {
            (
                std::fs::read(f).unwrap(),
                std::fs::metadata(f).unwrap().uid(),
            )
        })
        .collect();

    let env = Env::new();
    let out = ok(&env.maildir_encrypt(&md, &[]));
    assert_eq!(
        out,
        format!(
            "encrypted {}, already encrypted 0, failed 0\n",
            messages.len()
        )
    );

    let gpg = Gpg::new();
    for (f, (original, uid)) in files.iter().zip(&delivered) {
        // Postfix's virtual delivery names files without size fields: same path.
        let data = std::fs::read(f).unwrap();
        assert_eq!(std::fs::metadata(f).unwrap().uid(), *uid, "owner changed");
        let plain = lf(&gpg.decrypt(&armored_block(&data)));
        assert_eq!(
            String::from_utf8_lossy(&body(&plain)),
            String::from_utf8_lossy(&body(original)),
            "{}",
            f.display()
        );
    }
    let out = ok(&env.maildir_encrypt(&md, &[]));
    assert_eq!(
        out,
        format!(
            "encrypted 0, already encrypted {}, failed 0\n",
            messages.len()
        )
    );
}

#[test]
fn maildir_decrypt_gives_the_owner_their_mail_back_with_their_own_key() {
    use openpgp::serialize::SerializeInto;
    use sequoia_openpgp as openpgp;
    let env = Env::new();
    // A passphrase-protected key, as a webmail exports it, for a second account.
    let (cert, _) = openpgp::cert::CertBuilder::general_purpose(Some("<own@example.org>"))
        .set_password(Some("owner pass phrase".into()))
        .generate()
        .unwrap();
    let public = env.dir.path().join("own.asc");
    std::fs::write(&public, cert.armored().to_vec().unwrap()).unwrap();
    let secret = env.dir.path().join("own-secret.asc");
    std::fs::write(&secret, cert.as_tsk().armored().to_vec().unwrap()).unwrap();
    ok(&env.sealpost(&[
        "keys",
        "import",
        "own@example.org",
        public.to_str().unwrap(),
    ]));

    let md = env.dir.path().join("Maildir");
    make_maildir(&md);
    let originals = corpus("");
    for (i, (_, data)) in originals.iter().enumerate() {
        std::fs::write(
            md.join("cur").join(format!("17000000{i:02}.M1P1.test:2,S")),
            data,
        )
        .unwrap();
    }
    // Mail to another key and a stray file are copied unchanged.
    let mut other = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args([
            "encrypt",
            "--to",
            fixture("keys/gpg-ed25519.asc").to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        other
            .stdin
            .take()
            .unwrap()
            .write_all(&originals[0].1)
            .unwrap();
    }
    let other = other.wait_with_output().unwrap().stdout;
    std::fs::write(md.join("new").join("1800000000.M1P1.other"), &other).unwrap();
    std::fs::write(md.join("dovecot-uidlist"), b"3 V1 N1\n").unwrap();
    let out = env.sealpost(&[
        "maildir",
        "encrypt",
        md.to_str().unwrap(),
        "--account",
        "own@example.org",
    ]);
    ok(&out);
    let encrypted = snapshot(&md);

    let pass = env.dir.path().join("pass");
    std::fs::write(&pass, "owner pass phrase\n").unwrap();
    let wrong = env.dir.path().join("wrong");
    std::fs::write(&wrong, "not it\n").unwrap();
    let clear = env.dir.path().join("clear");
    let args = |p: &Path| {
        vec![
            "maildir".to_string(),
            "decrypt".into(),
            md.display().to_string(),
            "--key".into(),
            secret.display().to_string(),
            "--passphrase-file".into(),
            p.display().to_string(),
            "--out".into(),
            clear.display().to_string(),
        ]
    };
    let run = |a: Vec<String>| env.sealpost(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let bad = run(args(&wrong));
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(!err.contains("not it") && !clear.exists());

    let report = ok(&run(args(&pass)));
    assert!(
        report.starts_with(&format!(
            "{} decrypted, 1 copied unchanged, 1 for another key, 0 failed",
            originals.len()
        )),
        "{report}"
    );
    assert_eq!(snapshot(&md), encrypted, "the source Maildir was changed");
    for (i, (name, data)) in originals.iter().enumerate() {
        let got = std::fs::read(
            clear
                .join("cur")
                .join(format!("17000000{i:02}.M1P1.test:2,S")),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!contains(&got, b"-----BEGIN PGP MESSAGE-----") || contains(data, b"BEGIN PGP"));
        assert_eq!(lf(&body(&got)), lf(&body(data)), "{name}: body");
    }
    assert_eq!(
        std::fs::read(clear.join("new").join("1800000000.M1P1.other")).unwrap(),
        other
    );

    // A public key is refused, and an existing output is never overwritten.
    let again = env.sealpost(&[
        "maildir",
        "decrypt",
        md.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
        "--out",
        env.dir.path().join("c2").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("holds only a public key"));
    let again = run(args(&pass));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists and is not empty"));
}
