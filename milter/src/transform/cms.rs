//! A streaming S/MIME encryption writer: CMS EnvelopedData (RFC 5652) with AES-256-CBC, or
//! AuthEnvelopedData (RFC 5083, RFC 5084) with AES-256-GCM, to RSA (RFC 8017 PKCS #1 v1.5 or
//! OAEP, RFC 8551) and elliptic-curve (RFC 5753 ECDH, P-256 and P-384) certificates.
//!
//! The outer containers use BER indefinite-length encoding so the message never has to be
//! held in memory: [`CmsWriter::new`] writes everything up to the encrypted content,
//! [`Write::write`] emits the ciphertext as definite-length chunks of a constructed
//! OCTET STRING, and [`CmsWriter::finish`] closes the structure. The RecipientInfos and the
//! algorithm identifiers are DER.
//!
//! [`Base64Lines`] turns the DER/BER output into the base64 body of an
//! `application/pkcs7-mime` part.

use std::io::{self, Write};

use base64::Engine as _;
use openssl::aes::{wrap_key, AesKey};
use openssl::bn::BigNumContext;
use openssl::derive::Deriver;
use openssl::ec::{EcKey, PointConversionForm};
use openssl::encrypt::Encrypter;
use openssl::error::ErrorStack;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};
use openssl::x509::X509;

use super::ber;

const OID_DATA: &str = "1.2.840.113549.1.7.1";
const OID_ENVELOPED_DATA: &str = "1.2.840.113549.1.7.3";
const OID_AUTH_ENVELOPED_DATA: &str = "1.2.840.113549.1.9.16.1.23";
const OID_AES256_CBC: &str = "2.16.840.1.101.3.4.1.42";
const OID_AES256_WRAP: &str = "2.16.840.1.101.3.4.1.45";
const OID_AES256_GCM: &str = "2.16.840.1.101.3.4.1.46";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_RSAES_OAEP: &str = "1.2.840.113549.1.1.7";
const OID_MGF1: &str = "1.2.840.113549.1.1.8";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_ECDH_SHA256_KDF: &str = "1.3.132.1.11.1";

/// Content-encryption key length (AES-256).
const CEK_LEN: usize = 32;
/// AES-CBC IV length.
const CBC_IV_LEN: usize = 16;
/// AES-GCM nonce length (RFC 5084 recommends 12).
const GCM_NONCE_LEN: usize = 12;
/// AES-GCM tag length written in the GCMParameters and the `mac` field.
const GCM_TAG_LEN: usize = 16;

/// Ciphertext is emitted once this much is buffered.
const CHUNK: usize = 32 * 1024;
/// Plaintext is handed to OpenSSL in slices of at most this many bytes.
const SLICE: usize = 16 * 1024;
/// Room OpenSSL may need beyond the input length (one block, with margin).
const CIPHER_SLACK: usize = 32;

/// The content-encryption algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ContentCipher {
    /// AES-256-CBC in EnvelopedData (RFC 5652, RFC 3565).
    #[default]
    Aes256Cbc,
    /// AES-256-GCM in AuthEnvelopedData (RFC 5083, RFC 5084).
    Aes256Gcm,
}

impl ContentCipher {
    /// The `smime-type` parameter of the `application/pkcs7-mime` Content-Type (RFC 8551).
    pub fn smime_type(self) -> &'static str {
        match self {
            ContentCipher::Aes256Cbc => "enveloped-data",
            ContentCipher::Aes256Gcm => "authEnveloped-data",
        }
    }
}

/// The RSA key-transport padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RsaPadding {
    /// RSAES-PKCS1-v1_5 (rsaEncryption).
    #[default]
    Pkcs1v15,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 8017, RFC 4055).
    Oaep,
}

/// How [`CmsWriter`] encrypts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CmsOptions {
    pub cipher: ContentCipher,
    pub rsa_padding: RsaPadding,
}

