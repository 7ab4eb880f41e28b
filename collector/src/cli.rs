//! Flags of `tauc-collector` and `tauc-uploader`, and how they combine
//! with the environment and the config file.
//!
//! Precedence, highest first: **flags > environment (`TAUC_*`) > config
//! file (`[collector]` / `[uploader]` of `tauc.toml`) > built-in
//! defaults**. clap reads flags and their variables; the file fills what
//! both left unset.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use tauc_common::config::{self, DEFAULT_ENV, FileConfig, parse_duration, parse_size};
use tauc_common::store::{Location, S3Options, StoreRegistry};

use crate::error::{Error, Result};
use crate::kafka;
use crate::spool::SpoolConfig;
use crate::uploader::{Cut, UploaderConfig};

/// The flags both services take: where they are in the layout, which
/// cluster and topic, the config file and the log format.
#[derive(Debug, Args)]
pub struct ChainArgs {
    /// Environment segment, e.g. uat or prd [default: uat].
    #[arg(long, env = "TAUC_ENV")]
    pub env: Option<String>,
    /// The region served (its topic), e.g. aps1.
    #[arg(long, env = "TAUC_REGION")]
    pub region: Option<String>,
    /// Kafka bootstrap servers, host:port[,…].
    #[arg(long, env = "TAUC_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// A librdkafka setting over tauc's defaults, key=value (TLS, SASL,
    /// batching); repeat the flag for more.
    #[arg(long = "kafka-option", env = "TAUC_KAFKA_OPTIONS", value_delimiter = ',', value_parser = kafka::parse_option)]
    pub kafka_options: Vec<(String, String)>,
    /// Topic [default: tauc-{env}-{region}].
    #[arg(long, env = "TAUC_TOPIC")]
    pub topic: Option<String>,
    /// Config file [default: ./tauc.toml when present].
    #[arg(long, env = "TAUC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "TAUC_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

/// [`ChainArgs`] resolved against the config file.
struct Chain {
    env: String,
    region: String,
    kafka: kafka::KafkaConn,
    topic: String,
}

impl ChainArgs {
    /// Checks the environment, loads the config file and resolves the
    /// shared settings; `section` picks the file's region, brokers and
    /// topic (`[collector]` or `[uploader]`).
    fn resolve(
        self,
        section: impl Fn(&FileConfig) -> (Option<String>, Option<String>, Option<String>),
    ) -> Result<(Chain, FileConfig)> {
        config::check_env()?;
        let file = FileConfig::load(self.config.as_deref())?;
        let (f_region, f_brokers, f_topic) = section(&file);
        let env = segment("env", self.env.or(file.env.clone()), Some(DEFAULT_ENV))?;
        let region = segment("region", self.region.or(f_region), None)?;
        let topic = self
            .topic
            .or(f_topic)
            .unwrap_or_else(|| kafka::default_topic(&env, &region));
        let kafka = kafka::KafkaConn {
            brokers: brokers(self.kafka_brokers.or(f_brokers))?,
            options: self.kafka_options,
        };
        Ok((
            Chain {
                env,
                region,
                kafka,
                topic,
            },
            file,
        ))
    }
}

/// An address from its flag, else the file (`what` names the key), else
/// `default`.
fn address(
    flag: Option<SocketAddr>,
    file: Option<String>,
    what: &str,
    default: SocketAddr,
) -> Result<SocketAddr> {
    match (flag, file) {
        (Some(a), _) => Ok(a),
        (None, Some(a)) => a
            .parse()
            .map_err(|e| Error::config(format!("invalid {what} '{a}': {e}"))),
        (None, None) => Ok(default),
    }
}

/// `tauc-collector`: HTTP intake, local spool, shipper to Kafka.
#[derive(Debug, Parser)]
#[command(name = "tauc-collector", version)]
pub struct CollectorArgs {
    /// Flags shared with the uploader.
    #[command(flatten)]
    pub chain: ChainArgs,
    /// Listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "TAUC_BIND")]
    pub bind: Option<SocketAddr>,
    /// Directory of the local spool (created 0700).
    #[arg(long, env = "TAUC_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Partitions of the topic when the collector has to create it.
    #[arg(long, env = "TAUC_TOPIC_PARTITIONS", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub topic_partitions: i32,
    /// A browser origin allowed to post events (exact, e.g.
    /// https://www.example.com); repeat the flag for more.
    #[arg(
        long = "allowed-origin",
        env = "TAUC_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Spool size above which requests get 503 [default: 1GiB].
    #[arg(long, env = "TAUC_SPOOL_MAX_BYTES", value_parser = parse_size)]
    pub spool_max_bytes: Option<usize>,
    /// How requests are synced: `group` (requests that arrive during a
    /// sync share the next one) or `request` (one sync each, slower; for
    /// comparison).
    #[arg(long, env = "TAUC_SPOOL_SYNC", default_value = "group", value_parser = ["group", "request"])]
    pub spool_sync: String,
}

/// `tauc-uploader`: Kafka consumer-group member writing raw objects.
#[derive(Debug, Parser)]
#[command(name = "tauc-uploader", version)]
pub struct UploaderArgs {
    /// Flags shared with the collector.
    #[command(flatten)]
    pub chain: ChainArgs,
    /// Root of the raw layout: s3://bucket/route or a local folder
    /// [default: data/raw].
    #[arg(long, env = "TAUC_RAW_ROOT")]
    pub raw_root: Option<String>,
    /// Consumer group [default: tauc-uploader-{env}-{region}].
    #[arg(long, env = "TAUC_GROUP")]
    pub group: Option<String>,
    /// Records per object at most [default: 50].
    #[arg(long, env = "TAUC_MAX_LINES", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_lines: Option<u64>,
    /// Bytes per object at most, e.g. 2MiB or 1MB [default: 2MiB].
    #[arg(long, env = "TAUC_MAX_BYTES", value_parser = parse_size)]
    pub max_bytes: Option<usize>,
    /// Longest a partial batch waits, e.g. 60s, 500ms, 2m [default: 60s].
    #[arg(long, env = "TAUC_MAX_WAIT", value_parser = parse_duration)]
    pub max_wait: Option<Duration>,
    /// Address of /healthz and /metrics [default: 127.0.0.1:9464].
    #[arg(long, env = "TAUC_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000.
    #[arg(long, env = "TAUC_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Allow plain http to the S3 endpoint.
    #[arg(long)]
    pub s3_allow_http: bool,
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

fn segment(flag: &str, value: Option<String>, default: Option<&str>) -> Result<String> {
    let v = value.or(default.map(str::to_string)).ok_or_else(|| {
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
    /// Combines flags, environment and file.
    pub fn resolve(self) -> Result<CollectorSettings> {
        let (chain, file) = self.chain.resolve(|f| {
            let c = &f.collector;
            (c.region.clone(), c.kafka_brokers.clone(), c.topic.clone())
        })?;
        let f = file.collector;
        let bind = address(
            self.bind,
            f.bind,
            "[collector] bind",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        )?;
        let spool_dir = self
            .spool_dir
            .or(f.spool_dir.map(PathBuf::from))
            .ok_or_else(|| Error::config("--spool-dir is required (a directory on local disk)"))?;
        let mut spool = SpoolConfig::new(spool_dir);
        spool.group_commit = self.spool_sync == "group";
        if let Some(max) = self.spool_max_bytes {
            spool.max_bytes = max as u64;
        } else if let Some(max) = f.spool_max_bytes {
            spool.max_bytes = parse_size(&max).map_err(Error::config)? as u64;
        }
        let origins = if self.allowed_origins.is_empty() {
            f.allowed_origins.unwrap_or_default()
        } else {
            self.allowed_origins
        };
        for o in &origins {
            check_origin(o)?;
        }
        Ok(CollectorSettings {
            bind,
            kafka: chain.kafka,
            topic: chain.topic,
            topic_partitions: self.topic_partitions,
            origins,
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
    /// Combines flags, environment and file, and opens the raw root.
    pub fn resolve(self) -> Result<UploaderSettings> {
        let (chain, file) = self.chain.resolve(|f| {
            let u = &f.uploader;
            (u.region.clone(), u.kafka_brokers.clone(), u.topic.clone())
        })?;
        let f = file.uploader;
        let Chain {
            env,
            region,
            kafka,
            topic,
        } = chain;
        let s3 = file
            .s3
            .clone()
            .overlay(&S3Options::default().with_env()?)
            .overlay(&S3Options {
                endpoint: self.s3_endpoint.clone(),
                allow_http: self.s3_allow_http.then_some(true),
                ..Default::default()
            });
        let raw_root = Location::parse(
            self.raw_root
                .as_deref()
                .or(file.raw_root.as_deref())
                .unwrap_or(config::DEFAULT_RAW_ROOT),
        )?;
        let store = StoreRegistry::new(s3).for_location(&raw_root)?;
        let mut cut = Cut::default();
        if let Some(n) = self.max_lines.or(f.max_lines.map(|n| n as u64)) {
            cut.max_lines = n.max(1) as usize;
        }
        if let Some(b) = self.max_bytes {
            cut.max_bytes = b;
        } else if let Some(b) = f.max_bytes {
            cut.max_bytes = parse_size(&b).map_err(Error::config)?;
        }
        if let Some(w) = self.max_wait {
            cut.max_wait = w;
        } else if let Some(w) = f.max_wait {
            cut.max_wait = parse_duration(&w).map_err(Error::config)?;
        }
        let metrics_bind = address(
            self.metrics_bind,
            f.metrics_bind,
            "[uploader] metrics-bind",
            SocketAddr::from(([127, 0, 0, 1], 9464)),
        )?;
        let group = self
            .group
            .or(f.group)
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
