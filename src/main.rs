//! The `fastpm` command line: parses arguments, runs a subcommand, maps errors to one line and
//! an exit code.
fn main() {}
