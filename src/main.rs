use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = fepha::cli::Cli::parse();
    match fepha::cli::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
