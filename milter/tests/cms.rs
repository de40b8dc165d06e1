//! The streaming S/MIME writer against real decoders: `openssl cms` for every key type and
//! content cipher, gpgsm for what GnuPG 2.2 can read, and a bounded-memory check.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use openssl::x509::X509;
use sealpost_milter::transform::{CmsOptions, CmsWriter, ContentCipher, RsaPadding};
use sealpost_test_support as support;
use support::run_ok as run;
use support::smime::KeyType;

// ---------------------------------------------------------------------------------------
// Allocation accounting per thread, for the streaming check.

struct CountingAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let v = live.get() + delta;
        live.set(v);
        let _ = PEAK.try_with(|peak| {
            if v > peak.get() {
                peak.set(v)
            }
        });
    });
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        note(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------------------
// Fixture: certificates made by the openssl command line.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    RsaPkcs1,
    RsaOaep,
    EcP256,
    EcP384,
}

const CIPHERS: [ContentCipher; 2] = [ContentCipher::Aes256Cbc, ContentCipher::Aes256Gcm];

struct Identity {
    cert: PathBuf,
    key: PathBuf,
    x509: X509,
}

struct Fixture {
    dir: tempfile::TempDir,
    openssl: PathBuf,
    rsa: Identity,
    p256: Identity,
    p384: Identity,
}

impl Fixture {
    fn identity(&self, kind: Kind) -> &Identity {
        match kind {
            Kind::RsaPkcs1 | Kind::RsaOaep => &self.rsa,
            Kind::EcP256 => &self.p256,
            Kind::EcP384 => &self.p384,
        }
    }
}

fn options(kind: Kind, cipher: ContentCipher) -> CmsOptions {
    CmsOptions {
        cipher,
        rsa_padding: if kind == Kind::RsaOaep {
            RsaPadding::Oaep
        } else {
            RsaPadding::Pkcs1v15
        },
    }
}

fn make_identity(dir: &Path, name: &str, key: KeyType) -> Identity {
    let made = support::smime::make_cert(dir, name, &format!("{name}@example.org"), key);
    let x509 = X509::from_pem(&std::fs::read(&made.cert).unwrap()).unwrap();
    Identity {
        cert: made.cert,
        key: made.key,
        x509,
    }
}

/// The shared certificates, or `None` (after reporting) when openssl is not installed.
fn fixture(test: &str) -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    let f = FIXTURE.get_or_init(|| {
        let openssl = support::which("openssl")?;
        let dir = tempfile::tempdir().unwrap();
        let rsa = make_identity(dir.path(), "rsa", KeyType::Rsa3072);
        let p256 = make_identity(dir.path(), "p256", KeyType::P256);
        let p384 = make_identity(dir.path(), "p384", KeyType::P384);
        Some(Fixture {
            dir,
            openssl,
            rsa,
            p256,
            p384,
        })
    });
    match f {
        Some(f) => Some(f),
        None => support::missing(test, "`openssl` is not installed"),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// Encrypts `input`, handing it to the writer in pieces of the given sizes (cycled).
fn encrypt(recipients: &[X509], opts: CmsOptions, input: &[u8], pieces: &[usize]) -> Vec<u8> {
    let mut w = CmsWriter::new(Vec::new(), recipients, opts).unwrap();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = pieces[i % pieces.len()].min(rest.len());
        w.write_all(&rest[..n]).unwrap();
        rest = &rest[n..];
        i += 1;
    }
    w.finish().unwrap()
}

fn temp_file(f: &Fixture, bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut t = tempfile::NamedTempFile::new_in(f.dir.path()).unwrap();
    t.write_all(bytes).unwrap();
    t.flush().unwrap();
    t
}

fn openssl_decrypt(f: &Fixture, der: &[u8], id: &Identity) -> Vec<u8> {
    let input = temp_file(f, der);
    run(Command::new(&f.openssl)
        .args(["cms", "-decrypt", "-inform", "DER", "-binary", "-in"])
        .arg(input.path())
        .arg("-recip")
        .arg(&id.cert)
        .arg("-inkey")
        .arg(&id.key))
    .stdout
}

