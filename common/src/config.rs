//! Job settings and where they come from.
//!
//! Precedence, highest first: **flags > environment (`TAUC_*`) > config
//! file > built-in defaults**. Flags and their variables are read by clap
//! (each flag names its `TAUC_*` variable); the file is `--config`,
//! `TAUC_CONFIG`, or `tauc.toml` in the working directory when present.
//! Unknown keys in the file and unknown `TAUC_*` variables are errors, so a
//! misspelt option never silently falls back to a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::store::S3Options;

/// Default raw root: a local folder, so the embedded default needs no S3.
pub const DEFAULT_RAW_ROOT: &str = "data/raw";
/// Default warehouse root.
pub const DEFAULT_WAREHOUSE: &str = "data/warehouse";
/// Default environment segment.
pub const DEFAULT_ENV: &str = "uat";
/// Default lateness allowance, in days.
pub const DEFAULT_LATENESS_DAYS: i64 = 2;

/// Every `TAUC_*` variable tauc reads, in any of its binaries (so one
/// environment file can serve a host that runs several of them).
pub const KNOWN_ENV: &[&str] = &[
    "TAUC_CONFIG",
    "TAUC_RAW_ROOT",
    "TAUC_WAREHOUSE",
    "TAUC_ENV",
    "TAUC_LATENESS_DAYS",
    "TAUC_SCHEDULER",
    "TAUC_REGIONS",
    "TAUC_LOG_FORMAT",
    "TAUC_S3_ENDPOINT",
    "TAUC_S3_REGION",
    "TAUC_S3_ALLOW_HTTP",
    "TAUC_S3_PATH_STYLE",
    "TAUC_S3_RETRY_TIMEOUT_SECS",
    "TAUC_BIND",
    "TAUC_SCHEDULER_PORT",
    "TAUC_TASK_SPREAD",
    "TAUC_PARALLELISM",
    "TAUC_FUNNELS",
    "TAUC_MEMORY_LIMIT",
    "TAUC_WORK_DIR",
    "TAUC_FILE_MAX_ROWS",
    "TAUC_FILE_MAX_MB",
    "TAUC_LEASE_WAIT_SECS",
    "TAUC_KEEP_REPLACED_SECS",
    "TAUC_COMMIT_DELAY_MS",
    "TAUC_STRICT_DIMS",
    "TAUC_STALL_SECS",
    "TAUC_METRICS_FILE",
    "TAUC_EVENT_LOG",
    "TAUC_BIND_HOST",
    "TAUC_CLUSTER_CA",
    "TAUC_TASK_MODE",
    "TAUC_CLUSTER_CERT",
    "TAUC_CLUSTER_KEY",
    // tauc-job serve
    "TAUC_SERVE_BIND",
    "TAUC_USERS_FILE",
    "TAUC_TLS_CERT",
    "TAUC_TLS_KEY",
    "TAUC_TOKEN_TTL",
    "TAUC_LOGIN_ATTEMPTS",
    "TAUC_LOGIN_BACKOFF",
    "TAUC_QUERY_TIMEOUT",
    "TAUC_MAX_ROWS",
    "TAUC_MAX_QUERIES",
    "TAUC_MAX_QUERIES_PER_USER",
    "TAUC_QUERY_SCRATCH",
    // the collection chain (tauc-collector, tauc-uploader)
    "TAUC_REGION",
    "TAUC_SPOOL_DIR",
    "TAUC_SPOOL_MAX_BYTES",
    "TAUC_SPOOL_SYNC",
    "TAUC_KAFKA_BROKERS",
    "TAUC_KAFKA_OPTIONS",
    "TAUC_TOPIC",
    "TAUC_TOPIC_PARTITIONS",
    "TAUC_ALLOWED_ORIGINS",
    "TAUC_GROUP",
    "TAUC_MAX_LINES",
    "TAUC_MAX_BYTES",
    "TAUC_MAX_WAIT",
    "TAUC_METRICS_BIND",
    "TAUC_UPLOADER_FAULT",
];

/// The config file (`tauc.toml`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    /// Root of the raw layout.
    pub raw_root: Option<String>,
    /// Root of the warehouse.
    pub warehouse: Option<String>,
    /// Environment segment.
    pub env: Option<String>,
    /// Lateness allowance in days.
    pub lateness_days: Option<i64>,
    /// Scheduler URL (`df://host:port`); unset runs in-process.
    pub scheduler: Option<String>,
    /// Regions to load when `--region` is not given.
    pub regions: Option<Vec<String>>,
    /// Funnels file or URL for the reports.
    pub funnels: Option<String>,
    /// `dim_user` values outside the spec's forms stop a run (exit 2).
    pub strict_dims: Option<bool>,
    /// Seconds a replaced data file stays for running queries.
    pub keep_replaced_secs: Option<u64>,
    /// S3 client options.
    #[serde(default)]
    pub s3: S3Options,
    /// `tauc-collector` settings (`[collector]`).
    #[serde(default)]
    pub collector: CollectorFile,
    /// `tauc-uploader` settings (`[uploader]`).
    #[serde(default)]
    pub uploader: UploaderFile,
    /// `tauc-job serve` settings (`[serve]`).
    #[serde(default)]
    pub serve: ServeFile,
    /// TLS to the cluster (`[cluster]`).
    #[serde(default)]
    pub cluster: ClusterFile,
}

/// The `[cluster]` section: the TLS files `tauc-job` uses towards the
/// scheduler and executors when `--cluster-*` and `TAUC_CLUSTER_*` are
/// unset.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClusterFile {
    /// The CA certificate (PEM).
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM).
    pub cert: Option<PathBuf>,
    /// This client's private key (PEM).
    pub key: Option<PathBuf>,
}

