//! tracelab-db (placeholder)
