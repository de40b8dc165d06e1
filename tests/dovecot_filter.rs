//! `sealpost encrypt --account` as a Dovecot sieve_extprograms filter under imapsieve: a
//! private Dovecot (passwd-file users) runs deploy/dovecot/90-sealpost-imapsieve.conf,
//! deploy/dovecot/sealpost-encrypt.sieve and the deploy/dovecot/sealpost-encrypt filter
//! program (paths pointed at the test's directory and the built binary). Messages APPENDed
//! over IMAP to Sent and Drafts are stored as PGP/MIME that gpg decrypts to the original;
//! other mailboxes, and users without a key, keep what was appended.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sealpost_test_support::postfix::free_port;
use sealpost_test_support::{fixture, need_program, run_with_input, workspace_root};

const TEST: &str = "dovecot_imapsieve_filter";
const ED: &str = "ed@example.org";
/// A user with no sealpost account (and so no key).
const BOB: &str = "bob@example.org";
const PASSWORD: &str = "imap-test-pass";

const MESSAGE: &str = "From: Ed User <ed@example.org>\n\
To: Bob <bob@example.net>\n\
Subject: the plan\n\
Date: Wed, 25 Nov 2026 10:00:00 +0000\n\
Message-ID: <dovecot-filter-test@example.org>\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: 8bit\n\
\n\
The secret plan: meet at the old mill at nine.\n\
Bring the map, and burn this note.\n";

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Dovecot's master binary: on PATH, or in /usr/sbin (not on every user's PATH).
fn dovecot() -> Option<PathBuf> {
    let sbin = PathBuf::from("/usr/sbin/dovecot");
    if sbin.is_file() {
        return Some(sbin);
    }
    need_program(TEST, "dovecot")
}

/// The Pigeonhole plugins the configuration loads (package dovecot-sieve).
fn have_pigeonhole() -> Option<()> {
    let modules = ["/usr/lib/dovecot/modules", "/usr/lib64/dovecot/modules"];
    let found = modules.iter().any(|m| {
        Path::new(m).join("lib95_imap_sieve_plugin.so").is_file()
            && Path::new(m)
                .join("sieve/lib90_sieve_extprograms_plugin.so")
                .is_file()
    });
    if found {
        Some(())
    } else {
        sealpost_test_support::missing(
            TEST,
            "Dovecot's imap_sieve and sieve_extprograms plugins (package dovecot-sieve) are not installed",
        )
    }
}

struct Dovecot {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Dovecot {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    fn maildir(&self, user: &str, mailbox: &str) -> PathBuf {
        let base = self.dir.path().join("home").join(user).join("Maildir");
        if mailbox == "INBOX" {
            base
        } else {
            base.join(format!(".{mailbox}"))
        }
    }

