//! `sealpost man DIR` (hidden): the man pages, generated from the command-line definition so
//! they cannot drift from `--help`. The Debian package build runs it (deploy/debian/build-deb).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

pub fn write(dir: &Path) -> Result<ExitCode> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
