//! search binary: `cargo run -p search`.

use std::process::ExitCode;

use search::{Config, build};
use tracelab_service::Service;

#[tokio::main]
async fn main() -> ExitCode {
    Service::main("search", Config::from_env, |config, shutdown| async move {
        build(config).await?.run_until(shutdown).await
    })
    .await
}
