//! The executor's link to its scheduler: a loopback relay that backs off.
//!
//! Ballista 55's pull loop (`execution_loop::poll_loop`, started inside
//! `start_executor_process` with no knob) retries a failed `poll_work`
//! every 50 ms, so an executor whose scheduler is down knocked on it ~20
//! times a second for as long as it was down. Ballista's executor reaches
//! its scheduler through this relay instead: each connection it opens is
//! forwarded to the scheduler, and while the scheduler refuses (or closes
//! before saying anything) the relay holds each new connection back for a
//! doubling delay, [`FIRST_DELAY`] up to [`MAX_DELAY`], before trying
//! again — the loop's calls wait instead of spinning. The first byte from
//! the scheduler resets the delay, so a scheduler that comes back is
//! reached within [`MAX_DELAY`]. Bytes pass through untouched: with TLS the
//! executor still checks the scheduler's own name (see
//! [`SchedulerLink::scheduler_host`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::time::Instant;

use tauc_jobs::error::{Error, Result};

/// The delay after the first refusal.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between two tries (and so the longest a returning
/// scheduler waits for this executor).
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// How long one try to connect may take (a host that drops packets).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running relay; dropped, it stops accepting.
pub struct SchedulerLink {
    local: SocketAddr,
    host: String,
    accept: tokio::task::JoinHandle<()>,
}

impl SchedulerLink {
    /// Listens on a free loopback port and forwards to `host:port`.
    pub async fn start(host: &str, port: u16) -> Result<SchedulerLink> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| Error::config(format!("cannot open the scheduler link: {e}")))?;
        let local = listener.local_addr()?;
        let state = Arc::new(Backoff::new(format!("{host}:{port}")));
        let accept = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(relay(conn, state.clone()));
            }
        });
        Ok(SchedulerLink {
            local,
            host: host.to_string(),
            accept,
        })
    }

    /// Where Ballista's executor connects (`127.0.0.1:port`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The scheduler's host: the name its TLS certificate is checked
    /// against, since the executor's connection goes to the loopback.
    pub fn scheduler_host(&self) -> &str {
        &self.host
    }
}

impl Drop for SchedulerLink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// When the next try may go, shared by every connection of the link.
struct Backoff {
    upstream: String,
    /// The earliest time of the next try, and the delay that set it.
    next: std::sync::Mutex<(Instant, Duration)>,
    /// Held while a connection waits its turn and tries, so tries are
    /// spaced even when several connections arrive at once.
    turn: Mutex<()>,
}

impl Backoff {
    fn new(upstream: String) -> Backoff {
        Backoff {
            upstream,
            next: std::sync::Mutex::new((Instant::now(), Duration::ZERO)),
            turn: Mutex::new(()),
        }
    }

    fn next(&self) -> std::sync::MutexGuard<'_, (Instant, Duration)> {
        self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for this connection's turn, then connects to the scheduler.
    async fn connect(&self) -> Option<TcpStream> {
        let _turn = self.turn.lock().await;
        let at = self.next().0;
        tokio::time::sleep_until(at).await;
        let tried = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.upstream)).await;
        match tried {
            Ok(Ok(stream)) => Some(stream),
            _ => {
                self.failed();
                None
            }
        }
    }

    /// The scheduler refused or said nothing: the next try waits longer.
    fn failed(&self) {
        let mut next = self.next();
        if next.1.is_zero() {
            tracing::info!(scheduler = %self.upstream, "scheduler unreachable; retrying with back-off up to {MAX_DELAY:?}");
        }
        let delay = (next.1 * 2).clamp(FIRST_DELAY, MAX_DELAY);
        *next = (Instant::now() + delay, delay);
    }

    /// The scheduler spoke: the next try goes at once.
    fn answered(&self) {
        let mut next = self.next();
        if !next.1.is_zero() {
            tracing::info!(scheduler = %self.upstream, "scheduler reachable again");
        }
        *next = (Instant::now(), Duration::ZERO);
    }
}

/// Forwards one connection both ways until either side closes.
async fn relay(mut down: TcpStream, state: Arc<Backoff>) {
    let Some(up) = state.connect().await else {
        return; // dropping `down` fails the executor's call at once
    };
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (mut up_read, mut up_write) = up.into_split();
    let (mut down_read, mut down_write) = down.split();
    let to_scheduler = async {
        let _ = tokio::io::copy(&mut down_read, &mut up_write).await;
        let _ = up_write.shutdown().await;
    };
    let from_scheduler = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut heard = false;
        loop {
            match up_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !heard {
                        heard = true;
                        state.answered();
                    }
                    if down_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        if !heard {
            state.failed();
        }
        let _ = down_write.shutdown().await;
    };
    // either side closing ends the link: a half-open relay would keep the
    // executor's connection looking alive after its scheduler went away
    tokio::select! {
        () = to_scheduler => {}
        () = from_scheduler => {}
    }
}
