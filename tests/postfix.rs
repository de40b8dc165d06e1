//! The milter end to end: a private Postfix instance hands every message to a running
//! `sealpost milter`, delivers to Maildirs, and the delivered files are decrypted with gpg
//! and sq and compared with what was sent. Needs root, Postfix, gpg, sq and python3
//! (tests/run installs them).

#[path = "../milter/tests/common/mod.rs"]
mod common;
mod e2e;

use e2e::{Keystore, Milter, ED, MAILBOXES, PLAIN, RSA, SENDER, SQ, WAIT};

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sealpost_test_support::postfix::Postfix;
use sealpost_test_support::{fixture, fresh_postgres, need_program, run_with_input};

/// Everything an end-to-end test needs, or None when the environment lacks it.
fn programs(test: &str) -> Option<()> {
    for p in ["gpg", "sq", "python3"] {
        need_program(test, p)?;
    }
    Some(())
}

/// gpg with the fixture's secret Ed25519/Cv25519 key (ed@example.org).
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
        let g = Gpg { home };
        let out = g.run(
            &[
                "--import",
                fixture("keys/gpg-ed25519-secret.asc").to_str().unwrap(),
            ],
            b"",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        g
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_input(
            Command::new("gpg")
                .env("GNUPGHOME", self.home.path())
                .args(["--batch", "--pinentry-mode", "loopback"])
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

    fn drop_agent(&self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        self.drop_agent();
    }
}

fn sq_decrypt(armored: &[u8]) -> Vec<u8> {
    let key = fixture("keys/sq-cv25519-secret.pgp");
    let out = run_with_input(
        Command::new("sq").args(["decrypt", "--recipient-key", key.to_str().unwrap()]),
        armored,
    );
    assert!(
        out.status.success(),
        "sq decrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The message as the milter receives it: CRLF line endings and a final line break.
fn as_transmitted(raw: &[u8]) -> Vec<u8> {
    let mut m = common::to_crlf(raw);
    if !m.ends_with(b"\r\n") {
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// The value of the first header field `name` in the header section.
fn header(msg: &[u8], name: &str) -> Option<String> {
    let split = common::split_message(msg);
    split.fields.iter().find_map(|f| {
        let text = String::from_utf8_lossy(f);
        let (n, v) = text.split_once(':')?;
        n.eq_ignore_ascii_case(name)
            .then(|| v.split_whitespace().collect::<Vec<_>>().join(" "))
    })
}

/// Python's email package parses the delivered message as RFC 3156 PGP/MIME, with no
/// defects.
fn python_check(path: &Path) {
    const SCRIPT: &str = r#"
import email, email.policy, sys
with open(sys.argv[1], "rb") as f:
    m = email.message_from_binary_file(f, policy=email.policy.default)
problems = [repr(d) for d in m.defects]
if m.get_content_type() != "multipart/encrypted":
    problems.append("content type " + m.get_content_type())
if m.get_param("protocol") != "application/pgp-encrypted":
    problems.append("protocol parameter")
parts = list(m.iter_parts())
if [p.get_content_type() for p in parts] != ["application/pgp-encrypted", "application/octet-stream"]:
    problems.append("parts " + repr([p.get_content_type() for p in parts]))
for p in parts:
    problems += [repr(d) for d in p.defects]
if len(parts) == 2:
    if b"Version: 1" not in parts[0].get_payload(decode=True):
        problems.append("no Version: 1")
    body = parts[1].get_payload(decode=True)
    if not body.startswith(b"-----BEGIN PGP MESSAGE-----"):
        problems.append("second part is not armored OpenPGP")
print("\n".join(problems))
"#;
    sealpost_test_support::assert_python_finds_nothing(SCRIPT, path, &[]);
}

/// Checks one delivered encrypted file against the message that was sent and returns the
/// decrypted payload.
fn check_encrypted(
    delivered: &Path,
    sent: &[u8],
    fprs: &[&str],
    decrypt: impl Fn(&[u8]) -> Vec<u8>,
    what: &str,
) {
    let out = std::fs::read(delivered).unwrap();
    let trace = header(&out, "X-Sealpost").unwrap_or_else(|| panic!("{what}: no X-Sealpost"));
    assert_eq!(
        trace,
        format!("encrypted; fpr={}", fprs.join(",")),
        "{what}"
    );
    python_check(delivered);
    common::check_mime_structure(&out, what);
    let payload = decrypt(common::armored_part(&out));
    common::check_payload(&as_transmitted(sent), &payload, false, what);
}

fn send_ok(pf: &Postfix, to: &[&str], msg: &[u8]) {
    let r = pf.send(SENDER, to, msg);
    assert_eq!(r.mail.0, 250, "MAIL: {:?}", r.mail);
    assert_eq!(r.accepted().len(), to.len(), "RCPT replies {:?}", r.rcpt);
    assert_eq!(
        r.data.as_ref().map(|d| d.0),
        Some(250),
        "DATA: {:?}",
        r.data
    );
}

#[test]
fn every_corpus_message_arrives_encrypted_and_decrypts_with_gpg_and_sq() {
    let test = "postfix corpus";
    let Some(()) = programs(test) else { return };
    let ks = Keystore::new(None, "");
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let milter = Milter::start(&ks);
    let gpg = Gpg::new();
    let (ed_fpr, sq_fpr) = (ks.fingerprint(ED), ks.fingerprint(SQ));

    let corpus = common::corpus();
    for (i, (name, raw)) in corpus.iter().enumerate() {
        send_ok(&pf, &[ED], raw);
        let files = pf.wait_for("ed", i + 1, WAIT);
        check_encrypted(
            &files[i],
            raw,
            &[&ed_fpr],
            |a| gpg.decrypt(a),
            &format!("{name} (gpg)"),
        );
        send_ok(&pf, &[SQ], raw);
        let files = pf.wait_for("sq", i + 1, WAIT);
        check_encrypted(
            &files[i],
            raw,
            &[&sq_fpr],
            sq_decrypt,
            &format!("{name} (sq)"),
        );
    }

    // Already-encrypted mail passes unchanged apart from the trace field.
    for (i, (name, raw)) in common::skip_corpus().iter().enumerate() {
        send_ok(&pf, &[ED], raw);
        let files = pf.wait_for("ed", corpus.len() + i + 1, WAIT);
        let out = std::fs::read(&files[corpus.len() + i]).unwrap();
        let trace = header(&out, "X-Sealpost").unwrap();
        assert!(trace.starts_with("skipped; reason="), "{name}: {trace}");
        let sent = common::split_message(&common::to_lf(raw));
        let got = common::split_message(&out);
        assert!(sent.body == got.body, "{name}: body changed");
        for f in &sent.fields {
            assert!(
                got.fields.contains(f),
                "{name}: field lost {}",
                String::from_utf8_lossy(f)
            );
        }
    }
    let log = milter.stop();
    assert!(!log.contains("BEGIN PGP"), "key or message text in the log");
}

#[test]
fn mixed_recipients_are_split_and_each_gets_the_right_treatment() {
    let test = "postfix mixed";
    let Some(()) = programs(test) else { return };
    let ks = Keystore::new(None, "");
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let _milter = Milter::start(&ks);
    let raw = std::fs::read(common::corpus_dir().join("nested-multipart.eml")).unwrap();

    // One transaction, four recipients with three treatments: the milter keeps the
    // first recipient's and defers the others with 452 4.5.3, as a real client retries.
    let mut pending: Vec<&str> = vec![ED, PLAIN, SQ, RSA];
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds <= 4, "recipients never all accepted");
        let r = pf.send(SENDER, &pending, &raw);
        for (rcpt, code, text) in &r.rcpt {
            assert!(
                *code == 250 || (*code == 452 && text.starts_with("4.5.3")),
                "{rcpt}: {code} {text}"
            );
        }
        assert_eq!(r.data.as_ref().map(|d| d.0), Some(250));
        let accepted: Vec<String> = r.accepted().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            accepted.len(),
            1,
            "split mode: one treatment per transaction"
        );
        pending.retain(|p| !accepted.iter().any(|a| a == p));
    }

    let gpg = Gpg::new();
    let ed = pf.wait_for("ed", 1, WAIT);
    check_encrypted(
        &ed[0],
        &raw,
        &[&ks.fingerprint(ED)],
        |a| gpg.decrypt(a),
        "ed",
    );
    let sq = pf.wait_for("sq", 1, WAIT);
    check_encrypted(&sq[0], &raw, &[&ks.fingerprint(SQ)], sq_decrypt, "sq");
    let rsa = pf.wait_for("rsa", 1, WAIT);
    let out = std::fs::read(&rsa[0]).unwrap();
    assert_eq!(
        header(&out, "X-Sealpost").unwrap(),
        format!("encrypted; fpr={}", ks.fingerprint(RSA))
    );
    let (pkesks, _) = common::packet_summary(common::armored_part(&out));
    assert_eq!(pkesks, 1);
    // No key: delivered as sent, marked plaintext.
    let plain = pf.wait_for("plain", 1, WAIT);
    let out = std::fs::read(&plain[0]).unwrap();
    assert_eq!(
        header(&out, "X-Sealpost").unwrap(),
        "plaintext; reason=no-account"
    );
    assert!(common::split_message(&out).body == common::split_message(&common::to_lf(&raw)).body);
}

#[test]
fn union_mode_encrypts_one_copy_to_every_key_holder() {
    let test = "postfix union";
    let Some(()) = programs(test) else { return };
    let ks = Keystore::new(None, "mixed = \"union\"");
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let _milter = Milter::start(&ks);
    let raw = std::fs::read(common::corpus_dir().join("utf8-8bit.eml")).unwrap();
    let r = pf.send(SENDER, &[ED, SQ, PLAIN], &raw);
    assert_eq!(r.rcpt[0].1, 250);
    assert_eq!(r.rcpt[1].1, 250, "union joins key holders: {:?}", r.rcpt);
    assert_eq!(r.rcpt[2].1, 452, "a recipient without a key is split off");
    send_ok(&pf, &[PLAIN], &raw);

    let both = [ks.fingerprint(ED), ks.fingerprint(SQ)];
    let mut sorted = both.clone();
    sorted.sort();
    let ed = pf.wait_for("ed", 1, WAIT);
    let out = std::fs::read(&ed[0]).unwrap();
    let trace = header(&out, "X-Sealpost").unwrap();
    let got: Vec<&str> = trace
        .strip_prefix("encrypted; fpr=")
        .unwrap()
        .split(',')
        .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(
        got_sorted,
        sorted.iter().map(|s| s.as_str()).collect::<Vec<_>>()
    );
    let gpg = Gpg::new();
    let fprs: Vec<&str> = got.clone();
    check_encrypted(&ed[0], &raw, &fprs, |a| gpg.decrypt(a), "union ed (gpg)");
    let sq = pf.wait_for("sq", 1, WAIT);
    check_encrypted(&sq[0], &raw, &fprs, sq_decrypt, "union sq (sq)");
    let plain = pf.wait_for("plain", 1, WAIT);
    let out = std::fs::read(&plain[0]).unwrap();
    assert_eq!(
        header(&out, "X-Sealpost").unwrap(),
        "plaintext; reason=no-account"
    );
}

#[test]
fn a_30_mb_message_is_encrypted_and_decrypts_byte_for_byte() {
    let test = "postfix 30 MB";
    let Some(()) = programs(test) else { return };
    let ks = Keystore::new(None, "");
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let _milter = Milter::start(&ks);
    let raw = e2e::big_message(30);
    send_ok(&pf, &[ED], &raw);
    let files = pf.wait_for("ed", 1, Duration::from_secs(180));
    let gpg = Gpg::new();
    check_encrypted(
        &files[0],
        &raw,
        &[&ks.fingerprint(ED)],
        |a| gpg.decrypt(a),
        "30 MB",
    );
}

#[test]
fn milter_down_means_tempfail_and_nothing_in_plaintext_then_delivery() {
    let test = "postfix milter down";
    let Some(()) = programs(test) else { return };
    let ks = Keystore::new(None, "");
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let raw = std::fs::read(common::corpus_dir().join("plain-ascii.eml")).unwrap();

    // No milter listening: SMTP mail is refused with a temporary error.
    let r = pf.send(SENDER, &[ED], &raw);
    let codes: Vec<u16> = std::iter::once(r.mail.0)
        .chain(r.rcpt.iter().map(|x| x.1))
        .chain(r.data.iter().map(|x| x.0))
        .collect();
    assert!(
        codes.iter().any(|c| *c / 100 == 4) && !codes.iter().any(|c| *c / 100 == 5),
        "expected a temporary failure, got {r:?}"
    );
    assert!(
        r.data.map(|d| d.0) != Some(250),
        "accepted without the milter"
    );
    // Local submission is kept in the queue, not delivered.
    pf.sendmail(SENDER, &[ED], &raw);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        pf.delivered("ed").is_empty(),
        "delivered without the milter"
    );

    // The milter comes up: the queued message and a new SMTP send both arrive encrypted.
    let _milter = Milter::start(&ks);
    pf.flush();
    send_ok(&pf, &[ED], &raw);
    let files = pf.wait_for("ed", 2, WAIT);
    let gpg = Gpg::new();
    for f in &files {
        let out = std::fs::read(f).unwrap();
        let trace = header(&out, "X-Sealpost").unwrap();
        assert_eq!(trace, format!("encrypted; fpr={}", ks.fingerprint(ED)));
        let payload = gpg.decrypt(common::armored_part(&out));
        common::check_payload(&as_transmitted(&raw), &payload, false, "after restart");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_keystore_tempfails_then_delivers() {
    let test = "postfix keystore unreachable";
    let Some(()) = programs(test) else { return };
    let Some(url) = fresh_postgres(test).await else {
        return;
    };
    let (ks, pf) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let ks = Keystore::new(Some(url), "");
            let pf = Postfix::start(test, &ks.milter_spec(), MAILBOXES);
            (ks, pf)
        }
    })
    .await
    .unwrap();
    let Some(pf) = pf else { return };
    let _milter = Milter::start(&ks);
    let raw = std::fs::read(common::corpus_dir().join("plain-ascii.eml")).unwrap();

    // Cut the database off: no new connections, existing ones terminated.
    e2e::set_database_reachable(&url, false);
    std::thread::sleep(Duration::from_secs(2));
    let r = pf.send(SENDER, &[ED], &raw);
    let rcpt = &r.rcpt[0];
    assert_eq!((rcpt.1, &rcpt.2[..5]), (451, "4.7.1"), "{r:?}");
    assert!(pf.delivered("ed").is_empty());

    e2e::set_database_reachable(&url, true);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = pf.send(SENDER, &[ED], &raw);
        if r.data.as_ref().map(|d| d.0) == Some(250) {
            break;
        }
        assert!(Instant::now() < deadline, "never accepted again: {r:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let files = pf.wait_for("ed", 1, WAIT);
    let out = std::fs::read(&files[0]).unwrap();
    assert!(header(&out, "X-Sealpost")
        .unwrap()
        .starts_with("encrypted; fpr="));
}

#[test]
fn local_submission_cannot_be_split_so_every_copy_is_encrypted() {
    let test = "postfix sendmail";
    let Some(()) = programs(test) else { return };
    let ks = Keystore::new(None, "");
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let milter = Milter::start(&ks);
    let raw = std::fs::read(common::corpus_dir().join("quoted-printable.eml")).unwrap();
    // sendmail has no way to retry a recipient, so the milter cannot defer anyone: the
    // key holders' keys are joined and the recipient without a key gets that copy too.
    pf.sendmail(SENDER, &[ED, SQ, PLAIN], &raw);
    let gpg = Gpg::new();
    let mut fprs = [ks.fingerprint(ED), ks.fingerprint(SQ)];
    fprs.sort();
    for mailbox in ["ed", "sq", "plain"] {
        let files = pf.wait_for(mailbox, 1, WAIT);
        let out = std::fs::read(&files[0]).unwrap();
        let trace = header(&out, "X-Sealpost").unwrap();
        let mut got: Vec<String> = trace
            .strip_prefix("encrypted; fpr=")
            .unwrap_or_else(|| panic!("{mailbox}: {trace}"))
            .split(',')
            .map(String::from)
            .collect();
        got.sort();
        assert_eq!(got, fprs, "{mailbox}");
        python_check(&files[0]);
        let payload = gpg.decrypt(common::armored_part(&out));
        assert!(common::find(&payload, b"Content-Transfer-Encoding: quoted-printable").is_some());
    }
    // An SMTP client on loopback is not taken for local submission.
    let r = pf.send(SENDER, &[ED, PLAIN], &raw);
    assert_eq!((r.rcpt[0].1, r.rcpt[1].1), (250, 452), "{r:?}");
    let log = milter.stop();
    assert!(log.contains("stopped") || !log.is_empty(), "{log}");
}

/// A plain HTTP/1.0 GET; returns (status, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

#[test]
fn unix_socket_metrics_and_logs_without_content() {
    let test = "postfix unix socket";
    let Some(()) = programs(test) else { return };
    let ks = Keystore::with(None, "", true, true);
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let milter = Milter::start(&ks);
    let port = ks.metrics_port.unwrap();
    assert_eq!(http_get(port, "/healthz").0, 200);
    assert_eq!(http_get(port, "/readyz").0, 200);

    let marker = "confidential-4f1c9a";
    let msg = format!(
        "From: a@example.net\r\nTo: ed@example.org\r\nSubject: subject-{marker}\r\n\
         Date: Tue, 25 Nov 2025 10:00:00 +0000\r\nMessage-ID: <m@example.net>\r\n\r\n\
         body {marker}\r\n"
    );
    send_ok(&pf, &[ED], msg.as_bytes());
    send_ok(&pf, &[PLAIN], msg.as_bytes());
    let (_, skipped) = &common::skip_corpus()[0];
    send_ok(&pf, &[ED], skipped);
    let ed = pf.wait_for("ed", 2, WAIT);
    pf.wait_for("plain", 1, WAIT);
    let out = std::fs::read(&ed[0]).unwrap();
    assert!(
        common::find(&out, marker.as_bytes()).is_none() || {
            // Only the outer Subject may show it (protect_subject is off).
            header(&out, "Subject").unwrap().contains(marker)
                && common::find(common::armored_part(&out), marker.as_bytes()).is_none()
        }
    );

    let (status, metrics) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    for line in [
        "sealpost_milter_messages_total{outcome=\"encrypted\"} 1",
        "sealpost_milter_messages_total{outcome=\"plaintext\"} 1",
        "sealpost_milter_messages_total{outcome=\"skipped\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    assert!(metrics.contains("sealpost_milter_transform_seconds_count"));
    assert!(metrics.contains("sealpost_milter_body_bytes_in_total"));

    let log = milter.stop();
    // The log names each message by its Postfix queue id, and never shows content.
    let queue_ids: Vec<String> = pf
        .log()
        .lines()
        .filter(|l| l.contains("postfix/cleanup") && l.contains("message-id="))
        .filter_map(|l| l.split(": ").nth(1).map(|s| s.trim().to_string()))
        .collect();
    assert_eq!(queue_ids.len(), 3, "{}", pf.log());
    for id in &queue_ids {
        assert!(
            log.contains(id.as_str()),
            "queue id {id} not in the milter log:\n{log}"
        );
    }
    assert!(!log.contains(marker), "message content in the log:\n{log}");
}

#[test]
fn a_relaying_postfix_delivers_every_split_recipient() {
    // The split answers (452 4.5.3) are meant for real SMTP clients: here a second Postfix
    // relays one message for four recipients of three classes to the one with sealpost.
    let test = "postfix relay split";
    let Some(()) = programs(test) else { return };
    let ks = Keystore::new(None, "");
    let Some(inbound) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let _milter = Milter::start(&ks);
    let Some(relay) = e2e::start_relay(test, inbound.smtp_port) else {
        return;
    };
    let raw = std::fs::read(common::corpus_dir().join("base64-attachment.eml")).unwrap();
    let t = Instant::now();
    send_ok(&relay, &[ED, PLAIN, SQ, RSA], &raw);
    // The relay defers the recipients answered with 452 and retries them on its next queue
    // run; flushing its queue only makes that run come sooner.
    let deadline = Instant::now() + Duration::from_secs(120);
    for mailbox in ["ed", "plain", "sq", "rsa"] {
        while inbound.delivered(mailbox).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{mailbox} never received the relayed message:\n{}",
                relay.log()
            );
            relay.flush();
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let gpg = Gpg::new();
    let ed = inbound.delivered("ed");
    check_encrypted(
        &ed[0],
        &raw,
        &[&ks.fingerprint(ED)],
        |a| gpg.decrypt(a),
        "relayed ed",
    );
    let sq = inbound.delivered("sq");
    check_encrypted(
        &sq[0],
        &raw,
        &[&ks.fingerprint(SQ)],
        sq_decrypt,
        "relayed sq",
    );
    let plain = std::fs::read(&inbound.delivered("plain")[0]).unwrap();
    assert_eq!(
        header(&plain, "X-Sealpost").unwrap(),
        "plaintext; reason=no-account"
    );
    // How the relay handled the deferrals, for the docs: its log shows the 452 answers.
    let log = relay.log();
    assert!(
        log.contains("4.5.3"),
        "the relay never saw a split answer:\n{log}"
    );
    eprintln!("relay delivered all four recipients in {secs:.1} s");
}

#[test]
fn sighup_reloads_milter_settings_and_refuses_a_broken_config() {
    let test = "postfix sighup";
    let Some(()) = programs(test) else { return };
    let ks = Keystore::new(None, "");
    let Some(pf) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let milter = Milter::start(&ks);
    let raw = std::fs::read(common::corpus_dir().join("plain-ascii.eml")).unwrap();
    let hup = |m: &Milter| {
        let ok = Command::new("kill")
            .args(["-HUP", &m.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::thread::sleep(Duration::from_millis(500));
    };
    // split (the default): the second key holder is deferred.
    let r = pf.send(SENDER, &[ED, SQ], &raw);
    assert_eq!((r.rcpt[0].1, r.rcpt[1].1), (250, 452), "{r:?}");

    let original = std::fs::read_to_string(&ks.config).unwrap();
    std::fs::write(
        &ks.config,
        original.replace("[milter]\n", "[milter]\nmixed = \"union\"\n"),
    )
    .unwrap();
    hup(&milter);
    let r = pf.send(SENDER, &[ED, SQ], &raw);
    assert_eq!(
        (r.rcpt[0].1, r.rcpt[1].1),
        (250, 250),
        "after reload: {r:?}"
    );

    // A broken file is refused; the process keeps serving with what it had.
    std::fs::write(
        &ks.config,
        original.replace("[milter]\n", "[milter]\nmixed = \"sometimes\"\n"),
    )
    .unwrap();
    hup(&milter);
    let r = pf.send(SENDER, &[ED, SQ], &raw);
    assert_eq!(
        (r.rcpt[0].1, r.rcpt[1].1),
        (250, 250),
        "kept settings: {r:?}"
    );
    pf.wait_for("ed", 3, WAIT);
    pf.wait_for("sq", 2, WAIT);
    let log = milter.stop();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("reload refused"), "{log}");
}
