//! The web console in a real browser: a real lab (service processes,
//! Postgres, RabbitMQ, the embedded collector), the console serving its API
//! and page on a free port, and Debian's Chromium driven by playwright-core
//! (`tests/browser/console.test.mjs`, run with `node`).
//!
//! Needs `/usr/bin/chromium` (or `TRACELAB_CHROMIUM`), `node`, and
//! `npm ci` done in `lab/tracelab/tests/browser/` (`.ci/run` does all
//! three). Without one of them the test fails and says which: it never
//! skips silently.

#[path = "support/browser.rs"]
mod browser;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use browser::{BrowserTools, browser_dir, start_console, start_lab};
use tracelab::supervisor::LabOptions;

const CHROMIUM: BrowserTools<'static> = BrowserTools {
    name: "Chromium",
    env: "TRACELAB_CHROMIUM",
    default_path: "/usr/bin/chromium",
    install: "apt-get install -y chromium chromium-driver",
    npm_package: "playwright-core",
    needed_by: "the console's browser tests need",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_chromium() {
    let (chromium, node) = CHROMIUM.require();
    let mut opts = LabOptions::for_tests();
    // The repository's policy, as `tracelab up` reads it, so that the
    // sampling case can switch the collector's tail policy too.
    opts.sampling_file = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sampling.yaml"));
    let lab = start_lab(&opts).await;
    let (console, state_dir) = start_console(&lab, &opts, "console-browser").await;
    let url = console.url().to_string();

    let mut child = tokio::process::Command::new(&node)
        .arg("console.test.mjs")
        .current_dir(browser_dir())
        .env("TRACELAB_CONSOLE_URL", &url)
        .env("TRACELAB_OTLP_URL", lab.otlp_http_endpoint())
        .env("TRACELAB_CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    // Each case's line as it ends, so a run cut short still says how far it got.
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stderr = child.stderr.take().expect("piped");
    let collect_stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut stdout = String::new();
    let ran = tokio::time::timeout(Duration::from_secs(480), async {
        while let Some(line) = lines.next_line().await.expect("node's output") {
            println!("{line}");
            stdout.push_str(&line);
            stdout.push('\n');
        }
        child.wait().await.expect("node runs")
    })
    .await;
    let status = match ran {
        Ok(status) => status,
        Err(_) => {
            let _ = child.kill().await;
            panic!("the browser tests did not finish within 8 minutes; so far:\n{stdout}");
        }
    };
    let stderr = collect_stderr.await.unwrap_or_default();

    console.stop().await.expect("the console stops");
    let logs = lab.dump_logs();
    lab.stop().await.expect("the lab stops");
    let _ = std::fs::remove_dir_all(&state_dir);

    assert!(
        status.success(),
        "browser tests failed ({status}):\n{stdout}\n{stderr}\nlab logs:\n{logs}"
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "the browser run did not report its cases:\n{stdout}"
    );
}
