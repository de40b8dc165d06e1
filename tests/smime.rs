//! S/MIME mailboxes end to end: certificates made with `openssl req -x509`, imported with
//! `sealpost keys import`; a private Postfix delivers through the milter; the delivered
//! messages are decrypted with `openssl cms -decrypt` and `gpgsm --decrypt` and compared
//! with what was sent. Also mixed OpenPGP/S/MIME/plain recipients, the authEnveloped-data
//! and OAEP settings, local submission, and the officer recovering a PKCS#12 uploaded
//! through JMAP to decrypt a Maildir. Needs root, Postfix, openssl, gpgsm, sq and python3.

#[path = "../milter/tests/common/mod.rs"]
mod common;
mod e2e;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{Keystore, Milter, ED, PLAIN, SENDER, WAIT};
use sealpost_test_support::http::{basic_auth, request};
use sealpost_test_support::postfix::{free_port, Postfix};
use sealpost_test_support::smime::{make_cert as make_test_cert, KeyType, TestCert as Cert};
use sealpost_test_support::{
    need_program, register_private_key, register_secret, run_ok as run, run_with_input,
};

const SMIME: &str = "smime@example.org";
const ECS: &str = "ecs@example.org";
const MAILBOXES: &[&str] = &["ed", "sq", "rsa", "plain", "smime", "ecs"];

/// An S/MIME certificate for `addr`: RSA 3072 (keyEncipherment) or EC P-256 (keyAgreement).
fn make_cert(dir: &Path, addr: &str, ec: bool) -> Cert {
    let name = addr.split('@').next().unwrap();
    let key = if ec { KeyType::P256 } else { KeyType::Rsa3072 };
    make_test_cert(dir, name, addr, key)
}

