//! Kafka clients as the chain needs them: an idempotent producer with
//! acks from all in-sync replicas (collection.md "The spool and the
//! shipper"), a consumer that commits only what it uploaded, and topic
//! creation for whoever needs the topic first.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;

use crate::error::{Error, Result};

/// The default topic of an environment and region.
pub fn default_topic(env: &str, region: &str) -> String {
    format!("tauc-{env}-{region}")
}

/// How to reach the cluster: bootstrap servers plus any librdkafka
/// settings the operator adds (`--kafka-option key=value`: TLS, SASL,
/// batching), applied over tauc's own defaults.
#[derive(Debug, Clone)]
pub struct KafkaConn {
    /// `host:port[,…]`.
    pub brokers: String,
    /// Extra librdkafka settings, in order.
    pub options: Vec<(String, String)>,
}

impl KafkaConn {
    fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("reconnect.backoff.max.ms", "2000");
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }

    /// The collector's producer: idempotent, acks from all in-sync
    /// replicas. A delivery gives up after a minute; the shipper then
    /// makes a new producer and sends the unacknowledged part again, in
    /// spool order.
    pub fn producer(&self) -> Result<FutureProducer> {
        Ok(self
            .config(&[
                ("client.id", "tauc-collector"),
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "5"),
                ("message.timeout.ms", "60000"),
            ])
            .create()?)
    }

    /// The uploader's consumer settings: manual commits only, and a new
    /// group starts from the oldest record; `member` names it in the group
    /// (its `client.id`).
    pub fn consumer_config(&self, group: &str, member: &str) -> ClientConfig {
        let session = SESSION_TIMEOUT.as_millis().to_string();
        self.config(&[
            ("group.id", group),
            ("client.id", &uploader_client_id(member)),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", &session),
            ("heartbeat.interval.ms", "1000"),
        ])
    }
}

/// How long the group waits for a silent uploader before it reassigns
/// its partitions.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The `client.id` of the uploader named `member`: the same at each
/// restart, so a new process can tell its predecessor in the group.
pub fn uploader_client_id(member: &str) -> String {
    format!("tauc-uploader/{member}")
}

/// Parses `key=value` of `--kafka-option`.
pub fn parse_option(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "invalid --kafka-option '{s}' (expected key=value, e.g. security.protocol=ssl)"
        )),
    }
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(conn: &KafkaConn, topic: &str, partitions: i32) -> Result<()> {
    let brokers = &conn.brokers;
    let admin: AdminClient<DefaultClientContext> = conn.config(&[]).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&new], &opts).await? {
        match result {
            Ok(_) => tracing::info!(topic, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::config(format!(
                    "cannot create topic '{name}' on {brokers}: {code} (create it by hand or check the brokers)"
                )));
            }
        }
    }
    Ok(())
}
