//! Each query's share of the server, so one analyst's query cannot take
//! the node from everyone else.
//!
//! - **Slots**: at most `--max-queries` queries run at once, and at most
//!   `--max-queries-per-user` of one user; a query waits for a slot until
//!   its deadline, then fails naming the limit.
//! - **Memory**: on the in-process engine each query has its own memory
//!   pool, `--memory-limit / --max-queries`; an operator that outgrows it
//!   spills, and a query that cannot fails naming its share.
//! - **Scratch disk**: each query's spill files may take `--query-scratch`
//!   bytes; past that the query fails naming the limit.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::{
    CacheManagerConfig, DEFAULT_METADATA_CACHE_LIMIT, FileMetadataCache,
};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::store::StoreRegistry;

/// Concurrency limits: overall and per user.
pub struct Slots {
    max_queries: usize,
    per_user: usize,
    overall: Arc<Semaphore>,
    users: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A running query's slot; freed when dropped.
pub struct Slot {
    _user: OwnedSemaphorePermit,
    _overall: OwnedSemaphorePermit,
}

impl Slots {
    /// `max_queries` at once, `per_user` of them for one user.
    pub fn new(max_queries: usize, per_user: usize) -> Slots {
        Slots {
            max_queries,
            per_user,
            overall: Arc::new(Semaphore::new(max_queries)),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a slot for `user` until `deadline`.
    pub async fn take(&self, user: &str, deadline: tokio::time::Instant) -> Result<Slot, Status> {
        let mine = {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            users
                .entry(user.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)))
                .clone()
        };
        let closed = |_| Status::unavailable("the server is stopping");
        let user_slot = tokio::time::timeout_at(deadline, mine.acquire_owned())
            .await
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "'{user}' already runs {} queries, the most one user may run at once (--max-queries-per-user), and none ended before this one's deadline; wait for them or cancel one",
                    self.per_user
                ))
            })?
            .map_err(closed)?;
        let overall = tokio::time::timeout_at(deadline, self.overall.clone().acquire_owned())
            .await
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "the server already runs {} queries, its limit (--max-queries), and none ended before this one's deadline; try again later",
                    self.max_queries
                ))
            })?
            .map_err(closed)?;
        Ok(Slot {
            _user: user_slot,
            _overall: overall,
        })
    }
}

/// What one query may use on the in-process engine.
#[derive(Clone)]
pub struct QueryRuntime {
    registry: Arc<StoreRegistry>,
    spill: PathBuf,
    /// The Parquet footers and page indexes read so far, shared by every
    /// query's runtime: without it each query would read them again. A
    /// file name is never reused for other bytes (every commit writes new
    /// names), so an entry stays true; files no manifest lists any more are
    /// no longer asked for and age out (least recently used first).
    footers: Arc<FileMetadataCache>,
    /// Bytes of memory pool per query.
    pub memory_share: usize,
    /// Bytes of spill files per query.
    pub scratch_limit: u64,
}

impl std::fmt::Debug for QueryRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRuntime")
            .field("spill", &self.spill)
            .field("memory_share", &self.memory_share)
            .field("scratch_limit", &self.scratch_limit)
            .finish_non_exhaustive()
    }
}

impl QueryRuntime {
    /// Queries read through `registry` and spill under `spill`.
    pub fn new(
        registry: Arc<StoreRegistry>,
        spill: PathBuf,
        memory_share: usize,
        scratch_limit: u64,
    ) -> QueryRuntime {
        let footers: Arc<FileMetadataCache> =
            Arc::new(DefaultCache::new(DEFAULT_METADATA_CACHE_LIMIT).with_name("serve's footers"));
        QueryRuntime {
            registry,
            spill,
            footers,
            memory_share,
            scratch_limit,
        }
    }

