//! Verifies HTTP Basic credentials by logging in to the mail server's IMAP service
//! (AUTHENTICATE PLAIN when offered, else LOGIN), over STARTTLS or implicit TLS, or in
//! clear on a loopback address only. Credentials go nowhere else and are never logged.

use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::{split_host_port, ImapAuthConfig, ImapTls};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// `Ok(true)` when the server accepts the login, `Ok(false)` when it refuses it, an error
/// when the server cannot be reached or speaks no IMAP.
pub async fn verify(cfg: &ImapAuthConfig, user: &str, password: &str) -> anyhow::Result<bool> {
    if user.chars().any(|c| c.is_control())
        || password
            .chars()
            .any(|c| c == '\0' || c == '\r' || c == '\n')
    {
        return Ok(false);
    }
    let timeout = Duration::from_secs(cfg.timeout_seconds.max(1));
    tokio::time::timeout(timeout, run(cfg, user, password))
        .await
        .context("the IMAP server did not answer in time")?
}

async fn tls_wrap(
    cfg: &ImapAuthConfig,
    host: &str,
    tcp: TcpStream,
) -> anyhow::Result<Box<dyn Stream>> {
    let mut b = native_tls::TlsConnector::builder();
    if !cfg.ca_file.is_empty() {
        let pem = std::fs::read(&cfg.ca_file)
            .with_context(|| format!("cannot read [auth.imap] ca_file {}", cfg.ca_file))?;
        b.add_root_certificate(native_tls::Certificate::from_pem(&pem)?);
    }
    let connector = tokio_native_tls::TlsConnector::from(b.build()?);
    let name = if cfg.tls_server_name.is_empty() {
        host
    } else {
        &cfg.tls_server_name
    };
    let s = connector
        .connect(name, tcp)
        .await
        .context("TLS handshake with the IMAP server failed")?;
    Ok(Box::new(s))
}

async fn read_line<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = r.read_line(&mut line).await?;
    if n == 0 {
        bail!("the IMAP server closed the connection");
    }
    if line.len() > 64 * 1024 {
        bail!("the IMAP server sent an over-long line");
    }
    Ok(line)
}

/// Reads until the tagged response for `tag`; returns it and the untagged lines before it.
async fn tagged<S: AsyncRead + Unpin>(
    r: &mut BufReader<S>,
    tag: &str,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut untagged = Vec::new();
    loop {
        let line = read_line(r).await?;
        if let Some(rest) = line.strip_prefix(tag).and_then(|l| l.strip_prefix(' ')) {
            return Ok((rest.trim_end().to_string(), untagged));
        }
        if line.starts_with('+') {
            bail!("unexpected continuation request from the IMAP server");
        }
        untagged.push(line);
    }
}

fn ok(resp: &str) -> bool {
    resp.len() >= 2 && resp[..2].eq_ignore_ascii_case("OK")
}

fn caps_of(lines: &[String], resp: &str) -> String {
    let mut all = resp.to_ascii_uppercase();
    for l in lines {
        all.push(' ');
        all.push_str(&l.to_ascii_uppercase());
    }
    all
}

async fn run(cfg: &ImapAuthConfig, user: &str, password: &str) -> anyhow::Result<bool> {
    let (host, port) = split_host_port(&cfg.server)?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to the IMAP server {}", cfg.server))?;
    let stream: Box<dyn Stream> = match cfg.tls {
        ImapTls::Implicit => tls_wrap(cfg, &host, tcp).await?,
        ImapTls::None => {
            if !crate::config::is_loopback_host(&host) {
                bail!("refusing to send a password in clear to a non-loopback IMAP server");
            }
            Box::new(tcp)
        }
        ImapTls::Starttls => {
            let mut r = BufReader::new(tcp);
            let greeting = read_line(&mut r).await?;
            if !greeting.starts_with("* OK") {
                bail!("unexpected IMAP greeting");
            }
            r.get_mut().write_all(b"s1 STARTTLS\r\n").await?;
            let (resp, _) = tagged(&mut r, "s1").await?;
            if !ok(&resp) {
                bail!("the IMAP server refused STARTTLS");
            }
            let tcp = r.into_inner();
            let s = tls_wrap(cfg, &host, tcp).await?;
            return login(s, false, user, password).await;
        }
    };
    login(stream, true, user, password).await
}

async fn login(
    stream: Box<dyn Stream>,
    greeting: bool,
    user: &str,
    password: &str,
) -> anyhow::Result<bool> {
    let mut r = BufReader::new(stream);
    if greeting {
        let g = read_line(&mut r).await?;
        if g.starts_with("* BYE") || !g.starts_with("* ") {
            bail!("the IMAP server refused the connection");
        }
    }
    r.get_mut().write_all(b"c1 CAPABILITY\r\n").await?;
    let (resp, lines) = tagged(&mut r, "c1").await?;
    let caps = caps_of(&lines, &resp);
    if caps.contains("LOGINDISABLED") && !caps.contains("AUTH=PLAIN") {
        bail!("the IMAP server disables logins on this connection (use TLS)");
    }
    let result = if caps.contains("AUTH=PLAIN") {
        let plain =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        if caps.contains("SASL-IR") {
            r.get_mut()
                .write_all(format!("a1 AUTHENTICATE PLAIN {plain}\r\n").as_bytes())
                .await?;
        } else {
            r.get_mut().write_all(b"a1 AUTHENTICATE PLAIN\r\n").await?;
            let cont = read_line(&mut r).await?;
            if !cont.starts_with('+') {
                bail!("the IMAP server did not accept AUTHENTICATE PLAIN");
            }
            r.get_mut()
                .write_all(format!("{plain}\r\n").as_bytes())
                .await?;
        }
        tagged(&mut r, "a1").await?.0
    } else {
        // LOGIN with literals, so no quoting rules apply to the password.
        r.get_mut()
            .write_all(format!("a1 LOGIN {{{}+}}\r\n", user.len()).as_bytes())
            .await?;
        r.get_mut()
            .write_all(format!("{user} {{{}+}}\r\n", password.len()).as_bytes())
            .await?;
        r.get_mut().write_all(password.as_bytes()).await?;
        r.get_mut().write_all(b"\r\n").await?;
        tagged(&mut r, "a1").await?.0
    };
    let accepted = ok(&result);
    let _ = r.get_mut().write_all(b"z1 LOGOUT\r\n").await;
    if !accepted {
        let upper = result.to_ascii_uppercase();
        if upper.starts_with("BAD") || upper.contains("[UNAVAILABLE]") {
            bail!("the IMAP server could not process the login");
        }
    }
    Ok(accepted)
}
