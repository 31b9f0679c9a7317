//! `tracelab`: start the lab, send traffic, read traces.
//!
//! `cargo run -p tracelab -- --help` lists the commands; see the library docs
//! (`src/lib.rs`) for what each module does.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    quiet_on_closed_stdout();
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

/// `tracelab traces | head` closes our stdout early; Rust ignores SIGPIPE,
/// so the next `println!` panics. Exit quietly instead, as a shell tool
/// should, and keep every other panic's report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
