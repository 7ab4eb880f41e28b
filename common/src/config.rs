//! Job settings and where they come from.
//!
//! Precedence, highest first: **flags > environment (`TAUC_*`) > config
//! file > built-in defaults**. Each process layers them with `figment`
//! through one loader, [`Layers`]: its defaults (`Default` of its settings
//! struct), the file (`--config`, `TAUC_CONFIG`, or `tauc.toml` in the
//! working directory when present), the `TAUC_*` variables and the flags
//! clap parsed. Every setting has one flat key, its variable's name
//! without `TAUC_` in kebab-case (`TAUC_S3_ENDPOINT` is `s3-endpoint`);
//! the file's sections flatten onto those keys (`[s3] endpoint`).
//! Unknown keys in the file and unknown `TAUC_*` variables are errors, so
//! a misspelt option never silently falls back to a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
    "TAUC_COMPACT_FILES",
    "TAUC_FILE_MAX_MB",
    "TAUC_LEASE_WAIT_SECS",
    "TAUC_KEEP_REPLACED_SECS",
    "TAUC_COMMIT_DELAY_MS",
    "TAUC_STRICT_DIMS",
    "TAUC_FULL_LISTING_EVERY",
    "TAUC_LISTING_GUARD",
    "TAUC_LISTING_SKEW",
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
    "TAUC_READ_CACHE",
    // tauc-job follow (and TAUC_METRICS_BIND)
    "TAUC_FOLLOW_EVERY",
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// How often an incremental run lists each raw folder whole, e.g. `1h`.
    pub full_listing_every: Option<String>,
    /// `G` of the offset listings, e.g. `15m`.
    pub listing_guard: Option<String>,
    /// `S` of the offset listings, e.g. `2m`.
    pub listing_skew: Option<String>,
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
    /// `tauc-job follow` settings (`[follow]`).
    #[serde(default)]
    pub follow: FollowFile,
    /// TLS to the cluster (`[cluster]`).
    #[serde(default)]
    pub cluster: ClusterFile,
}

/// The `[follow]` section: what `tauc-job follow` reads when a flag and
/// its variable are unset (besides the top-level job settings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FollowFile {
    /// Time between the starts of two micro-batches, e.g. `60s`.
    pub every: Option<String>,
    /// Address of `/metrics`, e.g. `127.0.0.1:9465`.
    pub metrics_bind: Option<String>,
}

/// The `[cluster]` section: the TLS files `tauc-job` uses towards the
/// scheduler and executors when `--cluster-*` and `TAUC_CLUSTER_*` are
/// unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClusterFile {
    /// The CA certificate (PEM).
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM).
    pub cert: Option<PathBuf>,
    /// This client's private key (PEM).
    pub key: Option<PathBuf>,
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

/// The `[serve]` section: what `tauc-job serve` reads when a flag and its
/// variable are unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Memory for the data files' ranges queries read, e.g. `512MiB`.
    pub read_cache: Option<String>,
}

