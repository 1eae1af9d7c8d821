use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = vpsup::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vpsup: error: cannot start the async runtime: {e}");
            return ExitCode::from(vpsup::exit::FAILED);
        }
    };
    match runtime.block_on(vpsup::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_quiet() {
                eprintln!("vpsup: error: {e:#}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
