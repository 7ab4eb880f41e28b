//! `tauc-job serve`: the warehouse over Arrow Flight SQL, for Superset and
//! other BI tools.
//!
//! Meant to run on the master node next to the scheduler, reachable only
//! from the BI host: every call needs a login ([`auth`]) against the users
//! file ([`users`]), failed logins back off ([`backoff`]), tickets are
//! signed ([`ticket`]), every statement is read-only, and each query has a
//! deadline and a row limit ([`flight`]). Queries run in-process by
//! default, or on the cluster with `--scheduler`.

pub mod auth;
pub mod backoff;
pub mod bounded;
pub mod flight;
pub mod placeholders;
pub mod quota;
pub mod read_cache;
pub mod ticket;
pub mod users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::prelude::SessionContext;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::error::{Error, Result};

/// What `serve` needs, resolved from flags, environment and file.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Listen address.
    pub bind: SocketAddr,
    /// The users file.
    pub users: PathBuf,
    /// TLS certificate and key (PEM), both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long a login lasts.
    pub token_ttl: Duration,
    /// When failed logins back off.
    pub logins: backoff::LoginLimits,
    /// Per-query limits.
    pub limits: flight::Limits,
    /// Bytes of data files' ranges in-process queries keep
    /// ([`read_cache`]); 0 keeps none.
    pub read_cache: usize,
}

/// Serves until SIGTERM or Ctrl-C. `local` is the in-process engine's
/// per-query resources (`None` when queries run on a cluster); paths
/// under `warehouse` reach clients as table and partition names.
pub async fn run(
    ctx: SessionContext,
    settings: ServeSettings,
    local: Option<quota::QueryRuntime>,
    warehouse: crate::store::Location,
) -> Result<String> {
    let users = users::Users::load(&settings.users)?;
    if users.users.is_empty() && users.tokens.is_empty() {
        return Err(Error::config(format!(
            "the users file {} has no user and no token: nobody could log in (add one with `tauc-job users add NAME --users {}`)",
            settings.users.display(),
            settings.users.display()
        )));
    }
    let auth = Arc::new(auth::Auth::new(users, settings.token_ttl, settings.logins));
    if let Some(q) = &local {
        bounded::register(&ctx, q.memory_share);
    }
    let service = flight::Service::new(ctx, auth, settings.limits, local, warehouse)?;
    let mut server = Server::builder();
    if let Some((cert, key)) = &settings.tls {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| Error::config(format!("cannot read {}: {e}", p.display())))
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        server = server
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::config(format!("invalid --tls-cert/--tls-key: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| Error::config(format!("cannot listen on {}: {e}", settings.bind)))?;
    let addr = listener.local_addr()?;
    let scheme = if settings.tls.is_some() {
        "grpc+tls"
    } else {
        "grpc"
    };
    tracing::info!(%addr, tls = settings.tls.is_some(), "Flight SQL server listening");
    eprintln!("serving the warehouse over Flight SQL at {scheme}://{addr}");
    let incoming = crate::engine::runtime::local::no_delay(listener);
    server
        .add_service(FlightServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, tauc_common::process::shutdown_signal())
        .await
        .map_err(|e| Error::Server(format!("Flight SQL server failed: {e}")))?;
    Ok("stopped\n".into())
}