/// The `[collector]` section: what `tauc-collector` reads when a flag and
/// its variable are unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// The file to read: `explicit`, else `tauc.toml` in the working
    /// directory if it exists.
    pub fn path(explicit: Option<&Path>) -> Option<PathBuf> {
        match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("tauc.toml")).filter(|p| p.exists()),
        }
    }

    /// Loads `explicit`, else `tauc.toml` in the working directory if it
    /// exists, else an empty config.
    pub fn load(explicit: Option<&Path>) -> Result<FileConfig> {
        let Some(path) = FileConfig::path(explicit) else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::config(format!("cannot read config file '{}': {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| Error::config(format!("invalid config file '{}': {e}", path.display())))
    }

    /// The file's settings under their flat keys: the top level as it is,
    /// `[s3]` and `[cluster]` prefixed with their name, and `section`
    /// lifted to the top; the other processes' sections are left out.
    fn flatten(&self, section: Section) -> Result<Dict> {
        let Value::Dict(_, top) = Value::serialize(self)
            .map_err(|e| Error::config(format!("cannot read the config file's values: {e}")))?
        else {
            return Ok(Dict::new());
        };
        let mut out = Dict::new();
        for (name, value) in top {
            match value {
                Value::Dict(_, keys) if is_lifted(&name, section) => {
                    out.extend(keys.into_iter().map(|(k, v)| (setting_key(&name, &k), v)));
                }
                Value::Dict(..) => {}
                value => {
                    out.insert(name, value);
                }
            }
        }
        // an unset key is absent, not a `None` over the defaults
        out.retain(|_, v| !matches!(v, Value::Empty(..)));
        Ok(out)
    }
}

/// Which file section a process reads besides the top level, `[s3]` and
/// `[cluster]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `tauc-job` commands but `serve`: none.
    Jobs,
    /// `tauc-job serve`: `[serve]`.
    Serve,
    /// `tauc-collector`: `[collector]`.
    Collector,
    /// `tauc-uploader`: `[uploader]`.
    Uploader,
    /// `tauc-job follow`: `[follow]`.
    Follow,
}

impl Section {
    fn name(self) -> Option<&'static str> {
        match self {
            Section::Jobs => None,
            Section::Serve => Some("serve"),
            Section::Collector => Some("collector"),
            Section::Uploader => Some("uploader"),
            Section::Follow => Some("follow"),
        }
    }
}

fn is_lifted(table: &str, section: Section) -> bool {
    matches!(table, "s3" | "cluster") || section.name() == Some(table)
}

/// The flat key of `key` in `[table]`: the name of its variable without
/// `TAUC_` (`[s3] endpoint` is `TAUC_S3_ENDPOINT`, `[serve] users` is
/// `TAUC_USERS_FILE`).
fn setting_key(table: &str, key: &str) -> String {
    match (table, key) {
        ("s3" | "cluster", k) => format!("{table}-{k}"),
        ("serve", "bind") => "serve-bind".into(),
        ("serve", "users") => "users-file".into(),
        ("follow", "every") => "follow-every".into(),
        (_, k) => k.into(),
    }
}

/// The flat key a `TAUC_*` variable sets: its name without the prefix, in
/// kebab-case.
fn env_key(var: &str) -> Option<String> {
    var.strip_prefix("TAUC_")
        .map(|k| k.to_ascii_lowercase().replace('_', "-"))
}

/// One layer of flat settings, named for messages (`for key
/// "TAUC_MAX_WAIT" in the environment`).
#[derive(Clone)]
struct Layer {
    name: String,
    values: Dict,
    /// How a flat key is written where this layer comes from.
    spell: fn(&str) -> String,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let spell = self.spell;
        Metadata::named(self.name.clone())
            .interpolater(move |_: &Profile, keys: &[&str]| spell(&keys.join(".")))
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// The config file and the `TAUC_*` variables of one process, to be
/// layered under its flags and over its defaults by [`Layers::extract`].
#[derive(Clone)]
pub struct Layers {
    file: Layer,
    env: Layer,
}

impl Layers {
    /// Refuses unknown `TAUC_*` variables, then loads the config file.
    pub fn load(config: Option<&Path>, section: Section) -> Result<Layers> {
        check_env()?;
        let file = FileConfig::load(config)?;
        let name = FileConfig::path(config).map_or("tauc.toml".into(), |p| p.display().to_string());
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Layers::new(&file, &name, section, vars)
    }

    /// The layers of `file` (read from `name`) and the variables `vars`.
    pub fn new(
        file: &FileConfig,
        name: &str,
        section: Section,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Layers> {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("TAUC_"))
            .collect();
        check_vars(vars.iter().map(|(k, _)| k.as_str()))?;
        let env = vars
            .into_iter()
            // an empty variable is unset, as clap takes it
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(k, v)| Some((env_key(&k)?, Value::from(v))))
            .collect();
        Ok(Layers {
            file: Layer {
                name: format!("config file '{name}'"),
                values: file.flatten(section)?,
                spell: |k| k.to_string(),
            },
            env: Layer {
                name: "the environment".into(),
                values: env,
                spell: |k| format!("TAUC_{}", k.to_ascii_uppercase().replace('-', "_")),
            },
        })
    }

