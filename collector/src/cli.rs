//! Flags of `tauc-collector` and `tauc-uploader`, and how they combine
//! with the environment and the config file.
//!
//! Precedence, highest first: **flags > environment (`TAUC_*`) > config
//! file (`[collector]` / `[uploader]` of `tauc.toml`) > built-in
//! defaults**, layered by the one loader every tauc process uses
//! ([`Layers`]): clap parses and checks the flags (and shows their
//! variables in `--help`), the flags serialize (unset ones left out) into
//! the top layer, and each service extracts its settings structs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use serde::{Deserialize, Serialize};
use tauc_common::config::{
    self, DEFAULT_ENV, Layers, S3Settings, Section, human, parse_duration, parse_size,
};
use tauc_common::store::{Location, StoreRegistry};

use crate::error::{Error, Result};
use crate::kafka;
use crate::spool::SpoolConfig;
use crate::uploader::{Cut, UploaderConfig};

/// The flags both services take: where they are in the layout, which
/// cluster and topic, the config file and the log format. Serialized
/// (unset ones left out), the flag layer of [`ChainSettings`].
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChainArgs {
    /// Environment segment, e.g. uat or prd [default: uat].
    #[arg(long, env = "TAUC_ENV")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The region served (its topic), e.g. aps1.
    #[arg(long, env = "TAUC_REGION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Kafka bootstrap servers, host:port[,…].
    #[arg(long, env = "TAUC_KAFKA_BROKERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
    /// A librdkafka setting over tauc's defaults, key=value (TLS, SASL,
    /// batching); repeat the flag for more.
    #[arg(long = "kafka-option", env = "TAUC_KAFKA_OPTIONS", value_delimiter = ',', value_parser = kafka::parse_option)]
    #[serde(skip)]
    pub kafka_options: Vec<(String, String)>,
    /// Topic [default: tauc-{env}-{region}].
    #[arg(long, env = "TAUC_TOPIC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Config file [default: ./tauc.toml when present].
    #[arg(long, env = "TAUC_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "TAUC_LOG_FORMAT", value_parser = ["text", "json"])]
    #[serde(skip)]
    pub log_format: Option<String>,
}

/// What both services read of [`ChainArgs`], layered.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
struct ChainSettings {
    env: String,
    region: Option<String>,
    kafka_brokers: Option<String>,
    topic: Option<String>,
}

impl Default for ChainSettings {
    fn default() -> ChainSettings {
        ChainSettings {
            env: DEFAULT_ENV.into(),
            region: None,
            kafka_brokers: None,
            topic: None,
        }
    }
}

/// [`ChainArgs`] resolved.
struct Chain {
    env: String,
    region: String,
    kafka: kafka::KafkaConn,
    topic: String,
}

impl ChainArgs {
    /// The service's one settings loader (the `TAUC_*` variables checked,
    /// the config file's `section` read), and the settings both services
    /// share, with `flags` (the service's whole flag struct) on top.
    fn resolve(&self, section: Section, flags: &impl Serialize) -> Result<(Chain, Layers)> {
        let layers = Layers::load(self.config.as_deref(), section)?;
        let c: ChainSettings = layers.extract(flags)?;
        let env = segment("env", Some(c.env))?;
        let region = segment("region", c.region)?;
        let topic = c
            .topic
            .unwrap_or_else(|| kafka::default_topic(&env, &region));
        let kafka = kafka::KafkaConn {
            brokers: brokers(c.kafka_brokers)?,
            options: self.kafka_options.clone(),
        };
        let chain = Chain {
            env,
            region,
            kafka,
            topic,
        };
        Ok((chain, layers))
    }
}

/// An address as given; only the file's can still be malformed (clap
/// checked the flag's and the variable's), so `what` names its key.
fn address(text: &str, what: &str) -> Result<SocketAddr> {
    text.parse()
        .map_err(|e| Error::config(format!("invalid {what} '{text}': {e}")))
}

