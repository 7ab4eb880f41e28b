//! The collector's local spool: append-only segment files on its own disk.
//!
//! A request is answered `204` only once its lines are written and
//! fsynced (collection.md "The collector"). One writer thread owns the
//! open segment and batches the requests that arrive while it is syncing,
//! so concurrent requests share one `fdatasync` (group commit) instead of
//! paying one each. The shipper reads segments back from disk and deletes
//! one only when Kafka has acknowledged all of it; a new process always
//! starts a new segment, so every older segment is complete and closed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};

/// Segment file suffix.
const SEGMENT_SUFFIX: &str = ".spool";
/// Suffix of the shipper's progress file beside a segment.
pub const CURSOR_SUFFIX: &str = ".acked";

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory holding the segments (created 0700 if missing).
    pub dir: PathBuf,
    /// Bytes on disk above which new requests are refused (503).
    pub max_bytes: u64,
    /// A segment is closed once it is this big...
    pub segment_bytes: u64,
    /// ...or this old and not empty, so shipped data is deleted soon.
    pub segment_age: Duration,
    /// Share one sync among the requests that arrive during the previous
    /// one (the default); `false` syncs every request on its own (the
    /// benches' baseline).
    pub group_commit: bool,
}

impl SpoolConfig {
    /// Defaults for `dir`: 1 GiB limit, 8 MiB or 2 s segments.
    pub fn new(dir: PathBuf) -> Self {
        SpoolConfig {
            dir,
            max_bytes: 1 << 30,
            segment_bytes: 8 << 20,
            segment_age: Duration::from_secs(2),
            group_commit: true,
        }
    }
}

/// How far the open segment is durable: the shipper may read `len` bytes
/// of segment `seq`, and every segment below `seq` whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    /// Sequence number of the open segment.
    pub seq: u64,
    /// Its fsynced length.
    pub len: u64,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The spool holds more than its limit (Kafka has been down a while).
    #[error("spool is full ({bytes} bytes, limit {limit}): retry later")]
    Full {
        /// Bytes on disk now.
        bytes: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Writing or syncing failed; nothing of the request counts as spooled.
    #[error("spool write failed: {0}")]
    Write(String),
}

struct Append {
    data: Vec<u8>,
    done: oneshot::Sender<std::result::Result<(), String>>,
}

struct Shared {
    dir: PathBuf,
    bytes: AtomicU64,
    max_bytes: u64,
    healthy: AtomicBool,
    durable: watch::Sender<Durable>,
}

/// Handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    tx: mpsc::Sender<Append>,
    shared: Arc<Shared>,
}

impl Spool {
    /// Opens (or creates) the spool and starts its writer thread, which
    /// ends when the last handle is dropped.
    pub fn open(config: &SpoolConfig) -> Result<(Spool, std::thread::JoinHandle<()>)> {
        create_private_dir(&config.dir)?;
        let existing = segments(&config.dir)?;
        let bytes: u64 = existing.iter().map(|(_, _, len)| len).sum();
        let seq = existing.last().map_or(1, |(s, _, _)| s + 1);
        let file = new_segment(&config.dir, seq)?;
        let (durable, _) = watch::channel(Durable { seq, len: 0 });
        let shared = Arc::new(Shared {
            dir: config.dir.clone(),
            bytes: AtomicU64::new(bytes),
            max_bytes: config.max_bytes,
            healthy: AtomicBool::new(true),
            durable,
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            config: config.clone(),
            file,
            seq,
            len: 0,
            opened: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::spool(&config.dir, e))?;
        Ok((Spool { tx, shared }, handle))
    }

    /// Appends lines (each without its newline) and returns once they are
    /// fsynced. All or nothing.
    pub async fn append(&self, lines: &[String]) -> std::result::Result<(), AppendError> {
        let bytes = self.bytes();
        if bytes >= self.shared.max_bytes {
            return Err(AppendError::Full {
                bytes,
                limit: self.shared.max_bytes,
            });
        }
        let mut data = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            data.extend_from_slice(line.as_bytes());
            data.push(b'\n');
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Append { data, done })
            .map_err(|_| AppendError::Write("the spool writer has stopped".into()))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AppendError::Write(e)),
            Err(_) => Err(AppendError::Write("the spool writer has stopped".into())),
        }
    }

    /// Bytes of segments on disk.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Whether the last write succeeded (for `/readyz`).
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed) && self.shared.dir.is_dir()
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Follows the durable end of the open segment.
    pub fn durable(&self) -> watch::Receiver<Durable> {
        self.shared.durable.subscribe()
    }

    /// Called by the shipper after it deleted a shipped segment.
    pub fn released(&self, bytes: u64) {
        let _ = self
            .shared
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }
}

