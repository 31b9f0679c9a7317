//! The web console in Firefox: a real lab (service processes, Postgres,
//! RabbitMQ, the embedded collector), the console serving its API and page
//! on a free port, and Debian's Firefox ESR driven by puppeteer-core over
//! WebDriver BiDi (`tests/browser/firefox.test.mjs`, run with `node`): every
//! view loads without a console error, and a checkout pressed on the page
//! shows its whole waterfall. The full cases run in Chromium
//! (`console_browser.rs`).
//!
//! Needs `/usr/bin/firefox-esr` (or `TRACELAB_FIREFOX`), `node`, and `npm
//! ci` done in `lab/tracelab/tests/browser/` (`.ci/run` does all three).
//! Without one of them the test fails and says which: it never skips
//! silently.

#[path = "support/browser.rs"]
mod browser;

use std::process::Stdio;
use std::time::Duration;

use browser::{BrowserTools, browser_dir, start_console, start_lab};
use tracelab::supervisor::LabOptions;

const FIREFOX: BrowserTools<'static> = BrowserTools {
    name: "Firefox",
    env: "TRACELAB_FIREFOX",
    default_path: "/usr/bin/firefox-esr",
    install: "apt-get install -y firefox-esr",
    npm_package: "puppeteer-core",
    needed_by: "the console's Firefox test needs",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_firefox() {
    let (firefox, node) = FIREFOX.require();
    let opts = LabOptions::for_tests();
    let lab = start_lab(&opts).await;
    let (console, state_dir) = start_console(&lab, &opts, "console-firefox").await;
    let url = console.url().to_string();

    let run = tokio::process::Command::new(&node)
        .arg("firefox.test.mjs")
        .current_dir(browser_dir())
        .env("TRACELAB_CONSOLE_URL", &url)
        .env("TRACELAB_FIREFOX", &firefox)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the Firefox test finishes within 4 minutes")
        .expect("node runs");

    console.stop().await.expect("the console stops");
    let logs = lab.dump_logs();
    lab.stop().await.expect("the lab stops");
    let _ = std::fs::remove_dir_all(&state_dir);

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the Firefox test failed ({}):\n{stdout}\n{stderr}\nlab logs:\n{logs}",
        output.status
    );
    // The checkout, its waterfall, and at least the five views of today.
    let passed = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(
        passed >= 7 && stdout.contains(" passed in "),
        "the Firefox run did not report its cases:\n{stdout}"
    );
}
