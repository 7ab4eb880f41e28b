//! The uploader: a consumer-group member that writes each partition's
//! records into raw objects, exactly once (collection.md "The uploader").
//!
//! Per partition, strictly in order: PUT the batch create-only, commit the
//! offset after its last record, start the next batch. An object's key is
//! fixed by its first record (`first_ts`, partition, first offset) and
//! every batch starts where the previous object ended, so any two
//! uploaders that ever owned a partition follow the same chain of keys.
//! When a create-only PUT finds its key taken, the existing object *is*
//! that batch: its lines are counted, the offset after them is committed,
//! and reading goes on from there. Every record lands in exactly one
//! object, whatever crashed or rebalanced.

pub mod batch;
mod fault;
pub mod orphans;
mod rewind;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tauc_common::store::Location;
use tokio::sync::watch;

use crate::error::Result;
use crate::kafka;
use crate::metrics::UploaderMetrics;
pub use batch::{Batch, Cut};
use orphans::Orphans;

/// How often the watchdog looks at the group's partitions.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// What one uploader does.
pub struct UploaderConfig {
    /// The cluster.
    pub kafka: kafka::KafkaConn,
    /// The region's topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Environment segment of the raw layout.
    pub env: String,
    /// Region segment of the raw layout.
    pub region: String,
    /// Root of the raw layout.
    pub raw_root: Location,
    /// The store behind `raw_root` (from the jobs' store registry).
    pub store: Arc<dyn ObjectStore>,
    /// Where batches are cut.
    pub cut: Cut,
    /// This uploader's name in the group, the same at each restart
    /// (`{host}:{metrics port}`): its Kafka `client.id` carries it.
    pub member: String,
}

/// Partition changes seen by the rebalance callback, applied by the loop.
#[derive(Default)]
struct Changes {
    revoked: Vec<i32>,
    /// Assigned partitions and the committed offsets they resume at,
    /// [`rewind::REWIND`] records earlier.
    resumed: Vec<(i32, i64)>,
}

struct Context {
    changes: Arc<Mutex<Changes>>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    /// Applies the group's decision as rdkafka's default does (the eager
    /// protocol), but starts each assigned partition before its committed
    /// offset ([`rewind`]).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let applied = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let resumed = rewind::assignment(consumer, tpl);
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?parts, resumed = ?resumed, "partitions assigned");
                self.changes().resumed.extend(resumed);
                consumer.assign(tpl)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut c = self.changes();
                c.revoked
                    .extend(tpl.elements().iter().map(|e| e.partition()));
                tracing::info!(partitions = ?c.revoked, "partitions revoked");
                consumer.unassign()
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; dropping the assignment");
                consumer.unassign()
            }
        };
        if let Err(e) = applied {
            tracing::error!(error = %e, "cannot apply the rebalance");
        }
    }
}

impl Context {
    fn changes(&self) -> std::sync::MutexGuard<'_, Changes> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where reading of one partition stands.
#[derive(Default)]
struct Partition {
    /// The offset the next record must have (`None` until the first
    /// record after an assignment, which starts at the committed offset).
    expected: Option<i64>,
    /// After a seek, records are skipped until the expected one arrives.
    seeking: bool,
    /// How many records before the expected one the last seek started.
    rewind: i64,
    batch: Option<Batch>,
    /// The previous batch's PUT and commit, still running.
    inflight: Option<Inflight>,
}

impl Partition {
    /// Reading from a seek `rewind` records before `offset`: the records
    /// before it are skipped.
    fn resuming_at(offset: i64, rewind: i64) -> Partition {
        Partition {
            expected: Some(offset),
            seeking: true,
            rewind,
            ..Partition::default()
        }
    }
}

/// A batch being written out: its first offset, its lines, and the task
/// that returns how many lines the object at its key holds.
struct Inflight {
    first_offset: i64,
    lines: usize,
    task: tokio::task::JoinHandle<usize>,
}

/// A record, copied out of the consumer's buffer.
struct Record {
    partition: i32,
    offset: i64,
    ts: i64,
    value: Vec<u8>,
}

/// What the write-out tasks share.
struct Writer {
    config: UploaderConfig,
    consumer: StreamConsumer<Context>,
    metrics: Arc<UploaderMetrics>,
}

/// A running uploader.
///
/// Partitions are written out concurrently, each strictly in order: a
/// partition's next batch is PUT only after the previous one's PUT and
/// commit finished, while reading goes on meanwhile.
pub struct Uploader {
    writer: Arc<Writer>,
    changes: Arc<Mutex<Changes>>,
    parts: HashMap<i32, Partition>,
}

impl Uploader {
    /// Joins the group and subscribes to the topic.
    pub fn new(config: UploaderConfig, metrics: Arc<UploaderMetrics>) -> Result<Uploader> {
        let changes = Arc::new(Mutex::new(Changes::default()));
        let consumer: StreamConsumer<Context> = config
            .kafka
            .consumer_config(&config.group, &config.member)
            .create_with_context(Context {
                changes: changes.clone(),
            })?;
        Ok(Uploader {
            writer: Arc::new(Writer {
                config,
                consumer,
                metrics,
            }),
            changes,
            parts: HashMap::new(),
        })
    }

