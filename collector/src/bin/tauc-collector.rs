//! `tauc-collector`: parse, set up logging, serve until SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tauc_collector::cli::CollectorArgs;

fn main() -> ExitCode {
    let args = CollectorArgs::parse();
    tauc_common::logging::init(args.chain.log_format.as_deref() == Some("json"));
    tauc_common::process::exit_with("tauc-collector", async move {
        tauc_collector::serve::run_collector(args.resolve()?).await?;
        Ok::<_, tauc_collector::Error>(String::new())
    })
}
