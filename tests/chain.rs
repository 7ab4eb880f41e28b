//! Harness of the collection-chain tests: a real Kafka-compatible broker
//! (`tansu`, in memory), the real `tauc-collector` and `tauc-uploader`
//! processes, a plain HTTP/1.1 client, and a Kafka reader built on
//! librdkafka (the client a user's own tools would use).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::harness::{Proc, bin, free_port, wait_for_port};

/// The workspace's `.tools/` (filled by `scripts/install-test-tools`).
pub fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join(".tools")
}

/// The workspace's `.tools/bin/{name}`.
pub fn tool(name: &str) -> PathBuf {
    let p = tools_dir().join("bin").join(name);
    assert!(
        p.exists(),
        "{} not found: run scripts/install-test-tools",
        p.display()
    );
    p
}

/// A tansu broker on a fixed port; stop and start it again at will (its
/// memory storage starts empty each time, like a new cluster).
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    starts: usize,
    proc: Option<Proc>,
}

impl Broker {
    /// Starts a broker whose log goes under `dir`.
    pub fn start(dir: &Path) -> Broker {
        let mut b = Broker {
            port: free_port(),
            dir: dir.to_path_buf(),
            starts: 0,
            proc: None,
        };
        b.resume();
        b
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker.
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// SIGSTOP: the broker stops answering but keeps its state.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn unpause(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.proc.as_ref().expect("running").child.id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Starts it again on the same port.
    pub fn resume(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("tansu-{}.log", self.starts));
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut cmd = Command::new(tool("tansu"));
        cmd.args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url]);
        let proc = Proc::spawn(cmd, log.clone());
        wait_for_port(self.port, "tansu", &log);
        self.proc = Some(proc);
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .create()
            .expect("admin client");
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        // its own thread and runtime: callers may be inside a runtime
        let res = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(admin.create_topics([&new], &AdminOptions::new()))
            })
            .join()
            .unwrap()
        })
        .expect("create topic");
        for r in res {
            match r {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err(e) => panic!("create topic {topic}: {e:?}"),
            }
        }
    }

    /// Produces `(key, timestamp, value)` records to one partition with an
    /// idempotent producer and waits for every acknowledgement.
    pub fn produce(&self, topic: &str, partition: i32, records: &[(String, i64, String)]) {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // records batched as the collector's are: the uploader's
            // commits fall inside batches, where it must resume
            .set("linger.ms", "50")
            .create()
            .expect("producer");
        for (k, ts, v) in records {
            let mut rec = BaseRecord::to(topic)
                .key(k)
                .payload(v)
                .timestamp(*ts)
                .partition(partition);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        p.poll(Duration::from_millis(20));
                    }
                }
            }
        }
        p.flush(Duration::from_secs(30))
            .expect("all records acknowledged");
    }

    /// Every record of `topic` now in the broker, by partition and offset,
    /// waiting up to `within` for at least `at_least` of them.
    pub fn records(&self, topic: &str, at_least: usize, within: Duration) -> Vec<Rec> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .set("group.id", format!("test-reader-{}", uuid()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let deadline = Instant::now() + within;
        let parts = loop {
            if let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5))
                && let Some(t) = md.topics().first()
                && !t.partitions().is_empty()
            {
                break t.partitions().len() as i32;
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic} did not appear on {}",
                self.addr()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..parts {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    quiet_since = Instant::now();
                    out.push(Rec {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        ts: m.timestamp().to_millis().unwrap_or(-1),
                        value: String::from_utf8_lossy(m.payload().unwrap_or_default())
                            .into_owned(),
                    });
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None if out.len() >= at_least && quiet_since.elapsed() > Duration::from_secs(1) => {
                    break;
                }
                None => {}
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out
    }
}

/// One Kafka record as the test reads it.
#[derive(Debug, Clone)]
pub struct Rec {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<String>,
    /// Record timestamp, epoch ms.
    pub ts: i64,
    /// Value.
    pub value: String,
}

/// Prints the tails of every `*.log` under a directory when the test
/// fails, so a red run shows what the processes said.
pub struct LogsOnFailure(pub PathBuf);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.0)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "---- {} (last {} lines)\n{}",
                log.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// A random id for groups and events.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A `tauc-collector` process.
pub struct Collector {
    /// HTTP port on 127.0.0.1.
    pub port: u16,
    /// Its spool directory.
    pub spool: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    starts: usize,
    proc: Option<Proc>,
}

/// The page origin the tests' collectors allow.
pub const ALLOWED: &str = "http://127.0.0.1:1";

impl Collector {
    /// Starts a collector for region aps1 of env uat, producing to
    /// `brokers`, with `extra` flags.
    pub fn start(dir: &Path, brokers: &str, extra: &[&str]) -> Collector {
        let mut c = Collector::prepare(dir, brokers, extra);
        c.resume();
        c
    }

    /// A collector with its port and flags chosen but not started
    /// (`resume` starts it): a collector that is down.
    pub fn prepare(dir: &Path, brokers: &str, extra: &[&str]) -> Collector {
        let mut c = Collector {
            port: free_port(),
            spool: dir.join("spool"),
            args: extra.iter().map(|s| s.to_string()).collect(),
            dir: dir.to_path_buf(),
            starts: 0,
            proc: None,
        };
        c.args.extend(["--kafka-brokers".into(), brokers.into()]);
        c
    }

