//! payment-provider binary: `cargo run -p payment-provider`.

use std::process::ExitCode;

use payment_provider::{Config, build};
use tracelab_service::Service;

#[tokio::main]
async fn main() -> ExitCode {
    Service::main(
        "payment-provider",
        Config::from_env,
        |config, shutdown| async move { build(config).await?.run_until(shutdown).await },
    )
    .await
}
