//! From flags to a running engine: the config file, the `TAUC_*`
//! variables and the flags resolved into stores and an [`Engine`]
//! (flags > env > file > defaults), and the connection to a scheduler or
//! the in-process one.

use crate::cli::Globals;
use crate::cli::flags::StoreArgs;
use crate::config::{self, FileConfig};
use crate::engine::client::remote::SchedulerClient;
use crate::engine::runtime::scratch::Resources;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::store::{Location, S3Options};
use crate::warehouse::commit;

/// What a command resolved: the config file, the stores, the engine.
pub(super) struct Resolved {
    pub(super) file: FileConfig,
    pub(super) raw_root: Location,
    pub(super) warehouse: Location,
    pub(super) env: String,
    pub(super) engine: Engine,
}

/// The stores and engine of `store` and `resources` over the config file.
pub(super) fn resolve(g: &Globals, store: &StoreArgs, resources: &Resources) -> Result<Resolved> {
    config::check_env()?;
    let file = g.file()?;
    let tls = g.cluster_tls(&file)?;
    let flags = S3Options {
        endpoint: store.s3_endpoint.clone(),
        region: store.s3_region.clone(),
        allow_http: store.s3_allow_http.then_some(true),
        ..Default::default()
    };
    // flags > env > file > defaults
    let s3 = file
        .s3
        .clone()
        .overlay(&S3Options::default().with_env()?)
        .overlay(&flags);
    let raw_root = Location::parse(
        store
            .raw_root
            .as_deref()
            .or(file.raw_root.as_deref())
            .unwrap_or(config::DEFAULT_RAW_ROOT),
    )?;
    let warehouse = Location::parse(
        store
            .warehouse
            .as_deref()
            .or(file.warehouse.as_deref())
            .unwrap_or(config::DEFAULT_WAREHOUSE),
    )?;
    let env = store
        .env
        .clone()
        .or(file.env.clone())
        .unwrap_or_else(|| config::DEFAULT_ENV.to_string());
    if env.is_empty() || env.contains('/') {
        return Err(Error::config(format!(
            "invalid --env '{env}' (expected a path segment such as uat)"
        )));
    }
    Ok(Resolved {
        engine: Engine::with_resources(s3, resources)?.with_tls(tls),
        file,
        raw_root,
        warehouse,
        env,
    })
}

/// Sets this process's keep time of replaced files: flag or variable,
/// else the file's `keep-replaced-secs`, else the default.
pub(super) fn set_keep_replaced(flag: Option<u64>, file: &FileConfig) {
    commit::keep_replaced::set(
        flag.or(file.keep_replaced_secs)
            .unwrap_or(commit::keep_replaced::DEFAULT_SECS),
    );
}

/// A client context on the scheduler, or in-process.
pub(super) async fn connect(
    engine: &Engine,
    scheduler: Option<&str>,
    parallelism: Option<usize>,
) -> Result<datafusion::prelude::SessionContext> {
    let parallelism =
        parallelism.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // an unreachable scheduler is a configuration error, found before any work
    let client = match scheduler {
        Some(url) => Some(SchedulerClient::connect(url, engine.tls.as_ref()).await?),
        None => None,
    };
    engine
        .connect(client.as_ref(), parallelism)
        .await
        .map_err(|e| match (scheduler, e) {
            (Some(url), e) => Error::config(format!("cannot connect to scheduler '{url}': {e}")),
            (None, e) => e,
        })
}
