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

/// The collector's producer. Deliveries never time out
/// (`message.timeout.ms = 0`): while the broker is down librdkafka keeps
/// the records and retries them in order, so one device's events stay in
/// order and are not doubled by our own re-sends.
pub fn producer(brokers: &str) -> Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "tauc-collector")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "0")
        .set("reconnect.backoff.max.ms", "2000")
        .create()?)
}

/// Base settings of the uploader's consumer: manual commits only, and a
/// new group starts from the oldest record.
pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("client.id", "tauc-uploader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("reconnect.backoff.max.ms", "2000");
    c
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
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
