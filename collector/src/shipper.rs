//! The shipper: produces spooled events to Kafka in spool order and
//! deletes a segment once Kafka has acknowledged every event in it.
//!
//! Progress within a segment is kept in a small cursor file beside it
//! (the byte offset up to which Kafka has acknowledged), so a restart
//! re-sends only what was in flight: those copies may reach Kafka twice,
//! byte-identical (collection.md), and nothing acknowledged to a client
//! is lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::metrics::CollectorMetrics;
use crate::spool::{CURSOR_SUFFIX, Durable, Spool, segments};

/// The calling thread's nice value goes up by 10 (Linux: per thread, and
/// inherited by threads it starts). Best effort: a refusal only logs.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on this thread's own id.
        let r = unsafe {
            let tid = libc::gettid() as libc::id_t;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, (now + 10).min(19))
        };
        if r != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the shipper's priority");
        }
    }
}

/// Most bytes handed to the producer before waiting for their acks.
const CHUNK_BYTES: usize = 1 << 20;

/// Ships one spool to one topic.
pub struct Shipper {
    spool: Spool,
    producer: FutureProducer,
    kafka: crate::kafka::KafkaConn,
    topic: String,
    metrics: Arc<CollectorMetrics>,
    /// Acknowledged offset per segment, read from its cursor file once.
    cursors: HashMap<u64, u64>,
}

/// The fields the shipper reads from a spooled line.
#[derive(Deserialize)]
struct Keys<'a> {
    #[serde(borrow, default)]
    device_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(default)]
    collector_ts: Option<i64>,
}

impl Shipper {
    /// A shipper of `spool` to `topic` on the cluster `kafka`.
    pub fn new(
        spool: Spool,
        kafka: crate::kafka::KafkaConn,
        topic: String,
        metrics: Arc<CollectorMetrics>,
    ) -> Result<Shipper> {
        Ok(Shipper {
            producer: kafka.producer()?,
            spool,
            kafka,
            topic,
            metrics,
            cursors: HashMap::new(),
        })
    }