struct Writer {
    shared: Arc<Shared>,
    config: SpoolConfig,
    file: File,
    seq: u64,
    len: u64,
    opened: Instant,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Append>) {
        loop {
            match rx.recv_timeout(self.config.segment_age) {
                Ok(first) => {
                    let mut group = vec![first];
                    let mut size = group[0].data.len();
                    while self.config.group_commit && size < (4 << 20) {
                        match rx.try_recv() {
                            Ok(next) => {
                                size += next.data.len();
                                group.push(next);
                            }
                            Err(_) => break,
                        }
                    }
                    self.write_group(group);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            self.maybe_roll();
        }
    }

    /// Writes a group of requests with one sync; on failure the segment is
    /// cut back to where it was and every request of the group fails.
    fn write_group(&mut self, group: Vec<Append>) {
        let before = self.len;
        let mut result = Ok(0u64);
        for a in &group {
            if let Err(e) = self.file.write_all(&a.data) {
                result = Err(e);
                break;
            }
            result = result.map(|n| n + a.data.len() as u64);
        }
        let result = result.and_then(|n| self.file.sync_data().map(|_| n));
        match result {
            Ok(n) => {
                self.len = before + n;
                self.shared.bytes.fetch_add(n, Ordering::Relaxed);
                self.shared.healthy.store(true, Ordering::Relaxed);
                self.shared.durable.send_replace(Durable {
                    seq: self.seq,
                    len: self.len,
                });
                for a in group {
                    let _ = a.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, segment = self.seq, "spool write failed");
                self.shared.healthy.store(false, Ordering::Relaxed);
                let _ = self.file.set_len(before);
                let _ = std::io::Seek::seek(&mut self.file, std::io::SeekFrom::Start(before));
                for a in group {
                    let _ = a.done.send(Err(e.to_string()));
                }
            }
        }
    }

    fn maybe_roll(&mut self) {
        let due = self.len >= self.config.segment_bytes
            || (self.len > 0 && self.opened.elapsed() >= self.config.segment_age);
        if !due {
            return;
        }
        match new_segment(&self.config.dir, self.seq + 1) {
            Ok(file) => {
                self.file = file;
                self.seq += 1;
                self.len = 0;
                self.opened = Instant::now();
                self.shared.durable.send_replace(Durable {
                    seq: self.seq,
                    len: 0,
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot open a new spool segment");
                self.shared.healthy.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// The path of segment `seq`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"))
}

/// Segments in the directory, oldest first: `(seq, path, bytes)`.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::spool(dir, e))? {
        let entry = entry.map_err(|e| Error::spool(dir, e))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let len = entry
            .metadata()
            .map_err(|e| Error::spool(&entry.path(), e))?
            .len();
        out.push((seq, entry.path(), len));
    }
    out.sort_by_key(|(seq, _, _)| *seq);
    Ok(out)
}

/// Creates a segment and makes its directory entry durable before any
/// write to it is acknowledged.
fn new_segment(dir: &Path, seq: u64) -> Result<File> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::spool(&path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::spool(dir, e))?;
    Ok(file)
}

/// Creates the spool directory 0700, or makes an existing one 0700 and
/// its files 0600: the spool holds users' events, readable by the
/// collector's user alone. A directory the collector cannot make private
/// (another owner) is refused rather than used as it is.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.is_dir() {
        return std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::spool(dir, e));
    }
    let private = |path: &Path, mode: u32| -> Result<()> {
        let meta = std::fs::metadata(path).map_err(|e| Error::spool(path, e))?;
        if meta.permissions().mode() & 0o777 == mode {
            return Ok(());
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            Error::spool(
                path,
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "mode {:o} and it cannot be made {mode:o} ({e}); give the directory to the collector's user or remove it",
                        meta.permissions().mode() & 0o777
                    ),
                ),
            )
        })?;
        tracing::info!(path = %path.display(), mode = format!("{mode:o}"), "made the spool private");
        Ok(())
    };
    private(dir, 0o700)?;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::spool(dir, e))? {
        let entry = entry.map_err(|e| Error::spool(dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            private(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_are_durable_and_a_restart_opens_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let config = SpoolConfig::new(dir.path().join("spool"));
        let (spool, writer) = Spool::open(&config).unwrap();
        let lines = vec!["{\"a\":1}".to_string(), "{\"b\":2}".to_string()];
        let (a, b) = tokio::join!(spool.append(&lines), spool.append(&lines[..1]));
        a.unwrap();
        b.unwrap();
        assert_eq!(spool.bytes(), 24);
        assert_eq!(*spool.durable().borrow(), Durable { seq: 1, len: 24 });
        drop(spool);
        writer.join().unwrap();
        let (spool, _w) = Spool::open(&config).unwrap();
        assert_eq!(spool.durable().borrow().seq, 2);
        let segs = segments(&config.dir).unwrap();
        assert_eq!(segs.len(), 2);
        let text = std::fs::read_to_string(&segs[0].1).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[tokio::test]
    async fn a_full_spool_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SpoolConfig::new(dir.path().to_path_buf());
        config.max_bytes = 10;
        let (spool, _w) = Spool::open(&config).unwrap();
        spool.append(&["x".repeat(20)]).await.unwrap();
        assert!(matches!(
            spool.append(&["y".into()]).await,
            Err(AppendError::Full {
                bytes: 21,
                limit: 10
            })
        ));
        spool.released(21);
        spool.append(&["y".into()]).await.unwrap();
    }
}
