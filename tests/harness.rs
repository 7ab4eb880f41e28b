//! The test harness: a real S3-compatible server (`s3s-fs`) per test with a
//! fresh bucket, the real `tauc-*` binaries, and readers that follow the
//! warehouse's manifests. Every process gets a log file; a failure prints
//! the command, its output and the log paths.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tauc_jobs::engine::session::Engine;
use tauc_jobs::store::{Location, S3Options};
use tauc_jobs::warehouse::commit::{self, Manifest, PartitionRef};
use tauc_jobs::warehouse::tables::Table;

/// Access key the test server accepts.
pub const ACCESS_KEY: &str = "tauc-test";
/// Secret key the test server accepts.
pub const SECRET_KEY: &str = "tauc-test-secret";

/// The directory the workspace's binaries are built into.
pub fn bin_dir() -> PathBuf {
    // target/debug/deps/integration-xxxx -> target/debug
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of a workspace binary; fails with a hint when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (cargo build --bins), as scripts/test does",
        p.display()
    );
    p
}

/// The `s3s-fs` binary: `S3S_FS_BIN`, else `.tools/bin/s3s-fs` in the
/// workspace (installed by `scripts/install-test-tools`).
pub fn s3s_bin() -> PathBuf {
    if let Ok(p) = std::env::var("S3S_FS_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let p = root.join(".tools/bin/s3s-fs");
    assert!(
        p.exists(),
        "s3s-fs not found at {}: run scripts/install-test-tools (or set S3S_FS_BIN)",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1, never one handed out before in this test
/// binary: the kernel may give the same ephemeral port to two binds in a
/// row once the first listener is closed, and two servers of one test (an
/// executor's Flight and gRPC ports) then collide.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The body of a plain `GET path` on 127.0.0.1:port, which must answer 200.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// Waits until `127.0.0.1:port` accepts connections.
pub fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} did not listen on 127.0.0.1:{port} within 60 s; log: {}\n{}",
        log.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    /// The child.
    pub child: Child,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdout(out).stderr(err).stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc { child }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s3s-fs` on 127.0.0.1:`port` over `{dir}/s3`, logging to
/// `{dir}/s3s-fs.log` (appended: a restart keeps the first run's lines).
fn s3_server(dir: &Path, port: u16) -> Proc {
    let mut cmd = Command::new(s3s_bin());
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(dir.join("s3"));
    let log = dir.join("s3s-fs.log");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    let err = out.try_clone().expect("log file");
    cmd.stdout(out).stderr(err).stdin(Stdio::null());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    wait_for_port(port, "s3s-fs", &log);
    Proc { child }
}

/// One test's world: a temp dir, an S3 server with a fresh bucket, and an
/// engine to reach it.
pub struct World {
    /// Temp dir for the server's data, logs and working directory.
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// Engine (object stores) pointed at the server.
    pub engine: Engine,
    server: Proc,
}

impl World {
    /// Starts a server and creates `bucket`.
    /// `KEEP_TEST_DIRS=1` keeps its directory (logs, warehouse) for a
    /// look after the test.
    pub fn new(bucket: &str) -> World {
        let mut dir = tempfile::tempdir().expect("temp dir");
        if std::env::var_os("KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("{bucket}: keeping {}", dir.path().display());
        }
        let root = dir.path().join("s3");
        std::fs::create_dir_all(root.join(bucket)).expect("bucket dir");
        let port = free_port();
        let server = s3_server(dir.path(), port);
        let endpoint = format!("http://127.0.0.1:{port}");
        // SAFETY: object_store reads AWS_* from the environment; every test
        // sets the same credentials, so a concurrent read sees them either way.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
            std::env::set_var("AWS_REGION", "us-east-1");
        }
        let engine = Engine::new(S3Options {
            endpoint: Some(endpoint.clone()),
            allow_http: Some(true),
            retry_timeout_secs: Some(5),
            ..Default::default()
        })
        .expect("engine");
        World {
            dir,
            endpoint,
            bucket: bucket.to_string(),
            engine,
            server,
        }
    }

    /// Stops the S3 server (SIGKILL): every request fails until
    /// [`World::start_s3`].
    pub fn stop_s3(&mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
    }

    /// Starts the S3 server again on the same port and data.
    pub fn start_s3(&mut self) {
        let port: u16 = self.endpoint.rsplit(':').next().unwrap().parse().unwrap();
        self.server = s3_server(self.dir.path(), port);
    }

    /// `s3://bucket/raw`.
    pub fn raw_root(&self) -> String {
        format!("s3://{}/raw", self.bucket)
    }

    /// `s3://bucket/wh`.
    pub fn warehouse(&self) -> String {
        format!("s3://{}/wh", self.bucket)
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        self.engine
            .registry
            .for_location(&Location::parse(&self.warehouse()).unwrap())
            .unwrap()
    }

    /// Writes an object (a key within the bucket).
    pub async fn put(&self, key: &str, body: impl Into<Bytes>) {
        self.store()
            .put(&key.into(), PutPayload::from_bytes(body.into()))
            .await
            .expect("put");
    }

    /// Reads an object (a key within the bucket).
    pub async fn get(&self, key: &str) -> Bytes {
        self.store()
            .get(&key.into())
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body")
    }

    /// Deletes an object (a key within the bucket).
    pub async fn delete(&self, key: &str) {
        self.store().delete(&key.into()).await.expect("delete");
    }

    /// Lists every key under a prefix.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let mut v: Vec<String> = self
            .store()
            .list(Some(&prefix.into()))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list");
        v.sort();
        v
    }

    /// Asserts that a committed partition's directory holds exactly its
    /// manifest's files and `_SUCCESS` (executors write one file per task,
    /// so a partition may have several); returns the manifest.
    pub async fn assert_only_listed_files(&self, table: Table, dt: &str, region: &str) -> Manifest {
        let dir = format!("wh/{}/dt={dt}/region={region}", table.path());
        let (m, _) = self
            .read(table, dt, region)
            .await
            .expect("committed partition");
        // the data files, and the replaced ones kept for running queries
        let mut expected: Vec<String> = m
            .files
            .iter()
            .chain(m.replaced.iter().map(|r| &r.file))
            .map(|f| format!("{dir}/{f}"))
            .collect();
        expected.push(format!("{dir}/_SUCCESS"));
        expected.sort();
        assert_eq!(
            self.keys(&dir).await,
            expected,
            "{dir} holds unlisted files"
        );
        m
    }

    /// The common flags every `tauc-job` call of this world takes.
    pub fn store_flags(&self) -> Vec<String> {
        vec![
            "--raw-root".into(),
            self.raw_root(),
            "--warehouse".into(),
            self.warehouse(),
            "--s3-endpoint".into(),
            self.endpoint.clone(),
            "--s3-allow-http".into(),
        ]
    }

    /// Runs `tauc-job` with `args` (plus the store flags when `with_store`)
    /// in the temp dir.
    pub fn tauc_job(&self, args: &[&str], with_store: bool) -> Run {
        let mut cmd = Command::new(bin("tauc-job"));
        cmd.args(args);
        if with_store {
            cmd.args(self.store_flags());
        }
        run(cmd, self.dir.path())
    }

    /// `tauc-job sample` of 2024-06-18 for aps1: `events` clean events in
    /// ~50-line files, plus the DIM tables.
    pub fn sample_day(&self, events: &str) {
        self.tauc_job(
            &[
                "sample",
                "--date",
                "2024-06-18",
                "--events-per-day",
                events,
                "--regions",
                "aps1",
            ],
            true,
        )
        .ok();
    }

    /// Runs `tauc-job submit layering` with `args` and the store flags.
    pub fn submit(&self, args: &[&str]) -> Run {
        let mut all = vec!["submit", "layering"];
        all.extend_from_slice(args);
        self.tauc_job(&all, true)
    }

    /// Reads a committed partition through its manifest; `None` when the
    /// partition does not exist.
    pub async fn read(
        &self,
        table: Table,
        dt: &str,
        region: &str,
    ) -> Option<(Manifest, RecordBatch)> {
        let wh = Location::parse(&self.warehouse()).unwrap();
        let p = PartitionRef {
            dt: NaiveDate::parse_from_str(dt, "%Y-%m-%d").unwrap(),
            region: region.into(),
        };
        let store = self.store();
        let (manifest, _) = commit::committed_files(store.as_ref(), &table.location(&wh), &p)
            .await
            .expect("read manifest")?;
        let dir = p.location(&table.location(&wh));
        let mut batches = Vec::new();
        for f in &manifest.files {
            let key = format!("{}/{f}", dir.prefix);
            let bytes = store
                .get(&key.as_str().into())
                .await
                .expect("get")
                .bytes()
                .await
                .unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap();
            for b in reader {
                batches.push(b.unwrap());
            }
        }
        let batch = datafusion::arrow::compute::concat_batches(&table.schema(), &batches).unwrap();
        assert_eq!(
            batch.num_rows() as u64,
            manifest.rows,
            "manifest rows of {table:?} {dt} {region}"
        );
        Some((manifest, batch))
    }

    /// Reads a partition that must exist.
    pub async fn rows(&self, table: Table, dt: &str, region: &str) -> RecordBatch {
        self.read(table, dt, region)
            .await
            .unwrap_or_else(|| panic!("{table:?} dt={dt} region={region} was not committed"))
            .1
    }
}

