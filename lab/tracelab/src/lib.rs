//! tracelab (placeholder)
