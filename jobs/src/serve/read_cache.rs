//! `serve`'s cache of the byte ranges its queries read from the
//! warehouse's data files.
//!
//! A lookup reads a few hundred small ranges — Bloom filters, pages —
//! each its own request: on S3 a GET apiece, on a local disk an open,
//! a read and a close handed to a blocking thread (one user's 30 days:
//! ~570 reads and ~430 opens per query). A dashboard asks the same
//! questions again and again, and the warehouse's data files never change
//! once written: every commit writes new names (`part-{run_id}-…`) and a
//! file no manifest lists is simply never asked for again. So the ranges
//! a query read are kept, least recently used out first, up to
//! `--read-cache` bytes, and the next query that reads the same range of
//! the same file takes it from memory. Only data files are kept —
//! manifests, markers, listings and the business's `dim/` files (which
//! may be replaced under the same name) always go to the store.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::execution::cache::lru_queue::LruQueue;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    Result as StoreResult,
};

/// A file's range, by name.
type Key = (String, u64, u64);

/// A store whose data files' ranges are served from memory once read
/// (module docs).
pub struct ReadCache {
    inner: Arc<dyn ObjectStore>,
    capacity: usize,
    kept: Mutex<Kept>,
}

/// The ranges kept, least recently used first, and their bytes.
struct Kept {
    /// a range's bytes, and the object's description when a single-range
    /// read gave it (a ranges read does not, and its answer needs none)
    ranges: LruQueue<Key, (Bytes, Option<ObjectMeta>)>,
    bytes: usize,
}

impl ReadCache {
    /// `inner` with up to `capacity` bytes of its data files' ranges kept.
    pub fn new(inner: Arc<dyn ObjectStore>, capacity: usize) -> ReadCache {
        ReadCache {
            inner,
            capacity,
            kept: Mutex::new(Kept {
                ranges: LruQueue::new(),
                bytes: 0,
            }),
        }
    }

    /// The bytes kept now.
    pub fn kept_bytes(&self) -> usize {
        self.kept.lock().expect("read cache lock").bytes
    }

    fn get(&self, key: &Key) -> Option<(Bytes, Option<ObjectMeta>)> {
        let mut kept = self.kept.lock().expect("read cache lock");
        kept.ranges.get(key).cloned()
    }

    fn put(&self, key: Key, bytes: Bytes, meta: Option<ObjectMeta>) {
        if bytes.len() > self.capacity / 8 {
            // one read would push out much of what is kept
            return;
        }
        let mut kept = self.kept.lock().expect("read cache lock");
        kept.bytes += bytes.len();
        if let Some((old, _)) = kept.ranges.put(key, (bytes, meta)) {
            kept.bytes -= old.len();
        }
        while kept.bytes > self.capacity {
            let Some((_, (gone, _))) = kept.ranges.pop() else {
                break;
            };
            kept.bytes -= gone.len();
        }
    }
}

/// Whether `location` is a warehouse data file, never rewritten under its
/// name.
fn is_data_file(location: &Path) -> bool {
    let name = location.filename().unwrap_or("");
    name.starts_with("part-")
        && name.ends_with(".parquet")
        && !location.parts().any(|p| p.as_ref() == "dim")
}

/// The range `options` asks for, when it asks only for a range.
fn plain_range(options: &GetOptions) -> Option<Range<u64>> {
    let plain = options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none()
        && !options.head;
    match (&options.range, plain) {
        (Some(GetRange::Bounded(r)), true) => Some(r.clone()),
        _ => None,
    }
}

fn answer(bytes: Bytes, meta: ObjectMeta, range: Range<u64>) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(bytes) }).boxed()),
        meta,
        range,
        attributes: Default::default(),
    }
}

impl fmt::Display for ReadCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadCache({})", self.inner)
    }
}

impl fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadCache({}, {} bytes)", self.inner, self.capacity)
    }
}

