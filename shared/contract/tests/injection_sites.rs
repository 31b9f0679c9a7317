//! The catalogue against the services' code: every point is used by the
//! service that owns it, and no service names another service's point
//! (its registry would not know it, so the fault would never fire).
//!
//! "Used" means the variant appears in `services/<name>/src` outside a
//! comment line: an injection site (`faults.inject(FaultPoint::SearchQuery)`)
//! for a request point. A `<service>.telemetry` point has no injection site:
//! it is followed by `tracelab_faults::for_service`, so the service must
//! build its registry there.

use std::path::{Path, PathBuf};

use tracelab_contract::fault::FaultPoint;
use tracelab_contract::service::ServiceName;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`, comment lines dropped, concatenated.
fn code_under(dir: &Path) -> String {
    let mut out = String::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("readable directory").path();
        if path.is_dir() {
            out.push_str(&code_under(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("readable source");
            for line in text.lines() {
                if !line.trim_start().starts_with("//") {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// Whether `code` names `path` (e.g. `FaultPoint::PaymentSave`) as a whole
/// path, not as the start of a longer name.
fn names(code: &str, path: &str) -> bool {
    code.match_indices(path).any(|(at, _)| {
        !code[at + path.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn every_point_is_used_by_its_service_and_only_there() {
    let faults = code_under(&repo().join("shared/faults/src"));
    assert!(
        names(&faults, "FaultPoint::telemetry_of") && faults.contains("telemetry::follow("),
        "tracelab_faults::for_service must follow the service's telemetry point"
    );
    let mut problems = Vec::new();
    for service in ServiceName::ALL {
        let dir = repo().join("services").join(service.name()).join("src");
        let code = code_under(&dir);
        let registry = format!("tracelab_faults::for_service(ServiceName::{service:?},");
        if !code.contains(&registry) {
            problems.push(format!(
                "{service}: does not build its registry with {registry}"
            ));
        }
        for point in FaultPoint::ALL {
            let used = names(&code, &format!("FaultPoint::{point:?}"));
            match (point.service() == service, point.is_telemetry(), used) {
                (true, false, false) => problems.push(format!(
                    "{point}: catalogued for {service} but no injection site in {} uses \
                     FaultPoint::{point:?} (remove it from the catalogue or inject it)",
                    dir.display()
                )),
                (false, _, true) => problems.push(format!(
                    "{service} names {point}, a point of {}: it would never fire there",
                    point.service()
                )),
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn names_matches_whole_paths_only() {
    let code = "faults.inject(FaultPoint::PaymentSave).await";
    assert!(names(code, "FaultPoint::PaymentSave"));
    assert!(!names(code, "FaultPoint::Payment"));
    assert!(!names(
        "FaultPoint::PaymentSaveAll",
        "FaultPoint::PaymentSave"
    ));
}
