//! Listing a raw folder in key order, stepping over keys `object_store`
//! cannot name.
//!
//! S3 accepts any UTF-8 key, but `object_store` refuses a listing page
//! holding a key with a control character (a tab, say) or a `.`/`..`
//! segment: the whole page, and with it the run, failed on one such
//! object. Such a key is never a `messages-*.txt` batch the uploader
//! wrote, so the scan counts it as ignored, names it in a warning and goes
//! on. The S3 listing is paged by hand for that: a page that fails is
//! fetched again in halves until the bad key is the only one, and the next
//! page starts after it (S3's `start-after` takes any string).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{self, BoxStream, StreamExt};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::{ObjectMeta, path};

/// A page of a full listing, as S3 gives one at most.
const PAGE: usize = 1000;

/// Where a paged listing is.
struct Cursor {
    pager: Arc<dyn PaginatedListStore>,
    /// `folder/`: S3 prefixes are plain strings.
    prefix: String,
    /// The last key listed or stepped over.
    after: Option<String>,
    /// Keys past this end the listing (they belong to another range).
    up_to: Option<String>,
    page: usize,
    done: bool,
    /// Keys stepped over, for the caller to count and name.
    skipped: Arc<Mutex<Vec<String>>>,
}

/// The objects under `folder/` after `after` (all when `None`), in key
/// order, up to the first key past `up_to`; keys `object_store` cannot
/// name are pushed onto `skipped` (those up to `up_to`) instead.
pub fn list_after(
    pager: Arc<dyn PaginatedListStore>,
    folder: &str,
    after: Option<String>,
    up_to: Option<String>,
    skipped: Arc<Mutex<Vec<String>>>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    let cursor = Cursor {
        pager,
        prefix: format!("{folder}/"),
        after,
        up_to,
        page: PAGE,
        done: false,
        skipped,
    };
    stream::try_unfold(cursor, |mut c| async move {
        if c.done {
            return Ok(None);
        }
        let objects = c.next_page().await?;
        Ok(Some((stream::iter(objects.into_iter().map(Ok)), c)))
    })
    .map(|page| match page {
        Ok(s) => s.boxed(),
        Err(e) => stream::once(async { Err(e) }).boxed(),
    })
    .flatten()
    .boxed()
}

impl Cursor {
    /// The next page's objects; steps over unnameable keys on the way.
    async fn next_page(&mut self) -> object_store::Result<Vec<ObjectMeta>> {
        loop {
            let opts = PaginatedListOptions {
                offset: self.after.clone(),
                max_keys: Some(self.page),
                ..Default::default()
            };
            match self.pager.list_paginated(Some(&self.prefix), opts).await {
                Ok(r) => {
                    let objects = r.result.objects;
                    match objects.last() {
                        Some(last) if r.page_token.is_some() => {
                            self.after = Some(last.location.to_string());
                        }
                        _ => self.done = true,
                    }
                    return Ok(objects);
                }
                Err(object_store::Error::InvalidPath {
                    source: path::Error::BadSegment { path, .. },
                }) if self.page > 1 => {
                    tracing::debug!(key = ?path, "listing page holds an unnameable key; halving it");
                    self.page /= 2;
                }
                Err(object_store::Error::InvalidPath {
                    source: path::Error::BadSegment { path, .. },
                }) => {
                    if self.up_to.as_deref().is_some_and(|u| path.as_str() > u) {
                        self.done = true;
                        return Ok(Vec::new());
                    }
                    self.skipped
                        .lock()
                        .expect("skipped lock")
                        .push(path.clone());
                    self.after = Some(path);
                    self.page = PAGE;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A day folder as an incremental run lists it from `tauc-job`.
#[derive(Debug, Default)]
pub struct FolderListing {
    /// Its `messages-*.txt` batches, in key order.
    pub objects: Vec<crate::warehouse::loads::RawObject>,
    /// The names (under the folder) of its other objects, counted as the
    /// scan counts them: other names, links on a local root, and keys the
    /// store cannot name.
    pub ignored: Vec<String>,
    /// LIST requests made (S3 pages; one walk of a local folder).
    pub pages: u64,
    /// Keys listed.
    pub keys: u64,
}

/// Lists the folder, whole or (`after`, a name under it) from the first
/// key after `after`.
pub async fn list_folder(
    store: &Arc<dyn object_store::ObjectStore>,
    folder: &crate::store::Location,
    after: Option<&str>,
) -> crate::error::Result<FolderListing> {
    use futures::TryStreamExt;
    let skipped = Arc::new(Mutex::new(Vec::new()));
    let offset = after.map(|a| format!("{}/{a}", folder.prefix));
    let counting = crate::store::s3_pager(&folder.store_url).map(|inner| {
        Arc::new(Counting {
            inner,
            pages: AtomicU64::new(0),
        })
    });
    let listing = match (&counting, &offset) {
        (Some(pager), _) => {
            let pager: Arc<dyn PaginatedListStore> = pager.clone();
            list_after(pager, &folder.prefix, offset.clone(), None, skipped.clone())
        }
        (None, Some(o)) => {
            store.list_with_offset(Some(&folder.path()), &path::Path::from(o.as_str()))
        }
        (None, None) => store.list(Some(&folder.path())),
    };
    let metas: Vec<ObjectMeta> = listing.try_collect().await?;
    let local = folder.store_url.starts_with("file");
    let name = |key: &str| {
        key.strip_prefix(folder.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(key)
            .to_string()
    };
    let skipped = std::mem::take(&mut *skipped.lock().expect("skipped lock"));
    let mut out = FolderListing {
        keys: (metas.len() + skipped.len()) as u64,
        pages: counting.map_or(1, |c| c.pages.load(Ordering::Relaxed)),
        ignored: skipped.iter().map(|k| name(k)).collect(),
        objects: Vec::new(),
    };
    for m in metas {
        let key = m.location.as_ref();
        let batch = is_message_file(&folder.prefix, key) && (!local || !is_symlink(key));
        if !batch {
            out.ignored.push(name(key));
            continue;
        }
        out.objects.push(crate::warehouse::loads::RawObject {
            key: key.to_string(),
            size: m.size,
            e_tag: m.e_tag,
        });
    }
    out.objects.sort();
    out.ignored.sort();
    out.ignored.dedup();
    Ok(out)
}

/// A pager that counts its LIST requests.
struct Counting {
    inner: Arc<dyn PaginatedListStore>,
    pages: AtomicU64,
}

#[async_trait::async_trait]
impl PaginatedListStore for Counting {
    async fn list_paginated(
        &self,
        prefix: Option<&str>,
        opts: PaginatedListOptions,
    ) -> object_store::Result<object_store::list::PaginatedListResult> {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.inner.list_paginated(prefix, opts).await
    }
}

/// Is `key` a raw batch directly in the folder: `{folder}/messages-*.txt`?
pub fn is_message_file(folder_prefix: &str, key: &str) -> bool {
    let Some(name) = key
        .strip_prefix(folder_prefix)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    !name.contains('/') && name.starts_with("messages-") && name.ends_with(".txt")
}

/// Is the local file `key` a symbolic link? A local raw root is read
/// without following links: a `messages-x.txt -> /etc/passwd` link would
/// otherwise land a file from outside the root in the quarantine's
/// `raw_line`. Links are counted with the ignored files and named in a
/// warning.
pub(crate) fn is_symlink(key: &str) -> bool {
    let path = std::path::Path::new("/").join(key);
    let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
    if link {
        tracing::warn!(
            file = %path.display(),
            "skipped a symbolic link in the local raw root: tauc reads only regular files there (move the file in or remove the link)"
        );
    }
    link
}