    /// The messages stored in a mailbox (new/ and cur/).
    fn messages(&self, user: &str, mailbox: &str) -> Vec<(String, Vec<u8>)> {
        let md = self.maildir(user, mailbox);
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(md.join(sub)) else {
                continue;
            };
            for e in entries {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
        out
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn id_of(args: &[&str]) -> u32 {
    ok("id", Command::new("id").args(args).output().unwrap())
        .trim()
        .parse()
        .unwrap()
}

/// (uid, gid) mail is handled as: nobody/nogroup as root (Dovecot refuses to run mail as
/// root), else the caller.
fn mail_ids() -> (u32, u32) {
    if is_root() {
        (id_of(&["-u", "nobody"]), id_of(&["-g", "nobody"]))
    } else {
        unsafe { (libc::geteuid(), libc::getegid()) }
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

/// A file from deploy/dovecot with its installation paths replaced by the test's.
fn deployed(name: &str, replacements: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(workspace_root().join("deploy/dovecot").join(name))
        .unwrap_or_else(|e| panic!("deploy/dovecot/{name}: {e}"));
    for (from, to) in replacements {
        assert!(text.contains(from), "deploy/dovecot/{name} lacks {from}");
        text = text.replace(from, to);
    }
    text
}

fn start(program: &Path) -> Dovecot {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    for sub in ["run", "state", "home", "sieve", "filter-bin", "keystore"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let (uid, gid) = mail_ids();

    // The keystore: ed@example.org with the gpg fixture key. The filter runs as the mail
    // user, which needs the keystore (SQLite locks through files next to the database).
    let config = d.join("sealpost.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}/keystore/keystore.db\"\n\n[log]\nlevel = \"warn\"\n",
            d.display()
        ),
    )
    .unwrap();
    let key = fixture("keys/gpg-ed25519.asc");
    ok(
        "sealpost keys import",
        Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .arg("--config")
            .arg(&config)
            .args(["keys", "import", ED, key.to_str().unwrap()])
            .env_remove("SEALPOST_CONFIG")
            .env_remove("SEALPOST_DATABASE_URL")
            .output()
            .unwrap(),
    );
    chown_tree(&d.join("keystore"), uid, gid);

    // The filter program and the sieve script, as deployed.
    let wrapper = d.join("filter-bin/sealpost-encrypt");
    std::fs::write(
        &wrapper,
        deployed(
            "sealpost-encrypt",
            &[
                (
                    "/usr/bin/sealpost",
                    env!("CARGO_BIN_EXE_sealpost").to_string(),
                ),
                (
                    "/etc/sealpost/dovecot-filter.toml",
                    config.display().to_string(),
                ),
            ],
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(
        workspace_root().join("deploy/dovecot/sealpost-encrypt.sieve"),
        d.join("sieve/sealpost-encrypt.sieve"),
    )
    .unwrap();
    // Pigeonhole stores the compiled script next to it.
    chown_tree(&d.join("sieve"), uid, gid);

    let passwd: String = [ED, BOB]
        .iter()
        .map(|u| format!("{u}:{{PLAIN}}{PASSWORD}\n"))
        .collect();
    std::fs::write(d.join("passwd"), passwd).unwrap();
    for u in [ED, BOB] {
        std::fs::create_dir_all(d.join("home").join(u)).unwrap();
    }
    chown_tree(&d.join("home"), uid, gid);

    let port = free_port();
    let users = if is_root() {
        format!(
            "userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={}/home/%u\n}}\n",
            d.display()
        )
    } else {
        let me = std::env::var("USER").unwrap_or_default();
        format!(
            "default_internal_user = {me}\ndefault_login_user = {me}\n\
             userdb {{\n  driver = static\n  args = home={}/home/%u\n}}\n",
            d.display()
        )
    };
    let snippet = deployed(
        "90-sealpost-imapsieve.conf",
        &[
            (
                "/usr/lib/dovecot/sieve-filter",
                d.join("filter-bin").display().to_string(),
            ),
            (
                "/etc/dovecot/sieve/sealpost-encrypt.sieve",
                d.join("sieve/sealpost-encrypt.sieve").display().to_string(),
            ),
        ],
    );
    let conf = format!(
        "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
         protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n\
         auth_mechanisms = plain login\nmail_location = maildir:~/Maildir\n\
         first_valid_uid = 1\n\
         passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/passwd\n}}\n\
         {users}\
         service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
         service anvil {{\n  chroot =\n}}\n\n{snippet}",
        d = d.display(),
    );
    let conf_path = d.join("dovecot.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(program)
        .arg("-F")
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .spawn()
        .expect("start dovecot");
    let dovecot = Dovecot { child, port, dir };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return dovecot;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("Dovecot did not start listening: {}", dovecot.log());
}

/// Logs in as `user`, creates `mailbox`, APPENDs `message` (python3's imaplib) and returns
/// the flags of the mailbox's messages, in order, after the APPEND; with `expunge`, then
/// expunges the messages flagged \Deleted, as a client does.
fn append(
    dovecot: &Dovecot,
    python: &Path,
    user: &str,
    mailbox: &str,
    message: &str,
    expunge: bool,
) -> Vec<String> {
    const SCRIPT: &str = r#"
import imaplib, re, sys
port, user, password, mailbox, expunge = sys.argv[1:6]
message = sys.stdin.buffer.read()
imap = imaplib.IMAP4("127.0.0.1", int(port))
imap.login(user, password)
if mailbox != "INBOX":
    typ, data = imap.create(mailbox)
    if typ != "OK":
        sys.exit("CREATE %s: %s %r" % (mailbox, typ, data))
typ, data = imap.append(mailbox, None, None, message)
if typ != "OK":
    sys.exit("APPEND %s: %s %r" % (mailbox, typ, data))
typ, data = imap.select(mailbox)
if typ != "OK":
    sys.exit("SELECT %s: %s %r" % (mailbox, typ, data))
typ, data = imap.fetch("1:*", "(FLAGS)")
if typ != "OK":
    sys.exit("FETCH: %s %r" % (typ, data))
for line in data:
    print(re.search(rb"FLAGS \(([^)]*)\)", line).group(1).decode())
if expunge == "yes":
    typ, data = imap.expunge()
    if typ != "OK":
        sys.exit("EXPUNGE: %s %r" % (typ, data))
imap.logout()
"#;
    let out = run_with_input(
        Command::new(python).args([
            "-c",
            SCRIPT,
            &dovecot.port.to_string(),
            user,
            PASSWORD,
            mailbox,
            if expunge { "yes" } else { "no" },
        ]),
        message.as_bytes(),
    );
    assert!(
        out.status.success(),
        "IMAP APPEND to {mailbox} as {user}: {}\nDovecot log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        dovecot.log()
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

struct Gpg {
    home: tempfile::TempDir,
    program: PathBuf,
}

impl Gpg {
    fn new(program: PathBuf) -> Gpg {
        let g = Gpg {
            home: tempfile::Builder::new().prefix("gpg").tempdir().unwrap(),
            program,
        };
        let key = fixture("keys/gpg-ed25519-secret.asc");
        ok(
            "gpg --import",
            g.run(&["--import", key.to_str().unwrap()], b""),
        );
        g
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_input(
            Command::new(&self.program)
                .env("GNUPGHOME", self.home.path())
                .args(["--batch", "--pinentry-mode", "loopback"])
                .args(["--passphrase", "fixture-pass"])
                .args(args),
            stdin,
        )
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

fn lf(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", "\n")
}

fn armored_block(msg: &str) -> &str {
    let start = msg
        .find("-----BEGIN PGP MESSAGE-----")
        .unwrap_or_else(|| panic!("no armored message in:\n{msg}"));
    let end = msg.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    &msg[start..end]
}

#[test]
fn dovecot_imapsieve_filter_encrypts_appended_sent_and_drafts() {
    let Some(program) = dovecot() else {
        return;
    };
    let Some(()) = have_pigeonhole() else {
        return;
    };
    let Some(python) = need_program(TEST, "python3") else {
        return;
    };
    let Some(gpg) = need_program(TEST, "gpg") else {
        return;
    };
    let Some(doveadm) = need_program(TEST, "doveadm") else {
        return;
    };
    let dovecot = start(&program);
    let gpg = Gpg::new(gpg);
    let (_, original_body) = MESSAGE.split_once("\n\n").unwrap();

    for mailbox in ["Sent", "Drafts"] {
        // Pigeonhole stores the filtered message as a new one and flags the appended
        // original \Deleted; it is gone once expunged (the client, or `doveadm expunge`).
        let flags = append(&dovecot, &python, ED, mailbox, MESSAGE, mailbox == "Sent");
        assert_eq!(flags.len(), 2, "{mailbox}: {flags:?}\n{}", dovecot.log());
        assert!(flags[0].contains("\\Deleted"), "{mailbox}: {flags:?}");
        assert!(!flags[1].contains("\\Deleted"), "{mailbox}: {flags:?}");
        if mailbox == "Drafts" {
            ok(
                "doveadm expunge",
                Command::new(&doveadm)
                    .arg("-c")
                    .arg(dovecot.dir.path().join("dovecot.conf"))
                    .args(["expunge", "-u", ED, "mailbox", mailbox, "deleted"])
                    .output()
                    .expect("run doveadm"),
            );
        }
        let stored = dovecot.messages(ED, mailbox);
        assert_eq!(stored.len(), 1, "{mailbox}: {}", dovecot.log());
        let stored = lf(&stored[0].1);
        let (head, _) = stored.split_once("\n\n").unwrap();
        assert!(
            head.contains("Content-Type: multipart/encrypted")
                && head.contains("protocol=\"application/pgp-encrypted\""),
            "{mailbox}: not PGP/MIME:\n{stored}\nDovecot log:\n{}",
            dovecot.log()
        );
        assert!(head.contains("X-Sealpost: encrypted"), "{head}");
        assert!(head.contains("Subject: the plan"), "{head}");
        assert!(head.contains("Message-ID: <dovecot-filter-test@example.org>"));
        assert!(
            !stored.contains("old mill"),
            "plaintext stored in {mailbox}"
        );

        let plain = lf(&gpg.decrypt(armored_block(&stored).as_bytes()));
        let (inner_head, inner_body) = plain.split_once("\n\n").expect("inner MIME entity");
        assert!(
            inner_head.contains("Content-Type: text/plain; charset=utf-8"),
            "{inner_head}"
        );
        assert_eq!(inner_body, original_body, "{mailbox}: decrypted body");
    }

    // A mailbox the snippet does not name keeps the message as appended.
    let flags = append(&dovecot, &python, ED, "Archive", MESSAGE, false);
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert!(!flags[0].contains("\\Deleted"), "{flags:?}");
    let archived = dovecot.messages(ED, "Archive");
    assert_eq!(archived.len(), 1);
    assert_eq!(lf(&archived[0].1), MESSAGE);

    // A user without a key: the filter fails (no account to encrypt to), Dovecot logs it and
    // stores the message as appended.
    let flags = append(&dovecot, &python, BOB, "Sent", MESSAGE, false);
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert!(!flags[0].contains("\\Deleted"), "{flags:?}");
    let sent = dovecot.messages(BOB, "Sent");
    assert_eq!(sent.len(), 1, "{}", dovecot.log());
    assert_eq!(lf(&sent[0].1), MESSAGE);
    let log = dovecot.log();
    assert!(
        log.contains("no account has the address bob@example.org"),
        "the filter's error is not in Dovecot's log:\n{log}"
    );
}
