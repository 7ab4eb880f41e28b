//! `tauc-job`: parse, set up logging, run, map errors to exit codes
//! (0 ok, 1 job failed, 2 usage or configuration error).

use std::process::ExitCode;

use clap::Parser;
use tauc_jobs::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tauc_jobs::logging::init(cli.log_format.as_deref() == Some("json"));
    tauc_common::process::exit_with("tauc-job", cli::run(cli))
}
