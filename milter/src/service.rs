//! The milter: decides per recipient at RCPT, streams the body into the encryptor, and at
//! end of message replaces headers and body.
//!
//! One transaction carries one treatment. The first accepted recipient fixes it; a later
//! recipient needing another treatment gets `452 4.5.3`, which makes the SMTP client send it
//! in a separate transaction (RFC 5321 section 4.5.3.1.10). Non-SMTP mail (sendmail/pickup)
//! cannot be split: there, recipients with keys and without share one message encrypted to
//! every key holder, so nothing reaches an encryption-enabled mailbox in clear.

use std::ffi::CString;
use std::future::Future;
use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::sync::watch;

use bytes::Bytes;
use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, MacroStage, NegotiateContext,
    ProtoOpts, SetErrorReply, SocketInfo, Status,
};
use sealpost_keystore::recipient::RecipientKeys;
use sealpost_keystore::{Address, Keystore};
use tracing::{debug, info, warn};

use crate::config::{MilterConfig, Mixed, OnError};
use crate::lookup::{RecipientCache, Treatment};
use crate::metrics::Metrics;
use crate::transform::{
    Decision, HeaderEdit, MessageEncryptor, Outcome, Recipients, TransformOptions, TRACE_HEADER,
};

/// What every connection shares.
struct Shared {
    cache: Arc<RecipientCache>,
    metrics: Arc<Metrics>,
    config: watch::Receiver<Arc<MilterConfig>>,
}

impl Shared {
    /// The settings now in force; a reload (SIGHUP) applies to the next message.
    fn config(&self) -> Arc<MilterConfig> {
        Arc::clone(&self.config.borrow())
    }
}

/// The treatment fixed for a transaction.
#[derive(Clone, Debug)]
enum Class {
    Plain(&'static str),
    /// Keys of one format (OpenPGP or S/MIME), sorted by id, each once.
    Encrypt {
        keys: RecipientKeys,
        protect_subject: Option<bool>,
    },
}

fn same_keys(a: &RecipientKeys, b: &RecipientKeys) -> bool {
    a.format() == b.format() && a.ids() == b.ids()
}

#[derive(Default)]
struct Session {
    /// Mail injected by sendmail/pickup rather than received over SMTP.
    non_smtp: bool,
    txn: Txn,
}

#[derive(Default)]
struct Txn {
    class: Option<Class>,
    /// Recipients of another class were merged in (non-SMTP mail cannot be split).
    merged_plain: bool,
    headers: Vec<(String, Vec<u8>)>,
    encryptor: Option<MessageEncryptor>,
    /// Set when encryption failed mid-stream; the message is refused at EOM.
    failed: Option<String>,
    started: Option<Instant>,
    body_bytes: u64,
    /// Recipients accepted so far.
    recipients: usize,
    /// Size of the header section so far, counted as name + ": " + value + CRLF.
    header_bytes: usize,
}

/// A listener on the configured address: `HOST:PORT` or `unix:/path`.
pub type MilterListener = indymilter::EitherListener<NoDelayListener, tokio::net::UnixListener>;

/// A TCP listener whose connections send small writes at once (TCP_NODELAY). The milter
/// protocol is a chain of small request/reply packets; with Nagle's algorithm a reply
/// written in two parts waits for the peer's delayed ACK, about 40 ms per message.
#[derive(Debug)]
pub struct NoDelayListener(pub tokio::net::TcpListener);

impl indymilter::Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;

