//! notification binary: `cargo run -p notification`.

use std::process::ExitCode;

use notification::{Config, build};
use tracelab_service::Service;

#[tokio::main]
async fn main() -> ExitCode {
    Service::main(
        "notification",
        Config::from_env,
        |config, shutdown| async move { build(config).await?.run_until(shutdown).await },
    )
    .await
}
