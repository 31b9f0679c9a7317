//! docs/architecture.md against the contract: the fault-point table is the
//! catalogue's [`markdown_table`], and the ports and defaults it lists are
//! the contract's (and no admin token is documented as a default: there is
//! none).
//!
//! When the catalogue changes, regenerate the table with
//! `TRACELAB_UPDATE_DOCS=1 cargo test -p tracelab-contract --test docs`.

use std::path::PathBuf;

use tracelab_contract::defaults;
use tracelab_contract::fault::markdown_table;
use tracelab_contract::service::ServiceName;

const BEGIN: &str = "<!-- fault-points:begin (generated, do not edit) -->";
const END: &str = "<!-- fault-points:end -->";

fn architecture_md() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/architecture.md")
}

fn read_architecture() -> String {
    let path = architecture_md();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_fault_point_table_is_the_catalogue() {
    let text = read_architecture();
    let start = text
        .find(BEGIN)
        .unwrap_or_else(|| panic!("docs/architecture.md lost its marker {BEGIN}"));
    let end = text
        .find(END)
        .filter(|end| *end > start)
        .unwrap_or_else(|| panic!("docs/architecture.md lost its marker {END} after {BEGIN}"));
    let current = &text[start + BEGIN.len()..end];
    let expected = format!("\n{}", markdown_table());
    if current == expected {
        return;
    }
    if std::env::var("TRACELAB_UPDATE_DOCS").as_deref() == Ok("1") {
        let updated = format!("{}{expected}{}", &text[..start + BEGIN.len()], &text[end..]);
        // Through a rename, so the other tests here never read a half-written file.
        let path = architecture_md();
        let partial = path.with_extension("md.partial");
        std::fs::write(&partial, updated).expect("write docs/architecture.md.partial");
        std::fs::rename(&partial, &path).expect("replace docs/architecture.md");
        eprintln!("docs/architecture.md: fault-point table regenerated");
        return;
    }
    panic!(
        "docs/architecture.md's fault-point table differs from the catalogue \
         (tracelab_contract::fault::FaultPoint).\nRegenerate it with \
         `TRACELAB_UPDATE_DOCS=1 cargo test -p tracelab-contract --test docs`; \
         between the markers it should read:\n{expected}"
    );
}

/// The rows of the markdown table that follows `heading`, as cells.
fn table_after(text: &str, heading: &str) -> Vec<Vec<String>> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in docs/architecture.md"));
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn the_ports_table_is_the_contracts() {
    let rows = table_after(&read_architecture(), "## Ports (defaults)");
    let mut documented: Vec<(String, u16)> = rows
        .iter()
        .map(|r| (r[0].clone(), r[1].parse().expect("a port number")))
        .collect();
    let mut expected: Vec<(String, u16)> = ServiceName::ALL
        .iter()
        .flat_map(|s| {
            [
                (s.name().to_string(), s.default_port()),
                (format!("{} admin", s.name()), s.default_admin_port()),
            ]
        })
        .collect();
    expected.extend([
        ("collector OTLP/gRPC".to_string(), defaults::OTLP_GRPC_PORT),
        ("collector OTLP/HTTP".to_string(), defaults::OTLP_HTTP_PORT),
        ("collector Tempo API".to_string(), defaults::TEMPO_PORT),
    ]);
    documented.sort();
    expected.sort();
    assert_eq!(documented, expected);
}

#[test]
fn the_documented_defaults_are_the_contracts() {
    let text = read_architecture();
    let mut rows = table_after(&text, "Common to every service:");
    rows.extend(table_after(&text, "Per service:"));
    // (variable, default as the docs write it)
    let expected = [
        ("DATABASE_URL", defaults::DATABASE_URL.to_string()),
        ("AMQP_URL", defaults::AMQP_URL.to_string()),
        (
            "TRACELAB_EXCHANGE",
            format!("{}.<lab id>", defaults::EXCHANGE),
        ),
        ("TRACELAB_QUEUE", format!("{}.<lab id>", defaults::QUEUE)),
        ("TRACELAB_AUTH_URL", ServiceName::Auth.default_url()),
        ("TRACELAB_SEARCH_URL", ServiceName::Search.default_url()),
        ("TRACELAB_PAYMENT_URL", ServiceName::Payment.default_url()),
        (
            "TRACELAB_PROVIDER_URL",
            ServiceName::PaymentProvider.default_url(),
        ),
    ];
    for (variable, value) in expected {
        let row = rows
            .iter()
            .find(|r| r.iter().any(|c| *c == format!("`{variable}`")))
            .unwrap_or_else(|| panic!("{variable} is not documented"));
        assert!(
            row.iter().any(|c| c.starts_with(&format!("`{value}`"))),
            "{variable} should default to `{value}`: {row:?}"
        );
    }
}

#[test]
fn no_admin_token_is_documented_as_a_default() {
    let text = read_architecture();
    let mut rows = table_after(&text, "Common to every service:");
    rows.extend(table_after(&text, "## The CLI's environment"));
    let row = rows
        .iter()
        .find(|r| r[0] == "`TRACELAB_ADMIN_TOKEN`")
        .expect("TRACELAB_ADMIN_TOKEN is documented");
    assert!(row[1].starts_with("random"), "{row:?}");
    assert!(
        !text.contains("tracelab-admin"),
        "the old default token is gone from the docs"
    );
}
