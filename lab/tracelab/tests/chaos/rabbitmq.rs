//! A private RabbitMQ node for one test: its own node name, AMQP port,
//! distribution port, data (Mnesia) directory, logs, config and plugins
//! file (no plugins), all under a scratch directory. It may be stopped,
//! started again on the same data (durable queues and persistent messages
//! survive, as on a real restart), or killed, without touching the
//! machine's node on 5672.
//!
//! What it shares with the machine's node: epmd (the Erlang port mapper on
//! 4369, where each node registers its name; the names differ), and nothing
//! else. It gets its own `HOME`, hence its own Erlang cookie, and none of
//! `/etc/rabbitmq` (whose `rabbitmq.conf` would bind 5672 again).
//!
//! It runs the server script itself (Debian's `/usr/lib/rabbitmq/bin`),
//! not the `/usr/sbin` wrapper, which switches to the `rabbitmq` user and
//! writes the shared node's startup log. The script leads its own process
//! group, so `kill -9` reaches the Erlang VM and its helpers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::procs::{
    SCRATCH_ENV, Scratch, ServerProcess, check_deadline, free_port, log_tail, on_path,
};

/// How long a start may take: an Erlang node boots in 3-10 s on a busy
/// two-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running (or stopped) private RabbitMQ node.
pub(crate) struct PrivateRabbit {
    server: Option<ServerProcess>,
    script: PathBuf,
    node: String,
    port: u16,
    dist_port: u16,
    scratch: Scratch,
}

impl PrivateRabbit {
    /// Finds the server script and boots a new node.
    ///
    /// # Errors
    /// When the server is not installed (saying where it was looked for),
    /// or the node does not accept AMQP connections in time (with its log).
    pub(crate) async fn start() -> anyhow::Result<PrivateRabbit> {
        let script = find_server(&default_candidates())?;
        let scratch = Scratch::new("rabbit")?;
        for dir in ["home", "mnesia", "log"] {
            std::fs::create_dir(scratch.path().join(dir))?;
        }
        std::fs::write(scratch.path().join("enabled_plugins"), "[].\n")?;
        // The environment file would otherwise be /etc/rabbitmq's, which
        // names the machine's node.
        std::fs::write(scratch.path().join("rabbitmq-env.conf"), "")?;
        std::fs::write(
            scratch.path().join("rabbitmq.conf"),
            "log.console = false\nlog.file.level = info\n",
        )?;
        let mut rabbit = PrivateRabbit {
            server: None,
            script,
            node: format!(
                "tracelab-chaos-{}@localhost",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            port: free_port(),
            dist_port: free_port(),
            scratch,
        };
        rabbit.start_again().await?;
        Ok(rabbit)
    }

    fn stdout_path(&self) -> PathBuf {
        self.scratch.path().join("server.out")
    }

    /// Boots the node on its data directory (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)) and returns once it accepts AMQP connections.
    ///
    /// # Errors
    /// When it exits or does not accept connections in time.
    pub(crate) async fn start_again(&mut self) -> anyhow::Result<()> {
        assert!(self.server.is_none(), "RabbitMQ is already running");
        let dir = self.scratch.path();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stdout_path())?;
        let mut command = Command::new("sh");
        command
            .arg(&self.script)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.join("home"))
            .env(SCRATCH_ENV, dir)
            .env("LANG", "C.UTF-8")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_USE_LONGNAME", "false")
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_BASE", dir)
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_PID_FILE", dir.join("node.pid"))
            // The node's distribution listener, like the machine's node's.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            // Used only if no epmd runs yet: then this node starts one.
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .current_dir(dir)
            .stdout(out.try_clone()?)
            .stderr(out);
        let mut server = ServerProcess::spawn(command)?;
        let deadline = Instant::now() + START_TIMEOUT;
        let url = self.amqp_url();
        loop {
            if let Some(status) = server.exited() {
                bail!(
                    "the private RabbitMQ node {} exited while starting ({status})\n{}\n{}",
                    self.node,
                    log_tail(&self.stdout_path(), 30),
                    log_tail(&self.log_path(), 30)
                );
            }
            let attempt = tokio::time::timeout(
                Duration::from_secs(3),
                lapin::Connection::connect(&url, lapin::ConnectionProperties::default()),
            )
            .await;
            if let Ok(Ok(conn)) = attempt {
                let _ = conn.close(200, "ready".into()).await;
                break;
            }
            check_deadline(
                deadline,
                &format!(
                    "the private RabbitMQ node {} did not accept AMQP connections on port {} within {START_TIMEOUT:?}\n{}",
                    self.node,
                    self.port,
                    log_tail(&self.stdout_path(), 30)
                ),
                &self.log_path(),
            )?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.server = Some(server);
        Ok(())
    }

