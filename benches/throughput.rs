//! Throughput through a real Postfix on loopback, measured with Postfix's own `smtp-source`
//! load generator: messages per second from the first SMTP connection until the last
//! message is in the Maildir, for
//!   (a) Postfix alone,
//!   (b) Postfix with a pass-through milter (an indymilter that takes the same events as
//!       sealpost and accepts everything),
//!   (c) Postfix with sealpost,
//!   (d) Postfix with a Zeyple-style content filter: a Python pipe that runs `gpg --encrypt`
//!       per message and re-injects over SMTP, the way Zeyple and gpgit work.
//! Targets: c ≥ 0.9 × b and c ≥ 10 × d. Needs root, Postfix, gpg and python3.
//! Run with `cargo bench --bench throughput`; under `cargo test` it runs one small round.

#[path = "../tests/e2e/mod.rs"]
mod e2e;

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Keystore, Milter, MAILBOXES, SENDER};
use sealpost_test_support::fixture;
use sealpost_test_support::postfix::{free_port, Postfix};

/// Starts an indymilter that accepts everything and changes nothing, on its own thread.
fn pass_through_milter() -> u16 {
    let port = free_port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            // It asks for the same events as sealpost and answers Continue to each, so
            // Postfix does the same protocol work; only the encryption is missing.
            use indymilter::Status;
            let callbacks: indymilter::Callbacks<()> = indymilter::Callbacks::new()
                .on_negotiate(|cx, _, _| {
                    // sealpost's negotiation: every event, a reply to each.
                    cx.requested_actions = indymilter::Actions::ADD_HEADER
                        | indymilter::Actions::CHANGE_HEADER
                        | indymilter::Actions::REPLACE_BODY;
                    cx.requested_opts = indymilter::ProtoOpts::empty();
                    Box::pin(async { Status::Continue })
                })
                .on_connect(|_, _, _| Box::pin(async { Status::Continue }))
                .on_mail(|_, _| Box::pin(async { Status::Continue }))
                .on_rcpt(|_, _| Box::pin(async { Status::Continue }))
                .on_header(|_, _, _| Box::pin(async { Status::Continue }))
                .on_eoh(|_| Box::pin(async { Status::Continue }))
                .on_body(|_, _| Box::pin(async { Status::Continue }))
                .on_eom(|_| Box::pin(async { Status::Continue }))
                .on_abort(|_| Box::pin(async { Status::Continue }));
            // The same socket setting as sealpost's listener, so (b) vs (c) compares the
            // work done per message, not the TCP options.
            indymilter::run(
                sealpost_milter::service::NoDelayListener(listener),
                callbacks,
                indymilter::Config::default(),
                std::future::pending::<()>(),
            )
            .await
            .unwrap();
        });
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "pass-through milter did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    port
}

/// The Zeyple-style filter: Python reads the message from the pipe, encrypts the body
/// with one `gpg` process, and sends the result back to Postfix over SMTP.
const ZEYPLE: &str = r#"#!/usr/bin/python3
import smtplib, subprocess, sys
gnupghome, port, sender, recipients = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
raw = sys.stdin.buffer.read()
head, sep, body = raw.partition(b"\n\n")
enc = subprocess.run(
    ["gpg", "--homedir", gnupghome, "--batch", "--no-tty", "--quiet", "--trust-model", "always",
     "--armor", "--encrypt"] + [a for r in recipients for a in ("-r", r)],
    input=body, capture_output=True, check=True).stdout
with smtplib.SMTP("127.0.0.1", port) as s:
    s.sendmail(sender, recipients, head + b"\n\n" + enc)
"#;

struct Case {
    label: &'static str,
    msgs_per_sec: f64,
    mb_per_sec: f64,
}

