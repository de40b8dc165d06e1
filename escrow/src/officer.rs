//! The security officer's key: generation, passphrase protection, Shamir shares, and loading
//! it back (from the protected key file or from enough shares) for offline recovery.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use openpgp::cert::prelude::*;
use openpgp::crypto::Password;
use openpgp::packet::key::SecretKeyMaterial;
use openpgp::packet::Packet;
use openpgp::parse::Parse;
use openpgp::serialize::{Serialize as _, SerializeInto};
use openpgp::types::{Features, KeyFlags};
use openpgp::Cert;
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};

use crate::secret_io::{self, PassphraseSource};
use crate::symmetric;

/// Algorithm of a new officer key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OfficerAlgorithm {
    /// Ed25519 primary with a Curve25519 (ECDH) encryption subkey, readable by GnuPG 2.2+.
    Cv25519,
    /// RSA 4096 primary and encryption subkey.
    Rsa4096,
}

/// How the secret part of a new officer key is kept.
pub enum SecretOutput {
    /// One key file, protected by this passphrase.
    Protected(Password),
    /// `shares` share files, any `threshold` of which recover the key; each optionally
    /// protected by its own passphrase (one per share, in order).
    Shares {
        shares: u8,
        threshold: u8,
        passphrases: Option<Vec<Password>>,
    },
}

/// What `officer-init` wrote.
#[derive(Debug, Serialize)]
pub struct InitReport {
    pub fingerprint: String,
    pub algorithm: OfficerAlgorithm,
    pub user_id: String,
    pub public_key: PathBuf,
    pub revocation: PathBuf,
    /// The protected secret key file (absent with shares).
    pub secret_key: Option<PathBuf>,
    pub shares: Vec<PathBuf>,
    pub threshold: Option<u8>,
}

/// Generates an officer key in `dir` (created 0700 when missing).
pub fn init(
    dir: &Path,
    algorithm: OfficerAlgorithm,
    user_id: &str,
    secret: SecretOutput,
) -> Result<InitReport> {
    if let SecretOutput::Shares {
        shares,
        threshold,
        passphrases,
    } = &secret
    {
        check_share_numbers(*shares, *threshold)?;
        if let Some(p) = passphrases {
            if p.len() != usize::from(*shares) {
                bail!(
                    "{} share passphrases given for {shares} shares; give one per share",
                    p.len()
                );
            }
        }
    }
    create_private_dir(dir)?;
    let suite = match algorithm {
        OfficerAlgorithm::Cv25519 => CipherSuite::Cv25519,
        OfficerAlgorithm::Rsa4096 => CipherSuite::RSA4k,
    };
    // SEIPDv1 only: the escrow blobs clients make must stay readable by GnuPG 2.2 as well.
    let mut builder = CertBuilder::new()
        .set_cipher_suite(suite)
        .add_userid(user_id)
        .set_primary_key_flags(KeyFlags::empty().set_certification())
        .add_subkey(
            KeyFlags::empty()
                .set_transport_encryption()
                .set_storage_encryption(),
            None,
            None,
        )
        .set_features(Features::empty().set_seipdv1())?;
    if let SecretOutput::Protected(pw) = &secret {
        builder = builder.set_password(Some(pw.clone()));
    }
    let (cert, rev) = builder
        .generate()
        .context("cannot generate the officer key")?;
    let fpr = cert.fingerprint().to_hex();

    let public_path = dir.join(format!("officer-{fpr}.pub.asc"));
    secret_io::write_public_file(&public_path, &cert.armored().to_vec()?)?;
    let rev_path = dir.join(format!("officer-{fpr}.rev.asc"));
    let rev_armored = {
        let mut out = Vec::new();
        let mut w = openpgp::armor::Writer::new(&mut out, openpgp::armor::Kind::Signature)?;
        Packet::from(rev).serialize(&mut w)?;
        w.finalize()?;
        out
    };
    secret_io::write_secret_file(&rev_path, &rev_armored)?;

    let mut report = InitReport {
        fingerprint: fpr.clone(),
        algorithm,
        user_id: user_id.to_string(),
        public_key: public_path,
        revocation: rev_path,
        secret_key: None,
        shares: Vec::new(),
        threshold: None,
    };
    match secret {
        SecretOutput::Protected(_) => {
            let path = dir.join(format!("officer-{fpr}.key.asc"));
            secret_io::write_secret_file(&path, &cert.as_tsk().armored().to_vec()?)?;
            report.secret_key = Some(path);
        }
        SecretOutput::Shares {
            shares,
            threshold,
            passphrases,
        } => {
            let mut tsk = cert.as_tsk().to_vec()?;
            let dealer = blahaj::Sharks(threshold).dealer(&tsk);
            secret_io::wipe(&mut tsk);
            for (i, share) in dealer.take(usize::from(shares)).enumerate() {
                let mut bytes = Vec::from(&share);
                let file = ShareFile::new(
                    &fpr,
                    share.x.0,
                    shares,
                    threshold,
                    &bytes,
                    passphrases.as_ref().map(|p| &p[i]),
                )?;
                secret_io::wipe(&mut bytes);
                let path = dir.join(format!(
                    "officer-{fpr}.share-{}-of-{shares}.json",
                    share.x.0
                ));
                secret_io::write_secret_file(&path, &file.to_vec()?)?;
                report.shares.push(path);
            }
            report.threshold = Some(threshold);
        }
    }
    Ok(report)
}

