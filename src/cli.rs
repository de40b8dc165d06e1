//! The command-line interface (a stable contract: scripts and other tools drive it).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sealpost_keystore::Address;

#[derive(Parser, Debug)]
#[command(
    name = "sealpost",
    version,
    about = "Encrypts mail at delivery to the mailbox owner's OpenPGP key or S/MIME certificate",
    long_about = "sealpost encrypts every inbound message to the mailbox owner's OpenPGP public key \
or S/MIME (X.509) certificate before Postfix queues it, and keeps the keys in a keystore (SQLite by default, or PostgreSQL).",
    after_help = "Examples:\n  sealpost --config /etc/sealpost/sealpost.toml check\n  \
sealpost keys import alice@example.org alice.asc\n  sealpost keys list --json"
)]
pub struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults apply; SEALPOST_* variables
    /// override either (e.g. SEALPOST_DATABASE_URL).
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "FILE",
        env = "SEALPOST_CONFIG"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the milter, the JMAP key service and the metrics endpoint in one process.
    #[command(
        after_help = "Example:\n  sealpost serve --config /etc/sealpost/sealpost.toml\n\n\
Stops on SIGTERM or SIGINT after in-flight messages finish ([milter] shutdown_grace_secs). \
The JMAP service listens on [jmap] listen (empty: not started)."
    )]
    Serve,
    /// Run only the JMAP key service (webmail clients manage keys through it).
    #[command(
        after_help = "Example:\n  sealpost jmap --config /etc/sealpost/sealpost.toml\n\n\
Listens on [jmap] listen (default 127.0.0.1:8747): the session is at /.well-known/jmap, \
the API at /jmap. Put a TLS-terminating reverse proxy in front (see docs/jmap.md)."
    )]
    Jmap,
    /// Run only the milter (for scaling out; needs read access to the keystore only).
    #[command(after_help = "Example:\n  sealpost milter --config /etc/sealpost/sealpost.toml")]
    Milter,
    /// Encrypt one message from standard input to standard output (PGP/MIME).
    #[command(
        after_help = "Examples:\n  sealpost encrypt --to alice.asc < in.eml > out.eml\n  \
sealpost encrypt --account alice@example.org --config /etc/sealpost/sealpost.toml < in.eml\n\n\
Already-encrypted messages are copied unchanged apart from the X-Sealpost trace header."
    )]
    Encrypt(EncryptArgs),
    /// Manage accounts and their addresses.
    #[command(subcommand)]
    Accounts(AccountsCmd),
    /// Manage public keys that mail is encrypted to.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Inspect and verify the hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Security-officer commands: officer keys, escrow export, offline recovery.
    #[command(
        subcommand,
        after_help = "Server: officer-add, officer-list, officer-retire, export, reinstate, \
import-rotation. Offline machine: officer-init, recover, audit, rotate. The officer's runbook \
is docs/officer.md.\n\nA recovery, step by step:\n  \
sealpost escrow export --account alice@example.org --reason \"ticket 4711\" --out alice.bundle\n  \
sealpost escrow recover --bundle alice.bundle --officer-key officer.key.asc \\\n      --reprotect --out alice-new.asc\n  \
sealpost escrow reinstate --account alice@example.org alice-new.asc --reason \"ticket 4711\""
    )]
    Escrow(Box<EscrowCmd>),
    /// Encrypt the mail already stored in a Maildir.
    #[command(subcommand)]
    Maildir(MaildirCmd),
    /// Validate the configuration, the database and every stored key.
    #[command(
        after_help = "Exit status: 0 when everything is fine, 1 when anything is wrong \
(one line per problem on stderr).\n\nExample:\n  sealpost check --config /etc/sealpost/sealpost.toml"
    )]
    Check(CheckArgs),
    /// Write the man pages (sealpost.1 and one per subcommand) into DIR; used when packaging.
    #[command(hide = true)]
    Man {
        /// Output directory (created when missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("recipients").required(true).multiple(true))]
pub struct EncryptArgs {
    /// Encrypt to the OpenPGP certificate or X.509 (S/MIME) certificate in this file
    /// (repeatable; all of one kind).
    #[arg(long = "to", value_name = "KEYFILE", group = "recipients")]
    pub to: Vec<PathBuf>,
    /// Encrypt to the active keys of this account in the keystore (repeatable).
    #[arg(long = "account", value_name = "ADDR", value_parser = parse_address, group = "recipients")]
    pub account: Vec<Address>,
    /// Replace the outer Subject with "[...]" (the real one stays inside).
    #[arg(long)]
    pub protect_subject: bool,
}

#[derive(Subcommand, Debug)]
pub enum MaildirCmd {
    /// Encrypt every message of a Maildir in place to an account's active keys.
    #[command(
        after_help = "Each message in cur/ and new/ (and in Maildir++ folders such as .Sent/) \
is encrypted with the milter's transform into tmp/, flushed to disk and atomically swapped \
with the original, keeping its file name, flags, owner, mode and modification time; size \
fields in the name (,S= and ,W=) are updated to the new size. Messages that are already \
encrypted are left alone, so an interrupted run can simply be started again. Prints how \
many messages were encrypted, already encrypted and failed; exit status 1 when any failed.

Examples:
  sealpost maildir encrypt /srv/mail/alice/Maildir --account alice@example.org --dry-run
  sealpost maildir encrypt /srv/mail/alice/Maildir --account alice@example.org"
    )]
    Encrypt(MaildirEncryptArgs),
    /// Decrypt a Maildir of sealpost-encrypted mail with your own secret key, into a new
    /// Maildir.
    #[command(
        after_help = "For a mailbox owner who exported their secret key (for example from the \
webmail, recovery model 2) and wants their mail back in clear, e.g. to move to another \
provider. DIR is only read; every file is copied to the same place under --out, with the \
messages sealpost encrypted to this key rebuilt as they arrived, and everything else copied \
byte for byte. The key's passphrase is asked on the terminal, or read from \
--passphrase-file; an unprotected key needs none. Exit status 1 when a message failed.

