//! The keeper of one child: a task that owns the child's process, notices
//! when it exits and, while the lab is up, starts it again on the same
//! addresses after a backoff delay ([`RestartPolicy`]), until the lab
//! stops it.
//!
//! During start-up an exit is only recorded (start-up reports it and fails);
//! [`KeeperHandle::supervise`] turns restarts on once the lab is up, and
//! [`KeeperHandle::hold`] off again when it stops.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::process::Child;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::exit::{describe_status, exit_reason, exit_signal, send_signal};
use super::logs::{Listening, LogTail, last_lines, read_lines};
use super::options::LogSink;
use super::restart::{Backoff, RestartPolicy};
use super::spawner::Spawner;
use super::spec::ChildSpec;
use super::status::{ChildState, EXIT_TAIL_LINES, ExitInfo, LabEvent, Record, millis};

/// How often a restarted child's health is asked until it answers 200.
const HEALTH_POLL: Duration = Duration::from_millis(100);
/// How long a child's output readers may take to hand over its last lines.
const DRAIN: Duration = Duration::from_secs(1);

/// One running process of a child.
pub(super) struct Incarnation {
    child: Child,
    readers: Vec<JoinHandle<()>>,
}

impl Incarnation {
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Lets the output readers hand over the last lines of an ended process.
    async fn drain(&mut self) {
        for r in std::mem::take(&mut self.readers) {
            let _ = tokio::time::timeout(DRAIN, r).await;
        }
    }
}

/// Starts one process of a child from the lab's spawning thread, its output
/// read into `logs`. The receiver gets its `"listening"` lines.
///
/// # Errors
/// When the program cannot be started.
pub(super) async fn start_process(
    spec: &ChildSpec,
    spawner: &Spawner,
    logs: &LogTail,
    sink: LogSink,
) -> std::io::Result<(Incarnation, mpsc::UnboundedReceiver<Listening>)> {
    let mut child = spawner.spawn(spec.command()).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(
            spec.name,
            out,
            logs.clone(),
            tx.clone(),
            sink,
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(
            spec.name,
            err,
            logs.clone(),
            tx,
            sink,
        )));
    }
    Ok((Incarnation { child, readers }, rx))
}

/// How a child ended when the lab stopped it.
#[derive(Debug)]
pub(super) enum StopOutcome {
    /// It exited with success after SIGTERM.
    Clean,
    /// It exited with a failure after SIGTERM (described).
    Failed(String),
    /// It did not exit within the grace period and was killed.
    Killed,
    /// Its exit could not be awaited.
    Error(String),
    /// No process was running (it had exited and was waiting for a restart,
    /// or exited during start-up), or its keeper was gone.
    NotRunning,
}

enum Command {
    Supervise {
        url: String,
        bound: Vec<Listening>,
    },
    Hold,
    Stop {
        grace: Duration,
        reply: oneshot::Sender<StopOutcome>,
    },
}

/// What a keeper needs besides its first process.
pub(super) struct KeeperContext {
    pub(super) spec: ChildSpec,
    pub(super) record: Arc<Mutex<Record>>,
    pub(super) logs: LogTail,
    pub(super) sink: LogSink,
    pub(super) policy: RestartPolicy,
    pub(super) spawner: Spawner,
    pub(super) http: reqwest::Client,
    pub(super) events: broadcast::Sender<LabEvent>,
}

/// The lab's side of a keeper.
#[derive(Debug)]
pub(super) struct KeeperHandle {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl KeeperHandle {
    /// The lab is up, the child healthy at `url`: from now on an exit is
    /// followed by a restart, on the addresses in `bound`.
    pub(super) fn supervise(&self, url: String, bound: Vec<Listening>) {
        let _ = self.commands.send(Command::Supervise { url, bound });
    }

    /// No more restarts: the lab is stopping.
    pub(super) fn hold(&self) {
        let _ = self.commands.send(Command::Hold);
    }

    /// SIGTERM to the child, SIGKILL after `grace`; no restart after that.
    pub(super) async fn stop(&self, grace: Duration) -> StopOutcome {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Stop { grace, reply }).is_err() {
            return StopOutcome::NotRunning;
        }
        answer.await.unwrap_or(StopOutcome::NotRunning)
    }

