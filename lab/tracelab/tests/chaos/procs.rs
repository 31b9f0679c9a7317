//! What the private servers share: free ports, scratch directories that go
//! away on drop, and server processes run in their own process group so a
//! stop or a `kill -9` reaches every process they started. Signals go
//! through the `kill` utility: the workspace forbids unsafe code.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A port nothing listens on right now, picked by the OS. Another process
/// may take it before it is used; the servers then fail to start, saying so.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to pick a free port")
}

/// Scratch directories start with this, in the system's temp dir.
const SCRATCH_PREFIX: &str = "tracelab-chaos-";
/// The file in a scratch directory naming the test process that owns it.
pub(crate) const OWNER_FILE: &str = "owner";
/// Set to a scratch directory in the environment of every server run from
/// it, and inherited by what the server starts: how the processes a dead
/// test left behind are found.
pub(crate) const SCRATCH_ENV: &str = "TRACELAB_CHAOS_SCRATCH";

/// A directory under the system's temp dir, unique per call, removed with
/// everything in it on drop.
///
/// Drop does not run when the test process itself is killed (SIGKILL, a
/// harness timeout): then its servers outlive it. So each directory names
/// its owner (pid and start time), and every new one first reaps the
/// directories whose owner is gone, killing the processes that carry the
/// directory in [`SCRATCH_ENV`].
pub(crate) struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Reaps what dead test processes left, then creates
    /// `<tmp>/tracelab-chaos-<what>-<uuid>` owned by this process.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub(crate) fn new(what: &str) -> anyhow::Result<Scratch> {
        reap_orphans();
        let path = std::env::temp_dir().join(format!(
            "{SCRATCH_PREFIX}{what}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        std::fs::write(path.join(OWNER_FILE), process_identity(std::process::id()))
            .with_context(|| format!("writing the owner of {}", path.display()))?;
        Ok(Scratch { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `<pid> <start time in clock ticks since boot>`: a process, told apart
/// from a later one that got the same pid. Empty when it does not exist.
pub(crate) fn process_identity(pid: u32) -> String {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return String::new();
    };
    // Field 22 (starttime), the 20th after the parenthesized command name.
    let start = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .unwrap_or("");
    format!("{pid} {start}")
}

/// Removes the scratch directories of test processes that no longer run,
/// after killing the processes started from them (servers left running).
pub(crate) fn reap_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_scratch = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(SCRATCH_PREFIX));
        let Ok(owner) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            // Not ours, or being created right now: leave it.
            continue;
        };
        let pid = owner.split_whitespace().next().and_then(|p| p.parse().ok());
        let alive = pid.is_some_and(|pid| process_identity(pid) == owner.trim());
        if !is_scratch || alive {
            continue;
        }
        for pid in processes_of(&path) {
            signal(pid, "KILL");
        }
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// Processes whose environment has [`SCRATCH_ENV`] set to `dir`, or whose
/// command line names it (Postgres writes its process titles over its
/// environment; the postmaster's `-D` names the directory), except epmd: a
/// node starts the machine's port mapper when none runs, and it serves
/// every node, so it stays.
pub(crate) fn processes_of(dir: &Path) -> Vec<u32> {
    let needle = format!("{SCRATCH_ENV}={}\0", dir.display()).into_bytes();
    let path = dir.display().to_string();
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let ours = std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_slice()))
                || std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&path));
            let epmd = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "epmd");
            ours && !epmd
        })
        .collect()
}

/// Sends `signal` (`TERM`, `INT`, `KILL`, ...) to one process.
pub(crate) fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Sends `signal` to every process of the group `pgid`.
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".into(), format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The live (not zombie) processes of the group `pgid`, from `/proc`.
/// A zombie is not counted: it holds nothing, and this machine's init may
/// never reap the orphans of a killed group.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parens.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|p| p.parse::<u32>().ok());
            state != Some("Z") && pgrp == Some(pgid)
        })
        .collect()
}

/// The last `lines` lines of a log file, or a note that there is none.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("({} does not exist)", path.display());
    };
    // The end is enough: these logs can grow to megabytes.
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("last lines of {}:\n{tail}", path.display())
}

/// A server process that leads its own process group, so that every
/// process it starts (Postgres backends, the Erlang VM and its helpers) is
/// reached by a group signal. Dropping it kills the whole group.
pub(crate) struct ServerProcess {
    child: Child,
    pgid: u32,
}

impl ServerProcess {
    /// Spawns `command` as the leader of a new process group.
    ///
    /// # Errors
    /// When the program cannot be started.
    pub(crate) fn spawn(mut command: Command) -> anyhow::Result<ServerProcess> {
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let pgid = child.id();
        Ok(ServerProcess { child, pgid })
    }

    /// The group leader's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pgid
    }

    /// How the leader ended, if it has (reaping it).
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` to the leader only (the server's own shutdown), waits
    /// up to `grace` for the whole group to end, then kills what is left.
    /// Returns whether it ended within `grace`.
    pub(crate) async fn stop(&mut self, signal_name: &str, grace: Duration) -> bool {
        signal(self.pgid, signal_name);
        let ended = self.wait_gone(grace).await;
        if !ended {
            self.kill().await;
        }
        ended
    }

    /// `kill -9` of the whole group; returns once every process is gone.
    pub(crate) async fn kill(&mut self) {
        signal_group(self.pgid, "KILL");
        // SIGKILL cannot be caught: the group ends as soon as the kernel
        // has torn it down.
        self.wait_gone(Duration::from_secs(30)).await;
    }

    /// Waits up to `limit` for the leader to exit and the group to empty.
    async fn wait_gone(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let leader_done = self.exited().is_some();
            if leader_done && group_members(self.pgid).is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        signal_group(self.pgid, "KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The group's other members are orphans now; make sure they got it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !group_members(self.pgid).is_empty() && Instant::now() < deadline {
            signal_group(self.pgid, "KILL");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Looks for an executable called `name` in the directories of `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The uid and gid of a system user, from `/etc/passwd`.
pub(crate) fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        let uid = f.nth(1)?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// Whether this process runs as root (effective uid 0), from `/proc`.
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Fails with `what` and the log tail when `deadline` has passed.
pub(crate) fn check_deadline(deadline: Instant, what: &str, log: &Path) -> anyhow::Result<()> {
    if Instant::now() >= deadline {
        bail!("{what}\n{}", log_tail(log, 30));
    }
    Ok(())
}
