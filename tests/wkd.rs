//! The Web Key Directory of the JMAP service (`[jmap.wkd] enabled = true`), run as the built
//! `sealpost jmap`: the URLs GnuPG computes (`gpg-wks-client --print-wkd-url` and
//! `--print-wkd-hash`) are fetched from the running service; what it returns imports into gpg
//! with the stored key's fingerprint; accounts that did not opt in through
//! `KeySettings/set { publishWkd: true }` get 404, and so does an `l` parameter that does not
//! match the hash.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sealpost_test_support::postfix::free_port;
use sealpost_test_support::{fixture, missing, need_program, run_with_input, which};

const TEST: &str = "wkd";
const ED: &str = "ed@example.org";
const ED_FPR: &str = "398E0E77683B9AAE443007B328A9E6E6726A5445";
const RSA: &str = "rsa@example.org";
const MULTI: &str = "multi@example.org";
const PASSWORD: &str = "wkd test password";

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// gpg-wks-client lives in /usr/lib/gnupg on Debian, not on PATH.
fn wks_client() -> Option<PathBuf> {
    which("gpg-wks-client")
        .or_else(|| {
            [
                "/usr/lib/gnupg/gpg-wks-client",
                "/usr/libexec/gpg-wks-client",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
        })
        .or_else(|| missing(TEST, "gpg-wks-client (package gnupg) is not installed"))
}

struct Service {
    child: Child,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Env {
    fn sealpost(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealpost"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("SEALPOST_CONFIG")
            .env_remove("SEALPOST_DATABASE_URL")
            .current_dir(self.dir.path());
        cmd
    }

    fn start(&self, port: u16) -> Service {
        let child = self
            .sealpost(&["jmap"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sealpost jmap");
        let mut service = Service { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = service.child.try_wait() {
                let mut err = String::new();
                service
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .ok();
                panic!("sealpost jmap exited with {status}: {err}");
            }
            assert!(Instant::now() < deadline, "sealpost jmap is not listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        service
    }
}

struct Response {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

fn http(port: u16, method: &str, path: &str, host: &str, extra: &str, body: &[u8]) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the service");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of the response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    Response {
        status,
        headers: head,
        body: raw[split + 4..].to_vec(),
    }
}

fn get(port: u16, path: &str, host: &str) -> Response {
    http(port, "GET", path, host, "", b"")
}

/// Standard base64 (for an HTTP Basic header).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `KeySettings/set` through the JMAP API, as a webmail client opts in.
fn set_publish_wkd(port: u16, user: &str, on: bool) {
    let auth = base64(format!("{user}:{PASSWORD}").as_bytes());
    let extra = format!("Authorization: Basic {auth}\r\nContent-Type: application/json\r\n");
    let session = http(port, "GET", "/.well-known/jmap", "127.0.0.1", &extra, b"");
    assert_eq!(
        session.status,
        200,
        "{}",
        String::from_utf8_lossy(&session.body)
    );
    let session: serde_json::Value = serde_json::from_slice(&session.body).unwrap();
    let account = session["primaryAccounts"]["org:sealpost:params:jmap:keys"]
        .as_str()
        .expect("primary account")
        .to_string();
    let request = serde_json::json!({
        "using": ["urn:ietf:params:jmap:core", "org:sealpost:params:jmap:keys"],
        "methodCalls": [
            ["KeySettings/set", {"accountId": account, "update": {"singleton": {"publishWkd": on}}}, "s"],
            ["KeySettings/get", {"accountId": account}, "g"]
        ]
    });
    let r = http(
        port,
        "POST",
        "/jmap",
        "127.0.0.1",
        &extra,
        request.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let responses = &v["methodResponses"];
    assert!(
        responses[0][1]["updated"]
            .as_object()
            .is_some_and(|u| u.contains_key("singleton")),
        "{v}"
    );
    assert_eq!(responses[1][1]["list"][0]["publishWkd"], on, "{v}");
}

/// Imports `data` into a fresh GNUPGHOME and returns the fingerprints and user IDs gpg sees.
fn gpg_import(gpg: &Path, data: &[u8]) -> (Vec<String>, Vec<String>) {
    let home = tempfile::tempdir().unwrap();
    ok(
        "gpg --import",
        run_with_input(
            Command::new(gpg)
                .args(["--batch", "--no-tty", "--import"])
                .env("GNUPGHOME", home.path()),
            data,
        ),
    );
    let listing = ok(
        "gpg --list-keys",
        Command::new(gpg)
            .args(["--batch", "--with-colons", "--list-keys"])
            .env("GNUPGHOME", home.path())
            .output()
            .unwrap(),
    );
    let mut fprs = Vec::new();
    let mut uids = Vec::new();
    let mut after_pub = false;
    for line in listing.lines() {
        let f: Vec<&str> = line.split(':').collect();
        match f[0] {
            "pub" => after_pub = true,
            "sub" => after_pub = false,
            "fpr" if after_pub => {
                fprs.push(f[9].to_string());
                after_pub = false;
            }
            "uid" => uids.push(f[9].to_string()),
            _ => {}
        }
    }
    (fprs, uids)
}

#[test]
fn wkd_serves_opted_in_keys_to_gnupg() {
    let Some(gpg) = need_program(TEST, "gpg") else {
        return;
    };
    let Some(wks) = wks_client() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("sealpost.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}/keystore.db\"\n\n[jmap]\nlisten = \"127.0.0.1:{port}\"\n\
             cache_ms = 0\n\n[jmap.wkd]\nenabled = true\n\n[metrics]\nlisten = \"\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let env = Env { dir, config };
    // A key with a second user ID naming an address elsewhere, which WKD must not reveal.
    let multi_key = env.dir.path().join("multi.asc");
    {
        use sequoia_openpgp::serialize::SerializeInto;
        let (cert, _) = sequoia_openpgp::cert::CertBuilder::general_purpose(Some(
            "Multi User <multi@example.org>",
        ))
        .add_userid("Private Name <private@elsewhere.example>")
        .generate()
        .unwrap();
        std::fs::write(&multi_key, cert.armored().to_vec().unwrap()).unwrap();
    }
    for (addr, key) in [
        (ED, fixture("keys/gpg-ed25519.asc")),
        (RSA, fixture("keys/gpg-rsa3072.asc")),
        (MULTI, multi_key.clone()),
    ] {
        ok(
            "keys import",
            env.sealpost(&["keys", "import", addr, key.to_str().unwrap()])
                .output()
                .unwrap(),
        );
        ok(
            "accounts passwd",
            run_with_input(
                &mut env.sealpost(&["accounts", "passwd", addr]),
                format!("{PASSWORD}\n").as_bytes(),
            ),
        );
    }
    let service = env.start(port);

    // The URL and hash GnuPG computes for the address.
    let url = ok(
        "gpg-wks-client --print-wkd-url",
        Command::new(&wks)
            .args(["--print-wkd-url", ED])
            .output()
            .unwrap(),
    );
    let url = url.trim();
    let (host, path) = url
        .strip_prefix("https://")
        .and_then(|u| u.split_once('/'))
        .unwrap_or_else(|| panic!("unexpected WKD URL {url}"));
    assert_eq!(host, "openpgpkey.example.org");
    let path = format!("/{path}");
    let hash_line = ok(
        "gpg-wks-client --print-wkd-hash",
        run_with_input(
            Command::new(&wks).arg("--print-wkd-hash"),
            format!("{ED}\n").as_bytes(),
        ),
    );
    let hash = hash_line.split_whitespace().next().unwrap().to_string();
    assert_eq!(hash.len(), 32, "{hash_line}");
    assert!(path.contains(&format!("/hu/{hash}?l=ed")), "{path}");
    let direct = format!("/.well-known/openpgpkey/hu/{hash}?l=ed");

    // The policy file announces the directory.
    for (p, h) in [
        ("/.well-known/openpgpkey/policy", "example.org"),
        ("/.well-known/openpgpkey/example.org/policy", host),
    ] {
        let r = get(service.port, p, h);
        assert_eq!(r.status, 200, "{p}");
        assert!(r.body.is_empty(), "{p}");
    }

    // Not opted in yet: nothing is published.
    assert_eq!(get(service.port, &path, host).status, 404);
    assert_eq!(get(service.port, &direct, "example.org").status, 404);

    set_publish_wkd(service.port, ED, true);

    // Advanced method (the URL gpg prints) and direct method (Host names the mail domain,
    // with a port as a proxy may pass it).
    for (p, h) in [
        (path.as_str(), host),
        (direct.as_str(), "example.org"),
        (direct.as_str(), "Example.ORG:443"),
    ] {
        let r = get(service.port, p, h);
        assert_eq!(
            r.status,
            200,
            "{p} (Host {h}): {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("content-type: application/octet-stream"),
            "{}",
            r.headers
        );
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("access-control-allow-origin: *"),
            "{}",
            r.headers
        );
        // Binary, not armored: an OpenPGP packet header (bit 7 set), not "-----BEGIN".
        assert!(
            r.body[0] & 0x80 != 0,
            "not a binary key: {:?}",
            &r.body[..16]
        );
        let (fprs, uids) = gpg_import(&gpg, &r.body);
        assert_eq!(fprs, vec![ED_FPR.to_string()]);
        assert_eq!(uids, vec!["Ed User <ed@example.org>".to_string()]);
    }

    // Without `l` the hash alone finds the address.
    let no_l = format!("/.well-known/openpgpkey/hu/{hash}");
    assert_eq!(get(service.port, &no_l, "example.org").status, 200);

    // `l` that does not hash to the path's hash: 404, even though the hash is published.
    let r = get(
        service.port,
        &format!("/.well-known/openpgpkey/hu/{hash}?l=rsa"),
        "example.org",
    );
    assert_eq!(r.status, 404);
    // The right address under another domain: 404.
    assert_eq!(get(service.port, &direct, "example.net").status, 404);
    // A malformed hash: 404.
    assert_eq!(
        get(
            service.port,
            "/.well-known/openpgpkey/hu/not-a-hash?l=ed",
            "example.org"
        )
        .status,
        404
    );

    // An account that did not opt in stays unpublished, by its own correct URL.
    let rsa_url = ok(
        "gpg-wks-client --print-wkd-url",
        Command::new(&wks)
            .args(["--print-wkd-url", RSA])
            .output()
            .unwrap(),
    );
    let rsa_path = format!("/{}", rsa_url.trim().split_once(".org/").unwrap().1);
    assert_eq!(get(service.port, &rsa_path, host).status, 404);

    // Only the user ID naming the requested address is published.
    set_publish_wkd(service.port, MULTI, true);
    let multi_url = ok(
        "gpg-wks-client --print-wkd-url",
        Command::new(&wks)
            .args(["--print-wkd-url", MULTI])
            .output()
            .unwrap(),
    );
    let multi_path = format!("/{}", multi_url.trim().split_once(".org/").unwrap().1);
    let r = get(service.port, &multi_path, host);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (fprs, uids) = gpg_import(&gpg, &r.body);
    assert_eq!(fprs.len(), 1);
    assert_eq!(uids, vec!["Multi User <multi@example.org>".to_string()]);

    // Opting out again withdraws the key.
    set_publish_wkd(service.port, ED, false);
    assert_eq!(get(service.port, &direct, "example.org").status, 404);
}

#[test]
fn wkd_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("sealpost.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}/keystore.db\"\n\n[jmap]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [metrics]\nlisten = \"\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let env = Env { dir, config };
    let service = env.start(port);
    let r = get(
        service.port,
        "/.well-known/openpgpkey/policy",
        "example.org",
    );
    assert_eq!(r.status, 404);
}
