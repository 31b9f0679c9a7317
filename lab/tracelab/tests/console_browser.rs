//! The web console in a real browser: a real lab (service processes,
//! Postgres, RabbitMQ, the embedded collector), the console serving its API
//! and page on a free port, and Debian's Chromium driven by playwright-core
//! (`tests/browser/console.test.mjs`, run with `node`).
//!
//! Needs `/usr/bin/chromium` (or `TRACELAB_CHROMIUM`), `node`, and
//! `npm ci` done in `lab/tracelab/tests/browser/` (`.ci/run` does all
//! three). Without one of them the test fails and says which: it never
//! skips silently.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use tracelab::console::{ConsoleConfig, ConsoleState, RunningConsole};
use tracelab::scenario::Catalog;
use tracelab::supervisor::{Lab, LabOptions, SERVICES, default_bin_dir};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Chromium, node and the npm packages, or a failure naming what is missing
/// and how to install it.
fn check_tools() -> (PathBuf, PathBuf) {
    let chromium = std::env::var_os("TRACELAB_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let node = which("node");
    let mut missing = Vec::new();
    if !chromium.is_file() {
        missing.push(format!(
            "Chromium at {} (apt-get install -y chromium chromium-driver, or set TRACELAB_CHROMIUM)",
            chromium.display()
        ));
    }
    if node.is_none() {
        missing.push("node on PATH (apt-get install -y nodejs npm)".to_string());
    }
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        missing.push(format!(
            "playwright-core in {} (run `npm ci` there)",
            browser_dir().join("node_modules").display()
        ));
    }
    assert!(
        missing.is_empty(),
        "the console's browser tests need:\n  - {}\n(.ci/run installs all of them)",
        missing.join("\n  - ")
    );
    (chromium, node.expect("checked above"))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

async fn start_lab() -> (Lab, LabOptions) {
    let dir = default_bin_dir();
    let missing: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|s| !dir.join(s).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "service binaries missing in {}: {} (run `cargo build --workspace --bins`)",
        dir.display(),
        missing.join(", ")
    );
    let mut opts = LabOptions::for_tests();
    // The repository's policy, as `tracelab up` reads it, so that the
    // sampling case can switch the collector's tail policy too.
    opts.sampling_file = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sampling.yaml"));
    let lab = Lab::start(opts.clone())
        .await
        .expect("the lab starts (Postgres and RabbitMQ must be running)");
    (lab, opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_chromium() {
    let (chromium, node) = check_tools();
    let (lab, opts) = start_lab().await;
    let state_dir = std::env::temp_dir().join(format!(
        "tracelab-console-browser-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let catalog = Catalog::load(&Catalog::default_dir()).expect("the scenario catalog loads");
    let config = ConsoleConfig::for_lab(&lab, &opts, catalog, state_dir.clone());
    let state = ConsoleState::new(config).expect("console state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port for the console");
    let console = RunningConsole::start(listener, state).expect("the console serves");
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
