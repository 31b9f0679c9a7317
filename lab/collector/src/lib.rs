//! tracelab-collector (placeholder)
