//! The embedded collector as a child of the lab: `tracelab collector` in a
//! process of its own, so that nothing it does (a crash, an abort, a stack
//! overflow, running out of memory) can take the supervisor down with it.
//! The lab restarts it like a service, on the same three addresses, so the
//! services keep exporting to it and the Tempo API stays where it was; what
//! it held in memory is lost with the process.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::logs::{Listening, bound_address};
use super::options::LabOptions;
use super::spec::{ChildSpec, Listener, Pin};

/// The collector's name as a child of the lab (in [`crate::supervisor::LabStatus`],
/// [`crate::supervisor::Lab::pid`], [`crate::supervisor::Lab::logs`]).
pub const COLLECTOR: &str = "collector";

/// Where a lab's embedded collector listens (the addresses it bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectorAddrs {
    /// OTLP over HTTP.
    pub otlp_http: SocketAddr,
    /// OTLP over gRPC.
    pub otlp_grpc: SocketAddr,
    /// The Tempo-compatible API.
    pub api: SocketAddr,
}

/// glibc's tunable for the size from which an allocation is its own
/// mapping (returned to the system when freed).
const MALLOC_MMAP_THRESHOLD: &str = "MALLOC_MMAP_THRESHOLD_";
/// 128 KiB, glibc's initial threshold, kept fixed (measured with the
/// collector's `examples/memory_burst.rs`: settled memory under the bound).
const MMAP_THRESHOLD_BYTES: &str = "131072";

const API: Option<&str> = Some("api");
const OTLP_HTTP: Option<&str> = Some("otlp_http");
const OTLP_GRPC: Option<&str> = Some("otlp_grpc");

impl CollectorAddrs {
    /// From the collector's `"listening"` lines; `None` until all three came.
    pub(super) fn from_bound(bound: &[Listening]) -> Option<CollectorAddrs> {
        Some(CollectorAddrs {
            otlp_http: bound_address(bound, OTLP_HTTP)?,
            otlp_grpc: bound_address(bound, OTLP_GRPC)?,
            api: bound_address(bound, API)?,
        })
    }
}

/// `tracelab collector` with the lab's ports, bind address, sampling file
/// and admin token (in its environment, not on its command line, where
/// any user could read it), logging JSON for the lab to read.
pub(super) fn collector_spec(program: PathBuf, opts: &LabOptions) -> ChildSpec {
    let addr = |port| SocketAddr::new(opts.bind_host, port).to_string();
    let (http, grpc, api) = (
        addr(opts.ports.otlp_http),
        addr(opts.ports.otlp_grpc),
        addr(opts.ports.tempo),
    );
    let listen_hint = format!("one of {http}, {grpc} and {api}");
    let mut args: Vec<String> = vec![
        "collector".into(),
        "--otlp-http".into(),
        http,
        "--otlp-grpc".into(),
        grpc,
        "--api".into(),
        api,
        "--log-format".into(),
        "json".into(),
    ];
    let mut env_remove = Vec::new();
    match &opts.sampling_file {
        Some(file) => {
            let abs = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            args.extend(["--sampling-file".into(), abs.display().to_string()]);
        }
        // As the in-process collector had it: no file, no tail policy, even
        // if the supervisor's environment names one.
        None => env_remove.push("TRACELAB_SAMPLING_FILE".to_string()),
    }
    let mut env = vec![("TRACELAB_ADMIN_TOKEN".into(), opts.admin_token.clone())];
    // glibc raises its mmap threshold once large buffers (an inflated OTLP
    // body) are freed, and then keeps freed memory: after a burst the
    // process would stay 70-130 MiB above its store's byte bound. A fixed
    // threshold gives big buffers back to the system when freed. A value in
    // the supervisor's own environment is inherited instead.
    if std::env::var_os(MALLOC_MMAP_THRESHOLD).is_none() {
        env.push((MALLOC_MMAP_THRESHOLD.into(), MMAP_THRESHOLD_BYTES.into()));
    }
    ChildSpec {
        name: COLLECTOR,
        program,
        args,
        env,
        env_remove,
        // The API first: it is the collector's URL.
        listeners: vec![
            Listener {
                name: API,
                pin: Pin::Arg("--api"),
            },
            Listener {
                name: OTLP_HTTP,
                pin: Pin::Arg("--otlp-http"),
            },
            Listener {
                name: OTLP_GRPC,
                pin: Pin::Arg("--otlp-grpc"),
            },
        ],
        health_path: "/ready",
        listen_hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::Ports;

    #[test]
    fn the_collector_runs_with_the_lab_s_ports_and_file() {
        let opts = LabOptions {
            ports: Ports::CONTRACT,
            sampling_file: Some(PathBuf::from("/etc/sampling.yaml")),
            ..LabOptions::default()
        };
        let spec = collector_spec(PathBuf::from("/bin/tracelab"), &opts);
        assert_eq!(
            spec.args.join(" "),
            "collector --otlp-http 127.0.0.1:4318 --otlp-grpc 127.0.0.1:4317 \
             --api 127.0.0.1:3200 --log-format json --sampling-file /etc/sampling.yaml"
        );
        assert!(spec.env_remove.is_empty());
        if std::env::var_os(MALLOC_MMAP_THRESHOLD).is_none() {
            assert!(
                spec.env
                    .contains(&(MALLOC_MMAP_THRESHOLD.into(), MMAP_THRESHOLD_BYTES.into())),
                "{:?}",
                spec.env
            );
        }
        assert_eq!(
            spec.env[0],
            ("TRACELAB_ADMIN_TOKEN".to_string(), opts.admin_token.clone())
        );
        assert!(!spec.args.contains(&opts.admin_token));
        let without = collector_spec(PathBuf::from("/bin/tracelab"), &LabOptions::for_tests());
        assert_eq!(without.env_remove, ["TRACELAB_SAMPLING_FILE"]);
        assert!(without.args.contains(&"127.0.0.1:0".to_string()));
    }

    #[test]
    fn addresses_come_from_the_three_listening_lines() {
        let line = |name: &str, port: u16| {
            (
                Some(name.to_string()),
                SocketAddr::from(([127, 0, 0, 1], port)),
            )
        };
        let mut bound = vec![line("otlp_http", 1), line("api", 3)];
        assert_eq!(CollectorAddrs::from_bound(&bound), None);
        bound.push(line("otlp_grpc", 2));
        let addrs = CollectorAddrs::from_bound(&bound).unwrap();
        assert_eq!(
            (
                addrs.otlp_http.port(),
                addrs.otlp_grpc.port(),
                addrs.api.port()
            ),
            (1, 2, 3)
        );
    }
}
