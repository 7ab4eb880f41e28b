//! The one session builder: object stores, codecs, UDFs and config, shared
//! by `tauc-scheduler`, `tauc-executor` and `tauc-job` so that a plan that
//! works in one works in all.

use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::{
    SessionConfigExt, SessionStateExt, ballista_aggregate_functions, ballista_scalar_functions,
    ballista_window_functions,
};
use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::common::config::ConfigNonZeroUsize;
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use crate::engine::client::remote::SchedulerClient;
use crate::engine::plan::codec::{TaucLogicalCodec, TaucPhysicalCodec};
use crate::engine::plan::udf;
use crate::engine::runtime::local;
use crate::engine::runtime::scratch::{Resources, Scratch};
use crate::engine::runtime::tls::ClusterTls;
use crate::error::Result;
use crate::store::{S3Options, StoreRegistry};
use crate::warehouse::filter_order::SelectiveFiltersFirst;
use crate::warehouse::writer::{WriteExec, WriteNode};

/// A process's engine pieces: its object-store registry, its runtime
/// (memory pool, spill directory) and its private scratch directory.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The cached object stores.
    pub registry: Arc<StoreRegistry>,
    /// The runtime every session of this process uses.
    pub runtime: Arc<RuntimeEnv>,
    /// Shuffle and spill files; removed when the last clone is dropped.
    pub scratch: Arc<Scratch>,
    /// The memory pool's size in bytes.
    pub memory_limit: usize,
    /// TLS between the cluster's processes; `None`: plain TCP.
    pub tls: Option<Arc<ClusterTls>>,
}

impl Engine {
    /// Builds the registry and runtime from the process's S3 options, with
    /// the default [`Resources`].
    pub fn new(s3: S3Options) -> Result<Engine> {
        Engine::with_resources(s3, &Resources::default())
    }

    /// Builds the registry, a runtime whose memory pool spills at
    /// `resources`' limit, and a fresh scratch directory.
    pub fn with_resources(s3: S3Options, resources: &Resources) -> Result<Engine> {
        let registry = Arc::new(StoreRegistry::new(s3));
        let scratch = Arc::new(Scratch::new(resources.work_dir.as_deref())?);
        let memory_limit = resources.memory_limit();
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(crate::store::for_datafusion(registry.clone()))
            .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)))
            .with_temp_file_path(scratch.spill())
            .build_arc()?;
        tracing::debug!(scratch = %scratch.path().display(), memory_limit, "engine ready");
        Ok(Engine {
            registry,
            runtime,
            scratch,
            memory_limit,
            tls: None,
        })
    }

    /// The same engine, talking to the cluster over `tls`.
    pub fn with_tls(mut self, tls: Option<Arc<ClusterTls>>) -> Engine {
        self.tls = tls;
        self
    }

    /// The session config of this process: [`session_config`], plus the
    /// TLS hook when the cluster uses TLS (a hook is not a setting: it
    /// does not travel with plans, each process adds its own).
    pub fn session_config(&self) -> SessionConfig {
        with_tls(session_config(), self.tls.as_ref())
    }

    /// A session state on `config` with every tauc function registered.
    pub fn state(&self, mut config: SessionConfig) -> Result<SessionState> {
        // A sort keeps this much back to merge its spill files; the stock
        // 10 MiB per sort does not fit a small pool split over 16 partitions.
        config.options_mut().execution.sort_spill_reservation_bytes =
            (self.memory_limit / 64).clamp(256 << 10, 10 << 20);
        // A sort must take one whole input batch into its share of the
        // pool before it can spill anything: 8192 full DWD rows are ~6 MiB,
        // more than a 24 MiB pool's share for each of a task's sorts, and
        // such a run failed instead of spilling. Smaller pools get smaller
        // batches (a 256 MiB pool or more keeps DataFusion's 8192).
        config.options_mut().execution.batch_size =
            ConfigNonZeroUsize::try_new((self.memory_limit / (32 << 10)).clamp(256, 8192))?;
        let mut state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
            .with_query_planner(Arc::new(TaucQueryPlanner))
            .with_scalar_functions(ballista_scalar_functions())
            .with_aggregate_functions(ballista_aggregate_functions())
            .with_window_functions(ballista_window_functions())
            .build();
        udf::register_all(&mut state)?;
        Ok(state)
    }

    /// The function registry executors resolve plan functions in.
    pub fn function_registry(&self) -> Result<BallistaFunctionRegistry> {
        Ok((&self.state(self.session_config())?).into())
    }

    /// A plain DataFusion context on this process's engine, `parallelism`
    /// partitions wide: no Ballista, no shuffle files (`tauc-job serve`).
    pub fn local_context(&self, parallelism: usize) -> Result<SessionContext> {
        let config = self
            .session_config()
            .with_target_partitions(parallelism.max(1));
        // lookups: the most selective filters tested first in the decoder
        let state = SessionStateBuilder::new_from_existing(self.state(config)?)
            .with_physical_optimizer_rule(Arc::new(SelectiveFiltersFirst))
            .build();
        Ok(SessionContext::new_with_state(state))
    }

    /// A client context: in-process Ballista standalone when `scheduler`
    /// is `None`, else connected to that scheduler (whose client the
    /// session keeps, for naming and cancelling its jobs).
    pub async fn connect(
        &self,
        scheduler: Option<&SchedulerClient>,
        parallelism: usize,
    ) -> Result<SessionContext> {
        let mut config = self
            .session_config()
            .with_ballista_standalone_parallelism(parallelism.max(1));
        if let Some(client) = scheduler {
            // the session's jobs are named, watched and cancelled through it
            // (`client::submitted`)
            config = config.with_extension(Arc::new(client.clone()));
        } else {
            // One executor with `parallelism` task slots: Ballista's 16
            // partitions a stage would be 16 tasks of fixed overhead each
            // (plan decode, shuffle files) for two cores; two per slot keep
            // the slots busy when partitions are uneven.
            config = config.with_target_partitions(in_process_partitions(parallelism));
        }
        let state = self.state(config)?;
        let ctx = match scheduler {
            None => {
                let shuffle = self.scratch.shuffle();
                let url =
                    local::start(&state, parallelism.max(1), &shuffle.to_string_lossy()).await?;
                SessionContext::new_with_state(state.upgrade_for_ballista(url)?)
            }
            Some(client) => SessionContext::remote_with_state(client.url(), state).await?,
        };
        // The Ballista upgrade replaces the function list: register again on
        // the final context.
        for f in udf::all() {
            ctx.register_udf(f);
        }
        Ok(ctx)
    }
}