/// Streams plaintext in and writes the BER-encoded CMS ContentInfo out.
///
/// [`CmsWriter::new`] writes everything up to the start of the encrypted content, including one
/// RecipientInfo per distinct certificate. Writes encrypt and emit the ciphertext as a
/// constructed OCTET STRING of definite-length primitive chunks of about 32 KiB.
/// [`CmsWriter::finish`] pads or finalizes, closes the structure (writing the GCM tag for
/// AuthEnvelopedData) and returns the inner writer. Dropping the writer without calling
/// `finish` leaves truncated output.
pub struct CmsWriter<W: Write> {
    out: W,
    crypter: Crypter,
    cipher: ContentCipher,
    /// Ciphertext not yet emitted; never grows beyond `CHUNK + SLICE + CIPHER_SLACK`.
    pending: Vec<u8>,
    /// Set after an error: the output is unusable and further writes fail.
    failed: bool,
}

fn openssl_error(e: ErrorStack) -> io::Error {
    io::Error::other(format!("OpenSSL: {e}"))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Overwrites a secret buffer in a way the optimizer keeps.
fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

fn key_type_name(id: Id) -> String {
    match id {
        Id::RSA => "RSA".into(),
        Id::RSA_PSS => "RSA-PSS".into(),
        Id::DSA => "DSA".into(),
        Id::DH => "DH".into(),
        Id::EC => "EC".into(),
        Id::ED25519 => "Ed25519".into(),
        Id::ED448 => "Ed448".into(),
        Id::X25519 => "X25519".into(),
        Id::X448 => "X448".into(),
        other => {
            let nid = Nid::from_raw(other.as_raw());
            nid.short_name()
                .map(str::to_owned)
                .unwrap_or_else(|_| format!("key type {}", other.as_raw()))
        }
    }
}

/// The IssuerAndSerialNumber of a certificate, with the issuer Name and the serial INTEGER
/// copied byte for byte from the certificate's DER.
fn issuer_and_serial(der: &[u8]) -> Option<Vec<u8>> {
    let cert = ber::Reader::new(der).expect(ber::TAG_SEQUENCE)?;
    let tbs = ber::Reader::new(cert.content).expect(ber::TAG_SEQUENCE)?;
    let mut r = ber::Reader::new(tbs.content);
    if r.peek_tag() == Some(ber::context_constructed(0)) {
        r.next_element()?; // version
    }
    let serial = r.expect(ber::TAG_INTEGER)?;
    r.expect(ber::TAG_SEQUENCE)?; // signature algorithm
    let issuer = r.expect(ber::TAG_SEQUENCE)?;
    Some(ber::sequence(&[issuer.raw, serial.raw]))
}

/// One recipient certificate, checked and ready for key transport or key agreement.
struct Recipient {
    fingerprint: String,
    rid: Vec<u8>,
    key: PKey<Public>,
}

impl Recipient {
    fn new(cert: &X509) -> io::Result<Recipient> {
        let der = cert.to_der().map_err(openssl_error)?;
        let fingerprint = hex(&hash(MessageDigest::sha256(), &der).map_err(openssl_error)?);
        let rid = issuer_and_serial(&der).ok_or_else(|| {
            invalid(format!(
                "certificate {fingerprint} could not be parsed for its issuer and serial number"
            ))
        })?;
        let key = cert.public_key().map_err(|_| {
            invalid(format!(
                "certificate {fingerprint} has a public key OpenSSL cannot load"
            ))
        })?;
        Ok(Recipient {
            fingerprint,
            rid,
            key,
        })
    }

    /// Encrypts the CEK to this recipient. Returns the RecipientInfo and whether it is a
    /// version 0 KeyTransRecipientInfo.
    fn recipient_info(&self, cek: &[u8], options: CmsOptions) -> io::Result<(Vec<u8>, bool)> {
        match self.key.id() {
            Id::RSA => Ok((self.key_trans(cek, options.rsa_padding)?, true)),
            Id::EC => Ok((self.key_agree(cek)?, false)),
            other => Err(invalid(format!(
                "certificate {} has an unsupported public key ({})",
                self.fingerprint,
                key_type_name(other)
            ))),
        }
    }

    /// KeyTransRecipientInfo (RFC 5652 section 6.2.1).
    fn key_trans(&self, cek: &[u8], padding: RsaPadding) -> io::Result<Vec<u8>> {
        let mut enc = Encrypter::new(&self.key).map_err(openssl_error)?;
        let algorithm = match padding {
            RsaPadding::Pkcs1v15 => {
                enc.set_rsa_padding(Padding::PKCS1).map_err(openssl_error)?;
                ber::algorithm(OID_RSA_ENCRYPTION, Some(&ber::null()))
            }
            RsaPadding::Oaep => {
                enc.set_rsa_padding(Padding::PKCS1_OAEP)
                    .map_err(openssl_error)?;
                enc.set_rsa_oaep_md(MessageDigest::sha256())
                    .map_err(openssl_error)?;
                enc.set_rsa_mgf1_md(MessageDigest::sha256())
                    .map_err(openssl_error)?;
                // RSAES-OAEP-params (RFC 4055 section 4.1): sha256Identifier with NULL
                // parameters, MGF1 with SHA-256, pSourceFunc left at its default.
                let sha256 = ber::algorithm(OID_SHA256, Some(&ber::null()));
                let hash_alg = ber::constructed(ber::context_constructed(0), &[&sha256]);
                let mgf = ber::algorithm(OID_MGF1, Some(&sha256));
                let mgf_alg = ber::constructed(ber::context_constructed(1), &[&mgf]);
                let params = ber::sequence(&[&hash_alg, &mgf_alg]);
                ber::algorithm(OID_RSAES_OAEP, Some(&params))
            }
        };
        let mut encrypted = vec![0u8; enc.encrypt_len(cek).map_err(openssl_error)?];
        let n = enc.encrypt(cek, &mut encrypted).map_err(|_| {
            invalid(format!(
                "certificate {}: RSA key transport failed (key too small?)",
                self.fingerprint
            ))
        })?;
        encrypted.truncate(n);
        Ok(ber::sequence(&[
            &ber::small_integer(0),
            &self.rid,
            &algorithm,
            &ber::octet_string(&encrypted),
        ]))
    }

    /// KeyAgreeRecipientInfo with ephemeral-static ECDH (RFC 5753 section 3.1), the ANSI
    /// X9.63 KDF with SHA-256 and AES-256 key wrap.
    fn key_agree(&self, cek: &[u8]) -> io::Result<Vec<u8>> {
        let peer = self.key.ec_key().map_err(openssl_error)?;
        let group = peer.group();
        match group.curve_name() {
            Some(Nid::X9_62_PRIME256V1) | Some(Nid::SECP384R1) => {}
            other => {
                let name = other
                    .and_then(|n| n.short_name().ok())
                    .unwrap_or("explicit parameters");
                return Err(invalid(format!(
                    "certificate {} has an unsupported elliptic curve ({name})",
                    self.fingerprint
                )));
            }
        }
        let ephemeral = EcKey::generate(group).map_err(openssl_error)?;
        let mut ctx = BigNumContext::new().map_err(openssl_error)?;
        let point = ephemeral
            .public_key()
            .to_bytes(group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .map_err(openssl_error)?;
        let ephemeral = PKey::from_ec_key(ephemeral).map_err(openssl_error)?;
        let mut deriver = Deriver::new(&ephemeral).map_err(openssl_error)?;
        deriver.set_peer(&self.key).map_err(openssl_error)?;
        let mut shared = deriver.derive_to_vec().map_err(openssl_error)?;

        // ECC-CMS-SharedInfo (RFC 5753 section 7.2), no ukm, so no entityUInfo.
        let wrap_alg = ber::algorithm(OID_AES256_WRAP, None);
        let key_bits = ber::octet_string(&((CEK_LEN * 8) as u32).to_be_bytes());
        let supp_pub = ber::constructed(ber::context_constructed(2), &[&key_bits]);
        let shared_info = ber::sequence(&[&wrap_alg, &supp_pub]);

        // ANSI X9.63 KDF: one SHA-256 block yields the 256-bit KEK.
        let mut kdf_input = Vec::with_capacity(shared.len() + 4 + shared_info.len());
        kdf_input.extend_from_slice(&shared);
        kdf_input.extend_from_slice(&1u32.to_be_bytes());
        kdf_input.extend_from_slice(&shared_info);
        let digest = hash(MessageDigest::sha256(), &kdf_input);
        wipe(&mut shared);
        wipe(&mut kdf_input);
        let digest = digest.map_err(openssl_error)?;
        let mut kek = [0u8; CEK_LEN];
        kek.copy_from_slice(&digest);
        let wrap_key_result = AesKey::new_encrypt(&kek);
        wipe(&mut kek);
        let aes = wrap_key_result.map_err(|_| io::Error::other("AES key wrap setup failed"))?;
        let mut wrapped = vec![0u8; cek.len() + 8];
        let n = wrap_key(&aes, None, &mut wrapped, cek)
            .map_err(|_| io::Error::other("AES key wrap failed"))?;
        wrapped.truncate(n);

        let originator_key = ber::constructed(
            ber::context_constructed(1),
            // id-ecPublicKey with absent parameters, as OpenSSL writes it.
            &[
                &ber::algorithm(OID_EC_PUBLIC_KEY, None),
                &ber::bit_string(&point),
            ],
        );
        let originator = ber::constructed(ber::context_constructed(0), &[&originator_key]);
        let key_enc_alg = ber::algorithm(OID_ECDH_SHA256_KDF, Some(&wrap_alg));
        let rek = ber::sequence(&[&self.rid, &ber::octet_string(&wrapped)]);
        let reks = ber::sequence(&[&rek]);
        Ok(ber::constructed(
            ber::context_constructed(1),
            &[&ber::small_integer(3), &originator, &key_enc_alg, &reks],
        ))
    }
}

impl<W: Write> CmsWriter<W> {
    /// Starts a message encrypted to `recipients` (duplicates are encrypted to once).
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] when the list is empty or a certificate is
    /// unusable; the message names the certificate by its SHA-256 fingerprint.
    pub fn new(mut out: W, recipients: &[X509], options: CmsOptions) -> io::Result<CmsWriter<W>> {
        if recipients.is_empty() {
            return Err(invalid("no recipient certificates given".into()));
        }
        let mut checked: Vec<Recipient> = Vec::with_capacity(recipients.len());
        for cert in recipients {
            let r = Recipient::new(cert)?;
            if !checked.iter().any(|c| c.fingerprint == r.fingerprint) {
                checked.push(r);
            }
        }

        let mut cek = [0u8; CEK_LEN];
        openssl::rand::rand_bytes(&mut cek).map_err(openssl_error)?;
        let result = Self::start(&mut out, &checked, &cek, options);
        wipe(&mut cek);
        let crypter = result?;
        Ok(CmsWriter {
            out,
            crypter,
            cipher: options.cipher,
            pending: Vec::with_capacity(CHUNK + SLICE + CIPHER_SLACK),
            failed: false,
        })
    }

    /// Builds the RecipientInfos, writes the structure up to the encrypted content and
    /// returns the content cipher.
    fn start(
        out: &mut W,
        recipients: &[Recipient],
        cek: &[u8],
        options: CmsOptions,
    ) -> io::Result<Crypter> {
        let mut infos = Vec::with_capacity(recipients.len());
        let mut all_ktri_v0 = true;
        for r in recipients {
            let (info, ktri_v0) = r.recipient_info(cek, options)?;
            all_ktri_v0 &= ktri_v0;
            infos.push(info);
        }
        let recipient_infos = ber::set_of(infos);

        let (content_type, version, algorithm, crypter) = match options.cipher {
            ContentCipher::Aes256Cbc => {
                let mut iv = [0u8; CBC_IV_LEN];
                openssl::rand::rand_bytes(&mut iv).map_err(openssl_error)?;
                let crypter = Crypter::new(Cipher::aes_256_cbc(), Mode::Encrypt, cek, Some(&iv))
                    .map_err(openssl_error)?;
                // RFC 5652 section 6.1: no originatorInfo and no unprotectedAttrs, so the
                // version is 0 exactly when every RecipientInfo is a version 0 KTRI.
                let version = if all_ktri_v0 { 0 } else { 2 };
                let alg = ber::algorithm(OID_AES256_CBC, Some(&ber::octet_string(&iv)));
                (OID_ENVELOPED_DATA, version, alg, crypter)
            }
            ContentCipher::Aes256Gcm => {
                let mut nonce = [0u8; GCM_NONCE_LEN];
                openssl::rand::rand_bytes(&mut nonce).map_err(openssl_error)?;
                let crypter = Crypter::new(Cipher::aes_256_gcm(), Mode::Encrypt, cek, Some(&nonce))
                    .map_err(openssl_error)?;
                // GCMParameters (RFC 5084 section 3.2).
                let params = ber::sequence(&[
                    &ber::octet_string(&nonce),
                    &ber::small_integer(GCM_TAG_LEN as u32),
                ]);
                let alg = ber::algorithm(OID_AES256_GCM, Some(&params));
                // RFC 5083 section 2.1: the version is always 0.
                (OID_AUTH_ENVELOPED_DATA, 0, alg, crypter)
            }
        };

        let mut head = Vec::with_capacity(recipient_infos.len() + 128);
        head.extend_from_slice(&ber::indefinite(ber::TAG_SEQUENCE)); // ContentInfo
        head.extend_from_slice(&ber::oid(content_type));
        head.extend_from_slice(&ber::indefinite(ber::context_constructed(0))); // [0] content
        head.extend_from_slice(&ber::indefinite(ber::TAG_SEQUENCE)); // (Auth)EnvelopedData
        head.extend_from_slice(&ber::small_integer(version));
        head.extend_from_slice(&recipient_infos);
        head.extend_from_slice(&ber::indefinite(ber::TAG_SEQUENCE)); // (auth)encryptedContentInfo
        head.extend_from_slice(&ber::oid(OID_DATA));
        head.extend_from_slice(&algorithm);
        // encryptedContent [0] IMPLICIT OCTET STRING, constructed.
        head.extend_from_slice(&ber::indefinite(ber::context_constructed(0)));
        out.write_all(&head)?;
        Ok(crypter)
    }

    /// Capacity of the internal ciphertext buffer; constant for the writer's lifetime.
    pub fn buffer_capacity(&self) -> usize {
        self.pending.capacity()
    }

    fn check(&self) -> io::Result<()> {
        if self.failed {
            Err(io::Error::other(
                "the CMS writer failed earlier and cannot continue",
            ))
        } else {
            Ok(())
        }
    }

    /// Encrypts `input` (at most `SLICE` bytes) into the pending buffer.
    fn encrypt_slice(&mut self, input: &[u8]) -> io::Result<()> {
        let start = self.pending.len();
        self.pending.resize(start + input.len() + CIPHER_SLACK, 0);
        match self.crypter.update(input, &mut self.pending[start..]) {
            Ok(n) => {
                self.pending.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                self.pending.truncate(start);
                Err(openssl_error(e))
            }
        }
    }

    /// Writes the pending ciphertext as one primitive OCTET STRING.
    fn emit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut header = Vec::with_capacity(6);
        ber::push_header(&mut header, ber::TAG_OCTET_STRING, self.pending.len());
        self.out.write_all(&header)?;
        self.out.write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    fn write_inner(&mut self, buf: &[u8]) -> io::Result<()> {
        for piece in buf.chunks(SLICE) {
            self.encrypt_slice(piece)?;
            if self.pending.len() >= CHUNK {
                self.emit()?;
            }
        }
        Ok(())
    }

    fn finish_inner(&mut self) -> io::Result<()> {
        let start = self.pending.len();
        self.pending.resize(start + CIPHER_SLACK, 0);
        let n = self
            .crypter
            .finalize(&mut self.pending[start..])
            .map_err(openssl_error)?;
        self.pending.truncate(start + n);
        self.emit()?;
        let mut tail = Vec::with_capacity(32);
        tail.extend_from_slice(&ber::END_OF_CONTENTS); // encryptedContent
        tail.extend_from_slice(&ber::END_OF_CONTENTS); // (auth)encryptedContentInfo
        if self.cipher == ContentCipher::Aes256Gcm {
            let mut tag = [0u8; GCM_TAG_LEN];
            self.crypter.get_tag(&mut tag).map_err(openssl_error)?;
            tail.extend_from_slice(&ber::octet_string(&tag)); // mac
        }
        tail.extend_from_slice(&ber::END_OF_CONTENTS); // (Auth)EnvelopedData
        tail.extend_from_slice(&ber::END_OF_CONTENTS); // [0] content
        tail.extend_from_slice(&ber::END_OF_CONTENTS); // ContentInfo
        self.out.write_all(&tail)?;
        self.out.flush()
    }

    /// Finalizes the encryption, closes the structure and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        self.finish_inner()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for CmsWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        match self.write_inner(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Flushes the inner writer. Buffered ciphertext stays buffered so the chunks stay large.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Plaintext bytes per base64 line: 57 bytes give 76 characters.
const B64_LINE_IN: usize = 57;
const B64_LINE_OUT: usize = 76;
/// Encoded output is handed on once this much is collected.
const B64_FLUSH: usize = 16 * 1024;

/// Base64 encoder for a MIME body: lines of 76 characters ending in `"\n"` (the caller
/// converts to CRLF), the last line shorter and also ended by `"\n"`. Empty input gives
/// empty output. Memory is bounded regardless of the input size.
pub struct Base64Lines<W: Write> {
    out: W,
    partial: [u8; B64_LINE_IN],
    partial_len: usize,
    encoded: Vec<u8>,
}

impl<W: Write> Base64Lines<W> {
    pub fn new(out: W) -> Base64Lines<W> {
        Base64Lines {
            out,
            partial: [0; B64_LINE_IN],
            partial_len: 0,
            encoded: Vec::with_capacity(B64_FLUSH + B64_LINE_OUT + 1),
        }
    }

    fn push_line(&mut self, line: &[u8]) {
        let start = self.encoded.len();
        let len = base64::encoded_len(line.len(), true).expect("short line");
        self.encoded.resize(start + len, 0);
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(line, &mut self.encoded[start..])
            .expect("buffer sized by encoded_len");
        self.encoded.truncate(start + n);
        self.encoded.push(b'\n');
    }

    fn flush_encoded(&mut self, force: bool) -> io::Result<()> {
        if !self.encoded.is_empty() && (force || self.encoded.len() >= B64_FLUSH) {
            self.out.write_all(&self.encoded)?;
            self.encoded.clear();
        }
        Ok(())
    }

    /// Writes the last line and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.partial_len > 0 {
            let partial = self.partial;
            self.push_line(&partial[..self.partial_len]);
            self.partial_len = 0;
        }
        self.flush_encoded(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Base64Lines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        if self.partial_len > 0 {
            let take = (B64_LINE_IN - self.partial_len).min(rest.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&rest[..take]);
            self.partial_len += take;
            rest = &rest[take..];
            if self.partial_len < B64_LINE_IN {
                return Ok(buf.len());
            }
            let line = self.partial;
            self.push_line(&line);
            self.partial_len = 0;
        }
        let mut lines = rest.chunks_exact(B64_LINE_IN);
        for line in &mut lines {
            self.push_line(line);
            self.flush_encoded(false)?;
        }
        let tail = lines.remainder();
        self.partial[..tail.len()].copy_from_slice(tail);
        self.partial_len = tail.len();
        self.flush_encoded(false)?;
        Ok(buf.len())
    }

    /// Hands complete lines on; an incomplete last line waits for more input or `finish`.
    fn flush(&mut self) -> io::Result<()> {
        self.flush_encoded(true)?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lines_match_base64_crate() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ea1_9057);
        for len in 0..200usize {
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
            let mut expected = String::new();
            for line in b64.as_bytes().chunks(B64_LINE_OUT) {
                expected.push_str(std::str::from_utf8(line).unwrap());
                expected.push('\n');
            }
            for _ in 0..8 {
                let mut w = Base64Lines::new(Vec::new());
                let mut rest = data.as_slice();
                while !rest.is_empty() {
                    let n = rng.gen_range(0..=rest.len().min(70));
                    w.write_all(&rest[..n]).unwrap();
                    rest = &rest[n..];
                    if rng.gen_range(0..10) == 0 {
                        w.flush().unwrap();
                    }
                }
                let got = w.finish().unwrap();
                assert_eq!(String::from_utf8(got).unwrap(), expected, "length {len}");
            }
        }
    }

    #[test]
    fn smime_types() {
        assert_eq!(ContentCipher::Aes256Cbc.smime_type(), "enveloped-data");
        assert_eq!(ContentCipher::Aes256Gcm.smime_type(), "authEnveloped-data");
    }
}