/// Everything the S/MIME tests need: the keystore with OpenPGP keys (ed@, sq@, rsa@) and
/// certificates for smime@ (RSA) and ecs@ (P-256).
fn setup(test: &str, extra: &str) -> Option<(Keystore, Cert, Cert)> {
    for p in ["openssl", "python3"] {
        need_program(test, p)?;
    }
    let ks = Keystore::new(None, extra);
    let rsa = make_cert(ks.dir.path(), SMIME, false);
    let ec = make_cert(ks.dir.path(), ECS, true);
    for (addr, c) in [(SMIME, &rsa), (ECS, &ec)] {
        let out = ks.sealpost(&["keys", "import", addr, c.cert.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "import {addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some((ks, rsa, ec))
}

/// The keystore id of a certificate: SHA-256 of its DER encoding.
fn cert_id(c: &Cert) -> String {
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&c.cert));
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_uppercase()
}

/// The value of the first header field `name`, unfolded.
fn header(msg: &[u8], name: &str) -> Option<String> {
    let split = common::split_message(msg);
    split.fields.iter().find_map(|f| {
        let text = String::from_utf8_lossy(f);
        let (n, v) = text.split_once(':')?;
        n.eq_ignore_ascii_case(name)
            .then(|| v.split_whitespace().collect::<Vec<_>>().join(" "))
    })
}

/// The DER of the CMS structure in a delivered S/MIME message.
fn cms_der(msg: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let body: Vec<u8> = common::split_message(msg)
        .body
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("the S/MIME body is base64")
}

fn openssl_decrypt(der: &[u8], c: &Cert) -> Vec<u8> {
    let out = run_with_input(
        Command::new("openssl")
            .args(["cms", "-decrypt", "-inform", "DER", "-binary", "-recip"])
            .arg(&c.cert)
            .arg("-inkey")
            .arg(&c.key),
        der,
    );
    assert!(
        out.status.success(),
        "openssl cms -decrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// gpgsm (GnuPG 2.2) with the RSA key imported. gpgsm 2.2 reads only the legacy 3DES
/// PKCS#12 and decrypts RSA PKCS#1 v1.5 with AES-CBC, sealpost's default.
struct Gpgsm {
    home: tempfile::TempDir,
}

impl Gpgsm {
    fn new(c: &Cert) -> Gpgsm {
        let home = tempfile::Builder::new()
            .prefix("gsm")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(
            home.path().join("gpg-agent.conf"),
            "allow-loopback-pinentry\n",
        )
        .unwrap();
        std::fs::write(home.path().join("gpgsm.conf"), "disable-crl-checks\n").unwrap();
        let p12 = home.path().join("k.p12");
        run(Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:gpgsm-import"])
            .args(["-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES"])
            .args(["-macalg", "sha1", "-inkey"])
            .arg(&c.key)
            .arg("-in")
            .arg(&c.cert)
            .arg("-out")
            .arg(&p12));
        let g = Gpgsm { home };
        let out = g.run(&["--import", p12.to_str().unwrap()], b"gpgsm-import\n");
        assert!(
            out.status.success(),
            "gpgsm --import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        g
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_input(
            Command::new("gpgsm")
                .env("GNUPGHOME", self.home.path())
                .args([
                    "--batch",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase-fd",
                    "0",
                ])
                .args(args),
            stdin,
        )
    }

    fn decrypt(&self, der: &[u8]) -> Vec<u8> {
        let file = self.home.path().join("in.p7m");
        std::fs::write(&file, der).unwrap();
        let out = self.run(&["--decrypt", file.to_str().unwrap()], b"gpgsm-import\n");
        assert!(
            out.status.success(),
            "gpgsm --decrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Gpgsm {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// Python's email package reads the delivered message as an RFC 8551 S/MIME message with
/// no defects.
fn python_check(path: &Path, smime_type: &str) {
    const SCRIPT: &str = r#"
import base64, email, email.policy, sys
with open(sys.argv[1], "rb") as f:
    m = email.message_from_binary_file(f, policy=email.policy.default)
problems = [repr(d) for d in m.defects]
if m.get_content_type() != "application/pkcs7-mime":
    problems.append("content type " + m.get_content_type())
if m.get_param("smime-type") != sys.argv[2]:
    problems.append("smime-type " + repr(m.get_param("smime-type")))
if m.get_param("name") != "smime.p7m" or m.get_filename() != "smime.p7m":
    problems.append("name/filename")
if m.get_content_disposition() != "attachment":
    problems.append("disposition " + repr(m.get_content_disposition()))
if m["Content-Transfer-Encoding"] != "base64":
    problems.append("transfer encoding")
if not m.get_payload(decode=True).startswith(b"\x30\x80"):
    problems.append("not an indefinite-length DER/BER SEQUENCE")
print("\n".join(problems))
"#;
    sealpost_test_support::assert_python_finds_nothing(SCRIPT, path, &[smime_type]);
}

/// The message as the milter receives it: CRLF line endings and a final line break.
fn as_transmitted(raw: &[u8]) -> Vec<u8> {
    let mut m = common::to_crlf(raw);
    if !m.ends_with(b"\r\n") {
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Checks a delivered S/MIME message and returns the DER of its CMS structure.
fn check_delivered(path: &Path, id: &str, smime_type: &str, what: &str) -> Vec<u8> {
    let out = std::fs::read(path).unwrap();
    assert_eq!(
        header(&out, "X-Sealpost").as_deref(),
        Some(format!("encrypted; fpr={id}").as_str()),
        "{what}"
    );
    python_check(path, smime_type);
    cms_der(&out)
}

fn send_ok(pf: &Postfix, to: &[&str], msg: &[u8]) {
    let r = pf.send(SENDER, to, msg);
    assert_eq!(r.accepted().len(), to.len(), "RCPT replies {:?}", r.rcpt);
    assert_eq!(
        r.data.as_ref().map(|d| d.0),
        Some(250),
        "DATA: {:?}",
        r.data
    );
}

#[test]
fn every_corpus_message_reaches_an_smime_mailbox_encrypted_and_decrypts_with_openssl_and_gpgsm() {
    let test = "smime corpus";
    let Some(gpgsm) = need_program(test, "gpgsm") else {
        return;
    };
    let _ = gpgsm;
    let Some((ks, rsa, ec)) = setup(test, "") else {
        return;
    };
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let milter = Milter::start(&ks);
    let gsm = Gpgsm::new(&rsa);
    let (rsa_id, ec_id) = (cert_id(&rsa), cert_id(&ec));

    let corpus = common::corpus();
    for (i, (name, raw)) in corpus.iter().enumerate() {
        let sent = as_transmitted(raw);
        send_ok(&pf, &[SMIME], raw);
        let files = pf.wait_for("smime", i + 1, WAIT);
        let der = check_delivered(&files[i], &rsa_id, "enveloped-data", name);
        let payload = openssl_decrypt(&der, &rsa);
        common::check_payload(&sent, &payload, false, &format!("{name} (openssl)"));
        let payload = gsm.decrypt(&der);
        common::check_payload(&sent, &payload, false, &format!("{name} (gpgsm)"));

        send_ok(&pf, &[ECS], raw);
        let files = pf.wait_for("ecs", i + 1, WAIT);
        let der = check_delivered(&files[i], &ec_id, "enveloped-data", name);
        let payload = openssl_decrypt(&der, &ec);
        common::check_payload(&sent, &payload, false, &format!("{name} (openssl, EC)"));
    }

    // Already-encrypted mail (PGP/MIME or S/MIME) passes unchanged apart from the trace.
    for (i, (name, raw)) in common::skip_corpus().iter().enumerate() {
        send_ok(&pf, &[SMIME], raw);
        let files = pf.wait_for("smime", corpus.len() + i + 1, WAIT);
        let out = std::fs::read(&files[corpus.len() + i]).unwrap();
        let trace = header(&out, "X-Sealpost").unwrap();
        assert!(trace.starts_with("skipped; reason="), "{name}: {trace}");
        assert!(
            common::split_message(&out).body == common::split_message(&common::to_lf(raw)).body,
            "{name}: body changed"
        );
    }
    let log = milter.stop();
    assert!(!log.contains("PRIVATE KEY") && !log.contains("BEGIN CERTIFICATE"));
}

#[test]
fn openpgp_smime_and_plain_recipients_are_split_and_each_gets_its_format() {
    let test = "smime mixed";
    let Some((ks, rsa, _)) = setup(test, "") else {
        return;
    };
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let _milter = Milter::start(&ks);
    let raw = std::fs::read(common::corpus_dir().join("nested-multipart.eml")).unwrap();
    let sent = as_transmitted(&raw);

    // Split mode: three formats, three transactions.
    let mut pending: Vec<&str> = vec![ED, SMIME, PLAIN];
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds <= 3, "recipients never all accepted");
        let r = pf.send(SENDER, &pending, &raw);
        for (rcpt, code, text) in &r.rcpt {
            assert!(
                *code == 250 || (*code == 452 && text.starts_with("4.5.3")),
                "{rcpt}: {code} {text}"
            );
        }
        assert_eq!(r.data.as_ref().map(|d| d.0), Some(250));
        let accepted: Vec<String> = r.accepted().iter().map(|s| s.to_string()).collect();
        assert_eq!(accepted.len(), 1, "one format per transaction");
        pending.retain(|p| !accepted.iter().any(|a| a == p));
    }
    let smime = pf.wait_for("smime", 1, WAIT);
    let der = check_delivered(&smime[0], &cert_id(&rsa), "enveloped-data", "smime");
    common::check_payload(&sent, &openssl_decrypt(&der, &rsa), false, "smime");
    let ed = std::fs::read(&pf.wait_for("ed", 1, WAIT)[0]).unwrap();
    assert_eq!(
        header(&ed, "Content-Type")
            .unwrap()
            .split(';')
            .next()
            .unwrap(),
        "multipart/encrypted"
    );
    let plain = std::fs::read(&pf.wait_for("plain", 1, WAIT)[0]).unwrap();
    assert_eq!(
        header(&plain, "X-Sealpost").unwrap(),
        "plaintext; reason=no-account"
    );

    // An account holding both kinds of key gets the format of its KeySettings, else the
    // kind of the key activated last.
    let pgp = ks.dir.path().join("smime-openpgp.asc");
    {
        use sequoia_openpgp::serialize::SerializeInto;
        let (cert, _) =
            sequoia_openpgp::cert::CertBuilder::general_purpose(Some(format!("<{SMIME}>")))
                .generate()
                .unwrap();
        std::fs::write(&pgp, cert.armored().to_vec().unwrap()).unwrap();
    }
    let imported = ks.sealpost(&["keys", "import", SMIME, pgp.to_str().unwrap()]);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    std::thread::sleep(Duration::from_millis(1500));
    send_ok(&pf, &[SMIME], &raw);
    let got = std::fs::read(&pf.wait_for("smime", 2, WAIT)[1]).unwrap();
    assert!(
        header(&got, "Content-Type")
            .unwrap()
            .starts_with("multipart/encrypted"),
        "the OpenPGP key was activated last"
    );
}

#[test]
fn auth_enveloped_gcm_and_oaep_as_configured_and_local_mail_never_mixes_formats() {
    let test = "smime gcm oaep";
    let extra = "\n[smime]\ncontent_cipher = \"aes256-gcm\"\nrsa_padding = \"oaep\"\n";
    let Some((ks, rsa, ec)) = setup(test, extra) else {
        return;
    };
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let _milter = Milter::start(&ks);
    let raw = std::fs::read(common::corpus_dir().join("utf8-8bit.eml")).unwrap();
    let sent = as_transmitted(&raw);
    for (addr, mailbox, c) in [(SMIME, "smime", &rsa), (ECS, "ecs", &ec)] {
        send_ok(&pf, &[addr], &raw);
        let file = &pf.wait_for(mailbox, 1, WAIT)[0];
        let der = check_delivered(file, &cert_id(c), "authEnveloped-data", addr);
        let printed = run_with_input(
            Command::new("openssl").args(["cms", "-cmsout", "-print", "-inform", "DER"]),
            &der,
        );
        let printed = String::from_utf8_lossy(&printed.stdout);
        assert!(
            printed.contains("id-smime-ct-authEnvelopedData"),
            "{printed}"
        );
        if c.cert == rsa.cert {
            assert!(printed.contains("rsaesOaep"), "{printed}");
        }
        common::check_payload(&sent, &openssl_decrypt(&der, c), false, addr);
    }

    // Local submission cannot be split: OpenPGP and S/MIME recipients in one message are
    // refused whole (the local sender gets it back); nothing is delivered to either.
    pf.sendmail(SENDER, &[ED, SMIME], &raw);
    // A message for S/MIME recipients alone goes through.
    pf.sendmail(SENDER, &[SMIME, ECS], &raw);
    let file = &pf.wait_for("ecs", 2, WAIT)[1];
    let out = std::fs::read(file).unwrap();
    let ids = {
        let mut v = [cert_id(&rsa), cert_id(&ec)];
        v.sort();
        v.join(",")
    };
    assert_eq!(
        header(&out, "X-Sealpost").unwrap(),
        format!("encrypted; fpr={ids}")
    );
    common::check_payload(&sent, &openssl_decrypt(&cms_der(&out), &ec), false, "local");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pf.log().contains("milter-reject") {
        assert!(
            Instant::now() < deadline,
            "the mixed local message was not refused: {}",
            pf.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(pf
        .log()
        .contains("5.7.1 sealpost: recipients need OpenPGP and S/MIME"));
    assert_eq!(pf.delivered("ed").len(), 0);
    assert_eq!(pf.delivered("smime").len(), 2);
}

/// A running `sealpost jmap`.
struct Service(std::process::Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn jmap(port: u16, auth: &str, calls: serde_json::Value) -> serde_json::Value {
    let body = serde_json::json!({
        "using": ["urn:ietf:params:jmap:core", "org:sealpost:params:jmap:keys"],
        "methodCalls": calls,
    });
    let r = request(
        port,
        "POST",
        "/jmap",
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["methodResponses"].clone()
}

#[test]
fn the_officer_recovers_a_pkcs12_uploaded_through_jmap_and_decrypts_the_smime_maildir() {
    let test = "smime recovery";
    for p in ["openssl", "sq"] {
        if need_program(test, p).is_none() {
            return;
        }
    }
    let port = free_port();
    let ks = Keystore::new(None, "");
    let dir = ks.dir.path();
    // The JMAP service on the same keystore.
    let mut config = std::fs::read_to_string(&ks.config).unwrap();
    config.push_str(&format!("\n[jmap]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&ks.config, config).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let rsa = make_cert(dir, SMIME, false);
    let id = cert_id(&rsa);
    let ok = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(ks.sealpost(&["accounts", "add", SMIME]));
    let web_password = "smime web login 7";
    let officer_phrase = "officer pass phrase 11";
    let user_pass = "pkcs12 user password 5";
    let new_phrase = "re-protected p12 pass 9";
    for secret in [web_password, officer_phrase, user_pass, new_phrase] {
        register_secret(secret);
    }
    ok(run_with_input(
        &mut ks.command(&["accounts", "passwd", SMIME]),
        format!("{web_password}\n").as_bytes(),
    ));

    // The officer key (offline) and its public half on the server.
    let officer_pass = write("officer-pass.txt", &format!("{officer_phrase}\n"));
    let init: serde_json::Value = serde_json::from_str(&ok(ks.sealpost(&[
        "escrow",
        "officer-init",
        "--out",
        "offline",
        "--passphrase-file",
        &officer_pass,
        "--json",
    ])))
    .unwrap();
    let officer_secret = dir.join(init["secret_key"].as_str().unwrap());
    let officer_public = dir.join(init["public_key"].as_str().unwrap());
    register_private_key(&std::fs::read_to_string(&officer_secret).unwrap());
    ok(ks.sealpost(&["escrow", "officer-add", officer_public.to_str().unwrap()]));

    // The user's client: a PKCS#12 with AES and the certificate in clear, and the password
    // encrypted to the officer key.
    let p12 = dir.join("user.p12");
    run(Command::new("openssl")
        .args([
            "pkcs12",
            "-export",
            "-keypbe",
            "AES-256-CBC",
            "-certpbe",
            "NONE",
        ])
        .args(["-iter", "100000", "-macalg", "sha256"])
        .args(["-passout", &format!("pass:{user_pass}"), "-inkey"])
        .arg(&rsa.key)
        .arg("-in")
        .arg(&rsa.cert)
        .arg("-out")
        .arg(&p12));
    let escrow = run_with_input(
        Command::new("sq")
            .args(["encrypt", "--recipient-cert"])
            .arg(&officer_public),
        user_pass.as_bytes(),
    );
    assert!(
        escrow.status.success(),
        "{}",
        String::from_utf8_lossy(&escrow.stderr)
    );
    let p12_pem = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&p12).unwrap());
        format!("-----BEGIN PKCS12-----\n{b64}\n-----END PKCS12-----\n")
    };
    let service = Service(
        Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .arg("--config")
            .arg(&ks.config)
            .arg("jmap")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sealpost jmap is not listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let auth = basic_auth(SMIME, web_password);
    let session = request(
        port,
        "GET",
        "/.well-known/jmap",
        &[("Authorization", &auth)],
        b"",
    )
    .json();
    let account = session["primaryAccounts"]["org:sealpost:params:jmap:keys"]
        .as_str()
        .unwrap()
        .to_string();

    // The webmail uploads the certificate (PEM, as a client reads it from a file); a
    // PKCS#12 offered as a certificate is refused with the reason.
    let der_p12 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&p12).unwrap())
    };
    let r = jmap(
        port,
        &auth,
        serde_json::json!([
            ["PublicKey/set", {"accountId": account, "create": {
                "c": {"armored": std::fs::read_to_string(&rsa.cert).unwrap()},
                "p": {"armored": format!("-----BEGIN PKCS12-----\n{der_p12}\n-----END PKCS12-----\n")},
            }}, "0"],
            ["KeySettings/set", {"accountId": account, "update": {"singleton": {"format": "x"}}}, "1"],
            ["KeySettings/set", {"accountId": account, "update": {"singleton": {"format": "smime"}}}, "2"],
            ["KeySettings/get", {"accountId": account}, "3"],
        ]),
    );
    assert_eq!(r[0][1]["created"]["c"]["id"], id.as_str(), "{r}");
    assert_eq!(r[0][1]["created"]["c"]["kind"], "x509", "{r}");
    let refused = r[0][1]["notCreated"]["p"]["description"].as_str().unwrap();
    assert!(refused.contains("PKCS#12 bundle with a private key"), "{r}");
    assert_eq!(
        r[1][1]["notUpdated"]["singleton"]["type"], "invalidProperties",
        "{r}"
    );
    assert_eq!(r[3][1]["list"][0]["format"], "smime", "{r}");

    // An unencrypted PKCS#12 is refused with the reason.
    let bare = dir.join("bare.p12");
    run(Command::new("openssl")
        .args(["pkcs12", "-export", "-keypbe", "NONE", "-certpbe", "NONE"])
        .args(["-passout", "pass:", "-nomac", "-inkey"])
        .arg(&rsa.key)
        .arg("-in")
        .arg(&rsa.cert)
        .arg("-out")
        .arg(&bare));
    let bare_pem = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&bare).unwrap());
        format!("-----BEGIN PKCS12-----\n{b64}\n-----END PKCS12-----\n")
    };
    let r = jmap(
        port,
        &auth,
        serde_json::json!([["PrivateKey/set", {"accountId": account, "create": {"k": {"armored": bare_pem, "publicKeyId": id}}}, "0"]]),
    );
    let refused = &r[0][1]["notCreated"]["k"];
    assert_eq!(refused["type"], "invalidProperties", "{r}");
    assert!(
        refused["description"]
            .as_str()
            .unwrap()
            .contains("not encrypted"),
        "{r}"
    );

    let r = jmap(
        port,
        &auth,
        serde_json::json!([
            ["PrivateKey/set", {"accountId": account, "create": {"k": {"armored": p12_pem, "publicKeyId": id}}}, "0"],
            ["Escrow/set", {"accountId": account, "create": {"e": {"privateKeyId": "#k", "armored": String::from_utf8(escrow.stdout).unwrap()}}}, "1"],
            ["PublicKey/get", {"accountId": account}, "2"],
        ]),
    );
    assert_eq!(r[0][1]["created"]["k"]["id"], id.as_str(), "{r}");
    assert_eq!(
        r[0][1]["created"]["k"]["protection"]["kind"], "pkcs12",
        "{r}"
    );
    assert!(r[1][1]["created"]["e"].is_object(), "{r}");
    assert_eq!(r[2][1]["list"][0]["kind"], "x509", "{r}");
    drop(service);

    // Mail already in the mailbox, encrypted at rest with `maildir encrypt` (the same
    // transform as the milter).
    let md = dir.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    let originals = common::corpus();
    for (i, (_, data)) in originals.iter().enumerate() {
        std::fs::write(
            md.join("cur").join(format!("17000000{i:02}.M1P1.test:2,S")),
            data,
        )
        .unwrap();
    }
    ok(ks.sealpost(&[
        "maildir",
        "encrypt",
        md.to_str().unwrap(),
        "--account",
        SMIME,
    ]));
    for e in std::fs::read_dir(md.join("cur")).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        assert!(header(&data, "Content-Type")
            .unwrap()
            .starts_with("application/pkcs7-mime"));
    }

    // The officer: export, recover, decrypt the Maildir; re-protect the bundle.
    ok(ks.sealpost(&[
        "escrow",
        "export",
        "--account",
        SMIME,
        "--reason",
        "ticket 77: lost password",
        "--out",
        "smime.bundle",
    ]));
    let recover = |extra: &[&str]| {
        let mut a = vec![
            "escrow",
            "recover",
            "--bundle",
            "smime.bundle",
            "--officer-key",
            officer_secret.to_str().unwrap(),
            "--passphrase-file",
            &officer_pass,
        ];
        a.extend_from_slice(extra);
        ks.sealpost(&a)
    };
    let report = ok(recover(&[
        "--decrypt-maildir",
        md.to_str().unwrap(),
        "--out",
        "clear",
    ]));
    assert!(
        report.starts_with(&format!("{} decrypted, 0 copied", originals.len())),
        "{report}"
    );
    for (i, (name, data)) in originals.iter().enumerate() {
        let got = std::fs::read(
            dir.join("clear/cur")
                .join(format!("17000000{i:02}.M1P1.test:2,S")),
        )
        .unwrap();
        let (data, got) = (common::to_lf(data), common::to_lf(&got));
        let (sent, back) = (common::split_message(&data), common::split_message(&got));
        assert!(
            sent.body == back.body,
            "{name}: body differs after recovery"
        );
        // A trace field arriving from outside is removed by design.
        for f in sent.fields.iter().filter(|f| !f.starts_with(b"X-Sealpost")) {
            assert!(
                back.fields.contains(f),
                "{name}: field lost: {}",
                String::from_utf8_lossy(f)
            );
        }
    }
    let new_pass = write("new-pass.txt", &format!("{new_phrase}\n"));
    ok(recover(&[
        "--reprotect",
        "--new-password-file",
        &new_pass,
        "--out",
        "new.p12",
    ]));
    let p = |pass: &str| {
        Command::new("openssl")
            .args(["pkcs12", "-in", "new.p12", "-nodes", "-passin"])
            .arg(format!("pass:{pass}"))
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let opened = p(new_phrase);
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    assert!(String::from_utf8_lossy(&opened.stdout).contains("PRIVATE KEY"));
    assert!(
        !p(user_pass).status.success(),
        "the old password still opens it"
    );

    // The owner can do the same with their own .p12 and password.
    let pw_file = write("user-pass.txt", &format!("{user_pass}\n"));
    let report = ok(ks.sealpost(&[
        "maildir",
        "decrypt",
        md.to_str().unwrap(),
        "--key",
        p12.to_str().unwrap(),
        "--passphrase-file",
        &pw_file,
        "--out",
        "clear2",
    ]));
    assert!(
        report.starts_with(&format!("{} decrypted", originals.len())),
        "{report}"
    );
}