/// `tauc-collector`: HTTP intake, local spool, shipper to Kafka.
/// Serialized (unset ones left out), the flag layer of its settings.
#[derive(Debug, Parser, Serialize)]
#[command(name = "tauc-collector", version)]
#[serde(rename_all = "kebab-case")]
pub struct CollectorArgs {
    /// Flags shared with the uploader.
    #[command(flatten)]
    #[serde(flatten)]
    pub chain: ChainArgs,
    /// Listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "TAUC_BIND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// Directory of the local spool (created 0700).
    #[arg(long, env = "TAUC_SPOOL_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    /// Partitions of the topic when the collector has to create it.
    #[arg(long, env = "TAUC_TOPIC_PARTITIONS", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    #[serde(skip)]
    pub topic_partitions: i32,
    /// A browser origin allowed to post events (exact, e.g.
    /// https://www.example.com); repeat the flag for more.
    #[arg(
        long = "allowed-origin",
        env = "TAUC_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Spool size above which requests get 503 [default: 1GiB].
    #[arg(long, env = "TAUC_SPOOL_MAX_BYTES", value_parser = parse_size)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_max_bytes: Option<usize>,
    /// How requests are synced: `group` (requests that arrive during a
    /// sync share the next one) or `request` (one sync each, slower; for
    /// comparison).
    #[arg(long, env = "TAUC_SPOOL_SYNC", default_value = "group", value_parser = ["group", "request"])]
    #[serde(skip)]
    pub spool_sync: String,
}

/// `tauc-collector`'s own settings (`[collector]`), layered.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
struct CollectorOptions {
    bind: String,
    spool_dir: Option<PathBuf>,
    #[serde(with = "human::size")]
    spool_max_bytes: usize,
    #[serde(deserialize_with = "human::list::deserialize")]
    allowed_origins: Vec<String>,
}

impl Default for CollectorOptions {
    fn default() -> CollectorOptions {
        CollectorOptions {
            bind: "127.0.0.1:8080".into(),
            spool_dir: None,
            spool_max_bytes: SpoolConfig::new(PathBuf::new()).max_bytes as usize,
            allowed_origins: Vec::new(),
        }
    }
}

/// `tauc-uploader`: Kafka consumer-group member writing raw objects.
/// Serialized (unset ones left out), the flag layer of its settings.
#[derive(Debug, Parser, Serialize)]
#[command(name = "tauc-uploader", version)]
#[serde(rename_all = "kebab-case")]
pub struct UploaderArgs {
    /// Flags shared with the collector.
    #[command(flatten)]
    #[serde(flatten)]
    pub chain: ChainArgs,
    /// Root of the raw layout: s3://bucket/route or a local folder
    /// [default: data/raw].
    #[arg(long, env = "TAUC_RAW_ROOT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_root: Option<String>,
    /// Consumer group [default: tauc-uploader-{env}-{region}].
    #[arg(long, env = "TAUC_GROUP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Records per object at most [default: 50].
    #[arg(long, env = "TAUC_MAX_LINES", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lines: Option<u64>,
    /// Bytes per object at most, e.g. 2MiB or 1MB [default: 2MiB].
    #[arg(long, env = "TAUC_MAX_BYTES", value_parser = parse_size)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<usize>,
    /// Longest a partial batch waits, e.g. 60s, 500ms, 2m [default: 60s].
    #[arg(long, env = "TAUC_MAX_WAIT", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "human::duration::serialize_some"
    )]
    pub max_wait: Option<Duration>,
    /// Address of /healthz and /metrics [default: 127.0.0.1:9464].
    #[arg(long, env = "TAUC_METRICS_BIND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_bind: Option<SocketAddr>,
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000.
    #[arg(long, env = "TAUC_S3_ENDPOINT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// Allow plain http to the S3 endpoint.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub s3_allow_http: bool,
}

/// `tauc-uploader`'s own settings (`[uploader]`), layered.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
struct UploaderOptions {
    raw_root: String,
    group: Option<String>,
    max_lines: u64,
    #[serde(with = "human::size")]
    max_bytes: usize,
    #[serde(with = "human::duration")]
    max_wait: Duration,
    metrics_bind: String,
}

impl Default for UploaderOptions {
    fn default() -> UploaderOptions {
        let cut = Cut::default();
        UploaderOptions {
            raw_root: config::DEFAULT_RAW_ROOT.into(),
            group: None,
            max_lines: cut.max_lines as u64,
            max_bytes: cut.max_bytes,
            max_wait: cut.max_wait,
            metrics_bind: "127.0.0.1:9464".into(),
        }
    }
}

/// Everything `tauc-collector` runs with.
pub struct CollectorSettings {
    /// Listen address.
    pub bind: SocketAddr,
    /// The cluster.
    pub kafka: kafka::KafkaConn,
    /// Topic.
    pub topic: String,
    /// Partitions of the topic if it has to be created.
    pub topic_partitions: i32,
    /// Allowed browser origins.
    pub origins: Vec<String>,
    /// The spool.
    pub spool: SpoolConfig,
}

