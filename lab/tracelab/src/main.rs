//! tracelab
fn main() {}
