//! `tauc-job`: parse, set up logging, run, map errors to exit codes
//! (0 ok, 1 job failed, 2 usage or configuration error).

use std::process::ExitCode;

use clap::Parser;
use tauc_jobs::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tauc_jobs::logging::init(cli.log_format.as_deref() == Some("json"));
    let runtime = match tauc_jobs::cluster::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tauc-job: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tauc-job: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}