    /// Starts it again with the same spool and port.
    pub fn resume(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("collector-{}.log", self.starts));
        let mut cmd = Command::new(bin("tauc-collector"));
        cmd.args(["--bind", &format!("127.0.0.1:{}", self.port)])
            .args(["--env", "uat", "--region", "aps1"])
            .arg("--spool-dir")
            .arg(&self.spool)
            .args(["--allowed-origin", ALLOWED])
            .args(&self.args)
            .current_dir(&self.dir)
            .env("RUST_LOG", "info");
        let proc = Proc::spawn(cmd, log.clone());
        wait_for_port(self.port, "tauc-collector", &log);
        self.proc = Some(proc);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// SIGTERM, then waits for the exit; returns its status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut p = self.proc.take()?;
        terminate(&mut p)
    }

    /// SIGTERM, then waits up to `within` for the exit: its code and how
    /// long it took, or `None` (and a SIGKILL) when it was still running.
    pub fn terminate_within(&mut self, within: Duration) -> Option<(Option<i32>, Duration)> {
        let mut p = self.proc.take()?;
        let pid = p.child.id().to_string();
        let start = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        while start.elapsed() < within {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some((status.code(), start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `POST /v1/events`.
    pub fn post(&self, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        http(self.port, "POST", "/v1/events", headers, body)
    }

    /// Posts JSON text, waiting for a 204.
    pub fn post_json(&self, body: &str) {
        let r = self.post(&[("Content-Type", "application/json")], body.as_bytes());
        assert_eq!(r.status, 204, "post: {r:?}");
    }

    /// Bytes in the spool's segments.
    pub fn spool_bytes(&self) -> u64 {
        std::fs::read_dir(&self.spool)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// SIGTERM a process and wait up to 30 s for it to exit.
pub fn terminate(p: &mut Proc) -> Option<i32> {
    let pid = p.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = p.child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("process {pid} did not exit within 30 s of SIGTERM");
}

/// A `tauc-uploader` process.
pub struct Uploader {
    /// Metrics port.
    pub metrics_port: u16,
    /// The process (None once killed).
    pub proc: Option<Proc>,
    /// Its log.
    pub log: PathBuf,
}

impl Uploader {
    /// Starts an uploader of region aps1 (env uat) into `raw_root`, with
    /// `extra` flags and `env` variables; `name` tells its log apart.
    pub fn start(
        dir: &Path,
        name: &str,
        brokers: &str,
        raw_root: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Uploader {
        Uploader::start_on(dir, name, brokers, raw_root, extra, env, free_port())
    }

    /// [`Uploader::start`] with its metrics on `metrics_port`: a restart of
    /// the same uploader (its name in the group is host and metrics port).
    pub fn start_on(
        dir: &Path,
        name: &str,
        brokers: &str,
        raw_root: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        metrics_port: u16,
    ) -> Uploader {
        let log = dir.join(format!("uploader-{name}.log"));
        let mut cmd = Command::new(bin("tauc-uploader"));
        cmd.args([
            "--kafka-brokers",
            brokers,
            "--env",
            "uat",
            "--region",
            "aps1",
        ])
        .args(["--raw-root", raw_root])
        .args(["--metrics-bind", &format!("127.0.0.1:{metrics_port}")])
        .args(extra)
        .current_dir(dir)
        .env(
            "RUST_LOG",
            std::env::var("TEST_UPLOADER_LOG").unwrap_or("info".into()),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(cmd, log.clone());
        Uploader {
            metrics_port,
            proc: Some(proc),
            log,
        }
    }

    /// Starts an uploader into the world's S3 raw root, objects cut after
    /// 1 s of waiting.
    pub fn start_s3(world: &crate::harness::World, name: &str, brokers: &str) -> Uploader {
        let flags = [
            "--max-wait",
            "1s",
            "--s3-endpoint",
            &world.endpoint,
            "--s3-allow-http",
        ];
        Uploader::start(
            world.dir.path(),
            name,
            brokers,
            &world.raw_root(),
            &flags,
            &[],
        )
    }

    /// Waits up to `within` for the process to exit by itself (a fault
    /// switch); its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let p = self.proc.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = p.child.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "uploader did not exit within {within:?}; log {}:\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An HTTP reply.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
}

impl Reply {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection to 127.0.0.1:port.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until `check` holds, polling; panics with `what` after `within`.
pub fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// Every raw object under a local raw root, `(relative key, body)`, sorted.
pub fn local_objects(root: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if !rel.contains("/.") && !rel.starts_with('.') {
                    out.push((rel, std::fs::read_to_string(&p).unwrap_or_default()));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A tiny HTTP server on 127.0.0.1 answering every request from `route`
/// (path → (status, extra headers, content type, body)); runs until the
/// test process ends.
pub fn serve(
    route: impl Fn(&str) -> (u16, Vec<(String, String)>, &'static str, String) + Send + 'static,
) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head);
            let path = text.split(' ').nth(1).unwrap_or("/").to_string();
            let (status, headers, ctype, body) = route(&path);
            let mut resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                resp.push_str(&format!("{k}: {v}\r\n"));
            }
            resp.push_str("\r\n");
            resp.push_str(&body);
            let _ = conn.write_all(resp.as_bytes());
        }
    });
    port
}
