//! Leases: runs that read or write the same partitions take turns.
//!
//! Two runs of a job on the same dates would otherwise interleave their
//! commits: B's stray clean-up could delete a file A's newer manifest
//! lists, or a file A's running query had planned. Before any work a run
//! takes one lease per partition it reads or writes,
//! `{warehouse}/_leases/{layer}/dt={dt}/region={region}`, in sorted order.
//! If one is held it gives back what it took, says who holds it, and tries
//! again until its wait runs out.
//!
//! On S3 a lease is an object taken with a conditional PUT
//! (`PutMode::Create`: `If-None-Match: *`). A heartbeat renews it while
//! the run lasts, each renewal conditional on the version it wrote last
//! (`If-Match`), and the run deletes it at the end. A lease whose holder
//! died is stale: its `expires_at` has passed (a killed run stops
//! renewing), or its holder ran on this host and its process is gone. A
//! stale lease is replaced only by a PUT conditional on the stale version
//! that was read, so of two runs that both find it stale exactly one takes
//! it; the other sees the winner's lease and waits. A run whose renewal
//! finds someone else's version (it stalled for longer than the TTL and
//! its lease was broken) fails at release rather than passing as clean.
//!
//! On a local disk the object store has no conditional replace, and none
//! is needed: a lease is an exclusive `flock` on the lease file, which the
//! kernel drops when the holder's process ends, so a dead run never leaves
//! a lease behind. The file holds the holder's description for the
//! message a waiting run prints.