    /// Uploads until `stop` turns true; then writes out the batches in
    /// hand, commits them and leaves the group.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        tokio::select! {
            _ = self.outlive_predecessor() => {}
            _ = stop.changed() => return Ok(()),
        }
        self.writer
            .consumer
            .subscribe(&[&self.writer.config.topic])?;
        let cut = self.writer.config.cut;
        let tick = (cut.max_wait / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(tick);
        let mut watchdog = tokio::time::interval(WATCH_EVERY);
        let mut orphans = Orphans::default();
        let writer = self.writer.clone();
        loop {
            let record = tokio::select! {
                msg = writer.consumer.recv() => msg.map(|m| Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    ts: m.timestamp().to_millis().unwrap_or(0),
                    value: m.payload().unwrap_or_default().to_vec(),
                }),
                _ = ticker.tick() => {
                    self.flush_due().await;
                    continue;
                }
                _ = watchdog.tick() => {
                    self.watch(&mut orphans).await?;
                    continue;
                }
                _ = stop.changed() => break,
            };
            self.apply_changes();
            match record {
                Ok(r) => self.on_record(r.partition, r.offset, r.ts, &r.value).await,
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        tracing::info!("stopping: writing out the batches in hand");
        self.write_out_all().await;
        writer.consumer.unsubscribe();
        Ok(())
    }

    /// Writes out and commits every batch in hand.
    async fn write_out_all(&mut self) {
        let parts: Vec<i32> = self.parts.keys().copied().collect();
        for p in parts {
            self.flush(p).await;
            self.settle(p).await;
        }
    }

    /// The watchdog ([`orphans`]): when partitions outside this member's
    /// assignment keep a backlog nobody commits, writes out what it holds,
    /// leaves the group and joins again (after a jitter, so that two
    /// members do not rejoin in step).
    async fn watch(&mut self, orphans: &mut Orphans) -> Result<()> {
        let w = self.writer.clone();
        let looks =
            tokio::task::spawn_blocking(move || orphans::look(&w.consumer, &w.config.topic))
                .await
                .map_err(|e| crate::error::Error::Io(std::io::Error::other(e)))?;
        let looks = match looks {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "watchdog: cannot look at the partitions");
                return Ok(());
            }
        };
        let stall = kafka::SESSION_TIMEOUT + 2 * self.writer.config.cut.max_wait + WATCH_EVERY * 2;
        let stalled = orphans.stalled(&looks, std::time::Instant::now(), stall);
        if stalled.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            partitions = ?stalled,
            stalled_secs = stall.as_secs(),
            "partitions outside this member's assignment have a backlog nobody commits; leaving the group and joining again"
        );
        self.write_out_all().await;
        self.writer.consumer.unsubscribe();
        self.parts.clear();
        let jitter = Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 8);
        tokio::time::sleep(jitter).await;
        self.writer
            .consumer
            .subscribe(&[&self.writer.config.topic])?;
        orphans.reset();
        Ok(())
    }

    /// Waits out the session of this uploader's previous process when the
    /// group still lists it (a restart within `session.timeout.ms`, as a
    /// systemd restart after a crash is). Joining beside it, the new member
    /// was assigned nothing for minutes on tansu 0.6.0, whose coordinator
    /// evicts an expired member only when another one joins and otherwise
    /// keeps a dead leader's (empty) assignment; joining after the old
    /// session has ended evicts it, and the group is assigned afresh.
    /// (A static `group.instance.id` does not help there: docs/collection.md.)
    async fn outlive_predecessor(&self) {
        let w = self.writer.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let client_id = kafka::uploader_client_id(&w.config.member);
            match w.consumer.fetch_group_list(Some(&w.config.group), Duration::from_secs(10)) {
                // a member id is `{client.id}-{uuid}` (tansu lists no
                // client ids, Kafka does)
                Ok(list) => list.groups().iter().any(|g| {
                    g.members().iter().any(|m| {
                        m.client_id() == client_id || m.id().starts_with(&format!("{client_id}-"))
                    })
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot describe the consumer group; joining at once");
                    false
                }
            }
        })
        .await
        .unwrap_or(false);
        if listed {
            let wait = kafka::SESSION_TIMEOUT + Duration::from_secs(1);
            tracing::info!(
                member = self.writer.config.member,
                wait_secs = wait.as_secs(),
                "the group still lists this uploader's previous process; joining once its session has ended"
            );
            tokio::time::sleep(wait).await;
        }
    }

    fn apply_changes(&mut self) {
        let (revoked, resumed) = {
            let mut c = self.changes.lock().unwrap_or_else(|p| p.into_inner());
            (
                std::mem::take(&mut c.revoked),
                std::mem::take(&mut c.resumed),
            )
        };
        for p in revoked {
            // Not committed: the next owner reads these records again. A
            // write-out still running finishes on its own (create-only).
            self.parts.remove(&p);
        }
        for (p, committed) in resumed {
            self.parts
                .insert(p, Partition::resuming_at(committed, rewind::REWIND));
        }
    }

    /// The first record after a seek came past the expected one `wanted`:
    /// the rewind fell inside a batch longer than it ([`rewind`]).
    async fn overshot(&mut self, partition: i32, wanted: i64, got: i64) {
        let rewind = self
            .parts
            .get(&partition)
            .map_or(rewind::REWIND, |s| s.rewind);
        let low = self.writer.log_start(partition).await;
        match rewind::overshot(wanted, rewind, low) {
            rewind::Overshot::Further { from, rewind } => {
                tracing::warn!(
                    partition,
                    wanted,
                    got,
                    from,
                    "resumed past the committed offset; rewinding further"
                );
                self.parts
                    .insert(partition, Partition::resuming_at(wanted, rewind));
                self.writer.seek(partition, from).await;
            }
            rewind::Overshot::Gone { low } => {
                tracing::error!(
                    partition,
                    from = wanted,
                    to = low,
                    "records deleted by the topic's retention before they were uploaded; going on from the oldest one"
                );
                self.parts
                    .insert(partition, Partition::resuming_at(low, rewind::REWIND));
                if got != low {
                    self.writer.seek(partition, low).await;
                }
            }
        }
    }

    async fn on_record(&mut self, partition: i32, offset: i64, ts: i64, value: &[u8]) {
        let cut = self.writer.config.cut;
        loop {
            let state = self.parts.entry(partition).or_default();
            match state.expected {
                Some(exp) if offset < exp => return,
                Some(exp) if state.seeking && offset != exp => {
                    self.overshot(partition, exp, offset).await;
                    if self.parts.get(&partition).and_then(|s| s.expected) == Some(offset) {
                        continue; // the records from here on were deleted
                    }
                    return;
                }
                _ => {}
            }
            let cut_before = state
                .batch
                .as_ref()
                .is_some_and(|b| !b.takes(ts, value.len(), &cut));
            if cut_before {
                self.flush(partition).await;
                continue; // the flush may have moved the expected offset
            }
            state.seeking = false;
            match &mut state.batch {
                Some(b) => b.push(offset, value),
                None => state.batch = Some(Batch::new(partition, offset, ts, value)),
            }
            state.expected = Some(offset + 1);
            if state.batch.as_ref().is_some_and(|b| b.is_full(&cut)) {
                self.flush(partition).await;
            }
            return;
        }
    }

    async fn flush_due(&mut self) {
        self.apply_changes();
        let cut = self.writer.config.cut;
        let due: Vec<i32> = self
            .parts
            .iter()
            .filter(|(_, s)| s.batch.as_ref().is_some_and(|b| b.is_due(&cut)))
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.flush(p).await;
        }
    }

    /// Starts writing out one partition's batch, once the previous one of
    /// that partition is done.
    async fn flush(&mut self, partition: i32) {
        self.settle(partition).await;
        let Some(state) = self.parts.get_mut(&partition) else {
            return;
        };
        let Some(batch) = state.batch.take() else {
            return;
        };
        let (first_offset, lines) = (batch.first_offset, batch.lines);
        let writer = self.writer.clone();
        let task = tokio::spawn(async move { writer.write_out(batch).await });
        state.inflight = Some(Inflight {
            first_offset,
            lines,
            task,
        });
    }

    /// Waits for a partition's write-out. When the object at its key was
    /// an earlier writer's and holds a different number of records, the
    /// batch in hand (built after ours) is dropped and reading resumes
    /// where that object ends.
    async fn settle(&mut self, partition: i32) {
        let Some(inflight) = self
            .parts
            .get_mut(&partition)
            .and_then(|s| s.inflight.take())
        else {
            return;
        };
        let held = match inflight.task.await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(partition, error = %e, "write-out task failed; re-reading the partition");
                0
            }
        };
        if held == inflight.lines {
            return;
        }
        let next = inflight.first_offset + held as i64;
        self.parts
            .insert(partition, Partition::resuming_at(next, rewind::REWIND));
        self.writer
            .seek(partition, rewind::start(next, rewind::REWIND))
            .await;
    }
}

