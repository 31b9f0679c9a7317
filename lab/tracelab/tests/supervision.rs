//! The lab keeps its children running and takes them along when it dies,
//! with real processes:
//!
//! - `kill -9` a service: it is started again on the same URL, answers
//!   `/health`, serves checkouts, and the status counts one restart;
//! - `kill -9` the collector: the services stay up, the collector comes
//!   back on the same addresses and stores the next trace;
//! - a service that keeps crashing is retried with doubling delays capped at
//!   the maximum, never given up, and recovers once it can start;
//! - `tracelab up` killed with SIGKILL: every child it started is gone.
//!
//! Needs Postgres and RabbitMQ on localhost and the binaries built (`cargo
//! build --workspace --bins`); without them it fails and says so.

#[path = "support/lab_data.rs"]
mod lab_data;
#[path = "support/pids.rs"]
mod pids;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::broadcast;
use tracelab::supervisor::{
    COLLECTOR, ChildState, Lab, LabEvent, LabOptions, LabStatus, RestartPolicy, SERVICES,
    default_bin_dir,
};
use tracelab_client::TempoClient;
use tracelab_client::gateway::{self, checkout_trace_complete};

/// Fails the test, saying how to build them, when a binary is missing.
fn require_binaries() {
    let dir = default_bin_dir();
    let missing: Vec<&str> = SERVICES
        .iter()
        .copied()
        .chain(["tracelab"])
        .filter(|s| !dir.join(s).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "binaries missing in {}: {} (run `cargo build --workspace --bins`)",
        dir.display(),
        missing.join(", ")
    );
}

fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid}: {status}");
}

/// Polls the lab's status until `done` holds or `within` has passed, and
/// returns the last status seen.
async fn wait_for_status(
    lab: &Lab,
    within: Duration,
    done: impl Fn(&LabStatus) -> bool,
) -> LabStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = lab.status();
        if done(&status) || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Events for one child until `last` holds for one of them, or `within`
/// has passed.
async fn events_until(
    rx: &mut broadcast::Receiver<LabEvent>,
    child: &str,
    within: Duration,
    mut last: impl FnMut(&LabEvent) -> bool,
) -> Vec<LabEvent> {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(within, async {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let mine = match &event {
                        LabEvent::Exited { child: c, .. }
                        | LabEvent::Recovered { child: c, .. } => c == child,
                    };
                    if mine {
                        let end = last(&event);
                        seen.push(event);
                        if end {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    })
    .await;
    seen
}

fn is_recovered(event: &LabEvent) -> bool {
    matches!(event, LabEvent::Recovered { .. })
}

/// Logs alice in and sends one checkout; returns its HTTP status and trace id.
async fn checkout(lab: &Lab) -> (reqwest::StatusCode, String) {
    let http = reqwest::Client::new();
    let gw = lab.gateway_url();
    let token = gateway::login(&http, &gw, "alice", &gateway::demo_password("alice"))
        .await
        .expect("alice logs in");
    let resp = http
        .post(format!("{gw}/api/checkout"))
        .bearer_auth(&token)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"amount": 4980, "currency": "JPY", "card": "4242424242424242"}))
        .send()
        .await
        .expect("checkout answers");
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let trace_id = body["trace_id"].as_str().unwrap_or_default().to_string();
    (status, trace_id)
}