    /// Starts a shipper on a thread of its own, at a lower CPU priority
    /// than the intake (nice +10, inherited by the Kafka client's threads,
    /// which it starts): when the collector's core is busy, answering a
    /// request — the only thing a browser waits for — comes first, and the
    /// shipper catches up from the spool when the core is free. Fails
    /// as [`Shipper::new`] does; the thread's result is [`Shipper::run`]'s.
    pub fn spawn(
        spool: Spool,
        kafka: crate::kafka::KafkaConn,
        topic: String,
        metrics: Arc<CollectorMetrics>,
        stop: watch::Receiver<bool>,
        drain: Duration,
    ) -> Result<std::thread::JoinHandle<Result<()>>> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("tauc-shipper".into())
            .spawn(move || {
                lower_priority();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Task(format!("cannot start the shipper's runtime: {e}")));
                let started = runtime.and_then(|rt| {
                    // made inside the runtime, as it was on the main one
                    let shipper = {
                        let _inside = rt.enter();
                        Shipper::new(spool, kafka, topic, metrics)?
                    };
                    Ok((rt, shipper))
                });
                match started {
                    Ok((rt, shipper)) => {
                        let _ = ready_tx.send(Ok(()));
                        rt.block_on(shipper.run(stop, drain))
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        Ok(())
                    }
                }
            })
            .map_err(|e| Error::Task(format!("cannot start the shipper thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Task(
                "the shipper thread ended while starting".into(),
            )),
        }
    }

    /// Ships until `stop` turns true, then for up to `drain` more while
    /// there is something left, and flushes the producer. The `drain`
    /// bound holds whatever Kafka does: a delivery still waiting for its
    /// acknowledgement then is abandoned, and its events stay in the spool
    /// (their cursor never moved past them) for the next start.
    pub async fn run(mut self, stop: watch::Receiver<bool>, drain: Duration) -> Result<()> {
        let mut stopped = stop.clone();
        let give_up = async move {
            // a dropped sender counts as a stop
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(drain).await;
        };
        let caught_up = tokio::select! {
            r = self.ship_until_stopped(stop) => r?,
            () = give_up => false,
        };
        if caught_up {
            let _ = self.producer.flush(Duration::from_secs(5));
        } else {
            tracing::warn!(
                bytes = self.spool.bytes(),
                "Kafka did not take the spool within the shutdown drain; it stays on disk and ships at the next start"
            );
            // dropping the producer purges what it still holds
        }
        Ok(())
    }

    /// Ships until `stop` turns true and then until everything durable is
    /// acknowledged (`true`); the caller bounds how long.
    async fn ship_until_stopped(&mut self, mut stop: watch::Receiver<bool>) -> Result<bool> {
        let mut durable = self.spool.durable();
        let mut backoff = Duration::from_millis(200);
        loop {
            let active = *durable.borrow_and_update();
            let caught_up = match self.ship_all(active).await {
                Ok(done) => {
                    backoff = Duration::from_millis(200);
                    done
                }
                Err(e) => {
                    tracing::warn!(error = %e, "shipping failed; retrying");
                    if matches!(e, Error::Kafka(_)) {
                        self.metrics.kafka_errors.inc();
                        self.renew();
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    false
                }
            };
            if *stop.borrow() {
                if caught_up {
                    return Ok(true);
                }
                continue;
            }
            if caught_up {
                tokio::select! {
                    _ = durable.changed() => {}
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }

    /// After a failed delivery the producer may be stuck (an idempotent
    /// producer whose broker lost its state keeps being refused), so a new
    /// one re-sends from the cursor: what was in flight may reach Kafka
    /// twice, nothing is lost.
    fn renew(&mut self) {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::warn!(%code, reason, "producer failed fatally");
        }
        match self.kafka.producer() {
            Ok(p) => self.producer = p,
            Err(e) => tracing::error!(error = %e, "cannot make a new producer"),
        }
    }

    /// One pass over the segments; `true` when everything durable is
    /// acknowledged.
    async fn ship_all(&mut self, active: Durable) -> Result<bool> {
        let dir = self.spool.dir().to_path_buf();
        for (seq, path, len) in segments(&dir)? {
            if seq > active.seq {
                break;
            }
            let closed = seq < active.seq;
            let limit = if closed { len } else { active.len.min(len) };
            let cursor_path = cursor_path(&path);
            let mut cursor = match self.cursors.get(&seq) {
                Some(&c) => c,
                None => read_cursor(&cursor_path).await,
            };
            while cursor < limit {
                let (chunk, end) = read_chunk(&path, cursor, limit).await?;
                if chunk.is_empty() {
                    break;
                }
                let lines: Vec<&str> = chunk.split_terminator('\n').collect();
                self.produce(&lines).await?;
                cursor = end;
                write_cursor(&cursor_path, cursor).await?;
            }
            self.cursors.insert(seq, cursor);
            if closed {
                if cursor < len {
                    tracing::warn!(
                        segment = %path.display(),
                        bytes = len - cursor,
                        "dropping an incomplete last line (its request was never acknowledged)"
                    );
                }
                remove(&path).await?;
                let _ = tokio::fs::remove_file(&cursor_path).await;
                self.cursors.remove(&seq);
                self.spool.released(len);
            }
        }
        self.metrics.oldest_unshipped_ms.store(0, Ordering::Relaxed);
        Ok(true)
    }

    /// Produces lines in order and waits for every acknowledgement.
    async fn produce(&self, lines: &[&str]) -> Result<()> {
        let start = Instant::now();
        let mut pending = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let keys = serde_json::from_str::<Keys>(line).ok();
            if i == 0 {
                let first_ts = keys.as_ref().and_then(|k| k.collector_ts).unwrap_or(0);
                self.metrics
                    .oldest_unshipped_ms
                    .store(first_ts, Ordering::Relaxed);
            }
            let key = keys.as_ref().and_then(|k| record_key(k));
            let mut record = FutureRecord::<str, str>::to(&self.topic).payload(line);
            if let Some(key) = key.as_deref() {
                record = record.key(key);
            }
            if let Some(ts) = keys.as_ref().and_then(|k| k.collector_ts) {
                record = record.timestamp(ts);
            }
            let mut record = record;
            loop {
                match self.producer.send_result(record) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((_, r)) => {
                        // queue full: wait for what is in flight first
                        record = r;
                        self.producer.poll(Duration::from_millis(50));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
        let n = pending.len();
        for f in pending {
            match f.await {
                Ok(Ok(_)) => {
                    self.metrics
                        .kafka_send_seconds
                        .observe(start.elapsed().as_secs_f64());
                }
                Ok(Err((e, _))) => return Err(Error::Kafka(e)),
                Err(_) => return Err(Error::Kafka(rdkafka::error::KafkaError::Canceled)),
            }
        }
        self.metrics.shipped.inc_by(n as u64);
        Ok(())
    }
}

/// The record key: `device_id`, else `user_id` (as strings; a non-string
/// id keys by its JSON text), so one device's events share a partition.
fn record_key(k: &Keys) -> Option<String> {
    let text = |v: &RawValue| -> Option<String> {
        match serde_json::from_str::<Option<String>>(v.get()) {
            Ok(Some(s)) if !s.is_empty() => Some(s),
            Ok(_) => None,
            Err(_) => Some(v.get().to_string()),
        }
    };
    k.device_id
        .and_then(text)
        .or_else(|| k.user_id.and_then(text))
}

fn cursor_path(segment: &Path) -> PathBuf {
    segment.with_extension(CURSOR_SUFFIX.trim_start_matches('.'))
}

async fn read_cursor(path: &Path) -> u64 {
    tokio::fs::read_to_string(path)
        .await
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

async fn write_cursor(path: &Path, at: u64) -> Result<()> {
    let tmp = path.with_extension("acked.tmp");
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .await
        .map_err(|e| Error::spool(&tmp, e))?;
    file.write_all(at.to_string().as_bytes())
        .await
        .map_err(|e| Error::spool(&tmp, e))?;
    drop(file);
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| Error::spool(path, e))
}

async fn remove(path: &Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::spool(path, e)),
    }
}

/// The complete lines of `[from, limit)`, about [`CHUNK_BYTES`] at most,
/// and the offset after the last one.
async fn read_chunk(path: &Path, from: u64, limit: u64) -> Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::spool(path, e))?;
    file.seek(std::io::SeekFrom::Start(from))
        .await
        .map_err(|e| Error::spool(path, e))?;
    let want = (limit - from).min(CHUNK_BYTES as u64) as usize;
    let mut buf = vec![0u8; want];
    file.read_exact(&mut buf)
        .await
        .map_err(|e| Error::spool(path, e))?;
    let Some(last) = buf.iter().rposition(|&b| b == b'\n') else {
        return Ok((String::new(), from));
    };
    buf.truncate(last + 1);
    let end = from + buf.len() as u64;
    // The collector wrote these lines as UTF-8; a damaged byte is shipped
    // as U+FFFD rather than stopping the spool.
    let text = String::from_utf8(buf)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Ok((text, end))
}
