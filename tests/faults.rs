//! Faults under load through real Postfix. A relaying Postfix (the sending side, which queues
//! and retries like any MTA) feeds the Postfix that runs sealpost; `smtp-source` loads the
//! relay. Whatever breaks on the receiving side, every message must end up delivered exactly
//! once, encrypted, and none in plaintext. Also: a full spill directory and idle (slowloris)
//! milter connections. Needs root, Postfix and (for the PostgreSQL case)
//! the test server from tests/run.

mod e2e;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Keystore, Milter, ED, MAILBOXES, SENDER};
use sealpost_test_support::postfix::{smtp_send, Postfix};
use sealpost_test_support::{fresh_postgres, need_program, run_ok};

/// Messages per fault run: the 1,000-message load the fault tests are specified with.
const LOAD: usize = 1000;

/// The receiving Postfix (with sealpost) and a relay that forwards example.org to it.
fn pair(test: &str, ks: &Keystore) -> Option<(Postfix, Postfix)> {
    need_program(test, "smtp-source")?;
    let inbound = Postfix::start(test, &ks.milter_spec(), MAILBOXES)?;
    let relay = e2e::start_relay(test, inbound.smtp_port)?;
    Some((inbound, relay))
}

/// Starts `LOAD` messages to ed@example.org through the relay; returns when the relay has
/// accepted them all (the relay itself has no milter, so it accepts at once).
fn load(relay: &Postfix) {
    run_ok(
        Command::new("smtp-source")
            .args(["-s", "4", "-m", &LOAD.to_string(), "-l", "3000"])
            .args(["-f", SENDER, "-t", ED])
            .arg(format!("127.0.0.1:{}", relay.smtp_port)),
    );
}

/// Every message arrives once, and every one is encrypted.
fn all_delivered_once_encrypted(inbound: &Postfix, relay: &Postfix, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        relay.flush();
        if inbound.delivered("ed").len() >= LOAD && relay.queue_len() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {LOAD} delivered, {} still queued at the relay",
            inbound.delivered("ed").len(),
            relay.queue_len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Give a duplicate the chance to show up.
    std::thread::sleep(Duration::from_secs(2));
    let files = inbound.delivered("ed");
    let mut ids = HashSet::new();
    let mut plaintext = 0;
    for f in &files {
        let text = std::fs::read(f).unwrap();
        let head = String::from_utf8_lossy(&text[..text.len().min(8192)]).to_string();
        if !head.contains("X-Sealpost: encrypted; fpr=") {
            plaintext += 1;
        }
        // The relay's queue id in its Received field names the message it accepted.
        let relay_id = head
            .lines()
            .find(|l| l.contains("by relay.example.net") && l.contains(" id "))
            .and_then(|l| l.split(" id ").nth(1))
            .map(|s| s.split_whitespace().next().unwrap_or("").to_string());
        let id = relay_id.unwrap_or_else(|| panic!("{what}: no relay Received field:\n{head}"));
        assert!(
            ids.insert(id.clone()),
            "{what}: message {id} delivered twice"
        );
    }
    eprintln!(
        "{what}: {} sent, {} delivered, {} distinct, {plaintext} in plaintext",
        LOAD,
        files.len(),
        ids.len()
    );
    assert_eq!(plaintext, 0, "{what}: plaintext delivered to a key holder");
    assert_eq!(files.len(), LOAD, "{what}: delivered count");
    assert_eq!(ids.len(), LOAD, "{what}: each message once");
}