    /// Ends the keeper at once; its process is killed as it is dropped.
    pub(super) fn abort(&self) {
        self.task.abort();
    }
}

/// Starts the keeper of a child whose first process is `first`.
pub(super) fn start_keeper(context: KeeperContext, first: Incarnation) -> KeeperHandle {
    let (commands, inbox) = mpsc::unbounded_channel();
    let keeper = Keeper {
        backoff: Backoff::new(context.policy),
        context,
        inbox,
        url: None,
        supervising: false,
    };
    KeeperHandle {
        commands,
        task: tokio::spawn(keeper.run(first)),
    }
}

struct Keeper {
    context: KeeperContext,
    inbox: mpsc::UnboundedReceiver<Command>,
    /// The child's URL, known once the lab is up.
    url: Option<String>,
    supervising: bool,
    backoff: Backoff,
}

/// Why watching a process ended.
enum Watched {
    Exited,
    Done,
}

impl Keeper {
    fn record(&self) -> MutexGuard<'_, Record> {
        self.context
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn name(&self) -> &'static str {
        self.context.spec.name
    }

    async fn run(mut self, first: Incarnation) {
        let mut running = Some(first);
        loop {
            running = match running.take() {
                Some(process) => match self.watch(process).await {
                    Watched::Exited => None,
                    Watched::Done => return,
                },
                None => match self.wait_and_restart().await {
                    Some(process) => Some(process),
                    None => return,
                },
            };
        }
    }

    fn supervise(&mut self, url: String, bound: &[Listening]) {
        self.context.spec.pin_addresses(bound);
        self.url = Some(url);
        self.supervising = true;
    }

    /// Waits for the process to exit or the lab to stop it; after a
    /// restart, asks its health until it answers.
    async fn watch(&mut self, mut process: Incarnation) -> Watched {
        let mut health = tokio::time::interval(HEALTH_POLL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let checking = self.supervising && self.record().state == ChildState::Starting;
            tokio::select! {
                status = process.child.wait() => {
                    // Reaped: its pid may be reused from now on.
                    self.record().pid = None;
                    process.drain().await;
                    self.exited(status);
                    return Watched::Exited;
                }
                command = self.inbox.recv() => match command {
                    Some(Command::Supervise { url, bound }) => {
                        self.supervise(url, &bound);
                        // Start-up saw it healthy just now.
                        let mut record = self.record();
                        if record.state == ChildState::Starting {
                            record.state = ChildState::Running;
                            record.healthy_since = Some(Instant::now());
                        }
                    }
                    Some(Command::Hold) => self.supervising = false,
                    Some(Command::Stop { grace, reply }) => {
                        let outcome = self.stop(process, grace).await;
                        let _ = reply.send(outcome);
                        return Watched::Done;
                    }
                    // The lab is gone: dropping the process kills it.
                    None => return Watched::Done,
                },
                _ = health.tick(), if checking => self.check_health().await,
            }
        }
    }

    /// Books an exit, and schedules a restart while the lab is up.
    fn exited(&mut self, status: std::io::Result<std::process::ExitStatus>) {
        let now = Instant::now();
        let (reason, code, signal, exit_status) = match status {
            Ok(s) => (exit_reason(s), s.code(), exit_signal(s), Some(s)),
            Err(e) => (format!("lost track of it: {e}"), None, None, None),
        };
        let healthy_for = {
            let mut record = self.record();
            let healthy_for = record.healthy_since.map(|t| now.duration_since(t));
            record.exit_status = exit_status;
            record.healthy_since = None;
            record.exited_at = Some(now);
            record.state = ChildState::Exited;
            record.last_exit = Some(ExitInfo {
                reason,
                code,
                signal,
                at: Utc::now(),
                last_lines: last_lines(&self.context.logs, EXIT_TAIL_LINES),
            });
            healthy_for
        };
        if self.supervising {
            self.schedule_restart(healthy_for);
        }
    }

    fn schedule_restart(&mut self, healthy_for: Option<Duration>) {
        let delay = self.backoff.next_delay(healthy_for);
        let event = {
            let mut record = self.record();
            record.state = ChildState::Restarting;
            record.restart_at = Some(Instant::now() + delay);
            let exit = record.last_exit.clone();
            LabEvent::Exited {
                child: self.name().to_string(),
                reason: exit.as_ref().map(|e| e.reason.clone()).unwrap_or_default(),
                restart: record.restarts + 1,
                delay_ms: millis(delay),
                last_lines: exit.map(|e| e.last_lines).unwrap_or_default(),
            }
        };
        let _ = self.context.events.send(event);
    }

    /// The process has ended: waits for its restart time (or for the lab to
    /// be up, or to stop), then starts it again.
    async fn wait_and_restart(&mut self) -> Option<Incarnation> {
        loop {
            let (state, restart_at) = {
                let record = self.record();
                (record.state, record.restart_at)
            };
            let due = restart_at.filter(|_| state == ChildState::Restarting && self.supervising);
            let command = match due {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {
                        match self.restart().await {
                            Some(process) => return Some(process),
                            None => continue,
                        }
                    }
                    command = self.inbox.recv() => command,
                },
                None => self.inbox.recv().await,
            };
            match command {
                Some(Command::Supervise { url, bound }) => {
                    self.supervise(url, &bound);
                    // It exited between start-up's health check and now.
                    if self.record().state == ChildState::Exited {
                        self.schedule_restart(None);
                    }
                }
                Some(Command::Hold) => {
                    self.supervising = false;
                    let mut record = self.record();
                    record.state = ChildState::Exited;
                    record.restart_at = None;
                }
                Some(Command::Stop { reply, .. }) => {
                    {
                        let mut record = self.record();
                        record.state = ChildState::Exited;
                        record.restart_at = None;
                    }
                    let _ = reply.send(StopOutcome::NotRunning);
                    return None;
                }
                None => return None,
            }
        }
    }

    /// Starts the child again; on failure books it and schedules the next try.
    async fn restart(&mut self) -> Option<Incarnation> {
        self.record().restarts += 1;
        let started = start_process(
            &self.context.spec,
            &self.context.spawner,
            &self.context.logs,
            self.context.sink,
        )
        .await;
        match started {
            // Its "listening" lines are not needed: the addresses are pinned.
            Ok((process, _listening)) => {
                let mut record = self.record();
                record.pid = process.pid();
                record.state = ChildState::Starting;
                record.started_at = Some(Utc::now());
                record.exit_status = None;
                record.restart_at = None;
                Some(process)
            }
            Err(e) => {
                self.record().last_exit = Some(ExitInfo {
                    reason: format!(
                        "could not start {}: {e}",
                        self.context.spec.program.display()
                    ),
                    code: None,
                    signal: None,
                    at: Utc::now(),
                    last_lines: Vec::new(),
                });
                self.schedule_restart(None);
                None
            }
        }
    }

    async fn check_health(&mut self) {
        let Some(url) = &self.url else { return };
        let answer = self
            .context
            .http
            .get(format!("{url}{}", self.context.spec.health_path))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if !answer.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
            return;
        }
        let event = {
            let mut record = self.record();
            record.state = ChildState::Running;
            record.healthy_since = Some(Instant::now());
            LabEvent::Recovered {
                child: self.name().to_string(),
                restarts: record.restarts,
                pid: record.pid,
                down_ms: record.exited_at.map_or(0, |t| millis(t.elapsed())),
            }
        };
        let _ = self.context.events.send(event);
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(&mut self, mut process: Incarnation, grace: Duration) -> StopOutcome {
        self.supervising = false;
        if let Some(pid) = process.pid() {
            send_signal(pid, "TERM");
        }
        let outcome = match tokio::time::timeout(grace, process.child.wait()).await {
            Ok(Ok(status)) if status.success() => StopOutcome::Clean,
            Ok(Ok(status)) => StopOutcome::Failed(describe_status(status)),
            Ok(Err(e)) => StopOutcome::Error(e.to_string()),
            Err(_) => {
                let _ = process.child.kill().await;
                StopOutcome::Killed
            }
        };
        self.record().pid = None;
        process.drain().await;
        let mut record = self.record();
        record.healthy_since = None;
        record.state = match outcome {
            StopOutcome::Clean => ChildState::Stopped,
            _ => ChildState::Exited,
        };
        outcome
    }
}