fn openssl_print(f: &Fixture, der: &[u8]) -> String {
    let input = temp_file(f, der);
    let out = run(Command::new(&f.openssl)
        .args([
            "cms", "-cmsout", "-print", "-noout", "-inform", "DER", "-in",
        ])
        .arg(input.path()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let binary: Vec<u8> = (0..=255u8).cycle().take(256 * 41 + 7).collect();
    let big: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    vec![
        ("empty", Vec::new()),
        ("1 byte", vec![b'x']),
        ("16 bytes", b"exactly16bytes!!".to_vec()),
        ("binary", binary),
        ("5 MB", big),
    ]
}

/// Odd write sizes, so chunk and block boundaries fall everywhere.
const PIECES: &[usize] = &[1, 15, 17, 4093, 65_537, 3, 100_003];

fn matrix_case(kind: Kind) {
    let test = format!("cms_openssl_{kind:?}");
    let Some(f) = fixture(&test) else { return };
    let id = f.identity(kind);
    let inputs = inputs();
    for cipher in CIPHERS {
        let opts = options(kind, cipher);
        for (name, input) in &inputs {
            let der = encrypt(std::slice::from_ref(&id.x509), opts, input, PIECES);
            let plain = openssl_decrypt(f, &der, id);
            assert!(
                plain == *input,
                "{kind:?} {cipher:?} {name}: openssl decrypted {} bytes, expected {}",
                plain.len(),
                input.len()
            );
        }
        let der = encrypt(std::slice::from_ref(&id.x509), opts, b"x", PIECES);
        let printed = openssl_print(f, &der);
        let expect_type = match cipher {
            ContentCipher::Aes256Cbc => "pkcs7-envelopedData",
            ContentCipher::Aes256Gcm => "id-smime-ct-authEnvelopedData",
        };
        assert!(
            printed.contains(expect_type),
            "{kind:?} {cipher:?}: {printed}"
        );
        let expect_ri = match kind {
            Kind::RsaPkcs1 | Kind::RsaOaep => "d.ktri:",
            Kind::EcP256 | Kind::EcP384 => "d.kari:",
        };
        assert!(
            printed.contains(expect_ri),
            "{kind:?} {cipher:?}: {printed}"
        );
        if kind == Kind::RsaOaep {
            assert!(printed.contains("rsaesOaep"), "{printed}");
        }
        if matches!(kind, Kind::EcP256 | Kind::EcP384) {
            assert!(
                printed.contains("dhSinglePass-stdDH-sha256kdf-scheme"),
                "{printed}"
            );
        }
    }
}

#[test]
fn cms_openssl_rsa_pkcs1() {
    matrix_case(Kind::RsaPkcs1);
}

#[test]
fn cms_openssl_rsa_oaep() {
    matrix_case(Kind::RsaOaep);
}

#[test]
fn cms_openssl_ec_p256() {
    matrix_case(Kind::EcP256);
}

#[test]
fn cms_openssl_ec_p384() {
    matrix_case(Kind::EcP384);
}

#[test]
fn cms_two_recipients_each_decrypt() {
    let Some(f) = fixture("cms_two_recipients_each_decrypt") else {
        return;
    };
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for cipher in CIPHERS {
        for padding in [RsaPadding::Pkcs1v15, RsaPadding::Oaep] {
            let opts = CmsOptions {
                cipher,
                rsa_padding: padding,
            };
            // The RSA certificate twice: it must get one RecipientInfo.
            let recips = [f.rsa.x509.clone(), f.p256.x509.clone(), f.rsa.x509.clone()];
            let der = encrypt(&recips, opts, &input, &[7, 70_000]);
            for id in [&f.rsa, &f.p256] {
                assert!(
                    openssl_decrypt(f, &der, id) == input,
                    "{cipher:?} {padding:?}: {} cannot decrypt",
                    id.cert.display()
                );
            }
            let printed = openssl_print(f, &der);
            assert_eq!(printed.matches("d.ktri:").count(), 1, "{printed}");
            assert_eq!(printed.matches("d.kari:").count(), 1, "{printed}");
            // RFC 5652 6.1: a KeyAgreeRecipientInfo makes EnvelopedData version 2.
            let version = if cipher == ContentCipher::Aes256Cbc {
                "version: 2"
            } else {
                "version: 0"
            };
            assert!(printed.contains(version), "{printed}");
        }
    }
    // RSA only, CBC: version 0.
    let der = encrypt(
        std::slice::from_ref(&f.rsa.x509),
        CmsOptions::default(),
        b"v",
        &[1],
    );
    assert!(openssl_print(f, &der).contains("version: 0"));
}

// ---------------------------------------------------------------------------------------
// Errors.

fn self_signed(key: &openssl::pkey::PKeyRef<openssl::pkey::Private>) -> X509 {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "sealpost in-process test")
        .unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(0x00C0_FFEE).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let digest = if key.id() == openssl::pkey::Id::ED25519 {
        MessageDigest::null()
    } else {
        MessageDigest::sha256()
    };
    b.sign(key, digest).unwrap();
    b.build()
}

#[test]
fn cms_rejects_unusable_recipients() {
    let err = CmsWriter::new(Vec::new(), &[], CmsOptions::default())
        .err()
        .expect("empty recipient list accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);

    let dsa = openssl::dsa::Dsa::generate(2048).unwrap();
    let dsa = openssl::pkey::PKey::from_dsa(dsa).unwrap();
    let cert = self_signed(&dsa);
    let fpr: String = cert
        .digest(openssl::hash::MessageDigest::sha256())
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let err = CmsWriter::new(Vec::new(), &[cert], CmsOptions::default())
        .err()
        .expect("DSA certificate accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        format!("certificate {fpr} has an unsupported public key (DSA)")
    );

    let ed = openssl::pkey::PKey::generate_ed25519().unwrap();
    let cert = self_signed(&ed);
    let err = CmsWriter::new(Vec::new(), &[cert], CmsOptions::default())
        .err()
        .expect("Ed25519 certificate accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("(Ed25519)"), "{err}");

    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP521R1).unwrap();
    let ec = openssl::ec::EcKey::generate(&group).unwrap();
    let cert = self_signed(&openssl::pkey::PKey::from_ec_key(ec).unwrap());
    let err = CmsWriter::new(Vec::new(), &[cert], CmsOptions::default())
        .err()
        .expect("P-521 certificate accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        err.to_string()
            .contains("unsupported elliptic curve (secp521r1)"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Streaming: bounded memory and throughput.

#[test]
fn cms_streams_50_mb_in_bounded_memory() {
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let rsa = openssl::pkey::PKey::from_rsa(rsa).unwrap();
    let cert = self_signed(&rsa);
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let ec =
        openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
    let ec_cert = self_signed(&ec);
    const TOTAL: usize = 50 * 1024 * 1024;
    let block: Vec<u8> = (0..65_521u32).map(|i| (i * 31) as u8).collect();
    for cipher in CIPHERS {
        let opts = CmsOptions {
            cipher,
            rsa_padding: RsaPadding::Oaep,
        };
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let started = Instant::now();
        let mut w =
            CmsWriter::new(std::io::sink(), &[cert.clone(), ec_cert.clone()], opts).unwrap();
        let capacity = w.buffer_capacity();
        let mut written = 0;
        let mut i = 0usize;
        while written < TOTAL {
            // Sizes from 1 byte to the whole block.
            let n = [block.len(), 1, 4097, 33_333][i % 4].min(TOTAL - written);
            w.write_all(&block[..n]).unwrap();
            written += n;
            i += 1;
        }
        assert_eq!(w.buffer_capacity(), capacity, "the buffer grew");
        w.finish().unwrap();
        let elapsed = started.elapsed();
        let peak = PEAK.with(Cell::get) - base;
        println!(
            "{cipher:?}: 50 MB in {:.2} s = {:.0} MB/s; buffer {} KiB; peak heap {} KiB",
            elapsed.as_secs_f64(),
            50.0 / elapsed.as_secs_f64(),
            capacity / 1024,
            peak / 1024
        );
        assert!(capacity < 1024 * 1024, "buffer capacity {capacity}");
        assert!(peak < 1024 * 1024, "peak heap {peak} bytes while streaming");
    }
}

// ---------------------------------------------------------------------------------------
// gpgsm (GnuPG 2.2).

/// A GNUPGHOME whose gpg-agent is stopped when the test ends, passed or not.
struct GnupgHome(tempfile::TempDir);

impl GnupgHome {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for GnupgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.0.path())
            .args(["--kill", "gpg-agent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn gpgsm_home(f: &Fixture, gpgsm: &Path) -> GnupgHome {
    // Under /tmp: the agent socket path must stay short.
    let home = tempfile::Builder::new()
        .prefix("gh")
        .tempdir_in("/tmp")
        .unwrap();
    let home = GnupgHome(home);
    std::fs::write(
        home.path().join("gpg-agent.conf"),
        "allow-loopback-pinentry\n",
    )
    .unwrap();
    std::fs::write(home.path().join("gpgsm.conf"), "disable-crl-checks\n").unwrap();
    let out = gpgsm_import(f, gpgsm, home.path(), &f.rsa, "rsa");
    assert!(
        out.status.success(),
        "gpgsm --import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    home
}

/// Imports an identity's key into a gpgsm home, as a legacy PKCS#12: gpgsm 2.2 reads neither
/// PBES2 nor the AES-based PKCS#12 OpenSSL 3 writes by default.
fn gpgsm_import(
    f: &Fixture,
    gpgsm: &Path,
    home: &Path,
    id: &Identity,
    name: &str,
) -> std::process::Output {
    let p12 = f.dir.path().join(format!("{name}-gpgsm.p12"));
    run(Command::new(&f.openssl)
        .args(["pkcs12", "-export", "-passout", "pass:sealpost"])
        .args([
            "-keypbe",
            "PBE-SHA1-3DES",
            "-certpbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
        ])
        .arg("-inkey")
        .arg(&id.key)
        .arg("-in")
        .arg(&id.cert)
        .arg("-out")
        .arg(&p12));
    support::run_with_input(
        Command::new(gpgsm)
            .env("GNUPGHOME", home)
            .args([
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                "0",
            ])
            .arg("--import")
            .arg(&p12),
        b"sealpost\n",
    )
}

fn gpgsm_decrypt(gpgsm: &Path, home: &Path, f: &Fixture, der: &[u8]) -> Result<Vec<u8>, String> {
    let input = temp_file(f, der);
    let out = support::run_with_input(
        Command::new(gpgsm)
            .env("GNUPGHOME", home)
            .args([
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                "0",
            ])
            .arg("--decrypt")
            .arg(input.path()),
        b"sealpost\n",
    );
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err
            .lines()
            .filter(|l| !l.contains("encrypted to"))
            .collect::<Vec<_>>()
            .join(" | "))
    }
}

#[test]
fn cms_gpgsm_decrypts_rsa_pkcs1_cbc() {
    let test = "cms_gpgsm_decrypts_rsa_pkcs1_cbc";
    let Some(gpgsm) = support::need_program(test, "gpgsm") else {
        return;
    };
    let Some(f) = fixture(test) else { return };
    let home = gpgsm_home(f, &gpgsm);
    let input: Vec<u8> = (0..=255u8).cycle().take(300_001).collect();
    let mut report = Vec::new();
    for padding in [RsaPadding::Pkcs1v15, RsaPadding::Oaep] {
        for cipher in CIPHERS {
            let opts = CmsOptions {
                cipher,
                rsa_padding: padding,
            };
            let der = encrypt(std::slice::from_ref(&f.rsa.x509), opts, &input, PIECES);
            let result = gpgsm_decrypt(&gpgsm, home.path(), f, &der);
            match &result {
                Ok(plain) => {
                    assert!(
                        *plain == input,
                        "{padding:?} {cipher:?}: gpgsm output differs"
                    );
                    report.push(format!("{padding:?} {cipher:?}: decrypts"));
                }
                Err(e) => report.push(format!("{padding:?} {cipher:?}: fails: {e}")),
            }
            // What GnuPG 2.2 supports: RSA PKCS#1 v1.5 key transport with AES-CBC.
            if padding == RsaPadding::Pkcs1v15 && cipher == ContentCipher::Aes256Cbc {
                assert!(
                    result.is_ok(),
                    "gpgsm cannot decrypt {padding:?} {cipher:?}: {result:?}"
                );
            }
        }
    }
    // Several recipients, the gpgsm one among them.
    let recips = [f.p256.x509.clone(), f.rsa.x509.clone(), f.p384.x509.clone()];
    let der = encrypt(&recips, CmsOptions::default(), &input, &[1000]);
    let result = gpgsm_decrypt(&gpgsm, home.path(), f, &der);
    assert!(
        result.as_deref() == Ok(input.as_slice()),
        "gpgsm with EC recipients present: {result:?}"
    );
    // ECDH: GnuPG 2.2 has no KeyAgreeRecipientInfo support (2.2.40 even crashes importing an
    // EC PKCS#12). Report what this gpgsm does without requiring it.
    let out = gpgsm_import(f, &gpgsm, home.path(), &f.p256, "p256");
    if out.status.success() {
        for cipher in CIPHERS {
            let opts = options(Kind::EcP256, cipher);
            let der = encrypt(std::slice::from_ref(&f.p256.x509), opts, &input, PIECES);
            match gpgsm_decrypt(&gpgsm, home.path(), f, &der) {
                Ok(plain) => {
                    assert!(plain == input, "EC P-256 {cipher:?}: gpgsm output differs");
                    report.push(format!("EC P-256 {cipher:?}: decrypts"));
                }
                Err(e) => report.push(format!("EC P-256 {cipher:?}: fails: {e}")),
            }
        }
    } else {
        report.push(format!(
            "EC P-256: the PKCS#12 import fails ({})",
            out.status
        ));
    }
    println!("gpgsm:\n  {}", report.join("\n  "));
}
