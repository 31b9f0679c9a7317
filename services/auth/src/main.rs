//! auth binary: `cargo run -p auth`.

use std::process::ExitCode;

use auth::{Config, build};
use tracelab_service::Service;

#[tokio::main]
async fn main() -> ExitCode {
    Service::main("auth", Config::from_env, |config, shutdown| async move {
        build(config).await?.run_until(shutdown).await
    })
    .await
}
