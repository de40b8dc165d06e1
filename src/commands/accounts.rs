use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use sealpost_keystore::Actor;

use super::{open_keystore, print_json};
use crate::cli::AccountsCmd;
use crate::config::Config;

pub async fn run(config: &Config, cmd: AccountsCmd) -> Result<ExitCode> {
    let ks = open_keystore(config).await?;
    let actor = Actor::cli();
    match cmd {
        AccountsCmd::Add { address, aliases } => {
            let a = ks.add_account(&address, &aliases, &actor).await?;
            println!("added account {} ({})", a.primary, a.id);
        }
        AccountsCmd::List { json } => {
            let accounts = ks.list_accounts().await?;
            if json {
                print_json(&accounts)?;
            } else if accounts.is_empty() {
                println!("no accounts");
            } else {
                for a in accounts {
                    let aliases = if a.aliases.is_empty() {
                        String::new()
                    } else {
                        format!("  aliases: {}", a.aliases.join(", "))
                    };
                    println!("{}  {}{}", a.id, a.primary, aliases);
                }
            }
        }
        AccountsCmd::Remove { address } => {
            let a = ks.remove_account(&address, &actor).await?;
            println!("removed account {} ({})", a.primary, a.id);
        }
        AccountsCmd::Passwd { address } => {
            // Resolve first so a typo fails before the password is asked for.
            ks.require_account(&address).await?;
            let pw = read_new_password()?;
            ks.set_password(&address, &pw, &actor).await?;
            println!("password set for {address}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_new_password() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let a = rpassword::prompt_password("New password: ").context("cannot read the password")?;
        let b = rpassword::prompt_password("Repeat it: ").context("cannot read the password")?;
        if a != b {
            bail!("the two passwords differ; nothing was changed");
        }
        return Ok(a);
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        bail!("no password on standard input; nothing was changed");
    }
    Ok(pw)
}