async fn health(url: &str) -> reqwest::StatusCode {
    reqwest::get(url).await.expect("health answers").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_comes_back_on_the_same_url() {
    require_binaries();
    let lab = Lab::start(LabOptions::for_tests())
        .await
        .expect("lab starts");
    let mut events = lab.subscribe();
    let url = lab.service_url("payment").unwrap();
    let old_pid = lab.pid("payment").unwrap();

    kill9(old_pid);
    let seen = events_until(
        &mut events,
        "payment",
        Duration::from_secs(30),
        is_recovered,
    )
    .await;

    let status = lab.status();
    let payment = status.child("payment").unwrap();
    assert_eq!(payment.state, ChildState::Running, "{status:#?}\n{seen:#?}");
    assert_eq!(payment.restarts, 1, "{payment:#?}");
    assert_eq!(payment.last_exit.as_ref().unwrap().reason, "SIGKILL");
    let new_pid = payment.pid.unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(pids::pid_alive(new_pid));
    assert!(!pids::pid_alive(old_pid));
    assert_eq!(lab.pid("payment"), Some(new_pid));
    assert_eq!(payment.url, url);
    assert_eq!(lab.service_url("payment").as_deref(), Some(url.as_str()));
    assert_eq!(health(&format!("{url}/health")).await, 200);
    // Nobody else was touched.
    assert_eq!(status.total_restarts(), 1, "{status:#?}");

    match &seen[..] {
        [
            LabEvent::Exited {
                reason,
                restart: 1,
                delay_ms: 500,
                ..
            },
            LabEvent::Recovered {
                restarts: 1, pid, ..
            },
        ] => {
            assert_eq!(reason, "SIGKILL");
            assert_eq!(*pid, Some(new_pid));
        }
        other => panic!("unexpected events: {other:#?}"),
    }

    // The gateway reaches the new payment where the old one was.
    let (code, _) = checkout(&lab).await;
    assert_eq!(code, 201, "{}", lab.dump_logs());
    lab.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_collector_comes_back_and_the_services_stay_up() {
    require_binaries();
    let lab = Lab::start(LabOptions::for_tests())
        .await
        .expect("lab starts");
    let tempo_url = lab.tempo_url();
    let addrs = lab.collector().expect("an embedded collector");
    let service_pids: Vec<u32> = SERVICES.iter().map(|s| lab.pid(s).unwrap()).collect();
    let old_pid = lab.pid(COLLECTOR).expect("the collector is a child");
    assert!(!service_pids.contains(&old_pid));
    assert_ne!(old_pid, std::process::id(), "not in the supervisor");

    kill9(old_pid);
    let status = wait_for_status(&lab, Duration::from_secs(30), |s| {
        s.child(COLLECTOR)
            .is_some_and(|c| c.restarts == 1 && c.state == ChildState::Running)
    })
    .await;
    let collector = status.child(COLLECTOR).unwrap();
    assert_eq!(collector.state, ChildState::Running, "{status:#?}");
    assert_eq!(collector.restarts, 1);
    assert_eq!(collector.last_exit.as_ref().unwrap().reason, "SIGKILL");
    assert_eq!(collector.url, tempo_url);
    assert_eq!(lab.collector(), Some(addrs), "same addresses");
    assert_eq!(health(&format!("{tempo_url}/ready")).await, 200);
    for (name, pid) in SERVICES.iter().zip(&service_pids) {
        assert!(pids::pid_alive(*pid), "{name} died with the collector");
        assert_eq!(lab.pid(name), Some(*pid), "{name} was restarted");
    }

    // The services export to the same address: the next trace lands.
    let (code, trace_id) = checkout(&lab).await;
    assert_eq!(code, 201, "{}", lab.dump_logs());
    let tempo = TempoClient::new(&tempo_url).unwrap();
    tempo
        .wait_for_trace(
            &trace_id,
            |t| checkout_trace_complete(t, true),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.dump_logs()));
    lab.stop().await.expect("clean stop");
}

/// A directory of links to the real binaries, so one can be swapped.
fn linked_bin_dir() -> PathBuf {
    let real = default_bin_dir();
    let dir = std::env::temp_dir().join(format!("tracelab-bins-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    for s in SERVICES {
        std::os::unix::fs::symlink(real.join(s), dir.join(s)).unwrap();
    }
    dir
}

/// Replaces `dir/name` at once (a rename), with a script or a link.
fn swap(dir: &Path, name: &str, script: Option<&str>) {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = dir.join(format!("{name}.new"));
    match script {
        Some(body) => {
            std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        None => std::os::unix::fs::symlink(default_bin_dir().join(name), &tmp).unwrap(),
    }
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_retried_at_the_maximum_delay_until_it_recovers() {
    require_binaries();
    let dir = linked_bin_dir();
    let opts = LabOptions {
        bin_dir: dir.clone(),
        restart: RestartPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            stable_after: Duration::from_secs(60),
        },
        ..LabOptions::for_tests()
    };
    let lab = Lab::start(opts).await.expect("lab starts");
    let url = lab.service_url("payment").unwrap();
    let mut events = lab.subscribe();

    // From now on payment cannot start.
    swap(
        &dir,
        "payment",
        Some("echo 'fatal: simulated start-up failure' >&2; exit 3"),
    );
    kill9(lab.pid("payment").unwrap());
    let mut exits = 0;
    let looping = events_until(&mut events, "payment", Duration::from_secs(30), |e| {
        exits += usize::from(matches!(e, LabEvent::Exited { .. }));
        exits == 6
    })
    .await;
    let delays: Vec<(u32, u64, &str)> = looping
        .iter()
        .filter_map(|e| match e {
            LabEvent::Exited {
                restart,
                delay_ms,
                reason,
                ..
            } => Some((*restart, *delay_ms, reason.as_str())),
            LabEvent::Recovered { .. } => None,
        })
        .collect();
    assert_eq!(
        delays,
        [
            (1, 100, "SIGKILL"),
            (2, 200, "exit status 3"),
            (3, 400, "exit status 3"),
            (4, 400, "exit status 3"),
            (5, 400, "exit status 3"),
            (6, 400, "exit status 3"),
        ],
        "{looping:#?}"
    );
    if let Some(LabEvent::Exited { last_lines, .. }) = looping.last() {
        assert!(
            last_lines
                .iter()
                .any(|l| l.contains("simulated start-up failure")),
            "{last_lines:?}"
        );
    }
    let status = lab.status();
    let payment = status.child("payment").unwrap();
    assert!(payment.restarts >= 5, "{payment:#?}");
    assert_ne!(payment.state, ChildState::Running, "{payment:#?}");

    // It can start again: the next try brings it back where it was.
    swap(&dir, "payment", None);
    let back = events_until(
        &mut events,
        "payment",
        Duration::from_secs(30),
        is_recovered,
    )
    .await;
    assert!(back.last().is_some_and(is_recovered), "{back:#?}");
    let status = lab.status();
    let payment = status.child("payment").unwrap();
    assert_eq!(payment.state, ChildState::Running, "{payment:#?}");
    assert_eq!(health(&format!("{url}/health")).await, 200);
    let (code, _) = checkout(&lab).await;
    assert_eq!(code, 201, "{}", lab.dump_logs());
    lab.stop().await.expect("clean stop");
    let _ = std::fs::remove_dir_all(dir);
}

/// The processes whose parent is `parent`, with their executables' names.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the parenthesized name: state, then the parent's pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            out.push((pid, exe));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_killed_with_sigkill_takes_its_children_along() {
    require_binaries();
    // A test lab's names, for a real `tracelab up` on free ports.
    let opts = LabOptions::for_tests();
    // Its own state directory: a killed `tracelab up` cannot tidy up after
    // itself, and must not leave anything where other tests or labs look.
    let home =
        std::env::temp_dir().join(format!("tracelab-home-{}", uuid::Uuid::new_v4().simple()));
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"));
    up.arg("up")
        .args(["--database-url", &opts.database_url])
        .args(["--amqp-url", &opts.amqp_url])
        .args(["--exchange", &opts.exchange_name()])
        .args(["--queue", &opts.queue_name()])
        .args(["--console-port", "0"])
        .arg("--bin-dir")
        .arg(default_bin_dir())
        .arg("--quiet");
    for flag in [
        "gateway",
        "auth",
        "search",
        "payment",
        "notification",
        "provider",
        "otlp-http",
        "otlp-grpc",
        "tempo",
    ] {
        up.args([format!("--{flag}-port"), "0".to_string()]);
    }
    let mut supervisor = up
        .env("NO_COLOR", "1")
        .env("TRACELAB_HOME", &home)
        .env_remove("TRACELAB_SAMPLING_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tracelab up");
    let supervisor_pid = supervisor.id().unwrap();
    let mut lines = BufReader::new(supervisor.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    let up_in_time = tokio::time::timeout(Duration::from_secs(90), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let done = line.contains("tracelab is up");
            output.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    // Keep reading, so the supervisor never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let children = children_of(supervisor_pid);
    if up_in_time != Ok(true) {
        for (pid, _) in &children {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        lab_data::remove_lab_data(&opts).await;
        let _ = std::fs::remove_dir_all(&home);
        panic!("tracelab up did not come up:\n{}", output.join("\n"));
    }
    let mut names: Vec<&str> = children.iter().map(|(_, exe)| exe.as_str()).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = SERVICES.iter().copied().chain(["tracelab"]).collect();
    expected.sort_unstable();
    assert_eq!(names, expected, "the six services and the collector");

    supervisor.start_kill().expect("SIGKILL the supervisor");
    let status = supervisor.wait().await.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while children.iter().any(|(pid, _)| pids::pid_alive(*pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let orphans: Vec<&(u32, String)> = children
        .iter()
        .filter(|(pid, _)| pids::pid_alive(*pid))
        .collect();
    // Not left behind by a failing run either.
    for (pid, _) in &orphans {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    lab_data::remove_lab_data(&opts).await;
    let _ = std::fs::remove_dir_all(&home);
    assert!(
        orphans.is_empty(),
        "orphans of a killed supervisor: {orphans:?}"
    );
}
