//! The flag groups several commands share: the engine's ([`EngineArgs`]:
//! where queries run, with what memory and scratch space, over which
//! stores) and the stores' alone ([`StoreArgs`], for the commands that
//! run no query).

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::engine::runtime::scratch::{Resources, parse_size};

/// The engine's flags, the same for every command that runs queries
/// (`submit`, `sql`, `report`, `serve`). Serialized, the flags with a
/// config file key are the flag layer of the command's settings; unset
/// ones are left out so they do not hide the layers below.
#[derive(Debug, Clone, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct EngineArgs {
    /// Ballista scheduler, df://host:port; without it the job runs in-process.
    #[arg(long, env = "TAUC_SCHEDULER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// Task slots of the in-process executor [default: CPU count].
    #[arg(long, env = "TAUC_PARALLELISM")]
    #[serde(skip)]
    pub parallelism: Option<usize>,
    /// Memory the in-process engine's queries may hold before they spill
    /// to disk (4GiB, 512MiB) [default: a quarter of the machine's memory].
    #[arg(long, env = "TAUC_MEMORY_LIMIT", value_parser = parse_size)]
    #[serde(skip)]
    pub memory_limit: Option<usize>,
    /// Parent of the run's private scratch directory (shuffle and spill
    /// files, mode 0700, removed when the run ends) [default: the system
    /// temporary directory].
    #[arg(long, env = "TAUC_WORK_DIR")]
    #[serde(skip)]
    pub work_dir: Option<PathBuf>,
    /// Where data lives.
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreArgs,
}

impl EngineArgs {
    /// Memory and scratch space of the in-process engine.
    pub fn resources(&self) -> Resources {
        Resources {
            memory_limit: self.memory_limit,
            work_dir: self.work_dir.clone(),
        }
    }
}

/// Where data lives and how to reach it; serialized as [`EngineArgs`].
#[derive(Debug, Clone, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StoreArgs {
    /// Root of the raw layout: `s3://bucket/route` or a local folder
    /// [default: data/raw].
    #[arg(long, env = "TAUC_RAW_ROOT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_root: Option<String>,
    /// Root of the warehouse: `s3://bucket/prefix` or a local folder
    /// [default: data/warehouse].
    #[arg(long, env = "TAUC_WAREHOUSE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    /// Environment path segment [default: uat].
    #[arg(long, env = "TAUC_ENV")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000.
    #[arg(long, env = "TAUC_S3_ENDPOINT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "TAUC_S3_REGION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    /// Allow plain http to the S3 endpoint.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub s3_allow_http: bool,
}
