//! gateway binary: `cargo run -p gateway`.

use std::process::ExitCode;

use gateway::{Config, build};
use tracelab_service::Service;

#[tokio::main]
async fn main() -> ExitCode {
    Service::main("gateway", Config::from_env, |config, shutdown| async move {
        build(config).await?.run_until(shutdown).await
    })
    .await
}