    /// A graceful stop (SIGTERM: the node closes its connections and
    /// writes its queues). Returns once every process of the node is gone.
    pub(crate) async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop("TERM", Duration::from_secs(60)).await;
        }
    }

    /// `kill -9` of the node (the script, the Erlang VM and its helpers).
    pub(crate) async fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill().await;
        }
    }

    /// The server script's process id while the node runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(ServerProcess::pid)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub(crate) fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The node's name, `tracelab-chaos-<id>@localhost`.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// The scratch directory holding the node's data and logs.
    pub(crate) fn dir(&self) -> &Path {
        self.scratch.path()
    }

    fn log_path(&self) -> PathBuf {
        self.scratch
            .path()
            .join("log")
            .join(format!("{}.log", self.node))
    }

    /// The end of the node's log, for a failure message.
    pub(crate) fn log(&self) -> String {
        log_tail(&self.log_path(), 30)
    }
}

/// Where the server script may be: Debian's `/usr/lib/rabbitmq/bin`, or a
/// `rabbitmq-server` on `PATH` that is the script itself rather than
/// Debian's wrapper (which runs it as the `rabbitmq` user).
pub(crate) fn default_candidates() -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server")];
    if let Some(path) = on_path("rabbitmq-server") {
        let wrapper = std::fs::read_to_string(&path)
            .map(|s| s.contains("su rabbitmq"))
            .unwrap_or(false);
        if !wrapper {
            candidates.push(path);
        }
    }
    candidates
}

/// The first of `candidates` that exists, with `erl` on `PATH`.
///
/// # Errors
/// When none exists or Erlang is missing, saying where it looked.
pub(crate) fn find_server(candidates: &[PathBuf]) -> anyhow::Result<PathBuf> {
    let Some(script) = candidates.iter().find(|p| p.is_file()) else {
        let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
        bail!(
            "the chaos tests run their own RabbitMQ node and need the server \
             (rabbitmq-server), which is not installed: looked at {}; install it, \
             e.g. `apt-get install rabbitmq-server`",
            looked.join(", ")
        );
    };
    if on_path("erl").is_none() {
        bail!(
            "{} needs Erlang (`erl` on PATH), which is not installed",
            script.display()
        );
    }
    Ok(script.clone())
}

/// How many messages wait in `queue` of the node at `amqp_url`.
///
/// # Errors
/// When the node cannot be reached or the queue does not exist.
pub(crate) async fn queue_depth(amqp_url: &str, queue: &str) -> anyhow::Result<u32> {
    let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
        .await
        .context("connecting to the private RabbitMQ")?;
    let channel = conn.create_channel().await?;
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .with_context(|| format!("looking up queue {queue}"));
    let _ = conn.close(200, "done".into()).await;
    Ok(declared?.message_count())
}

/// The bodies of the messages waiting in `queue`, left where they are:
/// each is fetched unacknowledged, and closing the channel puts them back.
///
/// # Errors
/// When the node cannot be reached or the queue does not exist.
pub(crate) async fn peek_queue(amqp_url: &str, queue: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
        .await
        .context("connecting to the private RabbitMQ")?;
    let channel = conn.create_channel().await?;
    let mut bodies = Vec::new();
    while let Some(message) = channel
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .with_context(|| format!("reading queue {queue}"))?
    {
        bodies.push(message.delivery.data.clone());
    }
    let _ = conn.close(200, "peeked".into()).await;
    Ok(bodies)
}
