//! [`LabRecord`]: where a running lab is and its admin token, as
//! `tracelab up` records it for the commands that come after (`fault`,
//! `scenario`, `exercise`), so they find the lab with no flags although its
//! admin listeners are on free ports and its token is drawn at random.
//!
//! The record is `lab.json` in the state directory ([`state_dir`]), mode
//! 0600 in a 0700 directory: it holds the admin token. `tracelab up`
//! removes it when it stops.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::lab::Lab;
use super::options::LabOptions;

/// The record's file name in [`state_dir`].
pub(super) const LAB_FILE: &str = "lab.json";

/// The state directory of the CLI (the lab record, the exercises):
/// `$TRACELAB_HOME`, else `~/.tracelab`.
///
/// # Errors
/// When neither `TRACELAB_HOME` nor `HOME` is set.
pub fn state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TRACELAB_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .context("set TRACELAB_HOME (or HOME) for the lab's state")?;
    Ok(PathBuf::from(home).join(".tracelab"))
}

/// Where a running lab is, and its admin token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabRecord {
    /// The gateway's base URL.
    pub gateway: String,
    /// The Tempo API's base URL.
    pub tempo: String,
    /// Service → public base URL.
    pub services: BTreeMap<String, String>,
    /// Service → admin API base URL.
    pub admin: BTreeMap<String, String>,
    /// The admin API's bearer token.
    pub admin_token: String,
    /// The lab's database.
    pub database_url: String,
    /// The lab's broker.
    pub amqp_url: String,
    /// The lab's exchange.
    pub exchange: String,
    /// notification's queue (its DLQ is `<queue>.dlq`).
    pub queue: String,
    /// The lab console's base URL (the lab's one URL), when one serves it.
    #[serde(default)]
    pub console: Option<String>,
    /// The process running the lab (`tracelab up`).
    #[serde(default)]
    pub pid: Option<u32>,
}

impl std::fmt::Debug for LabRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabRecord")
            .field("gateway", &self.gateway)
            .field("tempo", &self.tempo)
            .field("admin", &self.admin)
            .field("admin_token", &"<hidden>")
            .finish_non_exhaustive()
    }
}

impl LabRecord {
    /// The record of `lab`, started with `opts`.
    pub fn of(lab: &Lab, opts: &LabOptions) -> LabRecord {
        let urls = |pairs: Vec<(&'static str, String)>| {
            pairs
                .into_iter()
                .map(|(name, url)| (name.to_string(), url))
                .collect()
        };
        LabRecord {
            gateway: lab.gateway_url(),
            tempo: lab.tempo_url(),
            services: urls(lab.services()),
            admin: urls(lab.admin_urls()),
            admin_token: lab.admin_token().to_string(),
            database_url: lab.database_url().to_string(),
            amqp_url: opts.amqp_url.clone(),
            exchange: lab.exchange().to_string(),
            queue: lab.queue().to_string(),
            console: None,
            pid: Some(std::process::id()),
        }
    }

    /// The record at [`LabRecord::default_path`] if its lab still runs:
    /// `None` when there is none or its process is gone (a lab that was
    /// killed leaves its record behind).
    ///
    /// # Errors
    /// When the record exists but cannot be read.
    pub fn read_live() -> anyhow::Result<Option<LabRecord>> {
        let Ok(path) = Self::default_path() else {
            return Ok(None);
        };
        Ok(Self::load(&path)?.filter(|r| r.pid.is_none_or(process_alive)))
    }

    /// `lab.json` in [`state_dir`].
    ///
    /// # Errors
    /// As [`state_dir`].
    pub fn default_path() -> anyhow::Result<PathBuf> {
        Ok(state_dir()?.join(LAB_FILE))
    }