/// A path segment (`--env`, `--region`): required, no `/`.
fn segment(flag: &str, value: Option<String>) -> Result<String> {
    let v = value.ok_or_else(|| {
        Error::config(format!(
            "--{flag} is required (or TAUC_{} / the config file)",
            flag.to_uppercase().replace('-', "_")
        ))
    })?;
    if v.is_empty() || v.contains('/') {
        return Err(Error::config(format!(
            "invalid --{flag} '{v}' (expected a path segment such as {})",
            if flag == "env" { "uat" } else { "aps1" }
        )));
    }
    Ok(v)
}

fn brokers(value: Option<String>) -> Result<String> {
    value.filter(|b| !b.trim().is_empty()).ok_or_else(|| {
        Error::config("--kafka-brokers is required (host:port[,…], or TAUC_KAFKA_BROKERS)")
    })
}

impl CollectorArgs {
    /// Its settings: flags > environment > `[collector]` > defaults.
    pub fn resolve(self) -> Result<CollectorSettings> {
        let (chain, layers) = self.chain.resolve(Section::Collector, &self)?;
        let o: CollectorOptions = layers.extract(&self)?;
        let bind = address(&o.bind, "[collector] bind")?;
        let spool_dir = o
            .spool_dir
            .ok_or_else(|| Error::config("--spool-dir is required (a directory on local disk)"))?;
        let mut spool = SpoolConfig::new(spool_dir);
        spool.group_commit = self.spool_sync == "group";
        spool.max_bytes = o.spool_max_bytes as u64;
        for origin in &o.allowed_origins {
            check_origin(origin)?;
        }
        Ok(CollectorSettings {
            bind,
            kafka: chain.kafka,
            topic: chain.topic,
            topic_partitions: self.topic_partitions,
            origins: o.allowed_origins,
            spool,
        })
    }
}

/// An allowed origin is exact: `scheme://host[:port]`, no path, no `*`.
fn check_origin(o: &str) -> Result<()> {
    let ok = (o.starts_with("http://") || o.starts_with("https://"))
        && !o.contains('*')
        && o.splitn(4, '/').nth(3).is_none();
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "invalid --allowed-origin '{o}' (expected an exact origin such as https://www.example.com, no path and no *)"
        )))
    }
}

/// Everything `tauc-uploader` runs with.
pub struct UploaderSettings {
    /// The uploader itself.
    pub uploader: UploaderConfig,
    /// Address of `/healthz` and `/metrics`.
    pub metrics_bind: SocketAddr,
}

impl UploaderArgs {
    /// Its settings (flags > environment > `[uploader]` and `[s3]` >
    /// defaults), and the raw root opened.
    pub fn resolve(self) -> Result<UploaderSettings> {
        let (chain, layers) = self.chain.resolve(Section::Uploader, &self)?;
        let o: UploaderOptions = layers.extract(&self)?;
        let s3: S3Settings = layers.extract(&self)?;
        let Chain {
            env,
            region,
            kafka,
            topic,
        } = chain;
        let raw_root = Location::parse(&o.raw_root)?;
        let store = StoreRegistry::new(s3.into()).for_location(&raw_root)?;
        let cut = Cut {
            max_lines: o.max_lines.max(1) as usize,
            max_bytes: o.max_bytes,
            max_wait: o.max_wait,
        };
        let metrics_bind = address(&o.metrics_bind, "[uploader] metrics-bind")?;
        let group = o
            .group
            .unwrap_or_else(|| format!("tauc-uploader-{env}-{region}"));
        Ok(UploaderSettings {
            uploader: UploaderConfig {
                kafka,
                topic,
                group,
                env,
                region,
                raw_root,
                store,
                cut,
                member: format!("{}:{}", hostname(), metrics_bind.port()),
            },
            metrics_bind,
        })
    }
}

/// This host's name (`localhost` when it has none).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match rc {
        0 if len > 0 => String::from_utf8_lossy(&buf[..len]).into_owned(),
        _ => "localhost".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(check_origin("https://www.example.com").is_ok());
        assert!(check_origin("http://127.0.0.1:8080").is_ok());
        assert!(check_origin("*").is_err());
        assert!(check_origin("https://a.com/path").is_err());
        assert!(check_origin("www.example.com").is_err());
    }
}