    fn poll_accept(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<Self::Io>> {
        self.0.poll_accept(cx).map(|r| {
            let (stream, _) = r?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}

/// Binds `listen`; a unix socket gets permissions `socket_mode`.
pub async fn bind(listen: &str, socket_mode: u32) -> std::io::Result<MilterListener> {
    use indymilter::EitherListener;
    if let Some(path) = listen.strip_prefix("unix:") {
        // A socket file left by a previous run would make bind fail.
        if std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            std::fs::remove_file(path)?;
        }
        let listener = tokio::net::UnixListener::bind(path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode))?;
        Ok(EitherListener::Unix(listener))
    } else {
        Ok(EitherListener::Tcp(NoDelayListener(
            tokio::net::TcpListener::bind(listen).await?,
        )))
    }
}

/// Serves milter connections until `shutdown` completes.
///
/// `settings` may change while serving (a reload): mixed-recipient handling, the error
/// policy, subject protection, compression and spilling apply from the next message on.
/// The listener, the connection limits and the cache lifetime are fixed at start.
pub async fn run(
    listener: impl indymilter::Listener,
    keystore: Keystore,
    settings: watch::Receiver<Arc<MilterConfig>>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = Arc::clone(&settings.borrow());
    let cache = Arc::new(RecipientCache::new(
        keystore,
        Duration::from_secs(config.cache_ttl_secs),
        Arc::clone(&metrics),
    ));
    let invalidation = cache.spawn_invalidation();
    let milter_config = indymilter::Config {
        max_connections: config.max_connections.max(1),
        actions: Actions::ADD_HEADER | Actions::CHANGE_HEADER | Actions::REPLACE_BODY,
        connection_timeout: Duration::from_secs(config.connection_timeout_secs.max(1)),
    };
    let shared = Arc::new(Shared {
        cache,
        metrics,
        config: settings,
    });
    let result = indymilter::run(listener, callbacks(shared), milter_config, shutdown).await;
    if let Some(task) = invalidation {
        task.abort();
    }
    result
}

fn callbacks(shared: Arc<Shared>) -> Callbacks<Session> {
    let s_rcpt = Arc::clone(&shared);
    let s_eoh = Arc::clone(&shared);
    let s_header = Arc::clone(&shared);
    let s_eom = Arc::clone(&shared);
    Callbacks::new()
        .on_negotiate(|cx, _, _| Box::pin(negotiate(cx)))
        .on_connect(|cx, host, socket| Box::pin(connect(cx, host, socket)))
        .on_mail(|cx, _| Box::pin(mail(cx)))
        .on_rcpt(move |cx, args| Box::pin(rcpt(Arc::clone(&s_rcpt), cx, args)))
        .on_header(move |cx, name, value| Box::pin(header(Arc::clone(&s_header), cx, name, value)))
        .on_eoh(move |cx| Box::pin(eoh(Arc::clone(&s_eoh), cx)))
        .on_body(|cx, chunk| Box::pin(body(cx, chunk)))
        .on_eom(move |cx| Box::pin(eom(Arc::clone(&s_eom), cx)))
        .on_abort(|cx| Box::pin(abort(cx)))
}

async fn negotiate(cx: &mut NegotiateContext<Session>) -> Status {
    cx.requested_actions = Actions::ADD_HEADER | Actions::CHANGE_HEADER | Actions::REPLACE_BODY;
    // Tell Postfix which recipients it rejected too, so a transaction is never judged by
    // recipients that will not receive the message.
    cx.requested_opts = ProtoOpts::empty();
    // The queue id for logs.
    for stage in [MacroStage::Eoh, MacroStage::Eom] {
        cx.requested_macros
            .insert(stage, CString::new("i").expect("no NUL"));
    }
    Status::Continue
}

async fn connect(cx: &mut Context<Session>, host: CString, socket: SocketInfo) -> Status {
    // Postfix's cleanup server announces non-SMTP mail (sendmail, pickup) with a made-up
    // connection: host "localhost", address 127.0.0.1, port 0. A real TCP client never
    // has port 0, so an SMTP client on loopback is not mistaken for it.
    let non_smtp = host.as_bytes() == b"localhost"
        && matches!(&socket, SocketInfo::Inet(a) if a.port() == 0 && a.ip().is_loopback());
    debug!(host = %host.to_string_lossy(), ?socket, non_smtp, "milter connection");
    cx.data = Some(Session {
        non_smtp,
        txn: Txn::default(),
    });
    Status::Continue
}

async fn mail(cx: &mut Context<Session>) -> Status {
    session(&mut cx.data).txn = Txn::default();
    Status::Continue
}

async fn abort(cx: &mut Context<Session>) -> Status {
    session(&mut cx.data).txn = Txn::default();
    Status::Continue
}

fn session(data: &mut Option<Session>) -> &mut Session {
    data.get_or_insert_with(Session::default)
}

fn queue_id(macros: &indymilter::Macros) -> String {
    macros
        .get(c"i")
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_else(|| "-".into())
}

fn reply<C: SetErrorReply>(reply: &mut C, code: &str, xcode: &str, text: &str) {
    if let Err(e) = reply.set_error_reply(code, Some(xcode), [text]) {
        warn!(error = %e, "cannot set SMTP reply");
    }
}

async fn rcpt(shared: Arc<Shared>, cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    let max = shared.config().max_recipients;
    let s = session(&mut cx.data);
    // Non-SMTP mail cannot be split, and its recipients come from local users: no limit.
    if !s.non_smtp && s.txn.recipients >= max {
        shared.metrics.recipient("limit");
        reply(
            &mut cx.reply,
            "452",
            "4.5.3",
            &format!("sealpost: too many recipients (at most {max} per message); send the others in another transaction"),
        );
        return Status::Tempfail;
    }
    let raw = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let treatment = match Address::parse(&raw) {
        // A recipient we cannot parse has no account here.
        Err(_) => Treatment::Plain {
            reason: "no-account",
        },
        Ok(addr) => match shared.cache.lookup(&addr).await {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "recipient key lookup failed");
                shared.metrics.recipient("tempfailed");
                let (code, x) = error_codes(shared.config().on_error, true);
                reply(
                    &mut cx.reply,
                    code,
                    x,
                    "sealpost: recipient key lookup failed; try again later",
                );
                return status_for(shared.config().on_error);
            }
        },
    };
    let class = match treatment {
        Treatment::Plain { reason } => Class::Plain(reason),
        Treatment::Encrypt {
            keys,
            protect_subject,
        } => Class::Encrypt {
            keys: keys.as_ref().clone(),
            protect_subject,
        },
        Treatment::Unusable { .. } => {
            shared.metrics.recipient("tempfailed");
            reply(
                &mut cx.reply,
                "450",
                "4.7.1",
                "sealpost: the recipient's encryption keys are expired or revoked; mail is held until the owner registers a new key",
            );
            return Status::Tempfail;
        }
    };
    let mixed = shared.config().mixed;
    let s = session(&mut cx.data);
    let non_smtp = s.non_smtp;
    let txn = &mut s.txn;
    let merged = match txn.class.take() {
        None => Ok(class),
        Some(current) => merge(current, class, mixed, non_smtp, &mut txn.merged_plain),
    };
    match merged {
        Ok(c) => {
            shared.metrics.recipient(match &c {
                Class::Plain(_) => "plaintext",
                Class::Encrypt { .. } => "encrypt",
            });
            txn.class = Some(c);
            txn.recipients += 1;
            Status::Continue
        }
        Err(current) if non_smtp => {
            // Locally submitted mail cannot be split, and one message cannot serve OpenPGP
            // and S/MIME recipients at once: refuse it whole, so the local sender gets it
            // back rather than anyone getting it unreadable or in clear.
            txn.class = Some(current);
            shared.metrics.recipient("rejected");
            reply(
                &mut cx.reply,
                "550",
                "5.7.1",
                "sealpost: recipients need OpenPGP and S/MIME encryption; send to them in separate messages",
            );
            Status::Reject
        }
        Err(current) => {
            txn.class = Some(current);
            shared.metrics.recipient("split");
            reply(
                &mut cx.reply,
                "452",
                "4.5.3",
                "sealpost: this recipient's mail is encrypted differently; it will be accepted in a separate transaction",
            );
            Status::Tempfail
        }
    }
}

