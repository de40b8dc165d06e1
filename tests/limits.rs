//! The milter's limits through a real Postfix: too many recipients, too many or too large
//! header fields, and more connections than the milter serves. Each is answered with a
//! precise SMTP reply, nothing over a limit is delivered, and mail within the limits flows
//! on. Needs root and Postfix.

mod e2e;

use std::io::Write;
use std::time::Duration;

use e2e::{Keystore, Milter, ED, SENDER, WAIT};
use sealpost_test_support::postfix::{smtp_send, Postfix};

fn message(extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <sender@example.net>\r\nTo: <ed@example.org>\r\nSubject: limits\r\n\
         Date: Tue, 25 Nov 2025 10:00:00 +0000\r\nMessage-ID: <limits@example.net>\r\n\
         {extra_headers}\r\n{body}\r\n"
    )
    .into_bytes()
}

fn encrypted(postfix: &Postfix, mailbox: &str, n: usize) -> Vec<String> {
    postfix
        .wait_for(mailbox, n, WAIT)
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
        .collect()
}

#[test]
fn recipients_beyond_the_limit_get_452_and_come_in_another_transaction() {
    let test = "limits: recipients";
    let ks = Keystore::new(None, "max_recipients = 3");
    let boxes = ["p1", "p2", "p3", "p4", "p5"];
    let Some(postfix) = Postfix::start(test, &ks.milter_spec(), &boxes) else {
        return;
    };
    let _milter = Milter::start(&ks);
    let all: Vec<String> = boxes.iter().map(|b| format!("{b}@example.org")).collect();
    let to: Vec<&str> = all.iter().map(String::as_str).collect();
    let r = smtp_send(
        postfix.smtp_port,
        SENDER,
        &to,
        &message("", "five recipients"),
    );
    let codes: Vec<u16> = r.rcpt.iter().map(|x| x.1).collect();
    assert_eq!(codes, [250, 250, 250, 452, 452], "{r:?}");
    for (_, _, text) in &r.rcpt[3..] {
        assert!(
            text.starts_with("4.5.3 sealpost: too many recipients (at most 3 per message)"),
            "{text}"
        );
    }
    assert_eq!(r.data.as_ref().map(|d| d.0), Some(250), "{r:?}");
    // The client sends the refused ones again, in a transaction of their own.
    let r = smtp_send(
        postfix.smtp_port,
        SENDER,
        &to[3..],
        &message("", "the rest"),
    );
    assert_eq!(r.accepted().len(), 2, "{r:?}");
    assert_eq!(r.data.as_ref().map(|d| d.0), Some(250), "{r:?}");
    for b in boxes {
        assert_eq!(postfix.wait_for(b, 1, WAIT).len(), 1, "{b}");
    }
}

#[test]
fn header_sections_over_the_limits_are_refused_with_552() {
    let test = "limits: headers";
    let ks = Keystore::new(None, "max_header_fields = 40\nmax_header_bytes = 4096");
    let Some(postfix) = Postfix::start(test, &ks.milter_spec(), &["ed"]) else {
        return;
    };
    let milter = Milter::start(&ks);

    // 60 fields (Postfix adds a few of its own: Received, Return-Path...).
    let many: String = (0..60)
        .map(|i| format!("X-Many-{i}: header-limit-marker\r\n"))
        .collect();
    let r = smtp_send(postfix.smtp_port, SENDER, &[ED], &message(&many, "many"));
    let (code, text) = r.data.clone().expect("DATA reached");
    assert_eq!(code, 552, "{r:?}");
    assert!(
        text.starts_with("5.3.4 sealpost: the message has more than 40 header fields"),
        "{text}"
    );

    // One folded field of about 6 KB.
    let long: String = (0..100)
        .map(|i| format!("\r\n\tfolded-line-{i:03}-header-limit-marker-xxxxxxxxxxxxxxxxxx"))
        .collect();
    let r = smtp_send(
        postfix.smtp_port,
        SENDER,
        &[ED],
        &message(&format!("X-Long: start{long}\r\n"), "long"),
    );
    let (code, text) = r.data.clone().expect("DATA reached");
    assert_eq!(code, 552, "{r:?}");
    assert!(
        text.starts_with("5.3.4 sealpost: the message header section is larger than 4096 bytes"),
        "{text}"
    );

    // Within the limits the same connection path encrypts as usual; nothing refused arrived.
    let r = smtp_send(postfix.smtp_port, SENDER, &[ED], &message("", "fine"));
    assert_eq!(r.data.as_ref().map(|d| d.0), Some(250), "{r:?}");
    let got = encrypted(&postfix, "ed", 1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        postfix.delivered("ed").len(),
        1,
        "a refused message was delivered"
    );
    assert!(got[0].contains("X-Sealpost: encrypted; fpr="), "{}", got[0]);
    // The refusals are logged without the header contents.
    let log = milter.stop();
    assert_eq!(
        log.matches("header section over the limit").count(),
        2,
        "{log}"
    );
    assert!(!log.contains("header-limit-marker"), "{log}");
}

#[test]
fn connections_beyond_the_limit_are_deferred_and_never_accepted_in_clear() {
    let test = "limits: connections";
    let ks = Keystore::new(None, "max_connections = 1\nconnection_timeout_secs = 60");
    // Postfix gives up on a milter that does not answer within 3 s and applies
    // milter_default_action = tempfail.
    let Some(postfix) = Postfix::start_with(
        test,
        Some(&ks.milter_spec()),
        &["ed"],
        "milter_command_timeout = 3s\n",
        "",
    ) else {
        return;
    };
    let _milter = Milter::start(&ks);
    // Another client holds the only slot (half a milter packet, then nothing).
    let mut hog = std::net::TcpStream::connect(("127.0.0.1", ks.milter_port)).unwrap();
    hog.write_all(&[0, 0, 0, 13, b'O']).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let r = smtp_send(postfix.smtp_port, SENDER, &[ED], &message("", "waits"));
    let refused: Vec<(u16, &str)> = std::iter::once((r.mail.0, r.mail.1.as_str()))
        .chain(r.rcpt.iter().map(|x| (x.1, x.2.as_str())))
        .chain(r.data.iter().map(|d| (d.0, d.1.as_str())))
        .filter(|(c, _)| *c != 250 && *c != 354)
        .collect();
    assert!(
        refused
            .iter()
            .any(|(c, t)| *c == 451 && t.starts_with("4.7.1")),
        "expected 451 4.7.1 while the milter is saturated: {r:?}"
    );
    assert!(
        r.data.as_ref().is_none_or(|d| d.0 != 250),
        "accepted while the milter was unreachable: {r:?}"
    );

    // The slot frees: the client's retry is accepted and delivered encrypted.
    drop(hog);
    std::thread::sleep(Duration::from_millis(300));
    let r = smtp_send(postfix.smtp_port, SENDER, &[ED], &message("", "retry"));
    assert_eq!(r.data.as_ref().map(|d| d.0), Some(250), "{r:?}");
    let got = encrypted(&postfix, "ed", 1);
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("X-Sealpost: encrypted; fpr="), "{}", got[0]);
}