Examples:
  sealpost maildir decrypt ~/Maildir --key my-secret-key.asc --out ~/Maildir-clear
  sealpost maildir decrypt ~/Maildir --key key.asc --passphrase-file pass.txt --out clear"
    )]
    Decrypt(MaildirDecryptArgs),
}

#[derive(Args, Debug)]
pub struct MaildirDecryptArgs {
    /// The Maildir with sealpost-encrypted mail (only read).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Your secret key (armored or binary OpenPGP, as exported by the webmail or gpg), or
    /// your S/MIME key as a password-protected PKCS#12 (.p12) bundle.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Read the key's passphrase from this file instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// A new (or empty) directory for the decrypted Maildir.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print the counts (and failures) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MaildirEncryptArgs {
    /// The Maildir (the directory holding cur/, new/ and tmp/).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Encrypt to the active keys of this account in the keystore.
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub account: Address,
    /// Only count what would be encrypted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the counts (and failures) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum AccountsCmd {
    /// Create an account with a primary address and optional aliases.
    #[command(
        after_help = "Example:\n  sealpost accounts add alice@example.org --alias a.smith@example.org"
    )]
    Add {
        /// The primary address.
        #[arg(value_parser = parse_address)]
        address: Address,
        /// Another address delivering to the same mailbox (repeatable).
        #[arg(long = "alias", value_parser = parse_address)]
        aliases: Vec<Address>,
    },
    /// List accounts.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an account with its keys and escrows.
    Remove {
        #[arg(value_parser = parse_address)]
        address: Address,
    },
    /// Set the account's password for the static JMAP login mode (argon2id).
    #[command(
        after_help = "The password is read from the terminal (twice), or as one line from \
standard input when it is not a terminal:\n  printf '%s\\n' \"$PW\" | sealpost accounts passwd alice@example.org"
    )]
    Passwd {
        #[arg(value_parser = parse_address)]
        address: Address,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Import an OpenPGP public key or an S/MIME (X.509) certificate for an address
    /// (creates the account when missing).
    #[command(
        after_help = "FILE may be an armored or binary OpenPGP key, or a PEM or DER X.509 \
certificate (the kind is detected from the content); '-' reads standard input.\n\n\
Examples:\n  gpg --export --armor alice@example.org | sealpost keys import alice@example.org -\n  \
sealpost keys import alice@example.org alice-smime.pem"
    )]
    Import {
        #[arg(value_parser = parse_address)]
        address: Address,
        /// Key file, or '-' for standard input.
        file: PathBuf,
        /// Print the stored key as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys, all or one account's.
    List {
        #[arg(value_parser = parse_address)]
        address: Option<Address>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one key with its history.
    Show {
        /// Fingerprint (hex, spaces allowed).
        fingerprint: String,
        #[arg(long)]
        json: bool,
        /// Print the armored key instead.
        #[arg(long)]
        armor: bool,
    },
    /// Remove a key (and any private key and escrow bound to it).
    Remove { fingerprint: String },
    /// Encrypt mail to this key again.
    Activate { fingerprint: String },
    /// Stop encrypting mail to this key (it stays stored).
    Deactivate { fingerprint: String },
    /// List active keys that stop being usable for encryption within N days.
    #[command(
        after_help = "The server cannot extend a key: its owner must extend it and upload it \
again. A key counts as expiring when its primary key or its last encryption subkey expires; \
keys already unusable are listed as expired. Exit status 0 whether or not any are found.

With --notify, each key's owner also gets a short mail (submitted through the local MTA's \
sendmail) naming the key and the date; exit status 1 when a mail could not be submitted. Run \
it from a weekly timer: every run mails every owner in the window again.

Examples:
  sealpost keys expiring --days 30
  sealpost keys expiring --days 14 --json
  sealpost keys expiring --days 30 --notify --from postmaster@example.org"
    )]
    Expiring {
        /// The window, in days from now.
        #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=36500))]
        days: u32,
        /// Print JSON: a list of {address, fingerprint, expires, expires_at, expired}.
        #[arg(long)]
        json: bool,
        /// Mail each key's owner a notice through the local MTA.
        #[arg(long)]
        notify: bool,
        /// Sender of the notices (header and envelope).
        #[arg(
            long,
            value_name = "ADDR",
            default_value = "postmaster",
            requires = "notify"
        )]
        from: String,
        /// The MTA's sendmail-compatible submission program.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/usr/sbin/sendmail",
            requires = "notify"
        )]
        sendmail: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Check the hash chain; exit 1 when a row was changed or removed.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// List audit rows.
    Show {
        /// Only rows about this account.
        #[arg(long, value_parser = parse_address)]
        account: Option<Address>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_address(s: &str) -> Result<Address, String> {
    Address::parse(s).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OfficerAlgo {
    /// Ed25519 + Curve25519 (readable by GnuPG 2.2 and later).
    Cv25519,
    /// RSA 4096.
    Rsa4096,
}

/// Where the officer's secret key comes from for offline commands.
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("officer").required(true))]
pub struct OfficerSecretArgs {
    /// The officer's protected secret key file (officer-FPR.key.asc).
    #[arg(long, value_name = "FILE", group = "officer")]
    pub officer_key: Option<PathBuf>,
    /// Read the officer key's passphrase from the first line of this file instead of the
    /// terminal.
    #[arg(long, value_name = "FILE", requires = "officer_key")]
    pub passphrase_file: Option<PathBuf>,
    /// A share file of the officer key (repeat for each share; THRESHOLD of them are needed).
    #[arg(long = "share", value_name = "FILE", group = "officer")]
    pub shares: Vec<PathBuf>,
    /// Passphrase file for a protected share (repeat, in the order of the protected
    /// --share files); protected shares without one are asked for on the terminal.
    #[arg(long = "share-passphrase-file", value_name = "FILE")]
    pub share_passphrase_files: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum EscrowCmd {
    /// Generate a security-officer key (run it on an offline machine).
    #[command(
        after_help = "Without --shares the secret key is written protected by a passphrase, \
read from the terminal (twice) or from --passphrase-file. With --shares N --threshold M it is \
split with Shamir's scheme into N share files, any M of which recover it; --share-passphrase \
protects each share with its own passphrase (asked per share, or one --share-passphrase-file per \
share). Files with secrets are created with mode 0600; existing files are never overwritten.

Examples:
  sealpost escrow officer-init --out /media/offline/officer
  sealpost escrow officer-init --out officer --algo rsa4096 --passphrase-file pass.txt
  sealpost escrow officer-init --out officer --shares 3 --threshold 2 --share-passphrase"
    )]
    OfficerInit {
        /// Directory for the key files (created with mode 0700 when missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Key algorithm.
        #[arg(long, value_enum, default_value = "cv25519")]
        algo: OfficerAlgo,
        /// User ID of the officer key.
        #[arg(long, value_name = "UID", default_value = "sealpost security officer")]
        user_id: String,
        /// Read the key's passphrase from the first line of this file instead of the terminal.
        #[arg(long, value_name = "FILE", conflicts_with = "shares")]
        passphrase_file: Option<PathBuf>,
        /// Split the secret key into this many share files.
        #[arg(long, value_name = "N", requires = "threshold", value_parser = clap::value_parser!(u8).range(2..))]
        shares: Option<u8>,
        /// How many shares recover the key.
        #[arg(long, value_name = "M", requires = "shares", value_parser = clap::value_parser!(u8).range(2..))]
        threshold: Option<u8>,
        /// Protect each share with its own passphrase.
        #[arg(long, requires = "shares")]
        share_passphrase: bool,
        /// Passphrase file for each share, in order (implies --share-passphrase).
        #[arg(
            long = "share-passphrase-file",
            value_name = "FILE",
            requires = "shares"
        )]
        share_passphrase_files: Vec<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install an officer public key on the server (active: clients escrow to it).
    #[command(after_help = "Example:\n  sealpost escrow officer-add officer-0123…ABCD.pub.asc")]
    OfficerAdd {
        /// The officer's public key file.
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List installed officer keys.
    #[command(after_help = "Example:\n  sealpost escrow officer-list --json")]
    OfficerList {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Retire an officer key: clients stop escrowing to it; existing escrows stay.
    #[command(
        after_help = "To move the escrows to a new key first, see `escrow rotate`.\n\n\
Example:\n  sealpost escrow officer-retire 0123456789ABCDEF0123456789ABCDEF01234567"
    )]
    OfficerRetire {
        /// Fingerprint (hex, spaces allowed).
        fingerprint: String,
    },
    /// Export a recovery bundle (protected keys and escrows) for offline recovery; audited.
    #[command(
        after_help = "The bundle is created with mode 0600. Each exported key gets an \
audit row with the reason and the operator.

