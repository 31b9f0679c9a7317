//! `tracelab admin-token`: a random admin token, for `.env` or for the file
//! every compose service reads (compose's one-shot `admin-token-init`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::supervisor::{ensure_token_file, random_secret};

/// `tracelab admin-token`
#[derive(Debug, Args)]
pub struct AdminTokenArgs {
    /// Make sure this file holds a token: keep the one there, or write a
    /// new random one (mode 0600). Without it, print a new token.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

pub(super) fn run(args: AdminTokenArgs) -> anyhow::Result<ExitCode> {
    match args.file {
        Some(path) => {
            let wrote = ensure_token_file(&path)?;
            println!(
                "{}: {}",
                path.display(),
                if wrote {
                    "a new admin token"
                } else {
                    "keeps its admin token"
                }
            );
        }
        None => println!("{}", random_secret()),
    }
    Ok(ExitCode::SUCCESS)
}
