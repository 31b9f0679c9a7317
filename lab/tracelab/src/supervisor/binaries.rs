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