Examples:
  sealpost escrow export --account alice@example.org --reason \"ticket 4711: lost password\" --out alice.bundle
  sealpost escrow export --all --reason \"quarterly drill\" --out all.bundle"
    )]
    #[command(group = clap::ArgGroup::new("which").required(true))]
    Export {
        /// The account to export.
        #[arg(long, value_name = "ADDR", value_parser = parse_address, group = "which")]
        account: Option<Address>,
        /// Export every stored private key and escrow (for the drill and rotation).
        #[arg(long, group = "which")]
        all: bool,
        /// Why (recorded in the audit log).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// The bundle file to write.
        #[arg(long, value_name = "BUNDLE")]
        out: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Offline: recover a user's password or key from a bundle with the officer key.
    #[command(
        after_help = "Exactly one of --reveal-password, --reprotect, --decrypt-maildir.

Examples:
  sealpost escrow recover --bundle alice.bundle --officer-key officer.key.asc --reveal-password
  sealpost escrow recover --bundle alice.bundle --share s1.json --share s3.json \\
      --reprotect --new-password-file new.txt --out alice-new.asc
  sealpost escrow recover --bundle alice.bundle --officer-key officer.key.asc \\
      --decrypt-maildir /srv/mail/alice/Maildir --out /srv/recovered/alice"
    )]
    #[command(group = clap::ArgGroup::new("action").required(true))]
    Recover {
        /// The recovery bundle made by `escrow export`.
        #[arg(long, value_name = "BUNDLE")]
        bundle: PathBuf,
        #[command(flatten)]
        officer: OfficerSecretArgs,
        /// Which account's key (when the bundle holds several).
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        account: Option<Address>,
        /// Which key, by fingerprint (when the account has several).
        #[arg(long = "key", value_name = "FPR")]
        key: Option<String>,
        /// Show the user's password: on the terminal only, or into --out FILE (mode 0600).
        #[arg(long, group = "action")]
        reveal_password: bool,
        /// Unlock the private key and protect it under a new password, written to --out.
        #[arg(long, group = "action", requires = "out")]
        reprotect: bool,
        /// The new password (first line of this file); without it, asked on the terminal.
        #[arg(long, value_name = "FILE", requires = "reprotect")]
        new_password_file: Option<PathBuf>,
        /// Also escrow the new password to the officer key, into this file, for
        /// `escrow reinstate --escrow` (the user keeps an escrow; needed for model 5).
        #[arg(long, value_name = "FILE", requires = "reprotect")]
        escrow_out: Option<PathBuf>,
        /// Decrypt the sealpost-encrypted mail of this Maildir into --out (DIR is not changed).
        #[arg(long, value_name = "DIR", group = "action", requires = "out")]
        decrypt_maildir: Option<PathBuf>,
        /// Output file or directory.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Offline drill: check that every escrow in a bundle decrypts and its password really
    /// unlocks its private key.
    #[command(
        after_help = "Reports per key: ok, escrow missing, escrow undecryptable, password \
wrong, or key missing. Exit status 1 when any key is not ok.

Example:
  sealpost escrow export --all --reason \"quarterly drill\" --out all.bundle   # on the server
  sealpost escrow audit --bundle all.bundle --officer-key officer.key.asc      # offline"
    )]
    Audit {
        /// A bundle made by `escrow export --all`.
        #[arg(long, value_name = "BUNDLE")]
        bundle: PathBuf,
        #[command(flatten)]
        officer: OfficerSecretArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Offline: re-encrypt every escrowed password of a bundle to a new officer key.
    #[command(after_help = "Then, on the server: `escrow officer-add NEW.asc` and \
`escrow import-rotation REESCROWS`.

Example:
  sealpost escrow rotate --bundle all.bundle --officer-key old.key.asc \\
      --new-public officer-NEW.pub.asc --out reescrows.json")]
    Rotate {
        #[arg(long, value_name = "BUNDLE")]
        bundle: PathBuf,
        /// The old officer key (--officer-key or --share …).
        #[command(flatten)]
        officer: OfficerSecretArgs,
        /// The new officer public key.
        #[arg(long, value_name = "FILE")]
        new_public: PathBuf,
        /// The rotation file to write (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store the escrows made by `escrow rotate` and retire the old officer key (audited).
    #[command(
        after_help = "The new officer key must be installed first (escrow officer-add). \
Escrows that changed since the export are left as they are and listed.

Example:
  sealpost escrow import-rotation reescrows.json"
    )]
    ImportRotation {
        /// The rotation file.
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store a re-protected private key for the user (replaces the old one; audited).
    #[command(
        after_help = "The old escrow held the old password: it is replaced by --escrow when \
given (made by `recover --reprotect --escrow-out`), else removed. A server-generated key \
(model 5) needs --escrow to stay recoverable.

Examples:
  sealpost escrow reinstate --account alice@example.org alice-new.asc --reason \"ticket 4711\"
  sealpost escrow reinstate --account bob@example.org bob-new.asc --escrow bob-escrow.asc"
    )]
    Reinstate {
        /// The account whose key is replaced.
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        account: Address,
        /// The re-protected key made by `escrow recover --reprotect`.
        file: PathBuf,
        /// Store this escrow of the new password (made by `recover --escrow-out`) with the
        /// key, instead of leaving the key without escrow.
        #[arg(long, value_name = "FILE")]
        escrow: Option<PathBuf>,
        /// Why (recorded in the audit log).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}
