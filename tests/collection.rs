//! The collection chain (collection.md): intake, spool durability,
//! exactly-once upload, rebalances, and the chain's count into ODS.
//! Expected values come from what the tests send, not from the programs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::chain::{
    ALLOWED, Broker, Collector, LogsOnFailure, Uploader, eventually, http, local_objects, uuid,
};
use crate::harness::{World, free_port};

const TOPIC: &str = "tauc-uat-aps1";

fn event(id: &str, device: &str) -> Value {
    json!({"event_id": id, "event_type": "page_enter", "client_ts": 1_718_668_800_000i64,
           "device_id": device, "collector_ts": 5})
}

fn by_event_id(records: &[crate::chain::Rec]) -> HashMap<String, Vec<crate::chain::Rec>> {
    let mut m: HashMap<String, Vec<_>> = HashMap::new();
    for r in records {
        let v: Value = serde_json::from_str(&r.value).expect("record is JSON");
        m.entry(v["event_id"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(r.clone());
    }
    m
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b).unwrap();
    gz.finish().unwrap()
}

#[test]
fn intake_accepts_each_form_rejects_the_rest_and_answers_cors() {
    let dir = tempfile::tempdir().unwrap();
    let _logs = LogsOnFailure(dir.path().to_path_buf());
    let broker = Broker::start(dir.path());
    let c = Collector::start(dir.path(), &broker.addr(), &[]);
    let before = Utc::now().timestamp_millis();
    let json_ct = [("Content-Type", "application/json")];

    // accepted forms
    c.post_json(&event("obj", "d1").to_string());
    c.post_json(&json!([event("arr1", "d1"), event("arr2", "d2")]).to_string());
    let pretty = serde_json::to_string_pretty(&event("pretty", "d1")).unwrap();
    c.post_json(&pretty);
    let nd = format!("{}\n{}\r\n\n", event("nd1", "d3"), event("nd2", "d3"));
    let r = c.post(
        &[("Content-Type", "text/plain;charset=UTF-8")],
        nd.as_bytes(),
    );
    assert_eq!(r.status, 204, "{r:?}");
    let gz = gzip(event("gz", "d4").to_string().as_bytes());
    let r = c.post(
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gz,
    );
    assert_eq!(r.status, 204, "{r:?}");
    let r = c.post(
        &[("Content-Type", "application/json"), ("Origin", ALLOWED)],
        event("cors-ok", "d5").to_string().as_bytes(),
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(ALLOWED));
    assert_eq!(r.header("vary"), Some("Origin"));
    let after = Utc::now().timestamp_millis();
    let accepted = [
        "obj", "arr1", "arr2", "pretty", "nd1", "nd2", "gz", "cors-ok",
    ];

    // rejections: status, a JSON body naming the problem, nothing spooled
    let big_event =
        json!({"event_id": "rej-big", "device_id": "d", "p": "x".repeat(70_000)}).to_string();
    let too_many = serde_json::to_string(
        &(0..501)
            .map(|i| event(&format!("rej-many-{i}"), "d"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let huge = format!(
        "[{}]",
        (0..40)
            .map(
                |i| json!({"event_id": format!("rej-huge-{i}"), "p": "y".repeat(30_000)})
                    .to_string()
            )
            .collect::<Vec<_>>()
            .join(",")
    );
    // (status, headers, body, what the answer must name)
    type Case<'a> = (u16, Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        (
            400,
            json_ct.to_vec(),
            b"{\"event_id\": \"rej-1\",".to_vec(),
            "not JSON",
        ),
        (
            400,
            json_ct.to_vec(),
            b"[{\"event_id\":\"rej-2\"}, 7]".to_vec(),
            "array element 2 is not a JSON object",
        ),
        (
            400,
            json_ct.to_vec(),
            b"{\"event_id\":\"rej-3\"}\n\"x\"".to_vec(),
            "line 2 is not a JSON object",
        ),
        (
            400,
            json_ct.to_vec(),
            big_event.into_bytes(),
            "at most 65536",
        ),
        (
            400,
            vec![
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
            gzip(b"not json"),
            "not JSON",
        ),
        (400, json_ct.to_vec(), gzip(b"{}"), "not UTF-8"),
        (413, json_ct.to_vec(), too_many.into_bytes(), "501 events"),
        (
            413,
            json_ct.to_vec(),
            huge.into_bytes(),
            "over 1048576 bytes",
        ),
        (
            415,
            vec![("Content-Type", "text/html")],
            event("rej-4", "d").to_string().into_bytes(),
            "text/html",
        ),
        (
            415,
            vec![
                ("Content-Type", "application/json"),
                ("Content-Encoding", "br"),
            ],
            event("rej-5", "d").to_string().into_bytes(),
            "'br'",
        ),
        (
            415,
            vec![],
            event("rej-6", "d").to_string().into_bytes(),
            "Content-Type none",
        ),
        (
            403,
            vec![
                ("Content-Type", "application/json"),
                ("Origin", "http://evil.example"),
            ],
            event("rej-7", "d").to_string().into_bytes(),
            "'http://evil.example' is not allowed",
        ),
    ];
    for (status, headers, body, says) in &cases {
        let r = c.post(headers, body);
        assert_eq!(r.status, *status, "{headers:?}: {r:?}");
        let err: Value =
            serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("JSON error body: {r:?}"));
        let msg = err["error"].as_str().expect("error field");
        assert!(msg.contains(says), "error {msg:?} should say {says:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("access-control-allow-origin").is_none());
    }

    // CORS preflights
    let pre = |origin: &str| {
        http(
            c.port,
            "OPTIONS",
            "/v1/events",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        )
    };
    let ok = pre(ALLOWED);
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("access-control-allow-origin"), Some(ALLOWED));
    assert!(
        ok.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        ok.header("access-control-allow-headers")
            .unwrap()
            .contains("content-type")
    );
    assert_eq!(ok.header("vary"), Some("Origin"));
    let refused = pre("http://127.0.0.1:2");
    assert_eq!(refused.status, 403);
    assert!(refused.header("access-control-allow-origin").is_none());

    // what reached Kafka: exactly the accepted events, stamped, keyed
    let records = broker.records(TOPIC, accepted.len(), Duration::from_secs(60));
    let seen = by_event_id(&records);
    let mut ids: Vec<&str> = seen.keys().map(|s| s.as_str()).collect();
    ids.sort();
    let mut want = accepted.to_vec();
    want.sort();
    assert_eq!(ids, want, "only accepted events reach Kafka, each once");
    for (id, recs) in &seen {
        let r = &recs[0];
        let v: Value = serde_json::from_str(&r.value).unwrap();
        let ts = v["collector_ts"].as_i64().unwrap();
        assert!(
            (before..=after).contains(&ts),
            "{id}: collector_ts {ts} replaced by the collector's clock"
        );
        assert_eq!(r.ts, ts, "{id}: record timestamp = collector_ts");
        assert_eq!(
            r.key.as_deref(),
            v["device_id"].as_str(),
            "{id}: keyed by device_id"
        );
        assert!(!r.value.contains('\n'), "{id}: one compact line");
        let mut sent = event(id, v["device_id"].as_str().unwrap());
        sent["collector_ts"] = json!(ts);
        assert_eq!(v, sent, "{id}: nothing else changed");
    }

    // health, metrics and the tracker
    assert_eq!(http(c.port, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(http(c.port, "GET", "/readyz", &[], b"").status, 200);
    let m = http(c.port, "GET", "/metrics", &[], b"").body;
    assert!(
        m.contains("tauc_collector_events_total{outcome=\"accepted\"} 8"),
        "{m}"
    );
    assert!(
        m.contains("tauc_collector_requests_total{outcome=\"bad_request\"} 6"),
        "{m}"
    );
    assert!(m.contains("tauc_collector_shipped_events_total 8"), "{m}");
    let js = http(c.port, "GET", "/v1/tracker.js", &[], b"");
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .unwrap()
            .starts_with("application/javascript")
    );
    assert!(js.body.contains("sendBeacon"));
}

#[test]
fn an_event_acknowledged_before_a_sigkill_reaches_kafka_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let _logs = LogsOnFailure(dir.path().to_path_buf());
    let mut broker = Broker::start(dir.path());
    broker.stop(); // the event cannot leave the spool before the kill
    let mut c = Collector::start(dir.path(), &broker.addr(), &[]);
    c.post_json(&event("survivor", "d1").to_string());
    c.kill();
    assert!(c.spool_bytes() > 0, "the acknowledged event is on disk");
    broker.resume();
    broker.create_topic(TOPIC, 4);
    c.resume();
    let records = broker.records(TOPIC, 1, Duration::from_secs(60));
    let seen = by_event_id(&records);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["survivor"]);
    eventually(
        Duration::from_secs(30),
        "the shipped segment deleted",
        || c.spool_bytes() == 0,
    );
}

/// A raw connection that sends `text` and then holds still; `read_end`
/// waits (up to `within`) for what the server answers before it closes.
struct SlowClient {
    conn: std::net::TcpStream,
    since: Instant,
}

impl SlowClient {
    fn open(port: u16, text: &str) -> SlowClient {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        conn.write_all(text.as_bytes()).unwrap();
        SlowClient {
            conn,
            since: Instant::now(),
        }
    }

    /// `Some((answer, after))` once the server closed the connection,
    /// `None` when it was still open after `within`.
    fn read_end(mut self, within: Duration) -> Option<(String, Duration)> {
        use std::io::Read;
        let deadline = self.since + within;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.conn.set_read_timeout(Some(left)).unwrap();
            match self.conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(_) => return None,
            }
        }
        Some((
            String::from_utf8_lossy(&got).into_owned(),
            self.since.elapsed(),
        ))
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_sigterm_with_kafka_down_and_slow_clients_ends_the_collector_in_bounded_time_and_keeps_the_spool()
 {
    let dir = tempfile::tempdir().unwrap();
    let _logs = LogsOnFailure(dir.path().to_path_buf());
    let mut broker = Broker::start(dir.path());
    broker.stop(); // Kafka down for the whole first run
    // a spool left world-readable by an older collector, with one segment
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let old_segment = spool.join(format!("{:020}.spool", 1));
    std::fs::write(&old_segment, format!("{}\n", event("old", "d0"))).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&old_segment, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut c = Collector::start(dir.path(), &broker.addr(), &[]);
    for i in 0..5 {
        c.post_json(&event(&format!("e{i}"), "d1").to_string());
    }
    let mut modes: Vec<(String, u32)> = vec![("spool".into(), mode(&spool))];
    for e in std::fs::read_dir(&spool).unwrap().flatten() {
        modes.push((
            e.file_name().to_string_lossy().into_owned(),
            mode(&e.path()),
        ));
    }
    // half a header, and a whole header with a tenth of its body
    let header = SlowClient::open(c.port, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Le");
    let body = SlowClient::open(
        c.port,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{\"a\":",
    );
    let header = std::thread::spawn(move || header.read_end(Duration::from_secs(40)));
    let body = std::thread::spawn(move || body.read_end(Duration::from_secs(60)));
    let (header, body) = (header.join().unwrap(), body.join().unwrap());
    // one more half header in hand at SIGTERM
    let _held = SlowClient::open(c.port, "POST /v1/events HTTP/1.1\r\nHo");
    std::thread::sleep(Duration::from_millis(200));
    let exit = c.terminate_within(Duration::from_secs(60));
    let left = c.spool_bytes();
    eprintln!(
        "modes {modes:?}; half header closed: {:?}; slow body: {:?}; SIGTERM: {exit:?}; spool left {left} bytes",
        header.as_ref().map(|h| h.1),
        body.as_ref()
            .map(|(a, t)| (a.lines().next().unwrap_or("").to_string(), *t)),
    );
    assert!(
        modes
            .iter()
            .all(|(n, m)| *m == if n == "spool" { 0o700 } else { 0o600 }),
        "the spool directory is 0700 and its files 0600: {modes:?}"
    );
    let (_, after) = header.expect("a connection stuck in its header is closed");
    assert!(
        after < Duration::from_secs(30),
        "half header closed after {after:?}"
    );
    let (answer, after) = body.expect("a connection stuck in its body is answered and closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    assert!(
        after < Duration::from_secs(50),
        "slow body answered after {after:?}"
    );
    let (code, took) = exit.expect("the collector exits after SIGTERM");
    assert_eq!(code, Some(0), "a clean exit");
    // 5 s for connections + 10 s of shipping (collection.md), with room
    // for a loaded machine
    assert!(took < Duration::from_secs(30), "SIGTERM took {took:?}");
    assert!(left > 0, "the unshipped events stay in the spool");
    // nothing lost: the next start ships them all
    broker.resume();
    broker.create_topic(TOPIC, 4);
    c.resume();
    let records = broker.records(TOPIC, 6, Duration::from_secs(90));
    let mut ids: Vec<String> = by_event_id(&records).into_keys().collect();
    ids.sort();
    assert_eq!(ids, ["e0", "e1", "e2", "e3", "e4", "old"]);
}

#[test]
fn with_the_broker_down_events_spool_then_all_arrive_in_order_and_a_full_spool_says_503() {
    let dir = tempfile::tempdir().unwrap();
    let _logs = LogsOnFailure(dir.path().to_path_buf());
    let broker = Broker::start(dir.path());
    let mut c = Collector::start(dir.path(), &broker.addr(), &["--spool-max-bytes", "12K"]);
    let post_seq = |c: &Collector, range: std::ops::Range<usize>| {
        for i in range {
            let evs: Vec<Value> = ["k1", "k2", "k3"]
                .iter()
                .map(|k| {
                    let mut e = event(&format!("{k}-{i:03}"), k);
                    e["seq"] = json!(i);
                    e
                })
                .collect();
            c.post_json(&Value::Array(evs).to_string());
        }
    };
    post_seq(&c, 0..5);
    let first = broker.records(TOPIC, 15, Duration::from_secs(60));
    assert_eq!(first.len(), 15);
    broker.pause(); // down, with its state, as a real broker comes back
    post_seq(&c, 5..20); // accepted into the spool
    // keep posting until the spool limit answers 503
    let mut refused = None;
    for i in 0..400 {
        let r = c.post(
            &[("Content-Type", "application/json")],
            event(&format!("over-{i}"), "k9").to_string().as_bytes(),
        );
        if r.status == 503 {
            refused = Some((i, r));
            break;
        }
        assert_eq!(r.status, 204);
    }
    let (accepted_over, r) = refused.expect("a 503 once the spool is over 12 KiB");
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(r.body.contains("spool is full"), "{}", r.body);
    broker.unpause();
    let all = broker.records(TOPIC, 60 + accepted_over, Duration::from_secs(120));
    let seen = by_event_id(&all);
    for k in ["k1", "k2", "k3"] {
        for i in 0..20 {
            assert!(
                seen.contains_key(&format!("{k}-{i:03}")),
                "{k}-{i:03} arrived"
            );
        }
    }
    assert_eq!(
        seen.len(),
        60 + accepted_over,
        "every accepted event, nothing else"
    );
    // in order per key: the first copy of each event follows the previous
    // one in its partition's log (a re-sent copy may come later)
    {
        let recs = &all;
        let mut last: HashMap<String, i64> = HashMap::new();
        let mut firsts = HashSet::new();
        for r in recs.iter() {
            let v: Value = serde_json::from_str(&r.value).unwrap();
            let Some(seq) = v["seq"].as_i64() else {
                continue;
            };
            if !firsts.insert(r.value.clone()) {
                continue;
            }
            let k = r.key.clone().unwrap();
            assert!(
                seq > *last.get(&k).unwrap_or(&-1),
                "key {k}: seq {seq} after {:?}",
                last.get(&k)
            );
            last.insert(k, seq);
        }
    }
    eventually(Duration::from_secs(30), "the spool drained", || {
        c.spool_bytes() == 0
    });
    c.post_json(&event("after", "k1").to_string());
    assert_eq!(c.terminate(), Some(0), "SIGTERM exits cleanly");
}

/// Produced records: value → (partition, timestamp).
fn produce_known(
    broker: &Broker,
    partitions: i32,
    per_partition: usize,
    start_ts: i64,
) -> HashMap<String, (i32, i64)> {
    let mut known = HashMap::new();
    for p in 0..partitions {
        let recs: Vec<(String, i64, String)> = (0..per_partition)
            .map(|i| {
                // 30 s apart: partition 0 crosses a UTC midnight
                let ts = start_ts + i as i64 * 30_000;
                let v = json!({"event_id": format!("p{p}-{i:04}-{}", uuid()), "device_id": format!("d{p}"), "n": i}).to_string();
                (format!("d{p}"), ts, v)
            })
            .collect();
        broker.produce(TOPIC, p, &recs);
        for (_, ts, v) in recs {
            known.insert(v, (p, ts));
        }
    }
    known
}

/// Checks the objects against what was produced: every record in exactly
/// one object, names and folders per collection.md, cuts per the flags.
fn check_objects(
    objects: &[(String, String)],
    known: &HashMap<String, (i32, i64)>,
    max_lines: usize,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut chains: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    for (key, body) in objects {
        let lines: Vec<&str> = body.split_terminator('\n').collect();
        assert!(
            !lines.is_empty() && lines.len() <= max_lines,
            "{key}: {} lines",
            lines.len()
        );
        let (p, first_ts) = known[lines[0]];
        let day = DateTime::from_timestamp_millis(first_ts)
            .unwrap()
            .format("%Y/%m/%d");
        let name = key.rsplit('/').next().unwrap();
        let parts: Vec<&str> = name
            .trim_start_matches("messages-")
            .trim_end_matches(".txt")
            .split('-')
            .collect();
        assert_eq!(parts.len(), 3, "{key}");
        assert_eq!(parts[0], format!("{first_ts:013}"), "{key}: first_ts");
        assert_eq!(parts[1], p.to_string(), "{key}: partition");
        assert!(
            key.starts_with(&format!("uat/aps1/{day}/")),
            "{key}: folder is the UTC date of its first record"
        );
        for l in &lines {
            let (lp, ts) = known
                .get(*l)
                .unwrap_or_else(|| panic!("{key}: unknown line {l}"));
            assert_eq!(*lp, p, "{key}: one partition per object");
            let d = DateTime::from_timestamp_millis(*ts)
                .unwrap()
                .format("%Y/%m/%d")
                .to_string();
            assert_eq!(
                d,
                day.to_string(),
                "{key}: a batch never spans a UTC midnight"
            );
            *seen.entry(l).or_default() += 1;
        }
        chains
            .entry(p)
            .or_default()
            .push((parts[2].parse().unwrap(), lines.len()));
    }
    let missing = known
        .keys()
        .filter(|v| !seen.contains_key(v.as_str()))
        .count();
    let doubled = seen.values().filter(|&&n| n > 1).count();
    assert_eq!(
        (missing, doubled),
        (0, 0),
        "every record in exactly one object"
    );
    for (p, mut chain) in chains {
        chain.sort();
        let mut next = 0;
        for (first, n) in chain {
            assert_eq!(
                first, next,
                "partition {p}: objects follow each other by offset"
            );
            next = first + n as i64;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_writes_every_record_once_across_crashes() {
    let world = World::new("chain");
    let dir = world.dir.path();
    let _logs = LogsOnFailure(dir.to_path_buf());
    let broker = Broker::start(dir);
    broker.create_topic(TOPIC, 2);
    // 23:55 UTC: 40 records 30 s apart cross midnight after 10
    let start = 1_718_668_800_000 - 5 * 60_000;
    let known = produce_known(&broker, 2, 40, start);
    let flags = [
        "--max-lines",
        "7",
        "--max-wait",
        "1s",
        "--s3-endpoint",
        &world.endpoint,
        "--s3-allow-http",
    ];
    let raw = world.raw_root();
    // one uploader (one metrics port: one name in the group), restarted as
    // systemd would after each crash
    let port = free_port();
    // crash at each point of a batch, then once more with a real SIGKILL
    for (i, fault) in ["before-put:2", "after-put:3", "after-commit:2"]
        .iter()
        .enumerate()
    {
        let mut u = Uploader::start_on(
            dir,
            &format!("crash{i}"),
            &broker.addr(),
            &raw,
            &flags,
            &[("TAUC_UPLOADER_FAULT", fault)],
            port,
        );
        let status = u.wait_exit(Duration::from_secs(60));
        assert!(!status.success(), "{fault}: aborted");
        let log = std::fs::read_to_string(&u.log).unwrap();
        assert!(log.contains("aborting at"), "{fault}: {log}");
    }
    let mut u = Uploader::start_on(dir, "killed", &broker.addr(), &raw, &flags, &[], port);
    let log = u.log.clone();
    eventually(
        Duration::from_secs(60),
        "the uploader owns both partitions",
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("partitions assigned partitions=[0, 1]")
        },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    u.proc = None; // SIGKILL mid-run
    let mut u = Uploader::start_on(dir, "last", &broker.addr(), &raw, &flags, &[], port);
    let deadline = Instant::now() + Duration::from_secs(90);
    let objects = loop {
        let keys = world.keys("raw/").await;
        let mut objects = Vec::new();
        for k in &keys {
            let body = world.get(k).await;
            objects.push((
                k.trim_start_matches("raw/").to_string(),
                String::from_utf8(body.to_vec()).unwrap(),
            ));
        }
        let lines: usize = objects.iter().map(|(_, b)| b.lines().count()).sum();
        if lines >= known.len() || Instant::now() > deadline {
            break objects;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    check_objects(&objects, &known, 7);
    let logs: String = ["crash0", "crash1", "crash2", "killed", "last"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(format!("uploader-{n}.log"))).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("object already uploaded"),
        "after a crash between PUT and commit, the next run finds the object"
    );
    let m = http(u.metrics_port, "GET", "/metrics", &[], b"").body;
    assert!(m.contains("tauc_uploader_records_total"), "{m}");
    // each partition's last 2 records (40 = 7+3 | 7+7+7+7+2) were cut by
    // --max-wait alone: a quiet partition is still written out
    for p in 0..2 {
        let tail = objects
            .iter()
            .find(|(k, _)| k.ends_with(&format!("-{p}-38.txt")))
            .unwrap_or_else(|| panic!("partition {p}: an object from offset 38"));
        assert_eq!(tail.1.lines().count(), 2, "{}", tail.0);
    }
    // both partitions cross midnight at record 10: 2 days of folders
    let days: HashSet<&str> = objects.iter().map(|(k, _)| &k[..19]).collect();
    assert_eq!(days.len(), 2, "{days:?}");
    let p = u.proc.as_mut().unwrap();
    assert_eq!(crate::chain::terminate(p), Some(0), "SIGTERM: a clean exit");
}

/// Records produced at ~20/s to 4 partitions until `stop`, acknowledged
/// each, into `known`.
fn produce_flowing(
    broker: &Broker,
    stop: &std::sync::atomic::AtomicBool,
    known: &std::sync::Mutex<HashMap<String, (i32, i64)>>,
) {
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let p = n % 4;
        let ts = Utc::now().timestamp_millis();
        let recs: Vec<(String, i64, String)> = (0..4)
            .map(|i| {
                let v = json!({"event_id": format!("f{n}-{i}-{}", uuid()), "device_id": "d"});
                ("d".to_string(), ts, v.to_string())
            })
            .collect();
        broker.produce(TOPIC, p, &recs);
        let mut k = known.lock().unwrap();
        for (_, ts, v) in recs {
            k.insert(v, (p, ts));
        }
        drop(k);
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGKILLed uploaders restarted at once, three times in ten seconds (as
/// systemd's `Restart=` does), while records flow, take their partitions
/// back: every acknowledged record is in S3 exactly once within one session
/// timeout (10 s) + `--max-wait` (1 s) + 15 s of the last restart (issue:
/// on tansu the restarted member was assigned nothing for 200+ s).
fn restarted_uploaders_take_their_partitions_back(uploaders: usize) {
    uploaders_lose_one(uploaders, true, Duration::from_secs(10 + 1 + 15));
}

/// Starts `uploaders` uploaders while records flow; kills uploader 0 —
/// restarted at once three times in 10 s when `restart`, else for good —
/// and checks every acknowledged record is in S3 exactly once within
/// `within` of the last kill or restart.
fn uploaders_lose_one(uploaders: usize, restart: bool, within: Duration) {
    let world = World::new(&format!("lose{uploaders}{restart}"));
    let dir = world.dir.path();
    let _logs = LogsOnFailure(dir.to_path_buf());
    let broker = Broker::start(dir);
    broker.create_topic(TOPIC, 4);
    let flags = [
        "--max-wait",
        "1s",
        "--s3-endpoint",
        &world.endpoint,
        "--s3-allow-http",
    ];
    let raw = world.raw_root();
    let ports: Vec<u16> = (0..uploaders).map(|_| free_port()).collect();
    let start = |i: usize, round: usize| {
        let name = format!("u{i}-{round}");
        Uploader::start_on(dir, &name, &broker.addr(), &raw, &flags, &[], ports[i])
    };
    let mut ups: Vec<Uploader> = (0..uploaders).map(|i| start(i, 0)).collect();
    let known = std::sync::Mutex::new(HashMap::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| produce_flowing(&broker, &stop, &known));
        eventually(
            Duration::from_secs(60),
            "the first records uploaded",
            || !rt.block_on(world.keys("raw/")).is_empty(),
        );
        if restart {
            // uploader 0 is killed and restarted at once, three times in 10 s
            for round in 1..=3 {
                ups[0].proc = None;
                ups[0] = start(0, round);
                std::thread::sleep(Duration::from_millis(3300));
            }
        } else {
            ups[0].proc = None;
        }
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let known = known.into_inner().unwrap();
    let deadline = Instant::now() + within;
    let objects = loop {
        let mut objects = Vec::new();
        for k in rt.block_on(world.keys("raw/")) {
            let body = rt.block_on(world.get(&k));
            let text = String::from_utf8(body.to_vec()).unwrap();
            objects.push((k.trim_start_matches("raw/").to_string(), text));
        }
        let lines: usize = objects.iter().map(|(_, b)| b.lines().count()).sum();
        if lines >= known.len() || Instant::now() > deadline {
            break objects;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    check_objects(&objects, &known, 1000);
    drop(ups);
}

#[test]
fn a_restarted_uploader_takes_its_partitions_back() {
    restarted_uploaders_take_their_partitions_back(1);
}

#[test]
fn two_uploaders_one_restarted_take_their_partitions_back() {
    restarted_uploaders_take_their_partitions_back(2);
}

/// One of two uploaders SIGKILLed for good: the other takes its
/// partitions over (on tansu, through its watchdog: a backlog nobody
/// commits for a session timeout + 2 `--max-wait` + 10 s makes it leave and
/// rejoin the group), and every acknowledged record is in S3 exactly once.
#[test]
fn an_uploader_that_dies_for_good_leaves_its_partitions_to_the_other() {
    uploaders_lose_one(2, false, Duration::from_secs(75));
}

#[test]
fn two_uploaders_in_one_group_lose_and_double_nothing_through_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    let _logs = LogsOnFailure(dir.path().to_path_buf());
    let broker = Broker::start(dir.path());
    broker.create_topic(TOPIC, 4);
    let raw = dir.path().join("raw");
    let raw_s = raw.to_string_lossy().into_owned();
    let flags = ["--max-lines", "5", "--max-wait", "1s"];
    let start = 1_718_700_000_000;
    let mut known = produce_known(&broker, 4, 12, start);
    let mut a = Uploader::start(dir.path(), "a", &broker.addr(), &raw_s, &flags, &[]);
    eventually(Duration::from_secs(60), "a uploads", || {
        !local_objects(&raw).is_empty()
    });
    let _b = Uploader::start(dir.path(), "b", &broker.addr(), &raw_s, &flags, &[]);
    known.extend(produce_known(&broker, 4, 12, start + 1_000_000));
    std::thread::sleep(Duration::from_secs(3));
    // SIGKILL a mid-run and restart it, as systemd would: the new member's
    // join evicts the dead one once its session times out (tansu 0.6.0
    // evicts only on a join; Kafka also on the session timeout alone)
    a.proc = None;
    known.extend(produce_known(&broker, 4, 12, start + 2_000_000));
    let _a2 = Uploader::start(dir.path(), "a2", &broker.addr(), &raw_s, &flags, &[]);
    known.extend(produce_known(&broker, 4, 12, start + 3_000_000));
    let total = known.len();
    eventually(Duration::from_secs(90), "every record uploaded", || {
        local_objects(&raw)
            .iter()
            .map(|(_, b)| b.lines().count())
            .sum::<usize>()
            >= total
    });
    std::thread::sleep(Duration::from_secs(2));
    check_objects(&local_objects(&raw), &known, 5);
    let b_log = std::fs::read_to_string(dir.path().join("uploader-b.log")).unwrap();
    assert!(
        b_log.matches("partitions assigned").count() >= 2,
        "b saw a rebalance: {b_log}"
    );
}

#[test]
fn the_chains_count_holds_from_collector_to_ods() {
    let world = World::new("count");
    let dir = world.dir.path();
    let _logs = LogsOnFailure(dir.to_path_buf());
    let broker = Broker::start(dir);
    let c = Collector::start(dir, &broker.addr(), &[]);
    // sample traffic, as the sample generator writes it (some lines are
    // meant to be quarantined, some are not JSON at all)
    // written under env "sample" of the raw root, beside the chain's "uat"
    let run = world.tauc_job(
        &[
            "sample",
            "--date",
            "2024-06-18",
            "--events-per-day",
            "300",
            "--regions",
            "aps1",
            "--env",
            "sample",
        ],
        true,
    );
    run.ok();
    let mut acked = 0usize;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bodies: Vec<String> = rt.block_on(async {
        let mut v = Vec::new();
        for k in world.keys("raw/sample/").await {
            v.push(String::from_utf8_lossy(&world.get(&k).await).into_owned());
        }
        v
    });
    for body in bodies {
        let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
        let r = c.post(
            &[("Content-Type", "text/plain")],
            lines.join("\n").as_bytes(),
        );
        if r.status == 204 {
            acked += lines.len();
            continue;
        }
        // a rejected request is whole: send its lines one by one
        for l in lines {
            if c.post(&[("Content-Type", "application/json")], l.as_bytes())
                .status
                == 204
            {
                acked += 1;
            }
        }
    }
    assert!(acked > 250, "most sample lines are events: {acked}");
    let _u = Uploader::start_s3(&world, "count", &broker.addr());
    let uploaded = || -> usize {
        rt.block_on(async {
            let mut n = 0;
            for k in world.keys("raw/uat/").await {
                n += world.get(&k).await.iter().filter(|&&b| b == b'\n').count();
            }
            n
        })
    };
    eventually(
        Duration::from_secs(90),
        "all acknowledged events uploaded",
        || uploaded() >= acked,
    );
    assert_eq!(uploaded(), acked, "lines uploaded = events acknowledged");
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let out = world.submit(&["--date", &today, "--region", "aps1"]);
    let text = out.ok().to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("ods dt={today} region=aps1")))
        .unwrap_or_else(|| panic!("{text}"));
    let num = |k: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        num("valid") + num("quarantined"),
        acked,
        "ODS valid + quarantined = acknowledged: {line}"
    );
}

/// The tools directory (playwright-core) and the Chromium binary.
fn browser_tools() -> (std::path::PathBuf, String) {
    let tools = crate::chain::tools_dir();
    assert!(
        tools.join("node_modules/playwright-core").exists(),
        "playwright-core not found under {}: run scripts/install-test-tools",
        tools.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} not found: scripts/install-test-tools installs Debian's chromium"
    );
    (tools, chromium)
}

#[test]
fn a_real_browser_click_impression_and_cors_failure_reach_dwd() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};
    let world = World::new("browser");
    let dir = world.dir.path();
    let _logs = LogsOnFailure(dir.to_path_buf());
    let (tools, chromium) = browser_tools();
    // the API on another origin answers without CORS headers
    let api = crate::chain::serve(|_| (200, vec![], "application/json", "{\"items\":[]}".into()));
    let collector_port = Arc::new(AtomicU16::new(0));
    let cp = collector_port.clone();
    let page = crate::chain::serve(move |path| {
        let c = cp.load(Ordering::SeqCst);
        let body = if path.starts_with("/next") {
            format!(
                "<!doctype html><title>next</title><script src=\"http://127.0.0.1:{c}/v1/tracker.js\" data-tauc-app-version=\"web-e2e\"></script><p>next</p>"
            )
        } else {
            format!(
                "<!doctype html><title>shop</title>\
                 <script src=\"http://127.0.0.1:{c}/v1/tracker.js\" data-tauc-app-version=\"web-e2e\"></script>\
                 <script>window.buyClicks = 0;</script>\
                 <button id=\"buy\" data-tauc-target-type=\"button\" data-tauc-target-id=\"buy-now\" onclick=\"window.buyClicks++\">Buy</button>\
                 <div style=\"height:3000px\"></div>\
                 <div id=\"banner\" data-tauc-target-type=\"banner\" data-tauc-target-id=\"summer-sale\" style=\"height:200px\">Sale</div>"
            )
        };
        (200, vec![], "text/html; charset=utf-8", body)
    });
    let broker = Broker::start(dir);
    let origin = format!("http://127.0.0.1:{page}");
    let c = Collector::start(dir, &broker.addr(), &["--allowed-origin", &origin]);
    collector_port.store(c.port, Ordering::SeqCst);
    let api_url = format!("http://127.0.0.1:{api}/v2/items/12345?fields=all");
    let out = std::process::Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/e2e.mjs"))
        .arg(&tools)
        .arg(format!("{origin}/"))
        .arg(&api_url)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the page's own behaviour is unchanged by the tracker
    assert!(
        stdout.contains("page fetch: rejected TypeError: Failed to fetch"),
        "{stdout}"
    );
    assert!(stdout.contains("page clicks: 1"), "{stdout}");
    assert!(stdout.contains("page location: /spa/checkout"), "{stdout}");
    assert!(stdout.contains("page xhr: error status 0"), "{stdout}");

    let _u = Uploader::start_s3(&world, "browser", &broker.addr());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lines = || -> Vec<Value> {
        rt.block_on(async {
            let mut v = Vec::new();
            for k in world.keys("raw/uat/").await {
                for l in String::from_utf8_lossy(&world.get(&k).await).lines() {
                    v.push(serde_json::from_str(l).unwrap());
                }
            }
            v
        })
    };
    eventually(
        Duration::from_secs(60),
        "the page's events uploaded",
        || lines().iter().any(|e| e["event_type"] == "page_leave"),
    );
    // the business's user dimension (no logged-in users on this page)
    rt.block_on(world.put("wh/dim/dim_user/users.csv", "user_id,gender,birth_date\n"));
    let day = Utc::now().format("%Y-%m-%d").to_string();
    world.submit(&["--date", &day, "--region", "aps1"]).ok();
    // aps1 is Asia/Kolkata: DWD partitions are by local date
    let local = (Utc::now() + chrono::Duration::minutes(330))
        .format("%Y-%m-%d")
        .to_string();
    let trk = rt.block_on(world.rows(
        tauc_jobs::warehouse::tables::Table::DwdTrkEvent,
        &local,
        "aps1",
    ));
    let types = crate::harness::strs(&trk, "event_type");
    let targets = crate::harness::strs(&trk, "target_id");
    let paths = crate::harness::strs(&trk, "page_path");
    let row = |t: &str, id: &str| {
        (0..trk.num_rows())
            .any(|i| types[i].as_deref() == Some(t) && targets[i].as_deref() == Some(id))
    };
    assert!(
        row("click", "buy-now"),
        "a click row for the button: {types:?} {targets:?}"
    );
    assert!(
        row("impression", "summer-sale"),
        "an impression row for the banner: {types:?} {targets:?}"
    );
    assert!(!row("click", "summer-sale"), "the banner was not clicked");
    let paths_of = |t: &str| -> Vec<&str> {
        (0..trk.num_rows())
            .filter(|&i| types[i].as_deref() == Some(t))
            .filter_map(|i| paths[i].as_deref())
            .collect()
    };
    let leaves = paths_of("page_leave");
    assert!(
        leaves.contains(&"/"),
        "page_leave of the shop page: {leaves:?}"
    );
    // the route change left the shop and entered the app's new route
    assert!(
        leaves.contains(&"/spa/checkout"),
        "page_leave of the route: {leaves:?}"
    );
    let enters = paths_of("page_enter");
    for p in ["/", "/spa/checkout"] {
        assert!(enters.contains(&p), "page_enter of {p}: {enters:?}");
    }
    let cors = rt.block_on(world.rows(
        tauc_jobs::warehouse::tables::Table::DwdCorsError,
        &local,
        "aps1",
    ));
    assert_eq!(cors.num_rows(), 2, "the fetch and the XHR failures");
    let methods = crate::harness::strs(&cors, "req_method");
    let by = |m: &str| {
        methods
            .iter()
            .position(|x| x.as_deref() == Some(m))
            .unwrap_or_else(|| panic!("a {m} row: {methods:?}"))
    };
    for (method, tpl) in [("GET", "/v2/items/{id}"), ("POST", "/v1/orders/{id}")] {
        let i = by(method);
        let col = |c: &str| crate::harness::strs(&cors, c)[i].clone();
        assert_eq!(
            col("err_class").as_deref(),
            Some("network_or_cors"),
            "{method}"
        );
        assert_eq!(col("req_host").as_deref(), Some("127.0.0.1"), "{method}");
        assert_eq!(col("req_path_tpl").as_deref(), Some(tpl), "{method}");
        assert_eq!(col("req_origin"), Some(origin.clone()), "{method}");
    }
}

#[test]
fn the_tracker_keeps_what_a_down_collector_missed_for_the_next_page() {
    use std::io::BufRead;
    let world = World::new("outage");
    let dir = world.dir.path();
    let _logs = LogsOnFailure(dir.to_path_buf());
    let (tools, chromium) = browser_tools();
    let broker = Broker::start(dir);
    // the page and the tracker come from the site (the collector is down);
    // the tracker sends to the collector's origin
    let tracker = include_str!("../collector/tracker/tauc-tracker.js");
    let collector_port = crate::harness::free_port();
    let page = crate::chain::serve(move |path| {
        let head = format!(
            "<script src=\"/tracker.js\" data-tauc-endpoint=\"http://127.0.0.1:{collector_port}/v1/events\" \
             data-tauc-app-version=\"web-outage\"></script>"
        );
        match path {
            "/tracker.js" => (200, vec![], "text/javascript", tracker.to_string()),
            p if p.starts_with("/next") => (
                200,
                vec![],
                "text/html; charset=utf-8",
                format!("<!doctype html><title>next</title>{head}<p>next</p>"),
            ),
            _ => (
                200,
                vec![],
                "text/html; charset=utf-8",
                format!(
                    "<!doctype html><title>shop</title>{head}\
                     <button id=\"buy\" data-tauc-target-type=\"button\" data-tauc-target-id=\"buy-now\">Buy</button>"
                ),
            ),
        }
    });
    let origin = format!("http://127.0.0.1:{page}");
    let mut c = Collector::prepare(dir, &broker.addr(), &["--allowed-origin", &origin]);
    c.port = collector_port;
    let mut node = std::process::Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/outage.mjs"))
        .arg(&tools)
        .arg(format!("{origin}/"))
        .arg(format!("http://127.0.0.1:{collector_port}"))
        .env("CHROMIUM", &chromium)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut said = Vec::new();
    let mut lines = std::io::BufReader::new(node.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push(line.clone());
        if line == "on next page" {
            break;
        }
    }
    // the collector comes up only once the first page is gone
    c.resume();
    said.extend(lines.map_while(|l| l.ok()));
    let status = node.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut node.stderr.take().unwrap(), &mut err).unwrap();
    let said = said.join("\n");
    assert!(status.success(), "browser script failed:\n{said}\n{err}");
    // page_enter, the button's impression (it is in view) and its click,
    // then also page_leave of the first page and page_enter of the next,
    // were held unsent; nothing is left once the collector answered
    assert!(said.contains("stored on the first page: 3"), "{said}");
    assert!(said.contains("stored on the next page: 5"), "{said}");
    assert!(
        said.contains("stored after the collector came up: 0"),
        "{said}"
    );

    let records = broker.records(TOPIC, 5, Duration::from_secs(60));
    let events: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_str(&r.value).unwrap())
        .collect();
    let ids = |t: &str, path: &str| -> HashSet<String> {
        events
            .iter()
            .filter(|e| e["event_type"] == t)
            .filter(|e| e["page"]["url"].as_str().is_some_and(|u| u.ends_with(path)))
            .map(|e| e["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    for (t, path) in [
        ("page_enter", "/"),
        ("impression", "/"),
        ("click", "/"),
        ("page_leave", "/"),
        ("page_enter", "/next"),
    ] {
        assert_eq!(ids(t, path).len(), 1, "one {t} of {path}: {events:?}");
    }
    let click = events.iter().find(|e| e["event_type"] == "click").unwrap();
    assert_eq!(click["target"]["id"], "buy-now");
}
