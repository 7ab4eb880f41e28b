//! What every tauc binary's `main` does around its work: the async
//! runtime it runs on, the stop signals it answers, and how its outcome
//! becomes an exit code.

use crate::error::ExitStatus;

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The async runtime every tauc binary runs on: multi-threaded, with
/// 8 MiB thread stacks. The DWD plan used to need 32 MiB (a `UNION ALL` of
/// one table per ODS partition, planned and (de)serialised recursively);
/// with ODS read as one table, 8 MiB — the usual main-thread size — is
/// enough, while tokio's default 2 MiB still overflows on the DWD query in a
/// debug build (deep expression trees in the SQL planner).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 * 1024 * 1024)
        .build()
}

/// Runs a binary's main future on [`runtime`] and maps the outcome to an
/// exit code: what it prints on success goes to stdout; an error is printed
/// as `{name}: {error}` and exits 2 (usage/config) or 1 (failure).
pub fn exit_with<F, E>(name: &str, main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = std::result::Result<String, E>>,
    E: std::fmt::Display + ExitStatus,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(main) {
        Ok(out) => {
            print!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
