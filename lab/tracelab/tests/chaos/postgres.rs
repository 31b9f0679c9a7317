//! A private PostgreSQL server for one test: its own data directory (made
//! by `initdb` under a scratch dir), its own port and socket directory,
//! trust auth for `postgres`. It may be stopped, started again on the same
//! data, or killed, without touching the machine's server on 5432.
//!
//! The postmaster runs as this process's child (not through `pg_ctl`, which
//! would leave it parentless), as the leader of its own process group, so
//! that `kill -9` reaches the backends too and a dropped fixture leaves no
//! process behind. As root it runs as the `postgres` user: Postgres refuses
//! to run as root.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sqlx::Connection as _;

use super::procs::{
    SCRATCH_ENV, Scratch, ServerProcess, check_deadline, free_port, log_tail, on_path,
    running_as_root, system_user,
};

/// How long a start may take before the fixture gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running (or stopped) private Postgres.
pub(crate) struct PrivatePostgres {
    // Fields drop in order: the server before its directory.
    server: Option<ServerProcess>,
    bindir: PathBuf,
    run_as: Option<(u32, u32)>,
    port: u16,
    scratch: Scratch,
}

impl PrivatePostgres {
    /// Finds the binaries, runs `initdb` and starts the server.
    ///
    /// # Errors
    /// When the binaries are missing (saying where they were looked for),
    /// `initdb` fails, or the server does not accept connections in time
    /// (with its log).
    pub(crate) async fn start() -> anyhow::Result<PrivatePostgres> {
        let bindir = find_bindir(&default_candidates())?;
        let run_as = if running_as_root() {
            Some(system_user("postgres").context(
                "running as root, and Postgres refuses to run as root: \
                 a `postgres` system user is needed to run the private server as",
            )?)
        } else {
            None
        };
        let scratch = Scratch::new("pg")?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(scratch.path(), Some(uid), Some(gid))
                .with_context(|| format!("giving {} to postgres", scratch.path().display()))?;
        }
        let mut pg = PrivatePostgres {
            server: None,
            bindir,
            run_as,
            port: free_port(),
            scratch,
        };
        pg.initdb()?;
        pg.start_again().await?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
            .current_dir(self.scratch.path())
            .env(SCRATCH_ENV, self.scratch.path());
        command
    }

    fn data_dir(&self) -> PathBuf {
        self.scratch.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.scratch.path().join("postgres.log")
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .stdin(Stdio::null())
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts the server on its data directory (after [`stop`](Self::stop)
    /// or [`kill`](Self::kill)) and returns once it accepts connections.
    ///
    /// # Errors
    /// When it exits or does not accept connections within a minute.
    pub(crate) async fn start_again(&mut self) -> anyhow::Result<()> {
        assert!(self.server.is_none(), "Postgres is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the Postgres log")?;
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.scratch.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // Durability against a machine crash is not under test:
                // a killed server still finds its writes in the OS cache.
                "-c",
                "fsync=off",
                "-c",
                "logging_collector=off",
            ])
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut server = ServerProcess::spawn(command)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.exited() {
                bail!(
                    "the private Postgres exited while starting ({status})\n{}",
                    log_tail(&self.log_path(), 30)
                );
            }
            let attempt = tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::PgConnection::connect(&self.url("postgres")),
            )
            .await;
            if let Ok(Ok(conn)) = attempt {
                let _ = conn.close().await;
                break;
            }
            check_deadline(
                deadline,
                "the private Postgres did not accept connections within a minute",
                &self.log_path(),
            )?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.server = Some(server);
        Ok(())
    }

    /// A fast shutdown (SIGINT: sessions are cut, then a checkpoint).
    /// Returns once every process of the server is gone.
    pub(crate) async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop("INT", Duration::from_secs(30)).await;
        }
    }

    /// `kill -9` of the postmaster and its backends.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill().await;
        }
    }

    /// The postmaster's process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(ServerProcess::pid)
    }

    /// The port it listens on (127.0.0.1).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` as user `postgres`.
    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The scratch directory holding the data, socket and log.
    pub(crate) fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The end of the server's log, for a failure message.
    pub(crate) fn log(&self) -> String {
        log_tail(&self.log_path(), 30)
    }
}

/// Where Debian, PGDG and most other installs keep the server binaries:
/// `pg_config --bindir`, each `/usr/lib/postgresql/<version>/bin` (newest
/// first), then the directory of an `initdb` on `PATH`.
pub(crate) fn default_candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versions.into_iter().map(|(_, dir)| dir));
    if let Some(initdb) = on_path("initdb")
        && let Ok(real) = initdb.canonicalize()
        && let Some(dir) = real.parent()
    {
        dirs.push(dir.to_path_buf());
    }
    dirs
}

/// The first of `candidates` holding both `initdb` and `postgres`.
///
/// # Errors
/// When none does, naming every directory looked at and how to install them.
pub(crate) fn find_bindir(candidates: &[PathBuf]) -> anyhow::Result<PathBuf> {
    if let Some(dir) = candidates
        .iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
    {
        return Ok(dir.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "the chaos tests run their own PostgreSQL server and need its binaries \
         (initdb, postgres), which are not installed: looked in `pg_config --bindir`, \
         /usr/lib/postgresql/*/bin and PATH ({}); install them, e.g. \
         `apt-get install postgresql`",
        if looked.is_empty() {
            "nothing found".to_string()
        } else {
            looked.join(", ")
        }
    )
}
