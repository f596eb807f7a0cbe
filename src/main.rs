//! The `tollgate` command: `serve` runs the gateway, `validate` checks a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate::server::{ServeOptions, control};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A thread-per-core API gateway for bare-metal Linux"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the APIs of a config file until SIGTERM/SIGINT (SIGHUP reloads it).
    Serve {
        /// The TOML config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Data-plane threads, one per CPU (default: `server.cores`, else every CPU).
        #[arg(long)]
        cores: Option<usize>,
    },
    /// Check a config file: prints every error with its line and exits 1, or exits 0.
    Validate {
        /// The TOML config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    tollgate::telemetry::log::init_from_env();
    match Cli::parse().command {
        Command::Serve { config, cores } => {
            if cores == Some(0) {
                eprintln!("tollgate: --cores must be at least 1");
                return ExitCode::from(2);
            }
            match tollgate::server::serve(ServeOptions {
                config_path: config,
                cores,
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tollgate::log_error!("tollgate", "cannot serve:\n{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { file } => match control::load_snapshot(&file, 1) {
            Ok(snap) => {
                let routes: usize = snap.config.apis.iter().map(|a| a.routes.len()).sum();
                println!(
                    "{}: ok ({} API(s), {routes} route(s))",
                    file.display(),
                    snap.apis.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{}: {} error(s)", file.display(), errors.len());
                ExitCode::FAILURE
            }
        },
    }
}
