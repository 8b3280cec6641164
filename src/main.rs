//! The `tanba` binary: parse arguments, set up logging, run, and turn the outcome into an exit
//! code. This is the only place that exits the process.

use clap::Parser;

fn main() {
    let cli = tanba::cli::Cli::parse();
    tanba::logging::init();
    let code = match tanba::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Under systemd this line is in the journal too: one line, nothing raw.
            eprintln!(
                "error: {}",
                tanba::logging::escape(&format!("{e:#}"), usize::MAX)
            );
            tanba::cli::EXIT_ERROR
        }
    };
    std::process::exit(code);
}
