//! What the Criterion benches share, built outside the timed loops: sample
//! data written by `tauc-job sample` into a temporary directory, the jobs
//! run through the same command line a user types, and a local S3 server.
//!
//! Sizes come from the environment (not `TAUC_*`: tauc refuses unknown
//! `TAUC_` variables) so that one bench binary serves a quick
//! look and a real measurement: `BENCH_EVENTS` (events per region and
//! day, default 100 000) and `BENCH_LARGE=1` (adds the 200 000-file
//! listing case). See `benches/README.md`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tauc_jobs::cli::{self, Cli};

/// The collection date every bench starts from.
pub const DATE: &str = "2024-06-18";

/// Events per region and day: `BENCH_EVENTS`, default 100 000.
pub fn events_per_day() -> u32 {
    std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Whether the slow, large cases run (`BENCH_LARGE=1`).
pub fn large() -> bool {
    std::env::var("BENCH_LARGE").is_ok_and(|v| v == "1")
}

/// The async runtime the tauc binaries use.
pub fn runtime() -> tokio::runtime::Runtime {
    tauc_common::process::runtime().expect("tokio runtime")
}

/// Runs one `tauc-job` command line (without the program name) in this
/// process, as the binary would; returns what it prints.
pub fn tauc(rt: &tokio::runtime::Runtime, args: &[&str]) -> Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("tauc-job").chain(args.iter().copied()))?;
    rt.block_on(cli::run(cli))
        .map_err(|e| anyhow::anyhow!("tauc-job {}: {e}", args.join(" ")))
}

/// A work directory with raw sample data under `raw/` and the warehouse
/// (with its dim tables) under `wh/`; removed on drop.
pub struct SampleDir {
    dir: tempfile::TempDir,
}

impl SampleDir {
    /// Writes `days` days of `events` events a day for `region`, in
    /// `lines_per_file`-line files.
    pub fn new(
        rt: &tokio::runtime::Runtime,
        region: &str,
        days: u32,
        events: u32,
        lines_per_file: usize,
    ) -> Result<SampleDir> {
        let dir = tempfile::tempdir()?;
        let s = SampleDir { dir };
        tauc(
            rt,
            &[
                "sample",
                "--date",
                DATE,
                "--days",
                &days.to_string(),
                "--events-per-day",
                &events.to_string(),
                "--regions",
                region,
                "--lines-per-file",
                &lines_per_file.to_string(),
                "--raw-root",
                &s.raw(),
                "--warehouse",
                &s.warehouse(),
            ],
        )?;
        Ok(s)
    }

    /// The work directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The raw root.
    pub fn raw(&self) -> String {
        self.dir.path().join("raw").display().to_string()
    }

    /// The warehouse root.
    pub fn warehouse(&self) -> String {
        self.dir.path().join("wh").display().to_string()
    }

    /// Every raw message file, in name order.
    pub fn raw_files(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        walk(&self.dir.path().join("raw"), &mut out)?;
        out.retain(|p| p.extension().is_some_and(|e| e == "txt"));
        out.sort();
        Ok(out)
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// A local `s3s-fs` serving `root` on a free port of 127.0.0.1 (from
/// `scripts/install-test-tools`); stopped on drop.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// Access key of the bench server.
pub const ACCESS_KEY: &str = "tauc-bench";
/// Secret key of the bench server (a local test credential).
pub const SECRET_KEY: &str = "tauc-bench-secret";

impl S3Server {
    /// Starts the server over `root` (its first-level folders are buckets)
    /// and exports the credentials for the tauc S3 client. `None` when the
    /// binary is not installed.
    pub fn start(root: &Path) -> Result<Option<S3Server>> {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/s3s-fs");
        if !bin.exists() {
            return Ok(None);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("s3s-fs did not open port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: set before the bench starts any thread that reads the
        // environment (the runtime's workers only read it in tauc calls).
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
            std::env::set_var("AWS_REGION", "us-east-1");
        }
        Ok(Some(S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
