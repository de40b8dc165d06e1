//! The command-line interface (a stable contract: scripts and other tools drive it).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sealpost_keystore::Address;

#[derive(Parser, Debug)]
#[command(
    name = "sealpost",
    version,
    about = "Encrypts mail at delivery to the mailbox owner's OpenPGP key",
    long_about = "sealpost encrypts every inbound message to the mailbox owner's OpenPGP public key \
before Postfix queues it, and keeps the keys in a keystore (SQLite by default, or PostgreSQL).",
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
    /// Run the milter and the metrics endpoint in one process.
    #[command(
        after_help = "Example:\n  sealpost serve --config /etc/sealpost/sealpost.toml\n\n\
Stops on SIGTERM or SIGINT after in-flight messages finish ([milter] shutdown_grace_secs)."
    )]
    Serve,
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
    /// Validate the configuration, the database and every stored key.
    #[command(
        after_help = "Exit status: 0 when everything is fine, 1 when anything is wrong \
(one line per problem on stderr).\n\nExample:\n  sealpost check --config /etc/sealpost/sealpost.toml"
    )]
    Check(CheckArgs),
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("recipients").required(true).multiple(true))]
pub struct EncryptArgs {
    /// Encrypt to the OpenPGP certificate in this file (repeatable).
    #[arg(long = "to", value_name = "KEYFILE", group = "recipients")]
    pub to: Vec<PathBuf>,
    /// Encrypt to the active keys of this account in the keystore (repeatable).
    #[arg(long = "account", value_name = "ADDR", value_parser = parse_address, group = "recipients")]
    pub account: Vec<Address>,
    /// Replace the outer Subject with "[...]" (the real one stays inside).
    #[arg(long)]
    pub protect_subject: bool,
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
    /// Import an OpenPGP public key for an address (creates the account when missing).
    #[command(
        after_help = "FILE may be armored or binary; '-' reads standard input.\n\n\
Example:\n  gpg --export --armor alice@example.org | sealpost keys import alice@example.org -"
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
