//! search (placeholder)
