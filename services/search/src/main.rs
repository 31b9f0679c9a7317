//! search
fn main() {}
