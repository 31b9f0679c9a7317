//! What a `kill -9` costs under load now that the lab restarts its
//! children (a benchmark, not a test): for each child in turn, steady
//! traffic through the gateway, the child killed with SIGKILL, and then how
//! long it was down (from its exit to healthy again, as the supervisor saw
//! it) and how many requests failed meanwhile.
//!
//! Run (Postgres and RabbitMQ up, binaries built in the same profile):
//!
//! ```sh
//! cargo build --workspace --bins
//! cargo run -p tracelab --example restart_bench -- [rps=27]
//! ```

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tracelab::load::{self, LoadConfig, Mix, Progress, Route};
use tracelab::supervisor::{COLLECTOR, Lab, LabEvent, LabOptions, SERVICES};

/// Traffic before the kill, and the whole window of one run.
const BEFORE_KILL: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(8);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rps: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(27.0);
    let lab = Lab::start(LabOptions::for_tests()).await?;
    let mut events = lab.subscribe();
    let mut rows = Vec::new();
    for target in SERVICES.iter().copied().chain([COLLECTOR]) {
        let config = LoadConfig {
            gateway: lab.gateway_url(),
            rps,
            duration: Some(WINDOW),
            mix: Mix::of(&[(Route::Checkout, 1), (Route::Search, 1)]),
            progress: Progress::Off,
            ..LoadConfig::default()
        };
        let traffic = tokio::spawn(load::run(config));
        tokio::time::sleep(BEFORE_KILL).await;
        let pid = lab
            .pid(target)
            .ok_or_else(|| anyhow::anyhow!("{target} is not running"))?;
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        let down_ms = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match events.recv().await {
                    Ok(LabEvent::Recovered { child, down_ms, .. }) if child == target => {
                        return Some(down_ms);
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten();
        let summary = traffic.await??;
        let route = |name: &str| summary.routes.iter().find(|r| r.route == name).cloned();
        let (checkout, search) = (route("checkout"), route("search"));
        rows.push((
            target,
            down_ms,
            checkout.as_ref().map_or(0, |r| r.errors),
            checkout.map_or(0, |r| r.count),
            search.as_ref().map_or(0, |r| r.errors),
            search.map_or(0, |r| r.count),
        ));
    }
    let restarts = lab.status().total_restarts();
    lab.stop().await?;

    println!(
        "kill -9 under load: {rps} req/s (checkout=1,search=1), {}s windows, SIGKILL after {}s\n",
        WINDOW.as_secs(),
        BEFORE_KILL.as_secs()
    );
    println!(
        "{:<18} {:>16} {:>18} {:>18}",
        "killed", "down (exit→ok)", "checkout errors", "search errors"
    );
    for (name, down, c_err, c_all, s_err, s_all) in rows {
        let down = down.map_or_else(|| "not back".to_string(), |ms| format!("{ms} ms"));
        println!(
            "{name:<18} {down:>16} {:>18} {:>18}",
            format!("{c_err} of {c_all}"),
            format!("{s_err} of {s_all}")
        );
    }
    println!("\nrestarts counted by the lab: {restarts}");
    Ok(())
}