    /// Writes the record to `path`, readable by its owner only (a new
    /// file, renamed over the old one, so no reader sees half of it and no
    /// other user could open it in between).
    ///
    /// # Errors
    /// When the directory or the file cannot be written.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let partial = path.with_extension(format!("json.{}", std::process::id()));
        let _ = std::fs::remove_file(&partial);
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial)?;
            file.write_all(&serde_json::to_vec_pretty(self)?)?;
            file.sync_all()?;
            std::fs::rename(&partial, path)
        };
        write().with_context(|| format!("writing the lab record {}", path.display()))
    }

    /// The record at `path`; `None` when there is none.
    ///
    /// # Errors
    /// When the file exists but cannot be read or is not a record.
    pub fn load(path: &Path) -> anyhow::Result<Option<LabRecord>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the lab record {}", path.display()));
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not a lab record", path.display()))
    }

    /// Removes the record at `path` if it is still this one (another lab
    /// started since may have replaced it).
    ///
    /// # Errors
    /// When the file cannot be removed.
    pub fn remove(&self, path: &Path) -> anyhow::Result<()> {
        if Self::load(path).ok().flatten().as_ref() != Some(self) {
            return Ok(());
        }
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
    }
}

/// Whether process `pid` runs (where `/proc` can tell; elsewhere, assume so).
fn process_alive(pid: u32) -> bool {
    let proc_dir = Path::new("/proc");
    !proc_dir.is_dir() || proc_dir.join(pid.to_string()).is_dir()
}

/// Makes sure `path` holds an admin token: keeps the one there, or writes
/// a new random one, readable by its owner only. Returns whether it wrote
/// one. Compose's one-shot `admin-token-init` runs this (`tracelab
/// admin-token --file`) before any service reads the file.
///
/// # Errors
/// When the file cannot be read or written.
pub fn ensure_token_file(path: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(super::options::random_secret().as_bytes())?;
        file.sync_all()
    };
    write().with_context(|| format!("writing an admin token to {}", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn record(token: &str) -> LabRecord {
        LabRecord {
            gateway: "http://127.0.0.1:8080".into(),
            tempo: "http://127.0.0.1:3200".into(),
            services: BTreeMap::from([("payment".into(), "http://127.0.0.1:8083".into())]),
            admin: BTreeMap::from([("payment".into(), "http://127.0.0.1:41234".into())]),
            admin_token: token.into(),
            database_url: "postgres://postgres@127.0.0.1:5432/tracelab".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            exchange: "tracelab.events.x".into(),
            queue: "notification.payment-completed.x".into(),
            console: Some("http://127.0.0.1:7070".into()),
            pid: Some(std::process::id()),
        }
    }

    #[test]
    fn a_dead_process_leaves_no_live_record() {
        assert!(process_alive(std::process::id()));
        // Above the kernel's pid_max (at most 2^22).
        assert!(!process_alive(u32::MAX - 1));
    }

    #[test]
    fn only_its_owner_reads_the_record() {
        let dir = std::env::temp_dir().join(format!("tracelab-record-{}", uuid::Uuid::new_v4()));
        let path = dir.join("state").join(LAB_FILE);
        assert_eq!(LabRecord::load(&path).unwrap(), None);
        let a = record("a-token-of-the-first-lab");
        a.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700, "{dir_mode:o}");
        assert_eq!(LabRecord::load(&path).unwrap(), Some(a.clone()));
        assert!(
            !format!("{a:?}").contains("a-token"),
            "Debug hides the token"
        );

        // A newer lab's record is not removed by the older lab's stop.
        let b = record("a-token-of-the-second-lab");
        b.save(&path).unwrap();
        a.remove(&path).unwrap();
        assert_eq!(LabRecord::load(&path).unwrap(), Some(b.clone()));
        b.remove(&path).unwrap();
        assert_eq!(LabRecord::load(&path).unwrap(), None);

        // The compose init step: a token once, then the same one.
        let token_file = dir.join("token");
        assert!(ensure_token_file(&token_file).unwrap());
        let token = std::fs::read_to_string(&token_file).unwrap();
        assert_eq!(token.len(), 64);
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert!(!ensure_token_file(&token_file).unwrap());
        assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);

        std::fs::write(&path, "{not json").unwrap();
        let err = LabRecord::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not a lab record"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