/// Combines the transaction's class with a new recipient's. `Err` keeps the current class
/// and means the recipient must come in another transaction.
fn merge(
    current: Class,
    new: Class,
    mixed: Mixed,
    non_smtp: bool,
    merged_plain: &mut bool,
) -> Result<Class, Class> {
    match (current, new) {
        (Class::Plain(r), Class::Plain(_)) => Ok(Class::Plain(r)),
        (
            Class::Encrypt {
                keys: a,
                protect_subject: pa,
            },
            Class::Encrypt {
                keys: b,
                protect_subject: pb,
            },
        ) => {
            let current = |keys| Class::Encrypt {
                keys,
                protect_subject: pa,
            };
            if same_keys(&a, &b) {
                Ok(Class::Encrypt {
                    keys: a,
                    protect_subject: pa.or(pb),
                })
            } else if mixed == Mixed::Union || non_smtp {
                // One message cannot be both PGP/MIME and S/MIME.
                match a.union(&b) {
                    Some(keys) => Ok(Class::Encrypt {
                        keys,
                        protect_subject: join_protect(pa, pb),
                    }),
                    None => Err(current(a)),
                }
            } else {
                Err(current(a))
            }
        }
        (c @ Class::Encrypt { .. }, Class::Plain(_)) if non_smtp => {
            *merged_plain = true;
            Ok(c)
        }
        (Class::Plain(_), c @ Class::Encrypt { .. }) if non_smtp => {
            *merged_plain = true;
            Ok(c)
        }
        (current, _) => Err(current),
    }
}

