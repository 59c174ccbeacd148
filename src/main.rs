use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cheems::cli::Cli::parse();
    match cheems::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
