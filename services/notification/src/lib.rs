//! notification (placeholder)