    /// `T` from, highest first, `flags` (a struct whose unset fields
    /// serialize to nothing), the `TAUC_*` variables, the config file and
    /// `T::default()`. Keys `T` does not have are other settings' (other
    /// commands' flags, other processes' variables) and are left alone.
    pub fn extract<T>(&self, flags: &impl Serialize) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        let flags = match Value::serialize(flags) {
            Ok(Value::Dict(_, d)) => d,
            // `()`: no flags
            Ok(_) => Dict::new(),
            Err(e) => return Err(Error::config(format!("cannot read the flags: {e}"))),
        };
        let flags = Layer {
            name: "the command line".into(),
            values: flags,
            spell: |k| format!("--{k}"),
        };
        // each `merge` wins over the layers before it: flags > env > file > defaults
        Figment::from(Serialized::defaults(T::default()))
            .merge(self.file.clone())
            .merge(self.env.clone())
            .merge(flags)
            // variables are text: "4" and "true" are read as the number
            // and the bool a setting wants
            .extract_lossy()
            .map_err(|e| Error::config(e.to_string()))
    }
}

/// The S3 client's settings (`[s3]`, `TAUC_S3_*`, `--s3-*`), for
/// [`Layers::extract`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct S3Settings {
    /// `s3-endpoint`.
    pub s3_endpoint: Option<String>,
    /// `s3-region`.
    pub s3_region: Option<String>,
    /// `s3-allow-http`.
    pub s3_allow_http: Option<bool>,
    /// `s3-path-style`.
    pub s3_path_style: Option<bool>,
    /// `s3-retry-timeout-secs`.
    pub s3_retry_timeout_secs: Option<u64>,
}

impl From<S3Settings> for S3Options {
    fn from(s: S3Settings) -> S3Options {
        S3Options {
            endpoint: s.s3_endpoint,
            region: s.s3_region,
            allow_http: s.s3_allow_http,
            path_style: s.s3_path_style,
            retry_timeout_secs: s.s3_retry_timeout_secs,
        }
    }
}

/// The cluster's TLS files (`[cluster]`, `TAUC_CLUSTER_*`,
/// `--cluster-*`), for [`Layers::extract`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct ClusterSettings {
    /// `cluster-ca`.
    pub cluster_ca: Option<PathBuf>,
    /// `cluster-cert`.
    pub cluster_cert: Option<PathBuf>,
    /// `cluster-key`.
    pub cluster_key: Option<PathBuf>,
}

impl From<ClusterSettings> for TlsFiles {
    fn from(s: ClusterSettings) -> TlsFiles {
        TlsFiles {
            ca: s.cluster_ca,
            cert: s.cluster_cert,
            key: s.cluster_key,
        }
    }
}

