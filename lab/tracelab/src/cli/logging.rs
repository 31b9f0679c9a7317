//! The CLI's own log lines (`up`, `collector`): text with a name prefix
//! beside the children's lines, or JSON for containers.

use crate::supervisor::print_prefixed;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human readable.
    Text,
    /// One JSON object per line (the process contract).
    Json,
}
pub(super) fn init_logging(format: LogFormat, prefix: Option<&'static str>, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_env("TRACELAB_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off"
        ))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match (format, prefix) {
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .try_init(),
        (LogFormat::Text, Some(prefix)) => builder
            .with_target(false)
            .without_time()
            .with_ansi(false)
            .with_writer(move || PrefixWriter::new(prefix))
            .try_init(),
        (LogFormat::Text, None) => builder.with_writer(std::io::stdout).try_init(),
    };
}

/// Writes each log line as `name | line`, like the children's output.
struct PrefixWriter {
    name: &'static str,
    buf: Vec<u8>,
}

impl PrefixWriter {
    fn new(name: &'static str) -> PrefixWriter {
        PrefixWriter {
            name,
            buf: Vec::new(),
        }
    }
}

impl std::io::Write for PrefixWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            print_prefixed(self.name, line.trim_end());
        }
        self.buf.clear();
        Ok(())
    }
}

impl Drop for PrefixWriter {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}
