//! `tracelab health URL`: the Docker healthcheck of the tracelab image.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use reqwest::Url;

use super::args::duration_arg;

/// `tracelab health`
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// URL to GET, e.g. http://127.0.0.1:8080/health.
    pub url: Url,
    /// How long to wait for the answer, e.g. 3s or 500ms.
    #[arg(long, default_value = "3s", value_parser = duration_arg, value_name = "DURATION")]
    pub timeout: Duration,
}
pub(super) async fn run(args: HealthArgs) -> ExitCode {
    let timeout = args.timeout;
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => {
            println!("unhealthy: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(args.url.clone()).send().await {
        Ok(resp) if resp.status().is_success() => {
            println!("healthy: {} answered {}", args.url, resp.status());
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.trim().chars().take(200).collect();
            println!("unhealthy: {} answered {status} {body}", args.url);
            ExitCode::FAILURE
        }
        Err(e) if e.is_timeout() => {
            println!(
                "unhealthy: {} did not answer within {:.1}s",
                args.url,
                timeout.as_secs_f64()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            println!(
                "unhealthy: {}: {}",
                args.url,
                tracelab_client::http_error_summary(&e)
            );
            ExitCode::FAILURE
        }
    }
}
