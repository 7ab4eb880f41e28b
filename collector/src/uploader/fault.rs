//! A crash switch for the exactly-once tests: `TAUC_UPLOADER_FAULT=point:n`
//! aborts the process (as abruptly as SIGKILL: no flush, no commit, no
//! leaving the group) the `n`-th time the uploader reaches `point`
//! (`before-put`, `after-put`, `after-commit`). Unset, it costs one
//! atomic load per batch.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static FAULT: OnceLock<Option<(String, u64)>> = OnceLock::new();
static SEEN: AtomicU64 = AtomicU64::new(0);

/// Aborts here if this is the configured point and count.
pub fn at(point: &str) {
    let fault = FAULT.get_or_init(|| {
        let v = std::env::var("TAUC_UPLOADER_FAULT").ok()?;
        let (p, n) = v.split_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    });
    if let Some((p, n)) = fault
        && p == point
        && SEEN.fetch_add(1, Ordering::Relaxed) + 1 == *n
    {
        eprintln!("TAUC_UPLOADER_FAULT: aborting at {point} #{n}");
        std::process::abort();
    }
}