/// Shuffle partitions of a stage on the in-process engine.
fn in_process_partitions(parallelism: usize) -> usize {
    (parallelism * 2).max(2)
}

/// The session config every tauc process starts from: Ballista's, with
/// tauc's codecs, and Parquet strings read as `Utf8`.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(Arc::new(TaucLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(TaucPhysicalCodec::default()))
        .with_information_schema(true)
        // Ballista 55's adaptive planner (its default) re-plans the DWD
        // query's stages without end on some inputs (hundreds of one-task
        // stages for a 1000-row day, never finishing); the static planner
        // runs the same plan in three stages.
        .with_ballista_adaptive_query_planner(false);
    let parquet = &mut config.options_mut().execution.parquet;
    parquet.schema_force_view_types = false;
    // filters evaluated in the Parquet decoder, cheapest first: a lookup
    // decodes the other columns only for the rows (and pages) it keeps
    parquet.pushdown_filters = true;
    parquet.reorder_filters = true;
    config
}

/// `config` with Ballista's connections over `tls` (when given).
pub fn with_tls(config: SessionConfig, tls: Option<&Arc<ClusterTls>>) -> SessionConfig {
    match tls {
        None => config,
        Some(tls) => config
            .with_ballista_use_tls(true)
            .with_ballista_override_create_grpc_client_endpoint(tls.endpoint_override()),
    }
}

/// DataFusion's planner plus tauc's logical nodes (the warehouse writer).
/// The scheduler plans with it; a client's Ballista planner only forwards
/// the logical plan.
#[derive(Debug)]
struct TaucQueryPlanner;

#[async_trait]
impl QueryPlanner for TaucQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(TaucNodes)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

struct TaucNodes;

#[async_trait]
impl ExtensionPlanner for TaucNodes {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _ctx: &PhysicalPlanningContext,
    ) -> datafusion::common::Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(write) = node.as_any().downcast_ref::<WriteNode>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return datafusion::common::internal_err!("TaucWrite takes one input");
        };
        Ok(Some(Arc::new(WriteExec::try_new(
            input.clone(),
            write.spec.clone(),
        )?)))
    }
}
