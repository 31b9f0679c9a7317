//! Child processes that die with their parent, whatever kills the parent.
//!
//! [`kill_with_parent`] makes a [`Command`] set Linux's parent-death signal
//! (`PR_SET_PDEATHSIG`, SIGKILL) in the child between fork and exec. The
//! kernel then kills the child when its parent goes away: a clean exit, a
//! panic, an abort, a stack overflow or a SIGKILL alike, none of which gives
//! the parent a chance to clean up itself. `tracelab up` uses it so that a
//! dying supervisor never leaves the lab's services running as orphans.
//!
//! Two things to know:
//! - "Parent" means the *thread* that spawned the child, not the whole
//!   process: the signal comes when that thread ends. Spawn from a thread
//!   that lives as long as the children should (the lab supervisor keeps one
//!   thread for exactly that).
//! - The parent may die between fork and the `prctl`; the child would then
//!   already be someone else's and no signal would ever come. The hook checks
//!   `getppid()` after the `prctl` and fails the exec in that case.
//!
//! This crate holds the workspace's only unsafe code, a `pre_exec` hook; the
//! rest of the workspace forbids `unsafe`. On other systems than Linux
//! [`kill_with_parent`] does nothing ([`SUPPORTED`] is `false`).

use std::process::Command;

/// Whether [`kill_with_parent`] has an effect on this system.
pub const SUPPORTED: bool = cfg!(target_os = "linux");

/// Makes the process `cmd` starts receive SIGKILL when the thread that
/// spawns it ends (with its process, or on its own).
///
/// The spawn fails (with `ESRCH`) if the parent died before the child could
/// ask for the signal, so a child is never left without it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    let parent = std::process::id();
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe work is allowed. It makes two system calls and builds
    // an `io::Error` from a raw OS error code, which allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let sig = libc::SIGKILL as libc::c_ulong;
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0 as libc::c_ulong) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // Re-parented already: the parent died before the prctl, and
            // its death will never be signalled to us.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Does nothing: the parent-death signal is Linux's.
#[cfg(not(target_os = "linux"))]
pub fn kill_with_parent(_cmd: &mut Command) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::{Child, Stdio};

    /// Spawns `sleep 30` from a short-lived thread and returns it once that
    /// thread has ended.
    fn sleep_spawned_by_a_thread_that_ends() -> Child {
        std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30").stdin(Stdio::null());
            kill_with_parent(&mut cmd);
            cmd.spawn().expect("spawn sleep")
        })
        .join()
        .expect("spawning thread")
    }

    #[test]
    fn the_child_is_killed_when_its_parent_thread_ends() {
        let mut child = sleep_spawned_by_a_thread_that_ends();
        // `wait` returns once the child is gone: killed by the thread's end,
        // or (without the guard) after its 30 s with status 0.
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }
}