use std::collections::BTreeSet;
use std::io::{Read, Seek, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Location;
use crate::warehouse::commit::PartitionRef;

/// How long a lease lives without renewal.
const TTL: Duration = Duration::from_secs(120);
/// How often the heartbeat renews (often in unit tests, which watch it).
const RENEW: Duration = if cfg!(test) {
    Duration::from_millis(200)
} else {
    Duration::from_secs(30)
};

/// What a lease says.
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

    /// Stands in for a holder whose lease file is locked but not yet
    /// written.
    fn unknown() -> Holder {
        Holder {
            run_id: "(starting)".into(),
            job: "?".into(),
            host: "?".into(),
            pid: 0,
            taken_at: "now".into(),
            expires_at_ms: i64::MAX,
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The leases one run holds; released on [`Lease::release`] (and, if the
/// run dies, by the kernel on a local disk or stale after [`TTL`] on S3).
pub struct Lease {
    held: Held,
}

enum Held {
    /// Locked lease files of a local warehouse, with their paths.
    Local(Vec<(std::path::PathBuf, std::fs::File)>),
    /// Lease objects, renewed by `heartbeat`; `lost` when a renewal found
    /// another run's version.
    Store {
        store: Arc<dyn ObjectStore>,
        keys: Arc<Vec<Path>>,
        heartbeat: Heartbeat,
        lost: Arc<AtomicBool>,
    },
}

/// The renewing task, stopped when the lease is released or dropped: a
/// run that fails without `release` stops renewing, and its leases go
/// stale after [`TTL`] (at once for a waiter on this host once the process
/// has exited).
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
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
    let local = warehouse.store_url.starts_with("file");
    let deadline = tokio::time::Instant::now() + wait;
    let mut told = None;
    loop {
        let taken = if local {
            local::take_all(&keys, run_id, job)?
        } else {
            objects::take_all(&store, &keys, run_id, job).await?
        };
        let (k, holder) = match taken {
            Ok(held) => return Ok(Lease { held }),
            Err(busy) => busy,
        };
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

/// What one attempt at taking every lease gives: the leases, or the first
/// key a live run holds, with its holder (what was taken is given back).
type Attempt = std::result::Result<Held, (Path, Holder)>;

/// Leases of a local warehouse: `flock`ed files.
mod local {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn file_path(k: &Path) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/{k}"))
    }

    pub(super) fn take_all(keys: &[Path], run_id: &str, job: &str) -> Result<Attempt> {
        let mut held = Vec::with_capacity(keys.len());
        for k in keys {
            match take(k, run_id, job)? {
                Ok(f) => held.push(f),
                Err(holder) => {
                    release(held)?;
                    return Ok(Err((k.clone(), holder)));
                }
            }
        }
        Ok(Ok(Held::Local(held)))
    }

    /// Locks the lease file `k`, or says who holds it.
    fn take(
        k: &Path,
        run_id: &str,
        job: &str,
    ) -> Result<std::result::Result<(std::path::PathBuf, std::fs::File), Holder>> {
        let path = file_path(k);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        loop {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            match f.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    f.read_to_string(&mut text)?;
                    return Ok(Err(
                        serde_json::from_str(&text).unwrap_or_else(|_| Holder::unknown())
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
            }
            // The holder before us may have deleted the file after we
            // opened it: a lock on an unlinked file guards nothing.
            let same = std::fs::metadata(&path)
                .map(|m| m.ino() == f.metadata().map(|n| n.ino()).unwrap_or(0));
            if !matches!(same, Ok(true)) {
                continue;
            }
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(&serde_json::to_vec(&Holder::new(run_id, job))?)?;
            return Ok(Ok((path, f)));
        }
    }

    /// Deletes the lease files while still holding their locks, so no
    /// waiter takes a file that is about to vanish.
    pub(super) fn release(held: Vec<(std::path::PathBuf, std::fs::File)>) -> Result<()> {
        for (path, f) in held {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            drop(f);
        }
        Ok(())
    }
}

/// Leases of an object store: conditionally written objects.
mod objects {
    use super::*;

    pub(super) async fn take_all(
        store: &Arc<dyn ObjectStore>,
        keys: &[Path],
        run_id: &str,
        job: &str,
    ) -> Result<Attempt> {
        let holder = Holder::new(run_id, job);
        let mut versions = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            match take(store.as_ref(), k, &holder).await? {
                Ok(v) => versions.push(v),
                Err(other) => {
                    for taken in &keys[..i] {
                        delete(store.as_ref(), taken).await?;
                    }
                    return Ok(Err((k.clone(), other)));
                }
            }
        }
        let keys = Arc::new(keys.to_vec());
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = Heartbeat(tokio::spawn(renew(
            store.clone(),
            keys.clone(),
            versions,
            holder,
            lost.clone(),
        )));
        Ok(Ok(Held::Store {
            store: store.clone(),
            keys,
            heartbeat,
            lost,
        }))
    }

    /// Takes one lease: the version written, or the live run holding it.
    async fn take(
        store: &dyn ObjectStore,
        k: &Path,
        holder: &Holder,
    ) -> Result<std::result::Result<UpdateVersion, Holder>> {
        let body = serde_json::to_vec(holder)?;
        for _ in 0..3 {
            if let Some(v) = put(store, k, &body, PutMode::Create).await? {
                return Ok(Ok(v));
            }
            let (current, version) = match store.get(k).await {
                Ok(r) => {
                    let version = UpdateVersion {
                        e_tag: r.meta.e_tag.clone(),
                        version: r.meta.version.clone(),
                    };
                    let current = serde_json::from_slice::<Holder>(&r.bytes().await?).ok();
                    (current, version)
                }
                // released between our PUT and GET: try again
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match current {
                Some(h) if !h.is_stale() => return Ok(Err(h)),
                stale => {
                    tracing::warn!(lease = %k, holder = ?stale.map(|h| h.run_id), "breaking a stale lease");
                    // replaced only if it is still the stale version read
                    // above: of two runs breaking it, one wins
                    if let Some(v) = put(store, k, &body, PutMode::Update(version)).await? {
                        return Ok(Ok(v));
                    }
                }
            }
        }
        Err(Error::Busy(format!(
            "lease {k} changes hands too fast to take; try again"
        )))
    }

    /// A conditional PUT: the version written, or `None` when the
    /// condition failed.
    async fn put(
        store: &dyn ObjectStore,
        k: &Path,
        body: &[u8],
        mode: PutMode,
    ) -> Result<Option<UpdateVersion>> {
        let opts = PutOptions::from(mode);
        match store
            .put_opts(k, PutPayload::from(body.to_vec()), opts)
            .await
        {
            Ok(r) => Ok(Some(UpdateVersion {
                e_tag: r.e_tag,
                version: r.version,
            })),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn delete(store: &dyn ObjectStore, k: &Path) -> Result<()> {
        match store.delete(k).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews each lease conditional on the version written last; a
    /// renewal that finds another version marks the lease `lost`.
    async fn renew(
        store: Arc<dyn ObjectStore>,
        keys: Arc<Vec<Path>>,
        mut versions: Vec<UpdateVersion>,
        mut holder: Holder,
        lost: Arc<AtomicBool>,
    ) {
        loop {
            tokio::time::sleep(RENEW).await;
            holder.expires_at_ms = Utc::now().timestamp_millis() + TTL.as_millis() as i64;
            let Ok(body) = serde_json::to_vec(&holder) else {
                return;
            };
            for (k, v) in keys.iter().zip(versions.iter_mut()) {
                match put(store.as_ref(), k, &body, PutMode::Update(v.clone())).await {
                    Ok(Some(next)) => *v = next,
                    Ok(None) => {
                        tracing::error!(lease = %k, "lease lost: another run broke it while this run was stalled");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => tracing::warn!(lease = %k, error = %e, "cannot renew a lease"),
                }
            }
        }
    }
}

impl Lease {
    /// Gives the leases back; fails if a lease was lost on the way, since
    /// another run may then have committed over this one's partitions.
    pub async fn release(self) -> Result<()> {
        match self.held {
            Held::Local(files) => local::release(files),
            Held::Store {
                store,
                keys,
                heartbeat,
                lost,
            } => {
                drop(heartbeat);
                if lost.load(Ordering::SeqCst) {
                    return Err(Error::Busy(
                        "this run's lease was broken by another run while it was stalled for longer than the lease lives; check the partitions' manifests and re-run the job".into(),
                    ));
                }
                for k in keys.iter() {
                    objects::delete(store.as_ref(), k).await?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use object_store::memory::InMemory;

    use super::*;

    fn parts() -> BTreeSet<(&'static str, PartitionRef)> {
        let p = PartitionRef {
            dt: NaiveDate::from_ymd_opt(2024, 6, 18).unwrap(),
            region: "aps1".into(),
        };
        [("ods", p.clone()), ("dwd", p)].into_iter().collect()
    }

    async fn take(
        store: &Arc<dyn ObjectStore>,
        wh: &Location,
        run: &str,
        wait_ms: u64,
    ) -> Result<Lease> {
        let wait = Duration::from_millis(wait_ms);
        acquire(store.clone(), wh, run, "layering", &parts(), wait).await
    }

    #[tokio::test]
    async fn a_local_lease_is_exclusive_and_freed_by_release() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
        let a = take(&store, &wh, "run-a", 0).await.unwrap();
        let err = take(&store, &wh, "run-b", 0)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("run run-a"), "{err}");
        a.release().await.unwrap();
        let b = take(&store, &wh, "run-b", 0).await.unwrap();
        b.release().await.unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("_leases/ods/dt=2024-06-18"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn a_local_lease_of_a_dead_run_is_free_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
        // a run that died leaves its lease files written but unlocked
        let a = take(&store, &wh, "run-a", 0).await.unwrap();
        let Held::Local(files) = a.held else {
            panic!("not a local lease")
        };
        drop(files);
        let b = take(&store, &wh, "run-b", 0).await.unwrap();
        b.release().await.unwrap();
    }

    /// Writes a lease that expired a minute ago, as a killed run leaves it.
    async fn stale(store: &Arc<dyn ObjectStore>, wh: &Location) {
        for (layer, p) in parts() {
            let mut h = Holder::new("dead-run", "layering");
            h.expires_at_ms -= TTL.as_millis() as i64 + 60_000;
            let body = serde_json::to_vec(&h).unwrap();
            store
                .put(&key(wh, layer, &p), PutPayload::from(body))
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_runs_breaking_a_stale_lease_exactly_one_takes_it() {
        let wh = Location::parse("s3://bucket/wh").unwrap();
        for _ in 0..20 {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            stale(&store, &wh).await;
            let runs = (0..4).map(|i| {
                let (store, wh) = (store.clone(), wh.clone());
                tokio::spawn(async move { take(&store, &wh, &format!("run-{i}"), 0).await })
            });
            let results = futures::future::join_all(runs).await;
            let winners: Vec<Lease> = results
                .into_iter()
                .filter_map(|r| r.unwrap().ok())
                .collect();
            assert_eq!(
                winners.len(),
                1,
                "{} runs took the same stale lease",
                winners.len()
            );
            for w in winners {
                w.release().await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_run_whose_lease_was_broken_fails_at_release() {
        let wh = Location::parse("s3://bucket/wh").unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = take(&store, &wh, "run-a", 0).await.unwrap();
        // run-a stalls; its lease is broken and taken by run-b
        stale(&store, &wh).await;
        let b = take(&store, &wh, "run-b", 0).await.unwrap();
        tokio::time::sleep(RENEW * 3).await;
        let err = a
            .release()
            .await
            .expect_err("release of a lost lease")
            .to_string();
        assert!(err.contains("broken by another run"), "{err}");
        // run-b still holds both leases
        let err = take(&store, &wh, "run-c", 0)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("run run-b"), "{err}");
        b.release().await.unwrap();
    }
}
