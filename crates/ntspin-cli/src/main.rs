//! The `ntspin` command.
fn main() {}
