//! The one session builder: object stores, codecs, UDFs and config, shared
//! by `tauc-scheduler`, `tauc-executor` and `tauc-job` so that a plan that
//! works in one works in all.

use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::{
    SessionConfigExt, ballista_aggregate_functions, ballista_scalar_functions,
    ballista_window_functions,
};
use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::codec::{TaucLogicalCodec, TaucPhysicalCodec};
use crate::error::{Error, Result};
use crate::store::{S3Options, StoreRegistry};
use crate::udf;

/// A process's engine pieces: its object-store registry and runtime.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The cached object stores.
    pub registry: Arc<StoreRegistry>,
    /// The runtime every session of this process uses.
    pub runtime: Arc<RuntimeEnv>,
}

impl Engine {
    /// Builds the registry and runtime from the process's S3 options.
    pub fn new(s3: S3Options) -> Result<Engine> {
        let registry = Arc::new(StoreRegistry::new(s3));
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(registry.clone())
            .build_arc()?;
        Ok(Engine { registry, runtime })
    }

    /// A session state on `config` with every tauc function registered.
    pub fn state(&self, config: SessionConfig) -> Result<SessionState> {
        let mut state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
            .with_scalar_functions(ballista_scalar_functions())
            .with_aggregate_functions(ballista_aggregate_functions())
            .with_window_functions(ballista_window_functions())
            .build();
        udf::register_all(&mut state)?;
        Ok(state)
    }

    /// The function registry executors resolve plan functions in.
    pub fn function_registry(&self) -> Result<BallistaFunctionRegistry> {
        Ok((&self.state(session_config())?).into())
    }

    /// A client context: in-process Ballista standalone when `scheduler`
    /// is `None`, else connected to `df://host:port`.
    pub async fn connect(
        &self,
        scheduler: Option<&str>,
        parallelism: usize,
    ) -> Result<SessionContext> {
        let config = session_config().with_ballista_standalone_parallelism(parallelism.max(1));
        let state = self.state(config)?;
        let ctx = match scheduler {
            None => SessionContext::standalone_with_state(state).await?,
            Some(url) => {
                let url = url.trim();
                if !url.starts_with("df://") {
                    return Err(Error::config(format!(
                        "invalid --scheduler '{url}' (expected df://host:port)"
                    )));
                }
                SessionContext::remote_with_state(url, state).await?
            }
        };
        // The Ballista upgrade replaces the function list: register again on
        // the final context.
        for f in udf::all() {
            ctx.register_udf(f);
        }
        Ok(ctx)
    }
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
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    config
}

/// Upgrades a config that came from a client with tauc's codecs (codecs are
/// not part of the propagated settings).
pub fn with_codecs(config: SessionConfig) -> SessionConfig {
    config
        .with_ballista_logical_extension_codec(Arc::new(TaucLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(TaucPhysicalCodec::default()))
}
