//! notification
fn main() {}