/// A finished command.
pub struct Run {
    /// What ran.
    pub cmd: String,
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Run {
    /// Asserts exit 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self}");
        &self.stdout
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nexit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs a command to completion in `dir`, without any `TAUC_*` variables
/// of the caller's environment.
pub fn run(mut cmd: Command, dir: &Path) -> Run {
    for (k, _) in std::env::vars() {
        if k.starts_with("TAUC_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir).env("RUST_LOG", "warn");
    let text = format!("{cmd:?}");
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {text}: {e}"));
    Run {
        cmd: text,
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A scheduler and `n` executors on free ports, stopped on drop.
pub struct Cluster {
    /// `df://127.0.0.1:port`.
    pub url: String,
    /// Each executor's Flight port.
    pub flight_ports: Vec<u16>,
    /// Each executor's health port (`/healthz`, `/readyz`, `/metrics`).
    pub health_ports: Vec<u16>,
    /// The scheduler's command line and log, to start it again.
    scheduler: (Vec<String>, Vec<(String, String)>, PathBuf),
    _procs: Vec<Proc>,
}

impl Cluster {
    /// Starts the cluster and waits until every executor is ready.
    pub fn start(world: &World, executors: usize) -> Cluster {
        Cluster::start_with(world, executors, &[], &[])
    }

    /// SIGKILLs executor `i` (no drain, no clean-up).
    pub fn kill_executor(&mut self, i: usize) {
        let p = &mut self._procs[1 + i];
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    /// SIGKILLs the scheduler.
    pub fn kill_scheduler(&mut self) {
        let p = &mut self._procs[0];
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    /// Starts the scheduler again on its port (after [`Cluster::kill_scheduler`]).
    pub fn restart_scheduler(&mut self) {
        let (args, env, log) = &self.scheduler;
        let mut cmd = Command::new(bin("tauc-scheduler"));
        cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
        self._procs[0] = Proc::spawn(cmd, log.clone());
        let port = self.url.rsplit(':').next().unwrap().parse().unwrap();
        wait_for_port(port, "tauc-scheduler", log);
    }

    /// [`Cluster::start`] with extra scheduler and executor flags.
    pub fn start_with(
        world: &World,
        executors: usize,
        scheduler_args: &[&str],
        executor_args: &[&str],
    ) -> Cluster {
        let port = free_port();
        let mut procs = Vec::new();
        let vars: Vec<(String, String)> = [
            ("TAUC_S3_ENDPOINT", world.endpoint.as_str()),
            ("TAUC_S3_ALLOW_HTTP", "true"),
            ("RUST_LOG", "info"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = |cmd: &mut Command| {
            cmd.envs(vars.iter().map(|(k, v)| (k, v)));
        };
        let args: Vec<String> = ["--bind", &format!("127.0.0.1:{port}")]
            .iter()
            .chain(&["--external-host", "127.0.0.1"])
            .chain(scheduler_args)
            .map(|a| a.to_string())
            .collect();
        let mut cmd = Command::new(bin("tauc-scheduler"));
        cmd.args(&args);
        env(&mut cmd);
        let log = world.dir.path().join("scheduler.log");
        procs.push(Proc::spawn(cmd, log.clone()));
        wait_for_port(port, "tauc-scheduler", &log);
        let scheduler = (args, vars.clone(), log);
        let mut health = Vec::new();
        let mut flight_ports = Vec::new();
        for i in 0..executors {
            let (p1, p2, p3) = (free_port(), free_port(), free_port());
            flight_ports.push(p1);
            let mut cmd = Command::new(bin("tauc-executor"));
            cmd.args([
                "--scheduler-host",
                "127.0.0.1",
                "--scheduler-port",
                &port.to_string(),
            ])
            .args(["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1"])
            .args(["--port", &p1.to_string(), "--grpc-port", &p2.to_string()])
            .args(["--health-port", &p3.to_string(), "--vcores", "2"])
            .arg("--work-dir")
            .arg(world.dir.path().join(format!("executor-{i}")))
            .args(executor_args);
            std::fs::create_dir_all(world.dir.path().join(format!("executor-{i}"))).unwrap();
            env(&mut cmd);
            let log = world.dir.path().join(format!("executor-{i}.log"));
            procs.push(Proc::spawn(cmd, log.clone()));
            health.push((p3, log));
        }
        for (p, log) in &health {
            wait_for_port(*p, "tauc-executor health", log);
            wait_ready(*p, log);
        }
        Cluster {
            url: format!("df://127.0.0.1:{port}"),
            flight_ports,
            health_ports: health.iter().map(|(p, _)| *p).collect(),
            scheduler,
            _procs: procs,
        }
    }
}

/// Polls an executor's `/readyz` until it answers 200 (registered with the
/// scheduler).
pub fn wait_ready(port: u16, log: &Path) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("executor not ready within 60 s; log: {}", log.display());
}

/// A column downcast to its array type; panics naming the column.
fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    c.as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} has type {}", c.data_type()))
}

/// A string column as `Vec<Option<String>>`.
pub fn strs(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    col::<StringArray>(b, name)
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

/// An Int64 column.
pub fn i64s(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    col::<Int64Array>(b, name).iter().collect()
}

/// An Int32 column.
pub fn i32s(b: &RecordBatch, name: &str) -> Vec<Option<i32>> {
    col::<Int32Array>(b, name).iter().collect()
}

/// A Float64 column.
pub fn f64s(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    col::<Float64Array>(b, name).iter().collect()
}

/// A Boolean column.
pub fn bools(b: &RecordBatch, name: &str) -> Vec<Option<bool>> {
    col::<BooleanArray>(b, name).iter().collect()
}

/// A millisecond timestamp column as epoch ms.
pub fn ts(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    col::<TimestampMillisecondArray>(b, name).iter().collect()
}

/// Index of the row whose `event_id` is `id`.
pub fn row_of(b: &RecordBatch, id: &str) -> usize {
    strs(b, "event_id")
        .iter()
        .position(|e| e.as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no row with event_id {id}"))
}

/// Every row of a batch rendered as text, sorted: an order-free
/// comparison of two tables' contents.
pub fn render_sorted(b: &RecordBatch, skip: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = (0..b.num_rows())
        .map(|i| {
            b.schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| !skip.contains(&f.name().as_str()))
                .map(|(c, f)| {
                    let col = b.column(c);
                    let v =
                        datafusion::arrow::util::display::array_value_to_string(col, i).unwrap();
                    format!(
                        "{}={}",
                        f.name(),
                        if col.is_null(i) { "∅".into() } else { v }
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    rows.sort();
    rows
}

/// A test CA and one certificate it signed, for `localhost` and
/// `127.0.0.1`, usable by servers and clients; written as PEM files.
pub struct TestCa {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The signed certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The key's PEM text (to check that no log shows it).
    pub key_pem: String,
}

impl TestCa {
    /// Writes `{name}-ca.pem`, `{name}-cert.pem`, `{name}-key.pem` in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, format!("{name} node"));
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf_key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let file = |what: &str, text: &str| {
            let p = dir.join(format!("{name}-{what}.pem"));
            std::fs::write(&p, text).unwrap();
            p
        };
        let key_pem = leaf_key.serialize_pem();
        TestCa {
            ca: file("ca", &issuer.pem()),
            cert: file("cert", &cert.pem()),
            key: file("key", &key_pem),
            key_pem,
        }
    }

    /// `--cluster-ca … --cluster-cert … --cluster-key …`.
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (flag, p) in [
            ("--cluster-ca", &self.ca),
            ("--cluster-cert", &self.cert),
            ("--cluster-key", &self.key),
        ] {
            v.push(flag.to_string());
            v.push(p.to_str().unwrap().to_string());
        }
        v
    }
}

/// A usage or configuration refusal: exit 2, `needle` on stderr, no panic.
pub fn assert_refused(r: &Run, needle: &str) {
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains(needle),
        "stderr should say {needle:?}\n{r}"
    );
    assert!(!r.stderr.contains("panicked"), "{r}");
}
