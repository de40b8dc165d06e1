//! Milter memory and latency through a real Postfix: peak RSS of the `sealpost milter`
//! process for 1, 10 and 50 MB messages to an OpenPGP mailbox and to an S/MIME mailbox (one
//! fresh process per message, so each peak is that message's), next to its idle RSS, and
//! the time from the end of DATA to the Maildir.
//! Needs root and Postfix (tests/run installs it). Run with `cargo bench --bench milter`.

#[path = "../tests/e2e/mod.rs"]
mod e2e;

use std::time::{Duration, Instant};

use e2e::{big_message, Keystore, Milter, ED, SENDER};

const SMIME: &str = "smime@example.org";
const MAILBOXES: &[&str] = &["ed", "sq", "rsa", "plain", "smime"];
use sealpost_test_support::postfix::Postfix;
use sealpost_test_support::smime::{make_cert, KeyType};

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn main() {
    // `cargo bench` passes --bench; sizes may follow as plain numbers. Under `cargo test`
    // (no --bench) the benchmark only proves it still runs, with one small message.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = if args.iter().any(|a| a == "--bench") {
            vec![1, 10, 50]
        } else {
            vec![1]
        };
    }
    let ks = Keystore::new(None, "");
    // An S/MIME mailbox: an RSA 3072 certificate as `openssl req -x509` makes it.
    let made = make_cert(ks.dir.path(), "smime", SMIME, KeyType::Rsa3072);
    let cert = made.cert;
    let imported = ks.sealpost(&["keys", "import", SMIME, cert.to_str().unwrap()]);
    assert!(imported.status.success(), "cannot import the certificate");
    let Some(pf) = Postfix::start("milter benchmark", &ks.milter_spec(), MAILBOXES) else {
        eprintln!("the milter benchmark needs root and Postfix");
        std::process::exit(1);
    };
    println!(
        "{:>8} {:>8} {:>14} {:>14} {:>12} {:>10}",
        "message", "format", "idle RSS MB", "peak RSS MB", "peak/size", "seconds"
    );
    for (i, mb) in sizes.iter().enumerate() {
        let raw = big_message(*mb);
        for (format, rcpt, mailbox) in [("OpenPGP", ED, "ed"), ("S/MIME", SMIME, "smime")] {
            let milter = Milter::start(&ks);
            let pid = milter.child.id();
            let idle = status_kib(pid, "VmRSS");
            let t = Instant::now();
            let r = pf.send(SENDER, &[rcpt], &raw);
            assert_eq!(r.data.map(|d| d.0), Some(250), "not accepted");
            pf.wait_for(mailbox, i + 1, Duration::from_secs(300));
            let secs = t.elapsed().as_secs_f64();
            let peak = status_kib(pid, "VmHWM");
            milter.stop();
            println!(
                "{:>5} MB {:>8} {:>14.1} {:>14.1} {:>12.2} {:>10.2}",
                mb,
                format,
                idle as f64 / 1024.0,
                peak as f64 / 1024.0,
                peak as f64 / 1024.0 / *mb as f64,
                secs
            );
        }
    }
}
