//! Supervisor failure reporting, with shell scripts standing in for the
//! service binaries: a child that exits early, one that never logs its
//! `listening` line, and one that never gets healthy are each reported by
//! name with their last log lines, promptly, and nothing is left running.
//!
//! Needs Postgres and RabbitMQ on localhost (checked before any child starts).

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracelab::supervisor::{Lab, LabOptions, SERVICES};

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A script that claims `127.0.0.1:<port>` (where nothing answers), and an
/// admin listener as a service does, and sleeps.
fn listens_on(port: u16) -> String {
    format!(
        r#"echo '{{"level":"INFO","message":"listening","addr":"127.0.0.1:{port}"}}'; echo '{{"level":"INFO","message":"listening","listener":"admin","addr":"127.0.0.1:{port}"}}'; exec sleep 30"#
    )
}

/// A temp dir holding one script per service: `special` gets `script`, the
/// others claim an address and sleep (a failed start must stop them).
fn fake_bin_dir(special: &str, script: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tracelab-fake-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let others = listens_on(closed_port());
    for s in SERVICES {
        let body = if s == special { script } else { &others };
        let path = dir.join(s);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn options(dir: PathBuf) -> LabOptions {
    LabOptions {
        bin_dir: dir,
        startup_timeout: Duration::from_secs(2),
        stop_grace: Duration::from_secs(2),
        ..LabOptions::for_tests()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_that_exits_early_is_reported_with_status_and_output() {
    let dir = fake_bin_dir(
        "auth",
        r#"echo '{"level":"INFO","message":"starting"}'; echo "fatal: TRACELAB_TOKEN_TTL_SECS is not a number" >&2; exit 3"#,
    );
    let t = Instant::now();
    let err = Lab::start(options(dir.clone())).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("auth exited early (exit status 3)"), "{msg}");
    assert!(
        msg.contains("TRACELAB_TOKEN_TTL_SECS is not a number"),
        "{msg}"
    );
    assert!(msg.contains(r#""message":"starting""#), "{msg}");
    // Reported as it happens, not after the startup timeout.
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_that_never_listens_times_out_by_name() {
    let dir = fake_bin_dir("search", "echo 'connecting to the database'; exec sleep 30");
    let t = Instant::now();
    let err = Lab::start(options(dir.clone())).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("search did not log its \"listening\" line"),
        "{msg}"
    );
    assert!(msg.contains("connecting to the database"), "{msg}");
    assert!(!msg.contains("auth did not"), "only search is named: {msg}");
    // The failed start stopped the sleeping children within the grace period.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_child_is_named_with_its_health_answer() {
    // Every service claims an address where nothing answers.
    let port = closed_port();
    let dir = fake_bin_dir("gateway", &listens_on(port));
    let t = Instant::now();
    let err = Lab::start(options(dir.clone())).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("services not healthy"), "{msg}");
    assert!(
        msg.contains(&format!(
            "gateway is not healthy: GET http://127.0.0.1:{port}/health"
        )),
        "{msg}"
    );
    assert!(msg.contains("last log lines of gateway"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let _ = std::fs::remove_dir_all(dir);
}
