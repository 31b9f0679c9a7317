//! The one thread that spawns a lab's children.
//!
//! Every child asks the kernel for SIGKILL when its parent goes
//! (`tracelab-pdeathsig`), so a supervisor killed by anything (SIGKILL, an
//! abort, a stack overflow) takes its children along instead of leaving
//! orphans. The kernel's "parent" is the *thread* that spawned the child,
//! and tokio threads may come and go (a blocking-pool thread ends after a
//! few idle seconds), so the lab spawns from a thread of its own that lives
//! until the lab's last handle on it is dropped: its end, like the
//! process's, kills whatever children are left.

use std::io;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

type Request = (Command, oneshot::Sender<io::Result<Child>>);

/// A handle on the spawning thread; the thread ends with the last clone.
#[derive(Debug, Clone)]
pub(super) struct Spawner {
    tx: std::sync::mpsc::Sender<Request>,
}

impl Spawner {
    /// Starts the thread. Call inside a tokio runtime: the children are
    /// registered with it (their exit is awaited there).
    ///
    /// # Errors
    /// When there is no current runtime or the thread cannot be started.
    pub(super) fn start() -> io::Result<Spawner> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("tracelab-spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                while let Ok((mut cmd, reply)) = rx.recv() {
                    tracelab_pdeathsig::kill_with_parent(cmd.as_std_mut());
                    let _ = reply.send(cmd.spawn());
                }
            })?;
        Ok(Spawner { tx })
    }

    /// Spawns `cmd` from the lab's thread; the child gets SIGKILL when the
    /// supervisor process dies or the lab is gone.
    ///
    /// # Errors
    /// When the program cannot be started.
    pub(super) async fn spawn(&self, cmd: Command) -> io::Result<Child> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((cmd, reply))
            .map_err(|_| io::Error::other("the lab's spawning thread has ended"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the lab's spawning thread has ended"))?
    }
}
