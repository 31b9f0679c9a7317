//! `tracelab`: start the lab, send traffic, read traces.
//!
//! `cargo run -p tracelab -- --help` lists the commands; see the library docs
//! (`src/lib.rs`) for what each module does.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = tracelab::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tracelab::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
