//! Leases: runs that read or write the same partitions take turns.
//!
//! Two runs of a job on the same dates would otherwise interleave their
//! commits: B's stray clean-up could delete a file A's newer manifest
//! lists, or a file A's running query had planned. Before any work a run
//! takes one lease object per partition it reads or writes,
//! `{warehouse}/_leases/{layer}/dt={dt}/region={region}`, each with a
//! conditional PUT (`PutMode::Create`: S3's `If-None-Match: *`, an
//! exclusive create on a local disk), in sorted order. If one is held it
//! gives back what it took, says who holds it, and tries again until its
//! wait runs out. A heartbeat renews the leases while the run lasts; the
//! run deletes them at the end.
//!
//! A lease whose holder died is stale: its `expires_at` has passed (a
//! killed run stops renewing), or its holder ran on this host and its
//! process is gone. A stale lease is deleted and taken anew.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Location;
use crate::warehouse::commit::PartitionRef;

/// How long a lease lives without renewal.
const TTL: Duration = Duration::from_secs(120);
/// How often the heartbeat renews.
const RENEW: Duration = Duration::from_secs(30);

/// What a lease object says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// The run holding it.
    pub run_id: String,
    /// Its job.
    pub job: String,
    /// Host name of the process.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// Milliseconds since the epoch after which it is stale.
    pub expires_at_ms: i64,
}

impl Holder {
    fn new(run_id: &str, job: &str) -> Holder {
        Holder {
            run_id: run_id.to_string(),
            job: job.to_string(),
            host: host_name(),
            pid: std::process::id(),
            taken_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            expires_at_ms: Utc::now().timestamp_millis() + TTL.as_millis() as i64,
        }
    }

    fn is_stale(&self) -> bool {
        if self.expires_at_ms < Utc::now().timestamp_millis() {
            return true;
        }
        self.host == host_name()
            && self.pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The leases one run holds; released on [`Lease::release`] (and, if the
/// run dies, stale after [`TTL`]).
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    keys: Vec<Path>,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// The lease key of a partition of a layer.
fn key(warehouse: &Location, layer: &str, p: &PartitionRef) -> Path {
    Path::from(format!(
        "{}/_leases/{layer}/dt={}/region={}",
        warehouse.prefix,
        p.dt.format("%Y-%m-%d"),
        p.region
    ))
}

/// Takes the leases of `parts` (`(layer, partition)`), waiting at most
/// `wait` for runs that hold some of them.
pub async fn acquire(
    store: Arc<dyn ObjectStore>,
    warehouse: &Location,
    run_id: &str,
    job: &str,
    parts: &BTreeSet<(&'static str, PartitionRef)>,
    wait: Duration,
) -> Result<Lease> {
    let keys: Vec<Path> = parts
        .iter()
        .map(|(layer, p)| key(warehouse, layer, p))
        .collect();
    let deadline = tokio::time::Instant::now() + wait;
    let mut told = None;
    loop {
        match take_all(store.as_ref(), &keys, run_id, job).await? {
            None => break,
            Some((k, holder)) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::Busy(format!(
                        "another run holds {k}: run {} ({} on {} pid {}, since {}); gave up after {} s. Wait for it to finish, or raise --lease-wait",
                        holder.run_id,
                        holder.job,
                        holder.host,
                        holder.pid,
                        holder.taken_at,
                        wait.as_secs()
                    )));
                }
                if told.as_ref() != Some(&holder.run_id) {
                    tracing::warn!(lease = %k, holder = %holder.run_id, job = %holder.job, host = %holder.host, "waiting for another run on the same partitions");
                    eprintln!(
                        "waiting: run {} ({}) holds {k}; this run starts when it is done (at most {} s)",
                        holder.run_id,
                        holder.job,
                        wait.as_secs()
                    );
                    told = Some(holder.run_id.clone());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let heartbeat = tokio::spawn(renew(store.clone(), keys.clone(), Holder::new(run_id, job)));
    Ok(Lease {
        store,
        keys,
        heartbeat,
    })
}

/// Tries to take every key in order; on the first one held by a live run,
/// gives back what it took and returns that key and holder.
async fn take_all(
    store: &dyn ObjectStore,
    keys: &[Path],
    run_id: &str,
    job: &str,
) -> Result<Option<(Path, Holder)>> {
    for (i, k) in keys.iter().enumerate() {
        if let Some(holder) = take(store, k, run_id, job).await? {
            for taken in &keys[..i] {
                delete(store, taken).await?;
            }
            return Ok(Some((k.clone(), holder)));
        }
    }
    Ok(None)
}

/// Takes one lease; `Some(holder)` when a live run has it.
async fn take(
    store: &dyn ObjectStore,
    k: &Path,
    run_id: &str,
    job: &str,
) -> Result<Option<Holder>> {
    for _ in 0..3 {
        let body = serde_json::to_vec(&Holder::new(run_id, job))?;
        let opts = PutOptions::from(PutMode::Create);
        match store.put_opts(k, PutPayload::from(body), opts).await {
            Ok(_) => return Ok(None),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let holder = match store.get(k).await {
            Ok(r) => serde_json::from_slice::<Holder>(&r.bytes().await?).ok(),
            // released between our PUT and GET: try again
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        match holder {
            Some(h) if !h.is_stale() => return Ok(Some(h)),
            stale => {
                tracing::warn!(lease = %k, holder = ?stale.map(|h| h.run_id), "breaking a stale lease");
                delete(store, k).await?;
            }
        }
    }
    Err(Error::Busy(format!(
        "lease {k} changes hands too fast to take; try again"
    )))
}

async fn delete(store: &dyn ObjectStore, k: &Path) -> Result<()> {
    match store.delete(k).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn renew(store: Arc<dyn ObjectStore>, keys: Vec<Path>, mut holder: Holder) {
    loop {
        tokio::time::sleep(RENEW).await;
        holder.expires_at_ms = Utc::now().timestamp_millis() + TTL.as_millis() as i64;
        let Ok(body) = serde_json::to_vec(&holder) else {
            return;
        };
        for k in &keys {
            if let Err(e) = store.put(k, PutPayload::from(body.clone())).await {
                tracing::warn!(lease = %k, error = %e, "cannot renew a lease");
            }
        }
    }
}

impl Lease {
    /// Gives the leases back.
    pub async fn release(self) -> Result<()> {
        self.heartbeat.abort();
        for k in &self.keys {
            delete(self.store.as_ref(), k).await?;
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // A run that fails without `release` stops renewing; its leases go
        // stale after TTL, or at once for a waiter on this host once the
        // process has exited.
        self.heartbeat.abort();
    }
}