fn check_share_numbers(shares: u8, threshold: u8) -> Result<()> {
    if threshold < 2 {
        bail!("--threshold must be at least 2 (with 1, every share is the whole key)");
    }
    if shares < threshold {
        bail!("--shares ({shares}) must be at least --threshold ({threshold})");
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// The format tag of share files.
pub const SHARE_FORMAT: &str = "sealpost-officer-key-share/1";

/// One Shamir share of an officer's secret key, as stored in its own file (JSON).
#[derive(Clone, Serialize, Deserialize)]
pub struct ShareFile {
    pub format: String,
    /// Primary fingerprint of the officer key the share belongs to.
    pub officer_fingerprint: String,
    /// This share's index (its x coordinate, 1..=shares).
    pub index: u8,
    /// How many shares were made.
    pub shares: u8,
    /// How many shares recover the key.
    pub threshold: u8,
    /// Whether `data` is an OpenPGP message encrypted with the share's passphrase.
    pub protected: bool,
    /// The share bytes: hex, or (when protected) an armored password-encrypted message of them.
    pub data: String,
}

impl std::fmt::Debug for ShareFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareFile")
            .field("officer_fingerprint", &self.officer_fingerprint)
            .field("index", &self.index)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl ShareFile {
    fn new(
        fpr: &str,
        index: u8,
        shares: u8,
        threshold: u8,
        bytes: &[u8],
        passphrase: Option<&Password>,
    ) -> Result<ShareFile> {
        let (protected, data) = match passphrase {
            Some(pw) => (true, symmetric::encrypt_with_password(bytes, pw)?),
            None => (false, hex::encode(bytes)),
        };
        Ok(ShareFile {
            format: SHARE_FORMAT.into(),
            officer_fingerprint: fpr.into(),
            index,
            shares,
            threshold,
            protected,
            data,
        })
    }

    fn to_vec(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }

    /// Reads a share file.
    pub fn read(path: &Path) -> Result<ShareFile> {
        let bytes = secret_io::read_limited(path, 1 << 20, "share file")?;
        let s: ShareFile = serde_json::from_slice(&bytes)
            .map_err(|_| anyhow!("{} is not a sealpost share file", path.display()))?;
        if s.format != SHARE_FORMAT {
            bail!(
                "{} has the unknown format {:?} (expected {SHARE_FORMAT})",
                path.display(),
                s.format
            );
        }
        Ok(s)
    }

    /// The share bytes, decrypting them with the passphrase when protected.
    fn bytes(&self, path: &Path, passphrase: Option<&PassphraseSource>) -> Result<Vec<u8>> {
        if !self.protected {
            return hex::decode(self.data.trim())
                .map_err(|_| anyhow!("share file {} is damaged (bad hex)", path.display()));
        }
        let source = match passphrase {
            Some(s) => s.clone(),
            None => PassphraseSource::Prompt(format!(
                "Passphrase of share {} of {} ({}): ",
                self.index,
                self.shares,
                path.display()
            )),
        };
        let pw = source.read()?;
        symmetric::decrypt_with_password(self.data.as_bytes(), &pw).map_err(|_| {
            anyhow!(
                "cannot open share {} ({}): wrong passphrase or damaged file",
                self.index,
                path.display()
            )
        })
    }
}

/// The officer's secret key, unlocked in memory for offline recovery.
pub struct OfficerSecret {
    /// The certificate with unencrypted secret key material.
    pub cert: Cert,
}

impl OfficerSecret {
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// Loads the protected officer key file and unlocks it.
    pub fn from_key_file(path: &Path, passphrase: &PassphraseSource) -> Result<OfficerSecret> {
        let bytes = secret_io::read_limited(path, 1 << 20, "officer key file")?;
        let cert = Cert::from_bytes(&bytes)
            .map_err(|_| anyhow!("{} is not an OpenPGP key", path.display()))?;
        if !cert.is_tsk() {
            bail!(
                "{} holds only the public officer key; recovery needs the secret key file",
                path.display()
            );
        }
        let needs_password = cert.keys().secret().any(|k| {
            matches!(
                k.key().optional_secret(),
                Some(SecretKeyMaterial::Encrypted(_))
            )
        });
        let cert = if needs_password {
            let pw = passphrase.read()?;
            unlock_cert(cert, &pw).map_err(|_| {
                anyhow!("wrong passphrase for the officer key in {}", path.display())
            })?
        } else {
            cert
        };
        Ok(OfficerSecret { cert })
    }

    /// Rebuilds the officer key from share files. `passphrases` are used in the order of
    /// the protected shares; protected shares without one are asked for on the terminal.
    pub fn from_shares(paths: &[PathBuf], passphrases: &[PathBuf]) -> Result<OfficerSecret> {
        if paths.is_empty() {
            bail!("no share given");
        }
        let mut files = Vec::new();
        for p in paths {
            files.push((p.clone(), ShareFile::read(p)?));
        }
        let first = &files[0].1;
        let (fpr, threshold) = (first.officer_fingerprint.clone(), first.threshold);
        for (p, f) in &files {
            if f.officer_fingerprint != fpr {
                bail!(
                    "share {} belongs to officer key {}, not {fpr}",
                    p.display(),
                    f.officer_fingerprint
                );
            }
            if f.threshold != threshold {
                bail!(
                    "share {} says {} shares are needed, another says {threshold}",
                    p.display(),
                    f.threshold
                );
            }
        }
        let mut indexes: Vec<u8> = files.iter().map(|(_, f)| f.index).collect();
        indexes.sort_unstable();
        indexes.dedup();
        if indexes.len() < files.len() {
            bail!("the same share was given twice");
        }
        if files.len() < usize::from(threshold) {
            bail!(
                "{} share(s) given, but {threshold} of officer key {fpr} are needed",
                files.len()
            );
        }
        let mut pw_files = passphrases.iter();
        let mut shares = Vec::new();
        for (p, f) in &files {
            let source = if f.protected {
                pw_files.next().map(|f| PassphraseSource::File(f.clone()))
            } else {
                None
            };
            let mut bytes = f.bytes(p, source.as_ref())?;
            let share = blahaj::Share::try_from(bytes.as_slice())
                .map_err(|_| anyhow!("share file {} is damaged", p.display()))?;
            secret_io::wipe(&mut bytes);
            if share.x.0 != f.index {
                bail!("share file {} is damaged (index mismatch)", p.display());
            }
            shares.push(share);
        }
        let mut tsk = blahaj::Sharks(threshold)
            .recover(shares.iter())
            .map_err(|e| anyhow!("cannot combine the shares: {e}"))?;
        let cert = Cert::from_bytes(&tsk);
        secret_io::wipe(&mut tsk);
        let cert = cert.map_err(|_| {
            anyhow!("the shares do not combine to officer key {fpr}: one is damaged or not from the same split")
        })?;
        if cert.fingerprint().to_hex() != fpr || !cert.is_tsk() {
            bail!(
                "the shares do not combine to officer key {fpr}: one is damaged or not from the same split"
            );
        }
        Ok(OfficerSecret { cert })
    }
}

/// Decrypts every encrypted secret key of `cert` with `password`.
pub fn unlock_cert(cert: Cert, password: &Password) -> Result<Cert> {
    let mut packets: Vec<Packet> = Vec::new();
    let primary = cert.primary_key().key().clone();
    if let Ok(k) = primary.parts_into_secret() {
        if !k.has_unencrypted_secret() && !is_dummy(k.optional_secret()) {
            packets.push(k.decrypt_secret(password)?.into());
        }
    }
    for ka in cert.keys().subkeys().secret() {
        let k = ka.key().clone();
        if !k.has_unencrypted_secret() && !is_dummy(k.optional_secret()) {
            packets.push(k.decrypt_secret(password)?.into());
        }
    }
    Ok(cert.insert_packets(packets)?.0)
}

fn is_dummy(s: Option<&SecretKeyMaterial>) -> bool {
    matches!(s, Some(SecretKeyMaterial::Encrypted(e))
        if matches!(e.s2k(), openpgp::crypto::S2K::Private { tag: 101, .. }))
}

/// Reads an officer public key file (for `officer-add` and rotation), refusing secret keys.
pub fn read_public_cert(path: &Path) -> Result<Cert> {
    let bytes = secret_io::read_limited(path, 1 << 20, "officer public key")?;
    let cert = Cert::from_bytes(&bytes)
        .map_err(|_| anyhow!("{} is not an OpenPGP key", path.display()))?;
    if cert.is_tsk() {
        bail!(
            "{} holds a secret key; give the public key file (officer-*.pub.asc) instead",
            path.display()
        );
    }
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_recover_the_key_with_the_threshold_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = init(
            dir.path(),
            OfficerAlgorithm::Cv25519,
            "test officer",
            SecretOutput::Shares {
                shares: 4,
                threshold: 3,
                passphrases: None,
            },
        )
        .unwrap();
        assert_eq!(r.shares.len(), 4);
        assert!(r.secret_key.is_none());
        let s = &r.shares;
        let back =
            OfficerSecret::from_shares(&[s[3].clone(), s[0].clone(), s[2].clone()], &[]).unwrap();
        assert_eq!(back.fingerprint(), r.fingerprint);
        assert!(back.cert.keys().unencrypted_secret().count() >= 2);
        let e = OfficerSecret::from_shares(&s[..2], &[]).err().unwrap();
        assert!(e.to_string().contains("2 share(s) given, but 3"), "{e}");

        // A damaged share combines to garbage, which is detected.
        let mut f = ShareFile::read(&s[1]).unwrap();
        let mut bytes = hex::decode(&f.data).unwrap();
        bytes[10] ^= 0x55;
        f.data = hex::encode(bytes);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, f.to_vec().unwrap()).unwrap();
        let e = OfficerSecret::from_shares(&[s[0].clone(), bad, s[2].clone()], &[])
            .err()
            .unwrap();
        assert!(e.to_string().contains("not from the same split"), "{e}");
    }

    #[test]
    fn share_numbers_are_checked() {
        assert!(check_share_numbers(3, 2).is_ok());
        assert!(check_share_numbers(2, 3).is_err());
        assert!(check_share_numbers(3, 1).is_err());
    }
}
