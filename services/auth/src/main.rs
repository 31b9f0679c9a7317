//! auth
fn main() {}
