//! payment-provider (placeholder)