/// Either recipient asking for a hidden subject hides it for the shared copy.
fn join_protect(pa: Option<bool>, pb: Option<bool>) -> Option<bool> {
    match (pa, pb) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (x, y) => x.or(y),
    }
}

async fn header(
    shared: Arc<Shared>,
    cx: &mut Context<Session>,
    name: CString,
    value: CString,
) -> Status {
    let cfg = shared.config();
    let txn = &mut session(&mut cx.data).txn;
    txn.header_bytes += name.as_bytes().len() + value.as_bytes().len() + 4;
    let refusal = if txn.headers.len() >= cfg.max_header_fields {
        Some(format!(
            "sealpost: the message has more than {} header fields",
            cfg.max_header_fields
        ))
    } else if txn.header_bytes > cfg.max_header_bytes {
        Some(format!(
            "sealpost: the message header section is larger than {} bytes",
            cfg.max_header_bytes
        ))
    } else {
        None
    };
    if let Some(text) = refusal {
        let qid = queue_id(&cx.macros);
        warn!(queue_id = %qid, fields = txn.headers.len() + 1, bytes = txn.header_bytes, "header section over the limit; message refused");
        // The header section is held in memory until the end of headers: stop here.
        txn.headers = Vec::new();
        shared.metrics.message("rejected");
        reply(&mut cx.reply, "552", "5.3.4", &text);
        return Status::Reject;
    }
    txn.headers
        .push((name.to_string_lossy().into_owned(), value.into_bytes()));
    Status::Continue
}

/// Up to this many recipient keys, setting up a message's encryption runs inline.
const SMALL_KEY_COUNT: usize = 4;

/// Runs `work` right here when it is small (in memory, no file I/O, well under a
/// millisecond), else on the blocking pool. A round trip to the pool costs two thread
/// wake-ups, more than encrypting a small message, and on a busy MTA host those wake-ups
/// are what limits throughput.
async fn run_work<T: Send + 'static>(
    small: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, &'static str> {
    if small {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| "the blocking task panicked or was cancelled")
    }
}