/// Settings as people write them, for `#[serde(with = …)]`: sizes and
/// durations as text (`2MiB`, `60s`) or plain numbers, lists as
/// sequences or comma-separated text (as a variable holds them).
pub mod human {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// Text or a number, as a file, a variable or a flag gives it.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(u64),
        Text(String),
    }

    /// A size in bytes: a number, or text [`super::parse_size`] reads.
    pub mod size {
        use super::*;

        /// Reads a size.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
            match Given::deserialize(d)? {
                Given::Number(n) => usize::try_from(n).map_err(D::Error::custom),
                Given::Text(t) => super::super::parse_size(&t).map_err(D::Error::custom),
            }
        }

        /// Writes a size as its number of bytes.
        pub fn serialize<S: Serializer>(v: &usize, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u64(*v as u64)
        }
    }

    /// A duration: whole seconds, or text [`super::parse_duration`] reads.
    pub mod duration {
        use std::time::Duration;

        use super::*;

        /// Reads a duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            match Given::deserialize(d)? {
                Given::Number(n) => Ok(Duration::from_secs(n)),
                Given::Text(t) => super::super::parse_duration(&t).map_err(D::Error::custom),
            }
        }

        /// Writes a duration as `humantime` text (`8h`, `500ms`).
        pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&humantime::format_duration(*v))
        }

        /// Writes a flag's duration; with `skip_serializing_if =
        /// "Option::is_none"`.
        pub fn serialize_some<S: Serializer>(
            v: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(d) => serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }

    /// A list: a sequence, or comma-separated text.
    pub mod list {
        use super::*;

        #[derive(Deserialize)]
        #[serde(untagged)]
        enum List {
            Many(Vec<String>),
            Text(String),
        }

        /// Reads a list.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
            Ok(match List::deserialize(d)? {
                List::Many(v) => v,
                List::Text(t) => t
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        }
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
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    check_vars(names.iter().map(String::as_str))
}

/// Fails on the `TAUC_*` names among `names` that are not in [`KNOWN_ENV`].
pub fn check_vars<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let unknown: Vec<&str> = names
        .into_iter()
        .filter(|k| k.starts_with("TAUC_") && !KNOWN_ENV.contains(k))
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
    /// A process's settings of each kind, for the precedence tests.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", default)]
    struct Settings {
        warehouse: String,
        #[serde(with = "human::size")]
        max_bytes: usize,
        #[serde(with = "human::duration")]
        max_wait: Duration,
        strict_dims: bool,
    }

    impl Default for Settings {
        fn default() -> Settings {
            Settings {
                warehouse: DEFAULT_WAREHOUSE.into(),
                max_bytes: 2 << 20,
                max_wait: Duration::from_secs(60),
                strict_dims: false,
            }
        }
    }

    /// Its flags: unset ones serialize to nothing.
    #[derive(Default, Serialize)]
    #[serde(rename_all = "kebab-case")]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        warehouse: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max_bytes: Option<usize>,
        #[serde(
            skip_serializing_if = "Option::is_none",
            serialize_with = "human::duration::serialize_some"
        )]
        max_wait: Option<Duration>,
        #[serde(skip_serializing_if = "Option::is_none")]
        strict_dims: Option<bool>,
    }

    fn settings(file: &str, env: &[(&str, &str)], flags: &Flags) -> Result<Settings> {
        let file: FileConfig = toml::from_str(file).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Layers::new(&file, "t.toml", Section::Uploader, env)?.extract(flags)
    }

    const FILE: &str = "warehouse = \"file-wh\"\nstrict-dims = true\n\
                        [uploader]\nmax-bytes = \"3MiB\"\nmax-wait = \"90s\"\n";
    const ENV: &[(&str, &str)] = &[
        ("TAUC_WAREHOUSE", "env-wh"),
        ("TAUC_MAX_BYTES", "4MB"),
        ("TAUC_MAX_WAIT", "2m"),
        ("TAUC_STRICT_DIMS", "false"),
    ];

    #[test]
    fn defaults_then_file_then_env_then_flags() {
        let none = Flags::default();
        assert_eq!(settings("", &[], &none).unwrap(), Settings::default());
        let from_file = Settings {
            warehouse: "file-wh".into(),
            max_bytes: 3 << 20,
            max_wait: Duration::from_secs(90),
            strict_dims: true,
        };
        assert_eq!(settings(FILE, &[], &none).unwrap(), from_file);
        // env beats the file, even where it says false
        let from_env = Settings {
            warehouse: "env-wh".into(),
            max_bytes: 4_000_000,
            max_wait: Duration::from_secs(120),
            strict_dims: false,
        };
        assert_eq!(settings(FILE, ENV, &none).unwrap(), from_env);
        let flags = Flags {
            warehouse: Some("flag-wh".into()),
            max_bytes: Some(5 << 10),
            max_wait: Some(Duration::from_millis(1500)),
            strict_dims: Some(true),
        };
        let from_flags = Settings {
            warehouse: "flag-wh".into(),
            max_bytes: 5 << 10,
            max_wait: Duration::from_millis(1500),
            strict_dims: true,
        };
        assert_eq!(settings(FILE, ENV, &flags).unwrap(), from_flags);
    }

    #[test]
    fn each_layer_only_covers_what_it_sets() {
        let flags = Flags {
            max_wait: Some(Duration::from_secs(5)),
            ..Flags::default()
        };
        let env = &[("TAUC_MAX_BYTES", "1KiB")];
        let s = settings("warehouse = \"file-wh\"\n", env, &flags).unwrap();
        let expected = Settings {
            warehouse: "file-wh".into(),
            max_bytes: 1024,
            max_wait: Duration::from_secs(5),
            ..Settings::default()
        };
        assert_eq!(s, expected);
    }

    #[test]
    fn sections_flatten_onto_the_variables_keys() {
        let file = "[s3]\nendpoint = \"http://f\"\nallow-http = true\n\
                    [serve]\nbind = \"10.0.0.5:1\"\nusers = \"u.toml\"\n\
                    [collector]\nbind = \"0.0.0.0:8080\"\n";
        let file: FileConfig = toml::from_str(file).unwrap();
        let d = file.flatten(Section::Serve).unwrap();
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["s3-allow-http", "s3-endpoint", "serve-bind", "users-file"]
        );
        let env = [("TAUC_S3_ALLOW_HTTP".to_string(), "no".to_string())];
        let s3: S3Settings = Layers::new(&file, "t.toml", Section::Serve, env)
            .unwrap()
            .extract(&())
            .unwrap();
        assert_eq!(s3.s3_endpoint.as_deref(), Some("http://f"));
        assert_eq!(s3.s3_allow_http, Some(false));
    }

    #[test]
    fn the_follow_section_flattens_onto_its_variables_keys() {
        let file: FileConfig =
            toml::from_str("[follow]\nevery = \"30s\"\nmetrics-bind = \"127.0.0.1:1\"\n").unwrap();
        let d = file.flatten(Section::Follow).unwrap();
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(keys, ["follow-every", "metrics-bind"]);
        assert!(file.flatten(Section::Jobs).unwrap().is_empty());
    }

    #[test]
    fn a_service_reads_its_own_section_only() {
        #[derive(Default, Serialize, Deserialize)]
        #[serde(default)]
        struct Region {
            region: Option<String>,
        }
        let file = "[collector]\nregion = \"c1\"\n[uploader]\nregion = \"u1\"\n";
        let file: FileConfig = toml::from_str(file).unwrap();
        let region = |section| {
            let no_env: [(String, String); 0] = [];
            let layers = Layers::new(&file, "t.toml", section, no_env).unwrap();
            layers.extract::<Region>(&()).unwrap().region
        };
        assert_eq!(region(Section::Collector).as_deref(), Some("c1"));
        assert_eq!(region(Section::Uploader).as_deref(), Some("u1"));
        assert_eq!(region(Section::Jobs), None);
    }

    #[test]
    fn unknown_file_keys_and_variables_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tauc.toml");
        std::fs::write(&path, "[uploader]\nmax-wiat = \"1s\"\n").unwrap();
        let e = FileConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("max-wiat"), "{e}");
        let e = settings("", &[("TAUC_WAREHOSE", "x")], &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("unknown environment variable(s) TAUC_WAREHOSE"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_value_names_its_key_and_where_it_came_from() {
        let e = settings("", &[("TAUC_MAX_WAIT", "soon")], &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("'soon'") && e.contains("TAUC_MAX_WAIT"), "{e}");
        let e = settings("[uploader]\nmax-bytes = \"4X\"\n", &[], &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'4X'") && e.contains("config file 't.toml'"),
            "{e}"
        );
    }
}