    /// A fresh runtime for one query: its own memory pool and a disk
    /// manager that refuses spill files past the scratch limit.
    pub fn runtime(&self) -> Result<Arc<RuntimeEnv>, DataFusionError> {
        let top = NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN);
        let disk = DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::Directories(vec![self.spill.clone()]))
            .with_max_temp_directory_size(self.scratch_limit);
        RuntimeEnvBuilder::new()
            .with_object_store_registry(crate::store::for_datafusion(self.registry.clone()))
            .with_memory_pool(Arc::new(TrackConsumersPool::new(
                FairSpillPool::new(self.memory_share),
                top,
            )))
            .with_disk_manager_builder(disk)
            .with_cache_manager(
                CacheManagerConfig::default().with_file_metadata_cache(Some(self.footers.clone())),
            )
            .build_arc()
    }
}

/// A failed query's status: running out of its memory share or scratch
/// space names the limit; anything else is the engine's message.
pub fn explain(e: &DataFusionError, local: Option<&QueryRuntime>) -> Status {
    // the disk manager's refusal reaches here as an Arrow I/O error of the
    // spill writer, so it is told by its text
    let disk_full = e
        .to_string()
        .contains("used disk space during the spilling");
    match (e.find_root(), local) {
        (_, Some(q)) if disk_full => Status::resource_exhausted(format!(
            "the query's spill files outgrew its scratch limit of {} MiB (--query-scratch); narrow it with WHERE dt = …, or aggregate",
            q.scratch_limit >> 20
        )),
        (DataFusionError::ResourcesExhausted(_), Some(q)) => Status::resource_exhausted(format!(
            "the query needs more memory than its share of {} MiB (--memory-limit / --max-queries); narrow it with WHERE dt = …, or aggregate",
            q.memory_share >> 20
        )),
        _ => Status::internal(format!("query failed: {}", e.strip_backtrace())),
    }
}

/// Makes every operator's output count against tokio's cooperative
/// budget, so a query's task yields every hundred-odd batches wherever
/// they come from.
///
/// DataFusion's own rule (`EnsureCooperative`) charges only the scans,
/// but a cross join turns one input batch into thousands of output
/// batches without reading anything: an aggregate over it then ran in a
/// single poll for minutes, so neither the deadline nor a cancellation
/// (both wait for the task to yield) stopped it.
#[derive(Debug, Default)]
pub struct YieldEverywhere;

impl PhysicalOptimizerRule for YieldEverywhere {
    fn name(&self) -> &str {
        "tauc_yield_everywhere"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let wrapped = node.children().is_empty() || node.is::<CooperativeExec>();
            if wrapped {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(
                Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
            ))
        })
        .map(|t| t.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn runtime(dir: &std::path::Path, memory: usize, scratch: u64) -> QueryRuntime {
        let registry = Arc::new(StoreRegistry::new(Default::default()));
        QueryRuntime::new(registry, dir.to_path_buf(), memory, scratch)
    }

    async fn sort_big(q: &QueryRuntime) -> Result<(), DataFusionError> {
        let mut config = SessionConfig::new().with_target_partitions(1);
        config.options_mut().execution.sort_spill_reservation_bytes = 1 << 20;
        let ctx = SessionContext::new_with_config_rt(config, q.runtime()?);
        let sql = "SELECT v, repeat('x', 100) AS pad FROM generate_series(1, 1000000) t(v) ORDER BY v DESC";
        ctx.sql(sql).await?.collect().await.map(|_| ())
    }

    #[tokio::test]
    async fn a_query_past_its_scratch_limit_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let q = runtime(dir.path(), 16 << 20, 4 << 20);
        let e = sort_big(&q).await.expect_err("spilled past the limit");
        let s = explain(&e, Some(&q));
        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{}", s.message());
        assert!(s.message().contains("--query-scratch"), "{}", s.message());
        // the same query with room on disk runs
        sort_big(&runtime(dir.path(), 16 << 20, 1 << 30))
            .await
            .unwrap();
    }
}