async fn eoh(shared: Arc<Shared>, cx: &mut Context<Session>) -> Status {
    let qid = queue_id(&cx.macros);
    let txn = &mut session(&mut cx.data).txn;
    let Some(Class::Encrypt {
        keys,
        protect_subject,
    }) = txn.class.clone()
    else {
        return Status::Continue;
    };
    txn.started = Some(Instant::now());
    let cfg = shared.config();
    let options = TransformOptions {
        protect_subject: protect_subject.unwrap_or(cfg.protect_subject),
        compress: cfg.compress,
        spill_threshold: cfg.spill_threshold_bytes,
        spill_dir: cfg.spill_dir.clone(),
    };
    let smime = cfg.smime;
    let headers = std::mem::take(&mut txn.headers);
    // Building the encryptor does public-key work, one PKESK or RecipientInfo per key: a
    // few keys take well under a millisecond, many go to the blocking pool.
    let built = run_work(keys.len() <= SMALL_KEY_COUNT, move || {
        let now = std::time::SystemTime::now();
        let recipients = Recipients::for_keys(&keys, now, smime)?;
        let enc = MessageEncryptor::new(
            headers.iter().map(|(n, v)| (n.clone(), v.clone())),
            &recipients,
            &options,
        )?;
        Ok::<_, crate::transform::TransformError>((enc, headers))
    })
    .await;
    match built {
        Ok(Ok((enc, headers))) => {
            txn.headers = headers;
            txn.encryptor = Some(enc);
        }
        Ok(Err(e)) => {
            warn!(queue_id = %qid, error = %e, "cannot start encryption");
            txn.failed = Some(e.to_string());
        }
        Err(e) => {
            warn!(queue_id = %qid, error = e, "encryption task failed");
            txn.failed = Some("internal error".into());
        }
    }
    Status::Continue
}

async fn body(cx: &mut Context<Session>, chunk: Bytes) -> Status {
    let txn = &mut session(&mut cx.data).txn;
    txn.body_bytes += chunk.len() as u64;
    if txn.failed.is_some() {
        return Status::Continue;
    }
    let Some(mut enc) = txn.encryptor.take() else {
        return Status::Continue;
    };
    let small = enc.stays_in_memory(chunk.len());
    let done = run_work(small, move || {
        let r = enc.write_body(&chunk);
        (enc, r)
    })
    .await;
    match done {
        Ok((enc, Ok(()))) => {
            // Already-encrypted mail needs no more body.
            let skip = matches!(enc.decision(), Decision::Skip(_));
            txn.encryptor = Some(enc);
            if skip {
                return Status::Skip;
            }
        }
        Ok((_, Err(e))) => txn.failed = Some(e.to_string()),
        Err(_) => txn.failed = Some("internal error".into()),
    }
    Status::Continue
}