#[test]
fn milter_killed_mid_load_loses_and_duplicates_nothing() {
    let test = "faults: kill -9";
    let ks = Keystore::new(None, "");
    let Some((inbound, relay)) = pair(test, &ks) else {
        return;
    };
    let mut milter = Milter::start(&ks);
    load(&relay);
    // Let some messages through, then kill the milter without warning, twice.
    for _ in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let before = inbound.delivered("ed").len();
        while inbound.delivered("ed").len() < before + 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        milter.child.kill().unwrap();
        milter.child.wait().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        milter = Milter::start(&ks);
    }
    all_delivered_once_encrypted(&inbound, &relay, "kill -9");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgresql_stopped_mid_load_loses_nothing() {
    let test = "faults: PostgreSQL stopped";
    let Some(url) = fresh_postgres(test).await else {
        return;
    };
    tokio::task::spawn_blocking(move || {
        // A short cache lifetime, so lookups do reach the database during the outage.
        let ks = Keystore::new(Some(url.clone()), "cache_ttl_secs = 0");
        let Some((inbound, relay)) = pair(test, &ks) else {
            return;
        };
        let _milter = Milter::start(&ks);
        load(&relay);
        std::thread::sleep(Duration::from_secs(1));
        e2e::set_database_reachable(&url, false);
        std::thread::sleep(Duration::from_secs(4));
        e2e::set_database_reachable(&url, true);
        all_delivered_once_encrypted(&inbound, &relay, "PostgreSQL stopped");
    })
    .await
    .unwrap();
}

#[test]
fn a_full_spill_directory_tempfails_big_mail_and_small_mail_still_flows() {
    let test = "faults: spill directory full";
    let ks = Keystore::new(None, "");
    let spill = ks.dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&spill)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        sealpost_test_support::missing::<()>(test, "cannot mount a 1 MB tmpfs (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(spill.clone());
    let config = std::fs::read_to_string(&ks.config).unwrap().replace(
        "[milter]\n",
        &format!(
            "[milter]\nspill_threshold_bytes = 65536\nspill_dir = \"{}\"\n",
            spill.display()
        ),
    );
    std::fs::write(&ks.config, config).unwrap();
    let Some(inbound) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let _milter = Milter::start(&ks);

    // 3 MB cannot be spooled in a 1 MB directory: a temporary failure, nothing delivered.
    let big = e2e::big_message(3);
    let r = smtp_send(inbound.smtp_port, SENDER, &[ED], &big);
    let (code, text) = r.data.clone().expect("DATA reached");
    assert_eq!((code, &text[..5]), (451, "4.7.0"), "{r:?}");
    // A message that fits still goes through, encrypted.
    let small = e2e::big_message(0);
    let r = smtp_send(inbound.smtp_port, SENDER, &[ED], &small);
    assert_eq!(r.data.map(|d| d.0), Some(250));
    let files = inbound.wait_for("ed", 1, Duration::from_secs(30));
    assert_eq!(files.len(), 1, "the refused message was delivered");
    let text = std::fs::read(&files[0]).unwrap();
    assert!(String::from_utf8_lossy(&text).contains("X-Sealpost: encrypted; fpr="));
    // Nothing left behind in the spill directory (the files are unlinked at creation).
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0);
}

#[test]
fn idle_milter_connections_are_dropped_and_mail_flows_again() {
    let test = "faults: slowloris";
    let ks = Keystore::new(None, "max_connections = 4\nconnection_timeout_secs = 3");
    let Some(inbound) = Postfix::start(test, &ks.milter_spec(), MAILBOXES) else {
        return;
    };
    let _milter = Milter::start(&ks);
    // Four connections that send half a milter packet and then nothing.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", ks.milter_port)).unwrap();
        use std::io::Write;
        s.write_all(&[0, 0, 0, 13, b'O']).unwrap();
        idle.push(s);
    }
    let raw = e2e::big_message(0);
    // They hold every slot, so Postfix's connection waits in the listen queue until the idle
    // timeout frees a slot; then the message is processed as usual: late, never in clear.
    let t = Instant::now();
    let r = smtp_send(inbound.smtp_port, SENDER, &[ED], &raw);
    let waited = t.elapsed();
    assert_eq!(r.data.as_ref().map(|d| d.0), Some(250), "{r:?}");
    assert!(
        waited >= Duration::from_secs(2),
        "served after {waited:?}, before the idle connections timed out"
    );
    // The idle connections were closed by the milter.
    for mut s in idle {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            s.read(&mut buf).unwrap_or(0),
            0,
            "idle connection still open"
        );
    }
    let files = inbound.wait_for("ed", 1, Duration::from_secs(30));
    let text = std::fs::read(&files[0]).unwrap();
    assert!(String::from_utf8_lossy(&text).contains("X-Sealpost: encrypted; fpr="));
}
