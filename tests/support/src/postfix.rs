//! A private Postfix instance for end-to-end tests: its own config and queue directories,
//! loopback ports, virtual Maildir delivery for example.org, and the milter settings from
//! deploy/postfix/main.cf.snippet (loaded here so the docs and the tests cannot drift).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{missing, workspace_root};

pub struct Postfix {
    dir: tempfile::TempDir,
    pub config_dir: PathBuf,
    pub smtp_port: u16,
    pub maildir_base: PathBuf,
}

/// The reply to each SMTP command of one transaction.
#[derive(Debug)]
pub struct SmtpResult {
    /// Reply to MAIL FROM (the transaction stops there unless it is 250).
    pub mail: (u16, String),
    /// (recipient, reply code, reply text) for each RCPT TO.
    pub rcpt: Vec<(String, u16, String)>,
    /// Reply to the end of DATA, if DATA was reached.
    pub data: Option<(u16, String)>,
}

impl SmtpResult {
    pub fn accepted(&self) -> Vec<&str> {
        self.rcpt
            .iter()
            .filter(|r| r.1 / 100 == 2)
            .map(|r| r.0.as_str())
            .collect()
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on yet.
///
/// Ports come from below the kernel's ephemeral range (32768 and up on Linux), which the
/// outgoing connections of Postfix and the tests draw from: a port handed out here cannot
/// be taken by a client socket before the server binds it. A process-wide counter, started
/// at a random point, keeps parallel tests of one binary apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000; // up to 31999
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        rand::random::<u32>() % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

impl Postfix {
    /// Starts an instance whose milter is `milter` (e.g. `inet:127.0.0.1:12345`), delivering
    /// to Maildirs for the given local parts of example.org.
    pub fn start(test: &str, milter: &str, mailboxes: &[&str]) -> Option<Postfix> {
        Postfix::start_with(test, Some(milter), mailboxes, "", "")
    }

    /// Starts an instance with the milter settings from the deploy snippet pointing at
    /// `milter` (or no milter at all), plus `extra_main` lines for main.cf and
    /// `extra_master` services for master.cf (where `$CONFIG_DIR` names the instance's
    /// config directory).
    pub fn start_with(
        test: &str,
        milter: Option<&str>,
        mailboxes: &[&str],
        extra_main: &str,
        extra_master: &str,
    ) -> Option<Postfix> {
        if !Path::new("/usr/sbin/postfix").exists() {
            return missing(test, "Postfix is not installed (/usr/sbin/postfix)");
        }
        if unsafe_uid() != 0 {
            return missing(test, "a private Postfix instance needs root");
        }
        let dir = tempfile::Builder::new()
            .prefix("sealpost-postfix")
            .tempdir()
            .unwrap();
        let base = dir.path();
        std::fs::set_permissions(base, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let config_dir = base.join("etc");
        let queue = base.join("queue");
        let data = base.join("data");
        let maildir_base = base.join("mail");
        for d in [&config_dir, &queue, &data, &maildir_base] {
            std::fs::create_dir_all(d).unwrap();
        }
        chown(&data, "postfix");
        chown(&maildir_base, "nobody");
        let uid = id("-u", "nobody");
        let gid = id("-g", "nobody");

        let mut maps = String::new();
        for m in mailboxes {
            maps.push_str(&format!("{m}@example.org {m}/\n"));
        }
        std::fs::write(config_dir.join("vmailbox"), maps).unwrap();

        let smtp_port = free_port();
        let snippet =
            std::fs::read_to_string(workspace_root().join("deploy/postfix/main.cf.snippet"))
                .expect("deploy/postfix/main.cf.snippet");
        let snippet = match milter {
            Some(m) => snippet.replace("inet:127.0.0.1:10047", m),
            None => "# (no milter)".to_string(),
        };
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {queue}\n\
             data_directory = {data}\n\
             maillog_file = {base}/maillog\n\
             maillog_file_prefixes = {base}\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             myhostname = mx.example.net\n\
             mydestination =\n\
             mynetworks = 127.0.0.0/8\n\
             smtputf8_enable = yes\n\
             message_size_limit = 200000000\n\
             virtual_mailbox_limit = 0\n\
             virtual_mailbox_domains = example.org\n\
             virtual_mailbox_base = {mail}\n\
             virtual_mailbox_maps = texthash:{etc}/vmailbox\n\
             virtual_uid_maps = static:{uid}\n\
             virtual_gid_maps = static:{gid}\n\
             virtual_minimum_uid = 1\n\
             queue_run_delay = 1s\n\
             minimal_backoff_time = 1s\n\
             maximal_backoff_time = 2s\n\
             smtpd_error_sleep_time = 0\n\
             # The milter settings operators copy, from deploy/postfix/main.cf.snippet:\n\
             {snippet}\n",
            queue = queue.display(),
            data = data.display(),
            base = base.display(),
            mail = maildir_base.display(),
            etc = config_dir.display(),
        );
        // A parameter set twice makes every Postfix process warn at start-up, and postlogd
        // then blocks writing its own warning to the socket only it reads. So `extra_main`
        // replaces the lines it overrides instead of repeating them.
        let key = |l: &str| l.split('=').next().map(|k| k.trim().to_string());
        let overridden: Vec<String> = extra_main
            .lines()
            .filter(|l| l.contains('=') && !l.starts_with(char::is_whitespace))
            .filter_map(key)
            .collect();
        let main_cf: String = main_cf
            .lines()
            .filter(|l| {
                l.starts_with(char::is_whitespace)
                    || l.starts_with('#')
                    || !key(l).is_some_and(|k| overridden.contains(&k))
            })
            .chain(extra_main.lines())
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(config_dir.join("main.cf"), main_cf).unwrap();

        let master =
            std::fs::read_to_string("/etc/postfix/master.cf").expect("/etc/postfix/master.cf");
        let mut out = String::new();
        for line in master.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let is_service = !line.starts_with(' ')
                && !line.starts_with('\t')
                && !line.starts_with('#')
                && fields.len() >= 8;
            if is_service {
                let mut f: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
                if f[0] == "smtp" && f[1] == "inet" {
                    f[0] = format!("127.0.0.1:{smtp_port}");
                }
                // The queue lives outside the default chroot.
                f[4] = "n".into();
                out.push_str(&f.join(" "));
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        if !out.contains("postlogd") {
            out.push_str("postlog unix-dgram n - n - 1 postlogd\n");
        }
        out.push_str(&extra_master.replace("$CONFIG_DIR", &config_dir.display().to_string()));
        std::fs::write(config_dir.join("master.cf"), out).unwrap();

        let pf = Postfix {
            dir,
            config_dir,
            smtp_port,
            maildir_base,
        };
        let o = run(Command::new("postfix")
            .arg("-c")
            .arg(&pf.config_dir)
            .arg("start"));
        if !o.status.success() {
            panic!(
                "postfix start failed: {}{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                pf.log()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", smtp_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "postfix did not listen: {}",
                pf.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(pf)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Sends one message over SMTP; returns each reply.
    pub fn send(&self, from: &str, to: &[&str], message: &[u8]) -> SmtpResult {
        smtp_send(self.smtp_port, from, to, message)
    }

    /// Submits a message through the sendmail command (non-SMTP mail: pickup → cleanup).
    pub fn sendmail(&self, from: &str, to: &[&str], message: &[u8]) {
        let mut child = Command::new("/usr/sbin/sendmail")
            .arg("-C")
            .arg(&self.config_dir)
            .arg("-f")
            .arg(from)
            .arg("-i")
            .args(to)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(message).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "sendmail failed");
    }

    /// Asks Postfix to retry deferred mail now.
    pub fn flush(&self) {
        let _ = run(Command::new("postqueue")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("-f"));
    }

    /// Number of messages in the queue.
    pub fn queue_len(&self) -> usize {
        let o = run(Command::new("postqueue")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("-j"));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    /// The delivered message files of a mailbox (new/ and cur/), oldest first.
    pub fn delivered(&self, mailbox: &str) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir_base.join(mailbox).join(sub)) {
                files.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
    }

    /// Waits until the mailbox holds at least `n` messages.
    pub fn wait_for(&self, mailbox: &str, n: usize, timeout: Duration) -> Vec<PathBuf> {
        let deadline = Instant::now() + timeout;
        loop {
            let files = self.delivered(mailbox);
            if files.len() >= n {
                return files;
            }
            if Instant::now() > deadline {
                panic!(
                    "{mailbox}: {} of {n} messages delivered after {timeout:?}; queue {}\n{}",
                    files.len(),
                    self.queue_len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("stop")
            .output();
    }
}

fn unsafe_uid() -> u32 {
    String::from_utf8(run(Command::new("id").arg("-u")).stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn id(flag: &str, user: &str) -> u32 {
    String::from_utf8(run(Command::new("id").arg(flag).arg(user)).stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn chown(path: &Path, user: &str) {
    let o = run(Command::new("chown").arg(user).arg(path));
    assert!(o.status.success());
}

/// A minimal SMTP client that reports each recipient's reply (a full client library would
/// stop at the first refused recipient).
pub fn smtp_send(port: u16, from: &str, to: &[&str], message: &[u8]) -> SmtpResult {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to SMTP");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let read_reply = |r: &mut BufReader<TcpStream>| -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).expect("SMTP reply");
            assert!(line.len() >= 4, "short SMTP reply {line:?}");
            text.push_str(line[4..].trim_end());
            text.push(' ');
            if line.as_bytes()[3] == b' ' {
                return (line[..3].parse().unwrap(), text.trim_end().to_string());
            }
        }
    };
    let (c, t) = read_reply(&mut r);
    assert_eq!(c, 220, "{t}");
    w.write_all(b"EHLO client.example.net\r\n").unwrap();
    let (c, t) = read_reply(&mut r);
    assert_eq!(c, 250, "{t}");
    w.write_all(format!("MAIL FROM:<{from}> BODY=8BITMIME SMTPUTF8\r\n").as_bytes())
        .unwrap();
    let mail = read_reply(&mut r);
    if mail.0 != 250 {
        let _ = w.write_all(b"QUIT\r\n");
        return SmtpResult {
            mail,
            rcpt: Vec::new(),
            data: None,
        };
    }
    let mut rcpt = Vec::new();
    for addr in to {
        w.write_all(format!("RCPT TO:<{addr}>\r\n").as_bytes())
            .unwrap();
        let (c, t) = read_reply(&mut r);
        rcpt.push((addr.to_string(), c, t));
    }
    let mut data = None;
    if rcpt.iter().any(|x| x.1 / 100 == 2) {
        w.write_all(b"DATA\r\n").unwrap();
        let (c, t) = read_reply(&mut r);
        if c == 354 {
            w.write_all(&dot_stuff(message)).unwrap();
            w.write_all(b".\r\n").unwrap();
            data = Some(read_reply(&mut r));
        } else {
            data = Some((c, t));
        }
    }
    let _ = w.write_all(b"QUIT\r\n");
    SmtpResult { mail, rcpt, data }
}

/// CRLF line endings, a final line break, and leading dots doubled (RFC 5321 4.5.2).
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40 + 3);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_stuffing() {
        assert_eq!(
            super::dot_stuff(b"a\n.\n..x\nend"),
            b"a\r\n..\r\n...x\r\nend\r\n"
        );
        assert_eq!(super::dot_stuff(b".a\r\n"), b"..a\r\n");
    }
}
