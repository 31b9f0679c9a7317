//! What the lab starts for one child, and starts again after a crash: the
//! program, its arguments and environment, its listeners, its health check.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;

/// Where a child is told the address of one of its listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pin {
    /// An environment variable (`TRACELAB_LISTEN`).
    Env(&'static str),
    /// A command-line option followed by the address (`--otlp-http`).
    Arg(&'static str),
}

/// One listener of a child, as its `"listening"` log line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Listener {
    /// The line's `listener` field; `None` for a line without one (a
    /// service's one HTTP listener).
    pub(super) name: Option<&'static str>,
    /// How the address is given to the child.
    pub(super) pin: Pin,
}

/// How to start one child.
#[derive(Debug, Clone)]
pub(super) struct ChildSpec {
    pub(super) name: &'static str,
    pub(super) program: PathBuf,
    pub(super) args: Vec<String>,
    /// Set on top of the supervisor's own environment.
    pub(super) env: Vec<(String, String)>,
    /// Removed from the inherited environment.
    pub(super) env_remove: Vec<String>,
    /// The listeners the child logs once bound; the first one is its URL.
    /// Start-up waits for all of them.
    pub(super) listeners: Vec<Listener>,
    /// Path answering 200 once the child is ready (`/health`, `/ready`).
    pub(super) health_path: &'static str,
    /// The addresses it was asked to bind, for an "address in use" hint.
    pub(super) listen_hint: String,
}

impl ChildSpec {
    /// The command for one start, output piped, killed when dropped.
    pub(super) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        cmd
    }

    /// Pins every listener to the address it bound the first time, so a
    /// restart comes back where callers (and the lab's URLs) expect it,
    /// port 0 included. Listeners not in `bound` keep what they had.
    pub(super) fn pin_addresses(&mut self, bound: &[(Option<String>, SocketAddr)]) {
        for listener in self.listeners.clone() {
            let Some((_, addr)) = bound
                .iter()
                .find(|(name, _)| name.as_deref() == listener.name)
            else {
                continue;
            };
            let value = addr.to_string();
            match listener.pin {
                Pin::Env(key) => {
                    // The last setting wins, as with `Command::envs`.
                    self.env.retain(|(k, _)| k != key);
                    self.env.push((key.to_string(), value));
                }
                Pin::Arg(flag) => match self.args.iter().position(|a| a == flag) {
                    Some(i) if i + 1 < self.args.len() => self.args[i + 1] = value,
                    _ => self.args.extend([flag.to_string(), value]),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ChildSpec {
        ChildSpec {
            name: "x",
            program: PathBuf::from("/bin/x"),
            args: vec!["collector".into(), "--api".into(), "127.0.0.1:0".into()],
            env: vec![("TRACELAB_LISTEN".into(), "127.0.0.1:0".into())],
            env_remove: Vec::new(),
            listeners: vec![
                Listener {
                    name: None,
                    pin: Pin::Env("TRACELAB_LISTEN"),
                },
                Listener {
                    name: Some("api"),
                    pin: Pin::Arg("--api"),
                },
                Listener {
                    name: Some("otlp_grpc"),
                    pin: Pin::Arg("--otlp-grpc"),
                },
            ],
            health_path: "/health",
            listen_hint: String::new(),
        }
    }

    #[test]
    fn bound_addresses_replace_the_requested_ones() {
        let mut s = spec();
        s.pin_addresses(&[
            (Some("api".into()), "127.0.0.1:3201".parse().unwrap()),
            (None, "127.0.0.1:40001".parse().unwrap()),
            (Some("otlp_grpc".into()), "0.0.0.0:4317".parse().unwrap()),
            (Some("unknown".into()), "127.0.0.1:9".parse().unwrap()),
        ]);
        assert_eq!(
            s.env,
            vec![("TRACELAB_LISTEN".to_string(), "127.0.0.1:40001".to_string())]
        );
        assert_eq!(
            s.args,
            [
                "collector",
                "--api",
                "127.0.0.1:3201",
                "--otlp-grpc",
                "0.0.0.0:4317"
            ]
        );
    }

    #[test]
    fn listeners_not_reported_keep_their_setting() {
        let mut s = spec();
        s.pin_addresses(&[]);
        assert_eq!(s.env, spec().env);
        assert_eq!(s.args, spec().args);
    }
}
