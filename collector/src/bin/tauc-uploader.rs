//! `tauc-uploader`: parse, set up logging, upload until SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tauc_collector::cli::UploaderArgs;

fn main() -> ExitCode {
    let args = UploaderArgs::parse();
    tauc_jobs::logging::init(args.chain.log_format.as_deref() == Some("json"));
    tauc_jobs::engine::cluster::exit_with("tauc-uploader", async move {
        tauc_collector::serve::run_uploader(args.resolve()?).await?;
        Ok::<_, tauc_collector::Error>(String::new())
    })
}