impl Writer {
    /// PUTs a batch create-only and commits after what the object at its
    /// key holds; returns that number of records.
    async fn write_out(self: Arc<Self>, batch: Batch) -> usize {
        fault::at("before-put");
        let lines = self.put(&batch).await;
        fault::at("after-put");
        let next = batch.first_offset + lines as i64;
        let me = self.clone();
        let partition = batch.partition;
        let committed = tokio::task::spawn_blocking(move || me.commit(partition, next))
            .await
            .unwrap_or_else(|e| {
                Err(crate::error::Error::Task(format!(
                    "commit task failed: {e}"
                )))
            });
        fault::at("after-commit");
        match committed {
            Ok(()) => {
                self.metrics.records.inc_by(lines as u64);
            }
            Err(e) => {
                // Revoked, or the broker is away: the object stays, and the
                // next commit (ours or the next owner's) covers it.
                self.metrics.commit_errors.inc();
                tracing::warn!(partition, offset = next, error = %e, "offset commit failed");
            }
        }
        lines
    }

    /// The partition's log start (0 when the broker cannot say).
    async fn log_start(self: &Arc<Self>, partition: i32) -> i64 {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            me.consumer
                .fetch_watermarks(&me.config.topic, partition, Duration::from_secs(10))
        })
        .await
        .ok()
        .and_then(|r| r.ok())
        .map_or(0, |(low, _)| low)
    }

    async fn seek(&self, partition: i32, offset: i64) {
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = self.consumer.seek(
            &self.config.topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(10),
        ) {
            tracing::warn!(partition, offset, error = %e, "seek failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// PUTs a batch create-only, retrying failures; returns how many
    /// records the object at its key holds (ours, or an earlier writer's).
    async fn put(&self, batch: &Batch) -> usize {
        let key = batch.key(&self.config.env, &self.config.region);
        let path = self.config.raw_root.join(&key).path();
        let mut backoff = Duration::from_millis(200);
        loop {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            let payload = PutPayload::from(batch.body.clone());
            let err = match self.config.store.put_opts(&path, payload, opts).await {
                Ok(_) => {
                    self.metrics.objects.inc();
                    self.metrics.bytes.inc_by(batch.body.len() as u64);
                    tracing::debug!(key, lines = batch.lines, "uploaded");
                    return batch.lines;
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    match self.existing_lines(&path).await {
                        Ok(n) => {
                            self.metrics.existing.inc();
                            tracing::info!(
                                key,
                                lines = n,
                                "object already uploaded; going on after it"
                            );
                            return n;
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            self.metrics.put_errors.inc();
            tracing::warn!(key, error = %err, "upload failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    async fn existing_lines(&self, path: &object_store::path::Path) -> object_store::Result<usize> {
        let body = self.config.store.get(path).await?.bytes().await?;
        Ok(batch::count_lines(&body))
    }

    fn commit(&self, partition: i32, next: i64) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.config.topic, partition, Offset::Offset(next))?;
        self.consumer.commit(&tpl, CommitMode::Sync)?;
        Ok(())
    }
}
