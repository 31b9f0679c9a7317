//! A directory of scenarios, loaded and checked as a whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::model::Scenario;

/// Every scenario of a directory, sorted by id.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The scenarios, by id.
    pub scenarios: Vec<Scenario>,
    /// Where they were read from.
    pub dir: PathBuf,
}

impl Catalog {
    /// Where the catalog is: `$TRACELAB_SCENARIOS`, `./scenarios`, the
    /// `scenarios/` of the workspace this binary was built in (next to
    /// `target/`), or the source tree's.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("TRACELAB_SCENARIOS").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let cwd = PathBuf::from("scenarios");
        if cwd.is_dir() {
            return cwd;
        }
        if let Ok(exe) = std::env::current_exe() {
            for dir in exe.ancestors().skip(1) {
                let candidate = dir.join("scenarios");
                if dir.join("Cargo.toml").is_file() && candidate.is_dir() {
                    return candidate;
                }
            }
        }
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
    }

    /// Loads every `*.yaml` of `dir`.
    ///
    /// # Errors
    /// When the directory cannot be read, or any file is invalid (every
    /// problem is reported, one per line), or two files share an id.
    pub fn load(dir: &Path) -> anyhow::Result<Catalog> {
        let entries = std::fs::read_dir(dir).with_context(|| {
            format!(
                "reading the scenario catalog {} (set TRACELAB_SCENARIOS or --scenarios)",
                dir.display()
            )
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        paths.sort();
        let mut scenarios = Vec::new();
        let mut problems = Vec::new();
        for path in paths {
            match Scenario::load(&path) {
                Ok(s) => scenarios.push(s),
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        if !problems.is_empty() {
            bail!("invalid scenario files:\n{}", problems.join("\n"));
        }
        let mut seen = BTreeMap::new();
        for s in &scenarios {
            if let Some(other) = seen.insert(s.id.clone(), s.path.clone()) {
                bail!(
                    "scenario id {} used by {} and {}",
                    s.id,
                    other.display(),
                    s.path.display()
                );
            }
        }
        scenarios.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Catalog {
            scenarios,
            dir: dir.to_path_buf(),
        })
    }

    /// The scenario with this id.
    ///
    /// # Errors
    /// When there is none (the message lists close ids).
    pub fn get(&self, id: &str) -> anyhow::Result<&Scenario> {
        if let Some(s) = self.scenarios.iter().find(|s| s.id == id) {
            return Ok(s);
        }
        let close: Vec<&str> = self
            .scenarios
            .iter()
            .filter(|s| s.id.contains(id) || id.contains(&s.id))
            .map(|s| s.id.as_str())
            .collect();
        if close.is_empty() {
            bail!("no scenario {id:?} (see `tracelab scenario list`)");
        }
        bail!("no scenario {id:?}; did you mean {}?", close.join(", "));
    }

    /// The ids.
    pub fn ids(&self) -> Vec<&str> {
        self.scenarios.iter().map(|s| s.id.as_str()).collect()
    }

    /// The catalog in `dir`, else in [`Catalog::default_dir`].
    ///
    /// # Errors
    /// As [`Catalog::load`].
    pub fn load_or_default(dir: Option<&Path>) -> anyhow::Result<Catalog> {
        let dir = dir
            .map(Path::to_path_buf)
            .unwrap_or_else(Catalog::default_dir);
        Catalog::load(&dir)
    }
}
