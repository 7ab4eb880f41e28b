//! `tauc-uploader`: parse, set up logging, upload until SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tauc_collector::cli::UploaderArgs;

fn main() -> ExitCode {
    let args = UploaderArgs::parse();
    tauc_common::logging::init(args.chain.log_format.as_deref() == Some("json"));
    tauc_common::process::exit_with("tauc-uploader", async move {
        tauc_collector::serve::run_uploader(args.resolve()?).await?;
        Ok::<_, tauc_collector::Error>(String::new())
    })
}
