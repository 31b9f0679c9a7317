//! What the browser tests share: the browser scripts' folder, the tools a
//! browser run needs (failing with what is missing and how to install it,
//! never skipping), a lab of real processes and a console on a free port.

use std::path::{Path, PathBuf};

use tracelab::console::{ConsoleConfig, ConsoleState, RunningConsole};
use tracelab::scenario::Catalog;
use tracelab::supervisor::{Lab, LabOptions, SERVICES, default_bin_dir};

/// `lab/tracelab/tests/browser`: the node scripts and their `node_modules`.
pub(crate) fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// A browser and the npm package that drives it.
pub(crate) struct BrowserTools<'a> {
    /// The browser's name in messages (`Chromium`).
    pub(crate) name: &'a str,
    /// The variable that points at another executable (`TRACELAB_CHROMIUM`).
    pub(crate) env: &'a str,
    /// Where Debian installs it (`/usr/bin/chromium`).
    pub(crate) default_path: &'a str,
    /// How to install it (`apt-get install -y chromium chromium-driver`).
    pub(crate) install: &'a str,
    /// The npm package that drives it (`playwright-core`).
    pub(crate) npm_package: &'a str,
    /// What needs them, with its verb, opening the failure message.
    pub(crate) needed_by: &'a str,
}

impl BrowserTools<'_> {
    /// The browser and node, or a failure naming everything missing (the
    /// npm package included) and how to install it.
    pub(crate) fn require(&self) -> (PathBuf, PathBuf) {
        let browser = std::env::var_os(self.env)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(self.default_path));
        let node = which("node");
        let mut missing = Vec::new();
        if !browser.is_file() {
            missing.push(format!(
                "{} at {} ({}, or set {})",
                self.name,
                browser.display(),
                self.install,
                self.env
            ));
        }
        if node.is_none() {
            missing.push("node on PATH (apt-get install -y nodejs npm)".to_string());
        }
        let package = browser_dir()
            .join("node_modules")
            .join(self.npm_package)
            .join("package.json");
        if !package.is_file() {
            missing.push(format!(
                "{} in {} (run `npm ci` there)",
                self.npm_package,
                browser_dir().join("node_modules").display()
            ));
        }
        assert!(
            missing.is_empty(),
            "{}:\n  - {}\n(.ci/run installs all of them)",
            self.needed_by,
            missing.join("\n  - ")
        );
        (browser, node.expect("checked above"))
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A lab started with `opts`, after checking the service binaries exist.
pub(crate) async fn start_lab(opts: &LabOptions) -> Lab {
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
    Lab::start(opts.clone())
        .await
        .expect("the lab starts (Postgres and RabbitMQ must be running)")
}

/// The console for `lab` on a free port, keeping its state in a fresh
/// temporary directory (returned, for removal) named after `label`.
pub(crate) async fn start_console(
    lab: &Lab,
    opts: &LabOptions,
    label: &str,
) -> (RunningConsole, PathBuf) {
    let state_dir = std::env::temp_dir().join(format!(
        "tracelab-{label}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let catalog = Catalog::load(&Catalog::default_dir()).expect("the scenario catalog loads");
    let config = ConsoleConfig::for_lab(lab, opts, catalog, state_dir.clone());
    let state = ConsoleState::new(config).expect("console state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port for the console");
    let console = RunningConsole::start(listener, state).expect("the console serves");
    (console, state_dir)
}