/// Sends `count` messages of `size` bytes to ed@example.org with smtp-source and waits
/// until all are delivered.
fn measure(pf: &Postfix, size: usize, count: usize) -> (f64, f64) {
    let t = Instant::now();
    sealpost_test_support::run_ok(
        Command::new("smtp-source")
            .args(["-s", "4", "-m", &count.to_string(), "-l", &size.to_string()])
            .args(["-f", SENDER, "-t", "ed@example.org"])
            .arg(format!("127.0.0.1:{}", pf.smtp_port)),
    );
    pf.wait_for("ed", count, Duration::from_secs(900));
    let secs = t.elapsed().as_secs_f64();
    (count as f64 / secs, (count * size) as f64 / secs / 1e6)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // BENCH_SIZE_KB runs one size only (e.g. while profiling).
    let only: Option<usize> = std::env::var("BENCH_SIZE_KB")
        .ok()
        .and_then(|v| v.parse().ok());
    let rounds: Vec<(usize, usize)> = if !full {
        vec![(20_000, 10)]
    } else {
        // Enough messages that each setup runs for seconds, not Postfix's queue-manager
        // wake-ups; the slow content filter (d) gets a quarter of them.
        [(20_000, 2000), (1_000_000, 120)]
            .into_iter()
            .filter(|(size, _)| only.is_none_or(|kb| kb * 1000 == *size))
            .collect()
    };
    let test = "throughput benchmark";
    // The production default cache lifetime, not the tests' short one.
    let ks = Keystore::new(None, "cache_ttl_secs = 30");
    let _sealpost = Milter::start(&ks);
    let pass = pass_through_milter();

    // gpg keyring for the filter, owned by the user the pipe runs as.
    let work = tempfile::tempdir().unwrap();
    let gnupg = work.path().join("gnupg");
    std::fs::create_dir(&gnupg).unwrap();
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let script = work.path().join("zeyple.py");
    std::fs::write(&script, ZEYPLE).unwrap();
    let status = Command::new("gpg")
        .arg("--homedir")
        .arg(&gnupg)
        .args(["--batch", "--quiet", "--import"])
        .arg(fixture("keys/gpg-ed25519.asc"))
        .status()
        .unwrap();
    assert!(status.success());
    for p in [work.path(), &gnupg, &script] {
        let _ = Command::new("chown")
            .arg("-R")
            .arg("nobody")
            .arg(p)
            .status();
    }
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    chmod(work.path(), 0o755);
    chmod(&gnupg, 0o700);
    chmod(&script, 0o755);

    println!(
        "{:>8} {:<44} {:>9} {:>9} {:>8} {:>8}",
        "size", "setup", "msgs/s", "MB/s", "vs (b)", "vs (d)"
    );
    for &(size, count) in &rounds {
        let mut cases = Vec::new();
        let setups: [(&str, Option<String>, String, String); 4] = [
            ("(a) Postfix alone", None, String::new(), String::new()),
            (
                "(b) Postfix + pass-through milter",
                Some(format!("inet:127.0.0.1:{pass}")),
                String::new(),
                String::new(),
            ),
            (
                "(c) Postfix + sealpost milter",
                Some(ks.milter_spec()),
                String::new(),
                String::new(),
            ),
            {
                let reinject = free_port();
                (
                    "(d) Postfix + Zeyple-style gpg content filter",
                    None,
                    "content_filter = zeyple:dummy\nzeyple_destination_recipient_limit = 1\n"
                        .to_string(),
                    format!(
                        "zeyple unix - n n - 10 pipe\n  user=nobody argv={script} {gnupg} \
                         {reinject} ${{sender}} ${{recipient}}\n\
                         127.0.0.1:{reinject} inet n - n - 10 smtpd\n  \
                         -o content_filter=\n  -o smtpd_milters=\n",
                        script = script.display(),
                        gnupg = gnupg.display(),
                    ),
                )
            },
        ];
        for (label, milter, main, master) in setups {
            let Some(pf) = Postfix::start_with(test, milter.as_deref(), MAILBOXES, &main, &master)
            else {
                eprintln!("the throughput benchmark needs root and Postfix");
                std::process::exit(1);
            };
            let n = if label.starts_with("(d)") {
                (count / 4).max(1)
            } else {
                count
            };
            let (mps, mbps) = measure(&pf, size, n);
            cases.push(Case {
                label,
                msgs_per_sec: mps,
                mb_per_sec: mbps,
            });
        }
        let (b, d) = (cases[1].msgs_per_sec, cases[3].msgs_per_sec);
        for c in &cases {
            println!(
                "{:>5} KB {:<44} {:>9.1} {:>9.2} {:>7.2}x {:>7.1}x",
                size / 1000,
                c.label,
                c.msgs_per_sec,
                c.mb_per_sec,
                c.msgs_per_sec / b,
                c.msgs_per_sec / d
            );
        }
    }
}
