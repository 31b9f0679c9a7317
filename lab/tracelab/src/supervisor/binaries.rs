//! Where the service binaries are, and building them when `tracelab` runs
//! under `cargo run`.

use std::path::{Path, PathBuf};

use anyhow::bail;

/// When `tracelab` itself was started by `cargo run` from this workspace,
/// the command that builds the service binaries (same profile), so `cargo
/// run -p tracelab -- up` on a fresh clone is the only command needed and a
/// code change is never served by a stale binary. `None` otherwise.
pub fn services_build_when_run_by_cargo() -> Option<std::process::Command> {
    let cargo = std::env::var_os("CARGO")?;
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let workspace = PathBuf::from(manifest_dir).join("../../Cargo.toml");
    if !workspace.is_file() {
        return None;
    }
    let mut build = std::process::Command::new(cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(&workspace)
        .args(["--workspace", "--bins", "--quiet"]);
    if default_bin_dir().ends_with("release") {
        build.arg("--release");
    }
    Some(build)
}

/// Where the service binaries are: `$TRACELAB_BIN_DIR` if set, else the
/// directory of the running executable, stepping out of `deps/` (where cargo
/// puts test binaries) so tests find `target/<profile>/<service>`.
pub fn default_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRACELAB_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    else {
        return PathBuf::from(".");
    };
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

pub(super) fn bin_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// The `tracelab` binary whose `collector` command runs a lab's embedded
/// collector: `configured` if given; else this process's own executable
/// when it is `tracelab` (`tracelab up`); else `tracelab` in `bin_dir`, then
/// in [`default_bin_dir`] (tests and examples, which run as other programs).
///
/// # Errors
/// When none of them exists, saying how to build it.
pub(super) fn collector_binary(
    configured: Option<&Path>,
    bin_dir: &Path,
) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        if !path.is_file() {
            bail!("collector binary {} not found", path.display());
        }
        return Ok(path.to_path_buf());
    }
    let own = std::env::current_exe()
        .ok()
        .filter(|exe| exe.file_stem().is_some_and(|s| s == "tracelab"));
    let candidates: Vec<PathBuf> = own
        .into_iter()
        .chain([
            bin_path(bin_dir, "tracelab"),
            bin_path(&default_bin_dir(), "tracelab"),
        ])
        .collect();
    match candidates.iter().find(|p| p.is_file()) {
        Some(path) => Ok(path.clone()),
        None => bail!(
            "the tracelab binary, which runs the embedded collector (`tracelab collector`), \
             is not in {}\n  build it with `cargo build --workspace --bins`, or send the spans \
             to another collector (--otlp-endpoint)",
            bin_dir.display()
        ),
    }
}

/// Fails naming every one of `services` that has no binary in `dir`.
pub(super) fn check_binaries(dir: &Path, services: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = services
        .iter()
        .copied()
        .filter(|s| !bin_path(dir, s).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "service binaries not found in {}: {}\n  build them with `cargo build --workspace --bins` \
             (add --release for a release lab), or point TRACELAB_BIN_DIR / --bin-dir at them",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_dir_steps_out_of_deps() {
        // This unit test binary lives in target/<profile>/deps.
        if std::env::var_os("TRACELAB_BIN_DIR").is_none() {
            let dir = default_bin_dir();
            assert_ne!(dir.file_name().unwrap(), "deps", "{}", dir.display());
        }
    }

    #[test]
    fn collector_binary_is_found_or_explained() {
        let dir = std::env::temp_dir().join(format!("tracelab-bin-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = bin_path(&dir, "tracelab");
        std::fs::write(&fake, "").unwrap();
        assert_eq!(
            collector_binary(Some(&fake), Path::new("/x")).unwrap(),
            fake
        );
        let err = collector_binary(Some(&dir.join("nope")), Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        // This unit test binary is not `tracelab`: `bin_dir` is searched.
        assert_eq!(collector_binary(None, &dir).unwrap(), fake);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_binaries_are_named() {
        let err = check_binaries(
            Path::new("/nonexistent-dir"),
            &["payment-provider", "gateway"],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("payment-provider") && msg.contains("gateway"),
            "{msg}"
        );
        assert!(msg.contains("cargo build --workspace --bins"), "{msg}");
    }
}
