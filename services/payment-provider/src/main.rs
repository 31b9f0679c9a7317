//! payment-provider
fn main() {}
