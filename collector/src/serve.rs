//! Running the two services: wiring, signals and clean shutdown.
//!
//! On SIGTERM (or Ctrl-C) the collector stops accepting, lets the
//! requests in hand finish (their events are fsynced before they are
//! answered) for at most [`CONNECTION_GRACE`], then gives the shipper
//! [`DRAIN`] to send what it can; whatever is left stays in the spool for
//! the next start. So a SIGTERM ends the collector within about 15 s
//! whatever Kafka or the clients do. The uploader writes out and commits
//! the batches in hand, then leaves its group.
//!
//! The collector runs its own HTTP/1 accept loop rather than
//! `axum::serve`, which gives hyper no timer: without one a client that
//! sends half a request header holds its connection (and a graceful
//! shutdown) for as long as it likes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{CollectorSettings, UploaderSettings};
use crate::error::{Error, Result};
use crate::intake::{self, Intake, Limits};
use crate::kafka;
use crate::metrics::{CollectorMetrics, UploaderMetrics};
use crate::shipper::Shipper;
use crate::spool::Spool;
use crate::uploader::Uploader;

/// How long the shipper may keep sending after SIGTERM.
pub const DRAIN: Duration = Duration::from_secs(10);

/// How long requests in hand may take to finish after SIGTERM; then their
/// connections are closed (a request whose events were already handed to
/// the spool is still written; its client, seeing no answer, retries).
pub const CONNECTION_GRACE: Duration = Duration::from_secs(5);

/// Longest a connection may take to send a request's header, and longest
/// an idle keep-alive connection waits for the next one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the collector until SIGTERM.
pub async fn run_collector(s: CollectorSettings) -> Result<()> {
    let (spool, writer) = Spool::open(&s.spool)?;
    let metrics = Arc::new(CollectorMetrics::default());
    let listener = TcpListener::bind(s.bind)
        .await
        .map_err(|e| Error::config(format!("cannot listen on --bind {}: {e}", s.bind)))?;
    // A missing topic is created (development brokers); production topics
    // are provisioned with the replication the operator wants.
    let (conn, topic, parts) = (s.kafka.clone(), s.topic.clone(), s.topic_partitions);
    tokio::spawn(async move {
        if let Err(e) = kafka::ensure_topic(&conn, &topic, parts).await {
            tracing::warn!(error = %e, "could not check the topic; spooling until Kafka answers");
        }
    });
    let (stop_tx, stop) = watch::channel(false);
    let shipping = Shipper::spawn(
        spool.clone(),
        s.kafka.clone(),
        s.topic.clone(),
        metrics.clone(),
        stop,
        DRAIN,
    )?;
    let app = intake::router(Intake {
        spool,
        origins: Arc::new(s.origins.iter().cloned().collect::<HashSet<_>>()),
        limits: Limits::default(),
        metrics,
    });
    tracing::info!(bind = %s.bind, topic = s.topic, spool = %s.spool.dir.display(), "collector listening");
    serve_http1(listener, app, terminated()).await;
    tracing::info!("stopped accepting; shipping what the spool holds");
    let _ = stop_tx.send(true);
    let shipped = tokio::task::spawn_blocking(move || shipping.join()).await;
    // The router (and with it the last spool handle) is gone: the writer
    // thread has synced and ends.
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    match shipped {
        Ok(Ok(r)) => r,
        _ => Err(Error::Task("the shipper thread failed".into())),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves: HTTP/1.1 with
/// keep-alive, [`HEADER_READ_TIMEOUT`] per request header (and per idle
/// wait between requests). On shutdown it stops accepting, closes idle
/// connections, lets the others finish their request for up to
/// [`CONNECTION_GRACE`] and then drops them.
async fn serve_http1(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let (closing_tx, closing) = watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // out of file descriptors and the like: pause, go on
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(app.clone());
                let mut closing = closing.clone();
                conns.spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => return finished(r),
                        _ = closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
                    }
                    finished(conn.await);
                });
            }
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let open = conns.len();
    let all_done = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(CONNECTION_GRACE, all_done)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = conns.len(),
            of = open,
            "closing connections still open after the shutdown grace"
        );
        conns.shutdown().await;
    }
}

/// Logs why a connection ended, when it was not a clean close.
fn finished(r: std::result::Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "connection ended");
    }
}

/// Runs the uploader until SIGTERM.
pub async fn run_uploader(s: UploaderSettings) -> Result<()> {
    let metrics = Arc::new(UploaderMetrics::default());
    let listener = TcpListener::bind(s.metrics_bind).await.map_err(|e| {
        Error::config(format!(
            "cannot listen on --metrics-bind {}: {e}",
            s.metrics_bind
        ))
    })?;
    let m = metrics.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(move || async move { m.render() }));
    let (stop_tx, stop) = watch::channel(false);
    let mut server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.changed().await;
            })
            .await
    });
    let config = s.uploader;
    tracing::info!(topic = config.topic, group = config.group, raw_root = %config.raw_root.url(), "uploader starting");
    let uploader = Uploader::new(config, metrics)?;
    let run = tokio::spawn(uploader.run(stop));
    terminated().await;
    let _ = stop_tx.send(true);
    let result = run.await;
    let _ = server.await;
    match result {
        Ok(r) => r,
        Err(e) => Err(Error::Task(format!("the uploader task failed: {e}"))),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
