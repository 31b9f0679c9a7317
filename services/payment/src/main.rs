//! payment
fn main() {}
