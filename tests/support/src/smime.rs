//! S/MIME certificates for tests, made the way a mailbox owner makes them: `openssl req
//! -x509` with the key usages S/MIME encryption needs and the address in subjectAltName.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The key of a test certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// RSA 3072, keyUsage keyEncipherment.
    Rsa3072,
    /// EC P-256, keyUsage keyAgreement.
    P256,
    /// EC P-384, keyUsage keyAgreement.
    P384,
}

/// A certificate (`NAME.pem`) and its unencrypted private key (`NAME.key`), both PEM.
#[derive(Clone, Debug)]
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a self-signed S/MIME certificate for `addr` in `dir`, valid for 30 days. The
/// private key is registered with the log scan (`register_private_key`).
pub fn make_cert(dir: &Path, name: &str, addr: &str, key: KeyType) -> TestCert {
    let cert = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}.key"));
    let (newkey, usage): (&[&str], &str) = match key {
        KeyType::Rsa3072 => (
            &["-newkey", "rsa:3072"],
            "keyUsage=critical,digitalSignature,keyEncipherment",
        ),
        KeyType::P256 => (
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "keyUsage=critical,digitalSignature,keyAgreement",
        ),
        KeyType::P384 => (
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "keyUsage=critical,digitalSignature,keyAgreement",
        ),
    };
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-nodes", "-days", "30", "-sha256"])
        .args(newkey)
        .arg("-subj")
        .arg(format!("/CN={name}/emailAddress={addr}"))
        .args(["-addext", usage])
        .args(["-addext", "extendedKeyUsage=emailProtection"])
        .arg("-addext")
        .arg(format!("subjectAltName=email:{addr}"))
        .arg("-keyout")
        .arg(&key_file)
        .arg("-out")
        .arg(&cert);
    crate::run_ok(&mut cmd);
    crate::register_private_key(&std::fs::read_to_string(&key_file).unwrap());
    TestCert {
        cert,
        key: key_file,
    }
}