async fn eom(shared: Arc<Shared>, cx: &mut EomContext<Session>) -> Status {
    let qid = queue_id(&cx.macros);
    let txn = std::mem::take(&mut session(&mut cx.data).txn);
    let metrics = &shared.metrics;
    let class = txn.class.clone();
    match class {
        None | Some(Class::Plain(_)) => {
            let reason = match class {
                Some(Class::Plain(r)) => r,
                _ => "no-recipient",
            };
            // A trace header arriving from outside must not vouch for this message.
            let existing = txn
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(TRACE_HEADER))
                .count();
            for i in (1..=existing).rev() {
                if let Err(e) = cx
                    .actions
                    .change_header(TRACE_HEADER, i as i32, None::<CString>)
                    .await
                {
                    return action_failed(&shared, cx, &qid, e);
                }
            }
            if let Err(e) = cx
                .actions
                .add_header(TRACE_HEADER, format!("plaintext; reason={reason}"))
                .await
            {
                return action_failed(&shared, cx, &qid, e);
            }
            metrics.message("plaintext");
            info!(queue_id = %qid, outcome = "plaintext", reason, "message passed");
            Status::Continue
        }
        Some(Class::Encrypt { .. }) => {
            if let Some(why) = txn.failed {
                return encryption_failed(&shared, cx, &qid, &why);
            }
            let Some(enc) = txn.encryptor else {
                return encryption_failed(&shared, cx, &qid, "the encryptor was not started");
            };
            let small = enc.stays_in_memory(0);
            let finished = run_work(small, move || enc.finish()).await;
            let done = match finished {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => return encryption_failed(&shared, cx, &qid, &e.to_string()),
                Err(_) => return encryption_failed(&shared, cx, &qid, "internal error"),
            };
            for edit in &done.header_edits {
                let r = match edit {
                    HeaderEdit::Change { name, index, value } => {
                        cx.actions
                            .change_header(name.as_str(), *index as i32, Some(value.as_str()))
                            .await
                    }
                    HeaderEdit::Delete { name, index } => {
                        cx.actions
                            .change_header(name.as_str(), *index as i32, None::<CString>)
                            .await
                    }
                    HeaderEdit::Add { name, value } => {
                        cx.actions.add_header(name.as_str(), value.as_str()).await
                    }
                };
                if let Err(e) = r {
                    return action_failed(&shared, cx, &qid, e);
                }
            }
            let mut bytes_out = 0u64;
            if let Some(spool) = done.body {
                let mut reader = match spool.into_reader() {
                    Ok(r) => r,
                    Err(e) => return encryption_failed(&shared, cx, &qid, &e.to_string()),
                };
                loop {
                    let small = reader.in_memory();
                    let (r, chunk) = match run_work(small, move || {
                        let c = reader.next_chunk();
                        (reader, c)
                    })
                    .await
                    {
                        Ok(x) => x,
                        Err(_) => return encryption_failed(&shared, cx, &qid, "internal error"),
                    };
                    reader = r;
                    match chunk {
                        Ok(Some(c)) => {
                            bytes_out += c.len() as u64;
                            if let Err(e) = cx.actions.replace_body(&c).await {
                                return action_failed(&shared, cx, &qid, e);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return encryption_failed(&shared, cx, &qid, &e.to_string()),
                    }
                }
            }
            if let Some(t) = txn.started {
                metrics.transform_time(t.elapsed().as_secs_f64());
            }
            metrics.bytes(done.bytes_in, bytes_out);
            match done.outcome {
                Outcome::Encrypted { fingerprints: f } => {
                    metrics.message("encrypted");
                    info!(
                        queue_id = %qid,
                        outcome = "encrypted",
                        keys = %f.join(","),
                        shared_with_plain_recipients = txn.merged_plain,
                        bytes_in = done.bytes_in,
                        bytes_out,
                        "message encrypted"
                    );
                }
                Outcome::Skipped(reason) => {
                    metrics.message("skipped");
                    info!(queue_id = %qid, outcome = "skipped", reason = reason.as_str(), "message already encrypted");
                }
            }
            Status::Continue
        }
    }
}

fn error_codes(on_error: OnError, lookup: bool) -> (&'static str, &'static str) {
    match (on_error, lookup) {
        (OnError::Tempfail, true) => ("451", "4.7.1"),
        (OnError::Tempfail, false) => ("451", "4.7.0"),
        (OnError::Reject, true) => ("550", "5.7.1"),
        (OnError::Reject, false) => ("554", "5.7.0"),
    }
}

fn status_for(on_error: OnError) -> Status {
    match on_error {
        OnError::Tempfail => Status::Tempfail,
        OnError::Reject => Status::Reject,
    }
}

fn encryption_failed(
    shared: &Shared,
    cx: &mut EomContext<Session>,
    qid: &str,
    why: &str,
) -> Status {
    warn!(queue_id = %qid, error = %why, "encryption failed; message refused");
    let on_error = shared.config().on_error;
    shared.metrics.message(match on_error {
        OnError::Tempfail => "tempfailed",
        OnError::Reject => "rejected",
    });
    let (code, x) = error_codes(on_error, false);
    reply(
        &mut cx.reply,
        code,
        x,
        "sealpost: the message could not be encrypted; try again later",
    );
    status_for(on_error)
}

fn action_failed(
    shared: &Shared,
    cx: &mut EomContext<Session>,
    qid: &str,
    e: indymilter::ActionError,
) -> Status {
    encryption_failed(shared, cx, qid, &format!("milter action failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sequoia_openpgp::cert::CertBuilder;
    use sequoia_openpgp::Cert;

    fn certs(n: usize) -> Vec<Cert> {
        let mut v: Vec<Cert> = (0..n)
            .map(|i| {
                CertBuilder::general_purpose(Some(format!("<k{i}@example.org>")))
                    .generate()
                    .unwrap()
                    .0
            })
            .collect();
        v.sort_by_key(|c| c.fingerprint().to_hex());
        v
    }

    fn enc(c: &[&Cert]) -> Class {
        Class::Encrypt {
            keys: RecipientKeys::OpenPgp(c.iter().map(|c| (*c).clone()).collect()),
            protect_subject: None,
        }
    }

    /// A self-signed RSA certificate, as an S/MIME recipient class.
    fn smime() -> Class {
        use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "s").unwrap();
        let name = name.build();
        let mut b = x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        Class::Encrypt {
            keys: RecipientKeys::Smime(vec![b.build()]),
            protect_subject: None,
        }
    }

    fn fprs(c: &Class) -> Vec<String> {
        match c {
            Class::Encrypt { keys, .. } => keys.ids(),
            Class::Plain(_) => Vec::new(),
        }
    }

    #[test]
    fn openpgp_and_smime_recipients_never_share_a_message() {
        let k = certs(1);
        let mut m = false;
        for (mixed, non_smtp) in [
            (Mixed::Split, false),
            (Mixed::Union, false),
            (Mixed::Split, true),
        ] {
            let r = merge(enc(&[&k[0]]), smime(), mixed, non_smtp, &mut m);
            assert_eq!(fprs(&r.unwrap_err()), fprs(&enc(&[&k[0]])));
        }
        let s = smime();
        let joined = merge(s.clone(), s.clone(), Mixed::Split, false, &mut m).unwrap();
        assert_eq!(fprs(&joined), fprs(&s));
        let two = merge(s.clone(), smime(), Mixed::Union, false, &mut m).unwrap();
        assert_eq!(fprs(&two).len(), 2);
    }

    #[test]
    fn split_mode_keeps_one_treatment_per_transaction() {
        let k = certs(2);
        let mut m = false;
        assert!(merge(enc(&[&k[0]]), enc(&[&k[0]]), Mixed::Split, false, &mut m).is_ok());
        assert!(merge(enc(&[&k[0]]), enc(&[&k[1]]), Mixed::Split, false, &mut m).is_err());
        assert!(merge(
            enc(&[&k[0]]),
            Class::Plain("no-key"),
            Mixed::Split,
            false,
            &mut m
        )
        .is_err());
        assert!(merge(
            Class::Plain("no-key"),
            enc(&[&k[0]]),
            Mixed::Union,
            false,
            &mut m
        )
        .is_err());
        assert!(merge(
            Class::Plain("a"),
            Class::Plain("b"),
            Mixed::Split,
            false,
            &mut m
        )
        .is_ok());
        assert!(!m);
    }

    #[test]
    fn union_mode_joins_key_holders_only() {
        let k = certs(2);
        let mut m = false;
        let c = merge(
            enc(&[&k[1]]),
            enc(&[&k[0], &k[1]]),
            Mixed::Union,
            false,
            &mut m,
        )
        .unwrap();
        assert_eq!(fprs(&c), fprs(&enc(&[&k[0], &k[1]])));
        assert!(merge(c, Class::Plain("no-key"), Mixed::Union, false, &mut m).is_err());
    }

    #[test]
    fn non_smtp_mail_is_never_split_and_never_plain_for_key_holders() {
        let k = certs(2);
        let mut m = false;
        let c = merge(
            Class::Plain("no-key"),
            enc(&[&k[0]]),
            Mixed::Split,
            true,
            &mut m,
        )
        .unwrap();
        assert_eq!(fprs(&c).len(), 1);
        assert!(m);
        let c = merge(c, enc(&[&k[1]]), Mixed::Split, true, &mut m).unwrap();
        assert_eq!(fprs(&c).len(), 2);
    }
}
