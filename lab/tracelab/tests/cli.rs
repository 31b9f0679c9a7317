//! The `tracelab` binary answers bad input with a readable message and a
//! non-zero exit code, never a panic.

use std::process::{Command, Output};

fn tracelab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracelab"))
        .args(args)
        .env_remove("TRACELAB_TEMPO_URL")
        .env_remove("TRACELAB_URL")
        .env("NO_COLOR", "1")
        .output()
        .expect("run tracelab")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_fails(out: &Output, code: i32, expected: &[&str]) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(code), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    for e in expected {
        assert!(all.contains(e), "expected {e:?} in:\n{all}");
    }
}

/// A port nothing listens on (bound then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = tracelab(&["frobnicate"]);
    assert_fails(
        &out,
        2,
        &["unrecognized subcommand", "frobnicate", "--help"],
    );
}

#[test]
fn no_subcommand_prints_usage() {
    let out = tracelab(&[]);
    assert_fails(&out, 2, &["Usage", "up", "checkout"]);
}

#[test]
fn help_works_everywhere() {
    for sub in ["up", "collector", "health", "trace", "traces", "checkout"] {
        let out = tracelab(&[sub, "--help"]);
        assert!(out.status.success(), "{sub}: {}", text(&out));
        assert!(text(&out).contains("Usage: tracelab"), "{sub}");
    }
}

#[test]
fn bad_urls_are_rejected_readably() {
    let out = tracelab(&["health", "not a url"]);
    assert_fails(&out, 2, &["invalid value", "not a url"]);
    let out = tracelab(&["traces", "--tempo", "nope"]);
    assert_fails(&out, 2, &["invalid value", "nope", "--tempo"]);
    let out = tracelab(&["checkout", "--lab", "::"]);
    assert_fails(&out, 2, &["invalid value", "--lab"]);
}

#[test]
fn malformed_trace_id_is_rejected() {
    let out = tracelab(&["trace", "not-a-trace-id"]);
    assert_fails(&out, 2, &["malformed trace id", "not-a-trace-id"]);
    let out = tracelab(&["trace", &"0".repeat(32)]);
    assert_fails(&out, 2, &["invalid trace id", "all zeros"]);
}

#[test]
fn health_of_a_closed_port_fails_with_one_line() {
    let url = format!("http://127.0.0.1:{}/health", closed_port());
    let out = tracelab(&["health", &url, "--timeout", "2s"]);
    assert_fails(&out, 1, &["unhealthy", &url]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn unreachable_tempo_is_an_error_not_a_panic() {
    let tempo = format!("http://127.0.0.1:{}", closed_port());
    let out = tracelab(&[
        "trace",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "--tempo",
        &tempo,
    ]);
    assert_fails(&out, 1, &["error:", "is the collector (or Tempo) running?"]);
    let out = tracelab(&["traces", "--tempo", &tempo]);
    assert_fails(&out, 1, &["error:", &tempo]);
}

#[test]
fn unreachable_lab_says_how_to_start_it() {
    let lab = format!("http://127.0.0.1:{}", closed_port());
    let out = tracelab(&["checkout", "--lab", &lab]);
    assert_fails(
        &out,
        1,
        &["cannot reach the lab console at", &lab, "tracelab up"],
    );
    let out = tracelab(&["load", "--rps", "1", "--duration", "1s", "--lab", &lab]);
    assert_fails(
        &out,
        1,
        &["cannot reach the lab console at", &lab, "tracelab up"],
    );
    // The gateway is the console's business now.
    let out = tracelab(&["checkout", "--gateway", &lab]);
    assert_fails(&out, 2, &["unexpected argument '--gateway'"]);
}

#[test]
fn up_without_binaries_names_the_fix() {
    let dir = std::env::temp_dir().join(format!("tracelab-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = tracelab(&["up", "--bin-dir", dir.to_str().unwrap()]);
    assert_fails(
        &out,
        1,
        &[
            "service binaries not found",
            "cargo build --workspace --bins",
        ],
    );
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn bad_checkout_items_are_rejected() {
    let out = tracelab(&["checkout", "--items", "1x0"]);
    assert_fails(&out, 2, &["bad quantity"]);
}
