//! docs/architecture.md's "The CLI's environment" lists every variable the
//! `tracelab` crate reads, through clap (`env = "NAME"`) or `std::env`.

use std::collections::BTreeSet;
use std::path::Path;

mod common;
use common::rust_files;

/// Variables set by cargo or the OS that the crate reads for its own
/// mechanics, not as configuration.
const NOT_CONFIG: &[&str] = &["CARGO", "CARGO_MANIFEST_DIR", "HOME"];

/// The quoted names after `env = `, `env::var(`, `env::var_os(` and
/// `try_from_env(` in `code`.
fn env_names(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for marker in [
        "env = \"",
        "env::var(\"",
        "env::var_os(\"",
        "try_from_env(\"",
    ] {
        for (at, _) in code.match_indices(marker) {
            let rest = &code[at + marker.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() && rest[name.len()..].starts_with('"') {
                names.insert(name);
            }
        }
    }
    names
}

fn documented() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let section = text
        .split("## The CLI's environment")
        .nth(1)
        .expect("docs/architecture.md has a section \"The CLI's environment\"");
    section.split("\n## ").next().unwrap_or("").to_string()
}

#[test]
fn every_variable_the_cli_reads_is_documented() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut read = BTreeSet::new();
    for f in files {
        read.extend(env_names(&std::fs::read_to_string(f).unwrap()));
    }
    assert!(read.contains("TRACELAB_URL"), "{read:?}");
    let table = documented();
    let missing: Vec<&String> = read
        .iter()
        .filter(|n| !NOT_CONFIG.contains(&n.as_str()))
        .filter(|n| !table.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "read by the CLI, missing from docs/architecture.md: {missing:?}"
    );
}

#[test]
fn the_scanner_finds_every_form() {
    let code = r#"
        #[arg(long, env = "TRACELAB_A", default_value = "x")]
        std::env::var("TRACELAB_B"); std::env::var_os("TRACELAB_C");
        EnvFilter::try_from_env("TRACELAB_D"); format!("env = \"{x}\"");
    "#;
    let names: Vec<String> = env_names(code).into_iter().collect();
    assert_eq!(
        names,
        ["TRACELAB_A", "TRACELAB_B", "TRACELAB_C", "TRACELAB_D"]
    );
}
