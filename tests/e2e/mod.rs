//! What the Postfix end-to-end tests and the milter benchmark share: a keystore with
//! keys for a few example.org mailboxes, its config file, and a running `sealpost milter`.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sealpost_test_support::fixture;
use sealpost_test_support::postfix::{free_port, Postfix};

pub const ED: &str = "ed@example.org";
pub const SQ: &str = "sq@example.org";
pub const RSA: &str = "rsa@example.org";
pub const PLAIN: &str = "plain@example.org";
pub const SENDER: &str = "sender@example.net";
pub const MAILBOXES: &[&str] = &["ed", "sq", "rsa", "plain"];
pub const WAIT: Duration = Duration::from_secs(60);

/// A keystore with keys for ed@, sq@ and rsa@ (plain@ has none) and a milter config.
pub struct Keystore {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub milter_port: u16,
    /// The milter listens on this unix socket instead of the TCP port.
    pub unix_socket: Option<PathBuf>,
    /// The metrics endpoint's port, when enabled.
    pub metrics_port: Option<u16>,
}

impl Keystore {
    /// TCP milter, no metrics endpoint; `extra` goes into `[milter]`.
    pub fn new(url: Option<String>, extra: &str) -> Keystore {
        Keystore::with(url, extra, false, false)
    }

    pub fn with(url: Option<String>, extra: &str, unix: bool, metrics: bool) -> Keystore {
        let dir = tempfile::tempdir().unwrap();
        // Postfix's processes run as the postfix user and must reach a socket in here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let url = url.unwrap_or_else(|| format!("sqlite://{}/ks.db", dir.path().display()));
        let milter_port = free_port();
        let unix_socket = unix.then(|| dir.path().join("milter.sock"));
        let listen = match &unix_socket {
            Some(p) => format!("unix:{}\"\nsocket_mode = \"0666", p.display()),
            None => format!("127.0.0.1:{milter_port}"),
        };
        let metrics_port = metrics.then(free_port);
        let metrics_listen = metrics_port
            .map(|p| format!("127.0.0.1:{p}"))
            .unwrap_or_default();
        // Tests want key changes to apply fast; a caller may set its own TTL in `extra`.
        let ttl = if extra.contains("cache_ttl_secs") {
            ""
        } else {
            "cache_ttl_secs = 1\n"
        };
        let config = dir.path().join("sealpost.toml");
        std::fs::write(
            &config,
            format!(
                "[database]\nurl = \"{url}\"\n\n[milter]\nlisten = \"{listen}\"\n\
                 {ttl}shutdown_grace_secs = 5\n{extra}\n\n\
                 [metrics]\nlisten = \"{metrics_listen}\"\n"
            ),
        )
        .unwrap();
        let ks = Keystore {
            dir,
            config,
            milter_port,
            unix_socket,
            metrics_port,
        };
        for (addr, key) in [
            (ED, "gpg-ed25519.asc"),
            (SQ, "sq-cv25519.asc"),
            (RSA, "gpg-rsa3072.asc"),
        ] {
            let key = fixture(&format!("keys/{key}"));
            let out = ks.sealpost(&["keys", "import", addr, key.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "import: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ks
    }

    /// `sealpost ARGS` with this keystore's configuration, ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealpost"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("SEALPOST_DATABASE_URL");
        cmd
    }

    pub fn sealpost(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run sealpost")
    }

    pub fn milter_spec(&self) -> String {
        if let Some(p) = &self.unix_socket {
            return format!("unix:{}", p.display());
        }
        format!("inet:127.0.0.1:{}", self.milter_port)
    }

    pub fn fingerprint(&self, addr: &str) -> String {
        let out = self.sealpost(&["keys", "list", addr, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["fingerprint"].as_str().unwrap().to_string()
    }
}

/// A running `sealpost milter` process.
pub struct Milter {
    pub child: Child,
    log: PathBuf,
}

impl Milter {
    pub fn start(ks: &Keystore) -> Milter {
        let log = ks
            .dir
            .path()
            .join(format!("milter-{}.log", common_suffix()));
        let child = Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .arg("--config")
            .arg(&ks.config)
            .arg("milter")
            .current_dir(ks.dir.path())
            .env_remove("SEALPOST_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the milter");
        let mut m = Milter { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening = || match &ks.unix_socket {
            Some(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            None => TcpStream::connect(("127.0.0.1", ks.milter_port)).is_ok(),
        };
        while !listening() {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("milter exited with {status}: {}", m.log());
            }
            assert!(Instant::now() < deadline, "milter did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "milter exit {status}: {}", self.log());
                break;
            }
            assert!(Instant::now() < deadline, "milter ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log()
    }
}

impl Drop for Milter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn common_suffix() -> String {
    sealpost_test_support::random_hex(4)
}

/// A MIME message with a base64 attachment of about `mb` MiB of pseudo-random bytes in
/// 76-column lines, CRLF line endings.
pub fn big_message(mb: usize) -> Vec<u8> {
    let mut raw = b"From: Big <big@example.net>\r\nTo: <ed@example.org>\r\nSubject: big\r\n\
Date: Tue, 25 Nov 2025 10:00:00 +0000\r\nMessage-ID: <big@example.net>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nsee attachment (sealpost-body-marker)\r\n--b\r\n\
Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"big.bin\"\r\n\r\n"
        .to_vec();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while raw.len() < mb * 1024 * 1024 {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            raw.push(alphabet[(x % 64) as usize]);
        }
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"--b--\r\n");
    raw
}

/// Cuts the test database at `db_url` off (no new connections, existing ones terminated) or
/// lets clients in again, through the admin connection of `SEALPOST_TEST_PG_URL`.
pub fn set_database_reachable(db_url: &str, reachable: bool) {
    let admin = std::env::var("SEALPOST_TEST_PG_URL").expect("SEALPOST_TEST_PG_URL");
    let db = db_url.rsplit('/').next().expect("database name in the URL");
    let mut statements = vec![format!(
        "ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS {reachable}"
    )];
    if !reachable {
        statements.push(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
        ));
    }
    for sql in statements {
        sealpost_test_support::run_ok(Command::new("psql").arg(&admin).args([
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            &sql,
        ]));
    }
}

/// A second Postfix, without a milter, that relays example.org to the one at
/// `inbound_port`: a real sending MTA, which queues and retries deferred recipients.
pub fn start_relay(test: &str, inbound_port: u16) -> Option<Postfix> {
    let relay_main = format!(
        "myhostname = relay.example.net\nvirtual_mailbox_domains =\nrelay_domains = example.org\n\
         transport_maps = inline:{{example.org=smtp:[127.0.0.1]:{inbound_port}}}\n\
         smtp_tls_security_level = none\n"
    );
    Postfix::start_with(test, None, &[], &relay_main, "")
}
