//! Where `tracelab up` writes down the lab it runs, so later commands find
//! it with no flags: `$XDG_STATE_HOME/tracelab/lab.json` (else
//! `~/.local/state/tracelab/lab.json`), readable by its owner only (it
//! holds the admin token).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The record of a running lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabRecord {
    /// The console's base URL: the lab's one URL.
    pub console: String,
    /// The process serving it (`tracelab up`).
    pub pid: u32,
    /// When the lab was up.
    pub started_at: DateTime<Utc>,
    /// Gateway base URL.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Tempo API base URL.
    #[serde(default)]
    pub tempo: Option<String>,
    /// The services' admin (fault) API base URLs, by service.
    #[serde(default)]
    pub admin_urls: BTreeMap<String, String>,
    /// The admin API's token.
    #[serde(default)]
    pub admin_token: Option<String>,
}

impl LabRecord {
    /// The record's path: `$XDG_STATE_HOME/tracelab/lab.json`, else
    /// `$HOME/.local/state/tracelab/lab.json`; `None` with neither set.
    pub fn path() -> Option<PathBuf> {
        let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let state = nonempty("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
        Some(state.join("tracelab").join("lab.json"))
    }

    /// Writes the record (mode 0600, its directory 0700); returns the path.
    ///
    /// # Errors
    /// When there is no state directory, or it cannot be written.
    pub fn write(&self) -> anyhow::Result<PathBuf> {
        let path = Self::path().context("set XDG_STATE_HOME or HOME to record the lab")?;
        let dir = path.parent().context("the record's directory")?;
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(serde_json::to_string_pretty(self)?.as_bytes())
            .with_context(|| format!("writing {}", tmp.display()))?;
        drop(file);
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The record of a lab that still runs: `None` when there is none, or
    /// its process is gone (a lab that was killed leaves its record).
    ///
    /// # Errors
    /// When the record exists but cannot be read.
    pub fn read_live() -> anyhow::Result<Option<LabRecord>> {
        let Some(path) = Self::path() else {
            return Ok(None);
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading {}", path.display())));
            }
        };
        let record: LabRecord = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; delete it (`tracelab up` writes it anew)",
                path.display()
            )
        })?;
        Ok(process_alive(record.pid).then_some(record))
    }

    /// Removes the record if it is this process's (another lab started
    /// since keeps its own).
    pub fn remove_if_ours(&self) {
        let Some(path) = Self::path() else { return };
        let ours = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<LabRecord>(&t).ok())
            .is_some_and(|r| r.pid == self.pid && r.console == self.console);
        if ours {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Whether process `pid` runs (where `/proc` can tell; elsewhere, assume so).
fn process_alive(pid: u32) -> bool {
    let proc_dir = std::path::Path::new("/proc");
    if !proc_dir.is_dir() {
        return true;
    }
    proc_dir.join(pid.to_string()).is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_process_leaves_no_live_record() {
        assert!(process_alive(std::process::id()));
        // Above the kernel's pid_max (at most 2^22).
        assert!(!process_alive(u32::MAX - 1));
    }
}
