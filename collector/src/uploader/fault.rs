//! A crash switch for the exactly-once tests: `TAUC_UPLOADER_FAULT=point:n`
//! aborts the process (as abruptly as SIGKILL: no flush, no commit, no
//! leaving the group) the `n`-th time the uploader reaches `point`
//! (`before-put`, `after-put`, `after-commit`). Unset, it costs one
//! atomic load per batch. Only in debug builds (the tests'): a release
//! build's uploader has no crash switch.

#[cfg(debug_assertions)]
use std::sync::OnceLock;
#[cfg(debug_assertions)]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(debug_assertions)]
static FAULT: OnceLock<Option<(String, u64)>> = OnceLock::new();
#[cfg(debug_assertions)]
static SEEN: AtomicU64 = AtomicU64::new(0);

/// Does nothing: release builds have no crash switch.
#[cfg(not(debug_assertions))]
pub fn at(_point: &str) {}

/// Aborts here if this is the configured point and count.
#[cfg(debug_assertions)]
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
