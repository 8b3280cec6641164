//! The `tanba` binary: parse arguments, set up logging, run, and turn the outcome into an exit
//! code. This is the only place that exits the process.

use clap::Parser;

fn main() {
    let cli = tanba::cli::Cli::parse();
    tanba::logging::init();
    // SPEC §9: --config, else TANBA_CONFIG, else /etc/tanba/tanba.toml, else built-in defaults.
    let source = tanba::config::Source::locate(cli.config.as_deref());
    let code = match tanba::cli::run(cli, &source) {
        Ok(code) => code,
        Err(e) => {
            // Under systemd this line is in the journal too: one line, nothing raw.
            eprintln!(
                "error: {}",
                tanba::logging::escape(&format!("{e:#}"), usize::MAX)
            );
            eprintln!(
                "config: {}",
                tanba::logging::escape(&source.to_string(), usize::MAX)
            );
            tanba::cli::EXIT_ERROR
        }
    };
    std::process::exit(code);
}
