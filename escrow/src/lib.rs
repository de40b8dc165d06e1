//! sealpost escrow: the security officer's tools for recovery models 4 and 5.
//!
//! - [`officer`]: generate the officer key (offline), protect it with a passphrase or split
//!   it into Shamir shares, and load it back for recovery;
//! - [`bundle`]: export recovery bundles from the keystore (server side, audited);
//! - [`recover`]: decrypt an escrowed password, unlock the user's key, re-protect it;
//! - [`maildir`]: decrypt a Maildir of sealpost-encrypted mail (PGP/MIME and S/MIME);
//! - [`smime`]: PKCS#12 bundles and CMS messages of S/MIME mailboxes;
//! - [`reinstate`]: store a re-protected key for the user (server side, audited);
//! - [`drill`]: check offline that every escrow opens and its password unlocks its key;
//! - [`rotate`]: re-escrow every password to a new officer key and import the result.
//!
//! Nothing here logs or prints a secret; error messages name files, accounts and
//! fingerprints only.

pub mod bundle;
pub mod drill;
pub mod maildir;
pub mod officer;
pub mod progress;
pub mod recover;
pub mod reinstate;
pub mod rotate;
pub mod secret_io;
pub mod smime;
pub mod symmetric;

pub use bundle::{Bundle, BundleEntry, Selection};
pub use officer::{OfficerAlgorithm, OfficerSecret, SecretOutput};
pub use secret_io::PassphraseSource;