#[async_trait]
impl ObjectStore for ReadCache {
    async fn get_opts(&self, location: &Path, options: GetOptions) -> StoreResult<GetResult> {
        let range = match plain_range(&options) {
            Some(r) if is_data_file(location) => r,
            _ => return self.inner.get_opts(location, options).await,
        };
        let key = (location.to_string(), range.start, range.end);
        if let Some((bytes, Some(meta))) = self.get(&key) {
            return Ok(answer(bytes, meta, range));
        }
        let got = self.inner.get_opts(location, options).await?;
        let (meta, range) = (got.meta.clone(), got.range.clone());
        let bytes = got.bytes().await?;
        self.put(key, bytes.clone(), Some(meta.clone()));
        Ok(answer(bytes, meta, range))
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> StoreResult<Vec<Bytes>> {
        if !is_data_file(location) {
            return self.inner.get_ranges(location, ranges).await;
        }
        let name = location.to_string();
        let key = |r: &Range<u64>| (name.clone(), r.start, r.end);
        let mut out: Vec<Option<Bytes>> = ranges
            .iter()
            .map(|r| self.get(&key(r)).map(|(b, _)| b))
            .collect();
        let missing: Vec<Range<u64>> = ranges
            .iter()
            .zip(&out)
            .filter(|(_, b)| b.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        if missing.is_empty() {
            return Ok(out.into_iter().flatten().collect());
        }
        let mut read = self.inner.get_ranges(location, &missing).await?.into_iter();
        for (r, slot) in ranges.iter().zip(out.iter_mut()) {
            if slot.is_none() {
                let bytes = read.next().expect("one answer per range");
                self.put(key(r), bytes.clone(), None);
                *slot = Some(bytes);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreResult<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> StoreResult<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, StoreResult<Path>>,
    ) -> BoxStream<'static, StoreResult<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> StoreResult<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> StoreResult<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::local::LocalFileSystem;

    /// A cache over a temporary folder, and the folder.
    fn cache(capacity: usize) -> (ReadCache, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        (ReadCache::new(Arc::new(fs), capacity), dir)
    }

    fn write(dir: &tempfile::TempDir, key: &str, body: &[u8]) {
        let path = dir.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    const DATA: &str = "dwd/t/dt=2024-06-18/region=aps1/part-r1-0.parquet";

    #[tokio::test]
    async fn a_data_files_range_is_read_once() {
        let (c, dir) = cache(1 << 20);
        write(&dir, DATA, b"0123456789");
        let p = Path::from(DATA);
        assert_eq!(c.get_range(&p, 2..5).await.unwrap().as_ref(), b"234");
        assert_eq!(
            c.get_ranges(&p, &[0..2, 6..8]).await.unwrap(),
            [&b"01"[..], b"67"]
        );
        // the file gone, what was read is still answered, from memory
        std::fs::remove_file(dir.path().join(DATA)).unwrap();
        assert_eq!(c.get_range(&p, 2..5).await.unwrap().as_ref(), b"234");
        assert_eq!(
            c.get_ranges(&p, &[6..8, 2..5]).await.unwrap(),
            [&b"67"[..], b"234"]
        );
        assert!(c.get_range(&p, 3..6).await.is_err(), "a range never read");
        assert_eq!(c.kept_bytes(), 7);
    }

    #[tokio::test]
    async fn other_files_always_go_to_the_store() {
        let (c, dir) = cache(1 << 20);
        for key in [
            "dwd/t/dt=2024-06-18/region=aps1/_manifest.json",
            "dim/dim_user/part-0.parquet",
        ] {
            write(&dir, key, b"old");
            let p = Path::from(key);
            assert_eq!(c.get_range(&p, 0..3).await.unwrap().as_ref(), b"old");
            write(&dir, key, b"new");
            assert_eq!(
                c.get_range(&p, 0..3).await.unwrap().as_ref(),
                b"new",
                "{key}"
            );
        }
        assert_eq!(c.kept_bytes(), 0);
    }

    #[tokio::test]
    async fn the_least_recently_read_goes_first_when_full() {
        let (c, dir) = cache(64);
        write(&dir, DATA, &[7u8; 72]);
        let p = Path::from(DATA);
        for r in [0..8, 8..16, 16..24] {
            c.get_range(&p, r).await.unwrap();
        }
        c.get_range(&p, 0..8).await.unwrap(); // 0..8 read again: 8..16 is the oldest
        for r in [24..32, 32..40, 40..48, 48..56, 56..64, 64..72] {
            c.get_range(&p, r).await.unwrap();
        }
        assert!(c.kept_bytes() <= 64);
        std::fs::remove_file(dir.path().join(DATA)).unwrap();
        assert!(c.get_range(&p, 0..8).await.is_ok(), "recently read: kept");
        assert!(c.get_range(&p, 8..16).await.is_err(), "the oldest: dropped");
        // one read above an eighth of the cache is not kept
        write(&dir, DATA, &[7u8; 72]);
        c.get_range(&p, 0..9).await.unwrap();
        std::fs::remove_file(dir.path().join(DATA)).unwrap();
        assert!(c.get_range(&p, 0..9).await.is_err());
    }
}
