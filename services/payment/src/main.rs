//! payment binary: `cargo run -p payment`.

use std::process::ExitCode;

use payment::{Config, build};
use tracelab_service::Service;

#[tokio::main]
async fn main() -> ExitCode {
    Service::main("payment", Config::from_env, |config, shutdown| async move {
        build(config).await?.run_until(shutdown).await
    })
    .await
}
