//! sealpost keystore: accounts and their addresses, public keys, protected private keys,
//! escrow blobs, officer keys, the hash-chained audit log and JMAP change states, on SQLite
//! (the embedded default) or PostgreSQL. Also home of the OpenPGP key policy.

pub mod address;
pub mod audit;
pub mod password;
pub mod policy;
pub mod protection;
pub mod recipient;
pub mod secrets;
pub mod settings;
pub mod store;
pub mod x509;

pub use address::{Address, LocalPartMatch, LookupConfig};
pub use policy::{CertInfo, KeyKind, PolicyConfig, PolicyError};
pub use protection::{Protection, ProtectionConfig, ProtectionError};
pub use secrets::{EscrowRecord, OfficerKeyRecord, PrivateKeyRecord};
pub use settings::AccountSettings;
pub use store::{
    Account, Actor, Backend, Change, ChangeOp, DatabaseConfig, Error, Keystore, ObjectType,
    PublicKeyRecord,
};

/// Current time as Unix seconds.
pub fn now_unix() -> i64 {
    policy::unix(std::time::SystemTime::now())
}

/// A random lower-case hex string of `bytes` random bytes.
pub fn random_id(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}
