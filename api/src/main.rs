use std::process::ExitCode;

fn main() -> ExitCode {
    otobot_api::cli::main()
}
