//! The children's log lines: read, kept (the last [`LOG_TAIL_LINES`] per
//! child), condensed from JSON to one readable line, and printed with the
//! child's name in front.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::mpsc;

use super::options::{LOG_TAIL_LINES, LogSink};

/// The last log lines of one child, shared with its reader tasks.
pub(super) type LogTail = Arc<Mutex<VecDeque<String>>>;

pub(super) fn lock(logs: &LogTail) -> std::sync::MutexGuard<'_, VecDeque<String>> {
    logs.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A `"listening"` line: the listener's name (`None` when the line names
/// none) and its bound address.
pub(super) type Listening = (Option<String>, SocketAddr);

/// The address a listener reported among `bound`.
pub(super) fn bound_address(bound: &[Listening], listener: Option<&str>) -> Option<SocketAddr> {
    bound
        .iter()
        .find(|(name, _)| name.as_deref() == listener)
        .map(|(_, addr)| *addr)
}

/// Reads a child's output line by line: keeps the tail, reports every
/// `"listening"` line, and prints when the sink says so.
pub(super) async fn read_lines(
    name: &'static str,
    stream: impl AsyncRead + Unpin,
    logs: LogTail,
    listening: mpsc::UnboundedSender<Listening>,
    sink: LogSink,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let json: Option<serde_json::Value> = if line.starts_with('{') {
            serde_json::from_str(&line).ok()
        } else {
            None
        };
        if let Some(v) = &json
            && let Some(addr) = listening_addr(v)
        {
            // Nobody listens after start-up; that is fine.
            let _ = listening.send((listener_name(v), addr));
        }
        if sink == LogSink::Prefix {
            let text = match &json {
                Some(v) => condense_log(v),
                None => line.clone(),
            };
            print_prefixed(name, &text);
        }
        let mut tail = lock(&logs);
        if tail.len() == LOG_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// The address of a `{"message":"listening","addr":"ip:port"}` log line.
/// Also accepts the fields nested under `"fields"` (tracing's unflattened JSON).
pub fn listening_addr(v: &serde_json::Value) -> Option<SocketAddr> {
    let fields = v.get("fields").unwrap_or(v);
    let message = v
        .get("message")
        .or_else(|| fields.get("message"))?
        .as_str()?;
    if message != "listening" {
        return None;
    }
    fields
        .get("addr")
        .or_else(|| v.get("addr"))?
        .as_str()?
        .parse()
        .ok()
}

/// The `listener` field of a `"listening"` line (`otlp_http`, `api`, ...).
fn listener_name(v: &serde_json::Value) -> Option<String> {
    let fields = v.get("fields").unwrap_or(v);
    fields
        .get("listener")
        .or_else(|| v.get("listener"))?
        .as_str()
        .map(str::to_string)
}

/// The last `n` lines of a child's tail.
pub(super) fn last_lines(logs: &LogTail, n: usize) -> Vec<String> {
    let logs = lock(logs);
    logs.iter()
        .skip(logs.len().saturating_sub(n))
        .cloned()
        .collect()
}

/// Condenses a JSON log line to `LEVEL message key=value ...`.
pub fn condense_log(v: &serde_json::Value) -> String {
    let Some(obj) = v.as_object() else {
        return v.to_string();
    };
    let mut out = String::new();
    if let Some(level) = obj.get("level").and_then(|l| l.as_str()) {
        let _ = write!(out, "{level:<5} ");
    }
    let mut fields: Vec<(&String, &serde_json::Value)> = obj.iter().collect();
    if let Some(serde_json::Value::Object(nested)) = obj.get("fields") {
        fields.extend(nested.iter());
    }
    if let Some(msg) = fields
        .iter()
        .find(|(k, _)| *k == "message")
        .and_then(|(_, v)| v.as_str())
    {
        out.push_str(msg);
    }
    for (k, val) in fields {
        if matches!(
            k.as_str(),
            // `service` repeats the line's prefix.
            "timestamp"
                | "level"
                | "message"
                | "target"
                | "fields"
                | "span"
                | "spans"
                | "threadId"
                | "service"
        ) {
            continue;
        }
        match val {
            serde_json::Value::String(s) => {
                let _ = write!(out, " {k}={s}");
            }
            other => {
                let _ = write!(out, " {k}={other}");
            }
        }
    }
    out
}

/// Width of the `name |` column in `tracelab up` output.
const PREFIX_W: usize = 16;

fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints `name | text` to stdout (colored by service on a terminal).
pub fn print_prefixed(name: &str, text: &str) {
    const COLORS: [&str; 6] = [
        "\x1b[36m", "\x1b[32m", "\x1b[33m", "\x1b[34m", "\x1b[35m", "\x1b[96m",
    ];
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let prefix = format!("{name:<PREFIX_W$}|");
    let mut stdout = std::io::stdout().lock();
    let _ = if use_color() {
        writeln!(
            stdout,
            "{}{prefix}\x1b[0m {text}",
            COLORS[h as usize % COLORS.len()]
        )
    } else {
        writeln!(stdout, "{prefix} {text}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_listening_lines() {
        let flat = json!({"level":"INFO","message":"listening","addr":"127.0.0.1:41234"});
        assert_eq!(
            listening_addr(&flat),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        let nested = json!({"level":"INFO","fields":{"message":"listening","addr":"[::1]:80"}});
        assert_eq!(listening_addr(&nested), Some("[::1]:80".parse().unwrap()));
        assert_eq!(
            listening_addr(&json!({"message":"ready","addr":"1.2.3.4:5"})),
            None
        );
        assert_eq!(
            listening_addr(&json!({"message":"listening","addr":"nope"})),
            None
        );
        assert_eq!(listener_name(&flat), None);
        let named = json!({"message":"listening","listener":"api","addr":"127.0.0.1:3200"});
        assert_eq!(listener_name(&named).as_deref(), Some("api"));
    }

    #[test]
    fn condenses_json_logs() {
        let v = json!({"timestamp":"t","level":"INFO","target":"gateway","message":"request done",
                       "status":200,"trace_id":"abc"});
        assert_eq!(
            condense_log(&v),
            "INFO  request done status=200 trace_id=abc"
        );
    }
}
