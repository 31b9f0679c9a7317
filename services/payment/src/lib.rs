//! payment (placeholder)