impl ClusterFile {
    /// The section's files.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// The three files, as given by flags, `TAUC_CLUSTER_*` or the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed every cluster process's certificate (PEM).
    pub ca: Option<PathBuf>,
    /// This process's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// This process's private key (PEM).
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Each file given here, else the one of `other`.
    pub fn or(self, other: TlsFiles) -> TlsFiles {
        TlsFiles {
            ca: self.ca.or(other.ca),
            cert: self.cert.or(other.cert),
            key: self.key.or(other.key),
        }
    }
}

/// The `[serve]` section: what `tauc-job serve` reads when a flag and its
/// variable are unset.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeFile {
    /// Listen address, e.g. `10.0.0.5:50060`.
    pub bind: Option<String>,
    /// The users file.
    pub users: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// How long a login lasts, e.g. `8h`.
    pub token_ttl: Option<String>,
    /// Failed logins in a row before logins back off.
    pub login_attempts: Option<u32>,
    /// The first back-off window, e.g. `1s`.
    pub login_backoff: Option<String>,
    /// Longest a query may run, e.g. `300s`.
    pub query_timeout: Option<String>,
    /// Most rows one result may have.
    pub max_rows: Option<u64>,
    /// Most queries running at once.
    pub max_queries: Option<usize>,
    /// Most queries of one user running at once.
    pub max_queries_per_user: Option<usize>,
    /// Spill files one query may write, e.g. `2G`.
    pub query_scratch: Option<String>,
}

/// The `[collector]` section: what `tauc-collector` reads when a flag and
/// its variable are unset.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CollectorFile {
    /// Listen address, e.g. `0.0.0.0:8080`.
    pub bind: Option<String>,
    /// The region this collector serves.
    pub region: Option<String>,
    /// Directory of the local spool.
    pub spool_dir: Option<String>,
    /// Spool size above which requests get 503, e.g. `1GiB`.
    pub spool_max_bytes: Option<String>,
    /// Kafka bootstrap servers, `host:port[,…]`.
    pub kafka_brokers: Option<String>,
    /// Topic [default: `tauc-{env}-{region}`].
    pub topic: Option<String>,
    /// Browser origins allowed to post events (exact, e.g.
    /// `https://www.example.com`).
    pub allowed_origins: Option<Vec<String>>,
}

/// The `[uploader]` section: what `tauc-uploader` reads when a flag and
/// its variable are unset.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UploaderFile {
    /// The region whose topic is uploaded.
    pub region: Option<String>,
    /// Kafka bootstrap servers, `host:port[,…]`.
    pub kafka_brokers: Option<String>,
    /// Topic [default: `tauc-{env}-{region}`].
    pub topic: Option<String>,
    /// Consumer group [default: `tauc-uploader-{env}-{region}`].
    pub group: Option<String>,
    /// Records per object at most.
    pub max_lines: Option<usize>,
    /// Bytes per object at most, e.g. `2MiB`.
    pub max_bytes: Option<String>,
    /// Longest a partial batch waits, e.g. `60s`.
    pub max_wait: Option<String>,
    /// Address of `/healthz` and `/metrics`.
    pub metrics_bind: Option<String>,
}

impl FileConfig {
    /// Loads `explicit`, else `tauc.toml` in the working directory if it
    /// exists, else an empty config.
    pub fn load(explicit: Option<&Path>) -> Result<FileConfig> {
        let path: PathBuf = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = PathBuf::from("tauc.toml");
                if !p.exists() {
                    return Ok(FileConfig::default());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::config(format!("cannot read config file '{}': {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| Error::config(format!("invalid config file '{}': {e}", path.display())))
    }
}

/// A duration as `humantime` reads it (`60s`, `500ms`, `2m`, `1h 30m`,
/// `2d`), or a bare number of seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration '{s}': {e} (expected e.g. 60s, 500ms, 2m or 1h)"))
}

/// A size as `bytesize` reads it: bytes, or a number with a unit — `K`,
/// `M`, `G`, `T` (and `KB`, `MB`, …) are powers of 1000, `Ki`, `Mi`, `Gi`,
/// `Ti` (and `KiB`, `MiB`, …) powers of 1024.
pub fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let size: bytesize::ByteSize = t.parse().map_err(|e| {
        format!("invalid size '{s}': {e} (expected e.g. 4GiB, 512MiB, 2GB or 1073741824)")
    })?;
    usize::try_from(size.as_u64()).map_err(|_| format!("size '{s}' is too large"))
}

/// Fails on `TAUC_*` variables tauc does not know (likely misspelt).
pub fn check_env() -> Result<()> {
    let unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("TAUC_") && !KNOWN_ENV.contains(&k.as_str()))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::config(format!(
            "unknown environment variable(s) {} (known: {})",
            unknown.join(", "),
            KNOWN_ENV.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_rejects_unknown_keys() {
        let ok: FileConfig = toml::from_str(
            "warehouse = \"s3://b/w\"\n[s3]\nendpoint = \"http://127.0.0.1:9000\"\n",
        )
        .unwrap();
        assert_eq!(ok.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(toml::from_str::<FileConfig>("warehous = \"x\"").is_err());
        assert!(toml::from_str::<FileConfig>("[s3]\nendpiont = \"x\"").is_err());
    }

    #[test]
    fn sizes_say_what_their_units_say() {
        assert_eq!(parse_size("1024"), Ok(1024));
        // MB is a million bytes, MiB 2^20 (the old parser took MB for MiB)
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("4G"), Ok(4_000_000_000));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_size("12K"), Ok(12_000));
        assert!(parse_size("4X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5x").unwrap_err().contains("5x"));
    }
}
