//! The `imgsan` command: parses arguments, hands a plan to the library, maps errors
//! to exit codes. No logic lives here beyond that.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
