//! The layering job against a real S3 server, with expectations worked out
//! by hand from the contract (docs/spec/: events.md, layers.md, analyses.md).
//!
//! The data set, region `aps1` (Asia/Kolkata, +05:30), collection date
//! C = 2024-06-18 (C0 = 1718668800000 ms):
//!
//! file A `messages-1718668800000.txt`:
//!  1. e1 page_enter at 01:00Z, user u1 (M, born 1990-01-01)
//!  2. blank
//!  3. `{bad json` → malformed_json
//!  4. e2 click without target → missing_field:target
//!  5. e3 client_ts "12a" → invalid_field:client_ts
//!  6. e1 again, byte-identical → valid, a duplicate
//!  7. e4 client_ts 3 days before C → late_beyond_window
//!  8. e5 client clock 5 s ahead of the collector → clamped
//!  9. "   " → blank
//! 10. e6 offset-cancelled to exactly Kolkata midnight 2024-06-18 00:00
//! 11. e7 one ms before Kolkata midnight → local date 2024-06-17
//!
//! file B `messages-1718690400000.txt`:
//!  1. e1 retried, collected 30 min later
//!  2. e8 cors_error
//!  3. e9 page_leave, enter/leave in seconds as strings, 2000 s on page
//!  4. e10 a bot's click, no user
//!  5. e11 with an unknown field and props
//!  6. e12 from Dublin, user u2 (F, born 2000-06-19)
//!
//! plus `_offsets.json` (ignored), and on C+1 = 2024-06-19 a file with e1
//! re-delivered byte-identically (dedupe across days).

use serde_json::json;
use tauc_jobs::warehouse::tables::Table;

use crate::harness::*;

pub const C0: i64 = 1_718_668_800_000;
const H: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

pub fn e1() -> String {
    json!({"event_id": "e1", "event_type": "page_enter", "client_ts": C0 + H, "collector_ts": C0 + H,
           "device_id": "dev1", "user_id": "u1", "ua": CHROME,
           "page": {"url": "https://portal.example/#/devices/42?tab=1"}})
    .to_string()
}

pub fn file_a() -> String {
    let lines = [
        e1(),
        String::new(),
        "{bad json".to_string(),
        json!({"event_id": "e2", "event_type": "click", "client_ts": C0 + H, "collector_ts": C0 + H, "device_id": "dev2"}).to_string(),
        json!({"event_id": "e3", "event_type": "page_enter", "client_ts": "12a", "collector_ts": C0 + H, "device_id": "dev3"}).to_string(),
        e1(),
        json!({"event_id": "e4", "event_type": "page_enter", "client_ts": C0 - 3 * DAY, "collector_ts": C0 + 60_000, "device_id": "dev4"}).to_string(),
        json!({"event_id": "e5", "event_type": "page_enter", "client_ts": C0 + 2 * H + 5_000, "collector_ts": C0 + 2 * H, "device_id": "dev5"}).to_string(),
        "   ".to_string(),
        // client clock 50 000 s slow; sent 500 ms after the event; received
        // 500 ms after 2024-06-17T18:30:00Z, which is Kolkata midnight.
        json!({"event_id": "e6", "event_type": "page_enter", "client_ts": C0 - 50_000_000, "sent_ts": C0 - 50_000_000 + 500,
               "collector_ts": C0 - 19_800_000 + 500, "device_id": "dev6"}).to_string(),
        json!({"event_id": "e7", "event_type": "page_enter", "client_ts": C0 - 19_800_001, "collector_ts": C0 + 2_000, "device_id": "dev7"}).to_string(),
    ];
    lines.join("\n") + "\n"
}

pub fn file_b() -> String {
    let t = C0 + 6 * H;
    let lines = [
        json!({"event_id": "e1", "event_type": "page_enter", "client_ts": C0 + H, "collector_ts": C0 + H + 1_800_000,
               "device_id": "dev1", "user_id": "u1", "ua": CHROME,
               "page": {"url": "https://portal.example/#/devices/42?tab=1"}}).to_string(),
        json!({"event_id": "e8", "event_type": "cors_error", "client_ts": t + 1, "collector_ts": t + 1, "device_id": "dev8",
               "page": {"url": "/devices/9"},
               "cors": {"url": "https://API.Example.com:8443/v1/devices/123?x=1", "method": "post",
                        "origin": "HTTPS://Portal.X", "error": "net::ERR_FAILED", "status": 0, "duration_ms": 30}}).to_string(),
        json!({"event_id": "e9", "event_type": "page_leave", "client_ts": t + 2, "collector_ts": t + 2, "device_id": "dev9",
               "page_enter_ts": ((C0 + H) / 1000).to_string(), "page_leave_ts": ((C0 + H) / 1000 + 2000).to_string(),
               "page": {"url": "https://portal.example/users/3f2b9c1e-7d4a-4e11-9a0b-5c6d7e8f9a01/profile?x"}}).to_string(),
        json!({"event_id": "e10", "event_type": "click", "client_ts": t + 3, "collector_ts": t + 3, "device_id": "dev10",
               "ua": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
               "target": {"type": "button", "id": "b1"}}).to_string(),
        json!({"event_id": "e11", "event_type": "page_enter", "client_ts": t + 4, "collector_ts": t + 4, "device_id": "dev11",
               "foo": {"x": 1}, "props": {"a": "b"}}).to_string(),
        json!({"event_id": "e12", "event_type": "impression", "client_ts": t + 5, "collector_ts": t + 5, "device_id": "dev12",
               "user_id": "u2", "geo": {"lat": "53.3498", "lon": -6.2603}, "target": {"type": "banner", "id": "ban1"}}).to_string(),
    ];
    // CRLF endings and no final newline
    lines.join("\r\n")
}

pub const KEY_A: &str = "raw/uat/aps1/2024/06/18/messages-1718668800000.txt";
pub const KEY_B: &str = "raw/uat/aps1/2024/06/18/messages-1718690400000.txt";
pub const KEY_DAY2: &str = "raw/uat/aps1/2024/06/19/messages-1718755200000.txt";

/// Writes the data set (both days) and `dim_user`.
pub async fn write_dataset(w: &World) {
    w.put(KEY_A, format!("\u{feff}{}", file_a())).await;
    w.put(KEY_B, file_b()).await;
    w.put("raw/uat/aps1/2024/06/18/_offsets.json", "{}").await;
    w.put(KEY_DAY2, e1() + "\n").await;
    w.put(
        "wh/dim/dim_user/users.csv",
        "user_id,gender,birth_date\nu1,M,1990-01-01\nu2,F,2000-06-19\n",
    )
    .await;
}

pub fn load(w: &World, date: &str, extra: &[&str]) -> String {
    let mut args = vec!["submit", "layering", "--date", date, "--region", "aps1"];
    args.extend_from_slice(extra);
    w.tauc_job(&args, true).ok().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn ods_rows_reasons_and_accounting() {
    let w = World::new("ods-cases");
    write_dataset(&w).await;
    let metrics = w.dir.path().join("layering.prom");
    load(
        &w,
        "2024-06-18",
        &["--metrics-file", metrics.to_str().unwrap()],
    );

    let q = w.rows(Table::OdsQuarantine, "2024-06-18", "aps1").await;
    let got: Vec<(Option<i64>, Option<String>, Option<String>)> = (0..q.num_rows())
        .map(|i| {
            (
                i64s(&q, "line_no")[i],
                strs(&q, "reason")[i].clone(),
                strs(&q, "event_id")[i].clone(),
            )
        })
        .collect();
    let mut got = got;
    got.sort();
    assert_eq!(
        got,
        vec![
            (Some(3), Some("malformed_json".into()), None),
            (
                Some(4),
                Some("missing_field:target".into()),
                Some("e2".into())
            ),
            (
                Some(5),
                Some("invalid_field:client_ts".into()),
                Some("e3".into())
            ),
            (
                Some(7),
                Some("late_beyond_window".into()),
                Some("e4".into())
            ),
        ]
    );
    assert!(
        strs(&q, "src_file")
            .iter()
            .all(|s| s.as_deref() == Some(KEY_A))
    );
    assert!(strs(&q, "raw_line").contains(&Some("{bad json".into())));

    let v = w.rows(Table::OdsEvent, "2024-06-18", "aps1").await;
    let mut ids: Vec<(String, i64)> = (0..v.num_rows())
        .map(|i| {
            (
                strs(&v, "src_file")[i].clone().unwrap(),
                i64s(&v, "line_no")[i].unwrap(),
            )
        })
        .collect();
    ids.sort();
    let a = |n| (KEY_A.to_string(), n);
    let b = |n| (KEY_B.to_string(), n);
    assert_eq!(
        ids,
        vec![
            a(1),
            a(6),
            a(8),
            a(10),
            a(11),
            b(1),
            b(2),
            b(3),
            b(4),
            b(5),
            b(6)
        ]
    );
    // lenient typing: seconds as strings become ms; geo strings parse
    let i9 = row_of(&v, "e9");
    assert_eq!(ts(&v, "page_enter_ts")[i9], Some(C0 + H));
    assert_eq!(ts(&v, "page_leave_ts")[i9], Some(C0 + H + 2_000_000));
    let i12 = row_of(&v, "e12");
    assert_eq!(
        (f64s(&v, "geo_lat")[i12], f64s(&v, "geo_lon")[i12]),
        (Some(53.3498), Some(-6.2603))
    );
    let i11 = row_of(&v, "e11");
    assert_eq!(
        strs(&v, "extra")[i11].as_deref(),
        Some(r#"{"foo":{"x":1},"props":{"a":"b"}}"#)
    );

    let s = w.rows(Table::OdsLoadStats, "2024-06-18", "aps1").await;
    // 11 lines in A (2 blank), 6 in B; 11 valid, 4 quarantined; 17 - 2 = 11 + 4
    assert_eq!(i64s(&s, "files"), vec![Some(2)]);
    assert_eq!(i64s(&s, "files_ignored"), vec![Some(1)]);
    assert_eq!(i64s(&s, "lines"), vec![Some(17)]);
    assert_eq!(i64s(&s, "blank_lines"), vec![Some(2)]);
    assert_eq!(i64s(&s, "valid_rows"), vec![Some(11)]);
    assert_eq!(i64s(&s, "quarantined_rows"), vec![Some(4)]);
    let bytes = (3 + file_a().len() + file_b().len()) as i64;
    assert_eq!(i64s(&s, "bytes"), vec![Some(bytes)]);

    // the same counts in the run's metrics file (Prometheus text)
    let text = std::fs::read_to_string(&metrics).unwrap();
    let expected = [
        "files_listed 2".to_string(),
        "files_ignored 1".into(),
        "lines_read 17".into(),
        "blank_lines 2".into(),
        "valid_rows 11".into(),
        format!("bytes_read {bytes}"),
        "quarantined_rows{reason=\"malformed_json\"} 1".into(),
        "quarantined_rows{reason=\"missing_field:target\"} 1".into(),
        "quarantined_rows{reason=\"invalid_field:client_ts\"} 1".into(),
        "quarantined_rows{reason=\"late_beyond_window\"} 1".into(),
    ];
    for line in expected {
        let line = format!("tauc_layering_last_run_{line}");
        assert!(text.lines().any(|l| l == line), "no '{line}' in:\n{text}");
    }
    // one manifest PUT per committed partition of the run (the only run
    // in this warehouse), and their time
    let manifests = w
        .keys("wh")
        .await
        .into_iter()
        .filter(|k| k.ends_with("/_SUCCESS"))
        .count();
    let line = format!("tauc_layering_last_run_manifests_committed {manifests}");
    assert!(manifests >= 6, "{manifests} manifests");
    assert!(text.lines().any(|l| l == line), "no '{line}' in:\n{text}");
    assert!(
        text.contains("tauc_layering_last_run_manifest_commit_max_milliseconds "),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_region_without_raw_data_is_built_and_empty() {
    let w = World::new("empty-region");
    write_dataset(&w).await;
    let args = [
        "submit",
        "layering",
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
        "--region",
        "use1",
    ];
    w.tauc_job(&args, true).ok();
    let (m, rows) = w
        .read(Table::OdsEvent, "2024-06-18", "use1")
        .await
        .expect("committed");
    assert_eq!((m.rows, rows.num_rows(), m.files.len()), (0, 0, 0));
    let s = w.rows(Table::OdsLoadStats, "2024-06-18", "use1").await;
    assert_eq!(i64s(&s, "files"), vec![Some(0)]);
    let (m, _) = w
        .read(Table::DwdTrkEvent, "2024-06-18", "use1")
        .await
        .expect("committed");
    assert_eq!(m.rows, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn dwd_dedupe_event_time_and_derivations() {
    let w = World::new("dwd-cases");
    write_dataset(&w).await;
    load(&w, "2024-06-18", &[]);
    load(&w, "2024-06-19", &[]);

    let d = w.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    let mut ids = strs(&d, "event_id");
    ids.sort();
    let want: Vec<Option<String>> = ["e1", "e11", "e12", "e5", "e6", "e9", "e10"]
        .iter()
        .map(|s| Some(s.to_string()))
        .collect::<Vec<_>>();
    let mut want = want;
    want.sort();
    assert_eq!(ids, want);

    // e1: the first copy (smallest collector_ts, then src_file, then line)
    let i = row_of(&d, "e1");
    assert_eq!(ts(&d, "event_ts")[i], Some(C0 + H));
    assert_eq!(ts(&d, "local_ts")[i], Some(C0 + H + 19_800_000));
    assert_eq!(i32s(&d, "local_hour")[i], Some(6));
    assert_eq!(i64s(&d, "lateness_ms")[i], Some(0));
    assert_eq!(strs(&d, "page_path")[i].as_deref(), Some("/devices/{id}"));
    assert_eq!(strs(&d, "user_key")[i].as_deref(), Some("u1"));
    assert_eq!(strs(&d, "gender")[i].as_deref(), Some("M"));
    assert_eq!(strs(&d, "age_band")[i].as_deref(), Some("25-34"));
    assert_eq!(strs(&d, "browser_family")[i].as_deref(), Some("Chrome"));
    assert_eq!(strs(&d, "browser_major")[i].as_deref(), Some("120"));
    assert_eq!(strs(&d, "os_family")[i].as_deref(), Some("Windows"));
    assert_eq!(bools(&d, "is_bot")[i], Some(false));
    assert_eq!(strs(&d, "city")[i], None);

    // e5: client clock ahead → clamped to collector_ts
    let i = row_of(&d, "e5");
    assert_eq!(ts(&d, "event_ts")[i], Some(C0 + 2 * H));
    assert_eq!(bools(&d, "ts_clamped")[i], Some(true));
    assert_eq!(strs(&d, "user_key")[i].as_deref(), Some("d:dev5"));
    assert_eq!(strs(&d, "age_band")[i].as_deref(), Some("unknown"));

    // e6: offset cancels to 18:30Z = Kolkata midnight; arrival is C0
    let i = row_of(&d, "e6");
    assert_eq!(ts(&d, "event_ts")[i], Some(C0 - 19_800_000));
    assert_eq!(ts(&d, "local_ts")[i], Some(C0));
    assert_eq!(i32s(&d, "local_hour")[i], Some(0));
    assert_eq!(i64s(&d, "lateness_ms")[i], Some(19_800_000));
    assert_eq!(bools(&d, "ts_clamped")[i], Some(false));

    // e9: 2000 s on the page, capped at 30 min; uuid segment is an id
    let i = row_of(&d, "e9");
    assert_eq!(i64s(&d, "duration_ms")[i], Some(1_800_000));
    assert_eq!(
        strs(&d, "page_path")[i].as_deref(),
        Some("/users/{id}/profile")
    );

    let i = row_of(&d, "e10");
    assert_eq!(bools(&d, "is_bot")[i], Some(true));
    assert_eq!(strs(&d, "target_id")[i].as_deref(), Some("b1"));

    let i = row_of(&d, "e11");
    assert_eq!(
        strs(&d, "extra")[i].as_deref(),
        Some(r#"{"foo":{"x":1},"props":{"a":"b"}}"#)
    );
    assert_eq!(i64s(&d, "duration_ms")[i], None);

    // e12: nearest place to Dublin's coordinates; 23 the day before her birthday
    let i = row_of(&d, "e12");
    assert_eq!(strs(&d, "city")[i].as_deref(), Some("Dublin"));
    assert_eq!(strs(&d, "country")[i].as_deref(), Some("IE"));
    assert_eq!(strs(&d, "gender")[i].as_deref(), Some("F"));
    assert_eq!(strs(&d, "age_band")[i].as_deref(), Some("18-24"));

    // the CORS failure
    let c = w.rows(Table::DwdCorsError, "2024-06-18", "aps1").await;
    assert_eq!(strs(&c, "event_id"), vec![Some("e8".into())]);
    assert_eq!(strs(&c, "req_host"), vec![Some("api.example.com".into())]);
    assert_eq!(
        strs(&c, "req_path_tpl"),
        vec![Some("/v1/devices/{id}".into())]
    );
    assert_eq!(strs(&c, "req_method"), vec![Some("POST".into())]);
    assert_eq!(
        strs(&c, "req_origin"),
        vec![Some("https://portal.x".into())]
    );
    assert_eq!(strs(&c, "err_class"), vec![Some("network_or_cors".into())]);
    assert_eq!(i64s(&c, "duration_ms"), vec![Some(30)]);
    assert_eq!(strs(&c, "page_path"), vec![Some("/devices/{id}".into())]);
    // sha256("network_or_cors|POST|api.example.com|/v1/devices/{id}|https://portal.x")[..16],
    // computed with Python's hashlib from the spec's formula
    assert_eq!(
        strs(&c, "fingerprint"),
        vec![Some("b9a116ce319f9ac7".into())]
    );

    // e7 lands on the previous local date
    let prev = w.rows(Table::DwdTrkEvent, "2024-06-17", "aps1").await;
    assert_eq!(strs(&prev, "event_id"), vec![Some("e7".into())]);

    // dedupe stats: 11 + 1 valid rows in the window; e1 has 3 extra copies
    let s = w.rows(Table::DwdDedupeStats, "2024-06-18", "aps1").await;
    assert_eq!(i64s(&s, "rows_read"), vec![Some(12)]);
    assert_eq!(i64s(&s, "duplicates"), vec![Some(3)]);
    assert_eq!(i64s(&s, "rows_written"), vec![Some(8)]);
    // 2024-06-19 is built and empty
    let (m, empty) = w
        .read(Table::DwdTrkEvent, "2024-06-19", "aps1")
        .await
        .unwrap();
    assert_eq!((m.rows, empty.num_rows(), m.files.len()), (0, 0, 0));
    // loading C+1 rebuilt C-2 ..= C+2 (L = 2); C+3 was not touched
    assert!(
        w.read(Table::DwdTrkEvent, "2024-06-16", "aps1")
            .await
            .is_some()
    );
    assert!(
        w.read(Table::DwdTrkEvent, "2024-06-21", "aps1")
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reverse_order_and_rerun_give_the_same_rows() {
    let fwd = World::new("order-fwd");
    write_dataset(&fwd).await;
    load(&fwd, "2024-06-18", &[]);
    load(&fwd, "2024-06-19", &[]);

    let rev = World::new("order-rev");
    write_dataset(&rev).await;
    load(&rev, "2024-06-19", &[]);
    // after day 2 alone, e1 comes from its only copy
    let only = rev.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    assert_eq!(strs(&only, "event_id"), vec![Some("e1".into())]);
    load(&rev, "2024-06-18", &[]);

    for table in [Table::DwdTrkEvent, Table::DwdCorsError] {
        for dt in [
            "2024-06-16",
            "2024-06-17",
            "2024-06-18",
            "2024-06-19",
            "2024-06-20",
        ] {
            let a = fwd.rows(table, dt, "aps1").await;
            let b = rev.rows(table, dt, "aps1").await;
            assert_eq!(
                render_sorted(&a, &[]),
                render_sorted(&b, &[]),
                "{table:?} {dt}"
            );
        }
    }

    // re-running a day gives identical rows, and the old files are gone
    let before = fwd.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    let ods_before = fwd.rows(Table::OdsEvent, "2024-06-18", "aps1").await;
    load(&fwd, "2024-06-18", &[]);
    let after = fwd.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    let ods_after = fwd.rows(Table::OdsEvent, "2024-06-18", "aps1").await;
    assert_eq!(render_sorted(&before, &[]), render_sorted(&after, &[]));
    assert_eq!(
        render_sorted(&ods_before, &[]),
        render_sorted(&ods_after, &[])
    );
    // only the re-run's files are left
    let m = fwd
        .assert_only_listed_files(Table::DwdTrkEvent, "2024-06-18", "aps1")
        .await;
    assert!(m.files.iter().all(|f| f.contains(&m.run_id)), "{m:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn new_york_dst_day_and_lateness_window() {
    let w = World::new("dst");
    // 2024-03-10: New York springs forward at 07:00Z (02:00 EST → 03:00 EDT)
    let c0: i64 = 1_710_028_800_000; // 2024-03-10T00:00:00Z
    let ev = |id: &str, t: i64, r: i64| {
        json!({"event_id": id, "event_type": "page_enter", "client_ts": t, "collector_ts": r, "device_id": "d"}).to_string()
    };
    let lines = [
        ev("before-midnight", c0 + 5 * H - 1, c0 + 5 * H - 1), // 23:59:59.999 EST on 03-09
        ev("midnight", c0 + 5 * H, c0 + 5 * H),                // 00:00 EST on 03-10
        ev("last-est", c0 + 7 * H - 1_000, c0 + 7 * H - 1_000), // 01:59:59 EST
        ev("first-edt", c0 + 7 * H, c0 + 7 * H),               // 03:00 EDT
        // lateness allowance L = 2 days: exactly 2 days is kept, +1 ms is not
        ev("late-ok", c0 + H - 2 * DAY, c0 + H),
        ev("late-no", c0 + H - 2 * DAY - 1, c0 + H),
    ];
    w.put(
        "raw/uat/use1/2024/03/10/messages-1710028800000.txt",
        lines.join("\n"),
    )
    .await;
    w.put("wh/dim/dim_user/u.csv", "user_id,gender,birth_date\n")
        .await;
    w.submit(&["--date", "2024-03-10", "--region", "use1"]).ok();

    let d = w.rows(Table::DwdTrkEvent, "2024-03-10", "use1").await;
    let hour = |id: &str| i32s(&d, "local_hour")[row_of(&d, id)];
    assert_eq!(hour("midnight"), Some(0));
    assert_eq!(hour("last-est"), Some(1));
    assert_eq!(hour("first-edt"), Some(3));
    assert_eq!(
        ts(&d, "local_ts")[row_of(&d, "first-edt")],
        Some(c0 + 3 * H)
    );
    let prev = w.rows(Table::DwdTrkEvent, "2024-03-09", "use1").await;
    let mut prev_ids = strs(&prev, "event_id");
    prev_ids.sort();
    // late-ok happened at 2024-03-08T01:00Z = 03-07 20:00 EST
    assert_eq!(prev_ids, vec![Some("before-midnight".into())]);
    let older = w.rows(Table::DwdTrkEvent, "2024-03-07", "use1").await;
    assert_eq!(strs(&older, "event_id"), vec![Some("late-ok".into())]);
    let q = w.rows(Table::OdsQuarantine, "2024-03-10", "use1").await;
    assert_eq!(strs(&q, "event_id"), vec![Some("late-no".into())]);
    assert_eq!(strs(&q, "reason"), vec![Some("late_beyond_window".into())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn day_folder_with_more_than_1000_objects() {
    let w = World::new("many-files");
    let c0: i64 = 1_718_668_800_000;
    let n: i64 = 1_105;
    use futures::StreamExt;
    let items: Vec<(String, String)> = (0..n)
        .map(|i| {
            let t = c0 + i * 60_000;
            let body = json!({"event_id": format!("m{i}"), "event_type": "page_enter", "client_ts": t, "collector_ts": t, "device_id": "d"}).to_string();
            (format!("raw/uat/euw1/2024/06/18/messages-{t}.txt"), body)
        })
        .collect();
    futures::stream::iter(items.iter().map(|(k, b)| w.put(k, b.clone())))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    w.put("wh/dim/dim_user/u.csv", "user_id,gender,birth_date\n")
        .await;
    // one range: a single listing has to page through 1105 keys
    w.submit(&["--date", "2024-06-18", "--region", "euw1", "--ranges", "1"])
        .ok();
    let s = w.rows(Table::OdsLoadStats, "2024-06-18", "euw1").await;
    assert_eq!(i64s(&s, "files"), vec![Some(n)]);
    assert_eq!(i64s(&s, "valid_rows"), vec![Some(n)]);
    // and with several ranges every object is still read once
    w.submit(&["--date", "2024-06-18", "--region", "euw1", "--ranges", "7"])
        .ok();
    let s = w.rows(Table::OdsLoadStats, "2024-06-18", "euw1").await;
    assert_eq!(i64s(&s, "files"), vec![Some(n)]);
    assert_eq!(i64s(&s, "lines"), vec![Some(n)]);
}

/// A local raw root is read without following symbolic links: a
/// `messages-x.txt` link to a file outside the root is counted with the
/// ignored files and named in a warning, and nothing of its target
/// reaches a table (issue: it landed in the quarantine's `raw_line`).
#[tokio::test(flavor = "multi_thread")]
async fn a_local_raw_root_does_not_follow_symbolic_links() {
    let w = World::new("symlinks");
    let raw = w.dir.path().join("raw");
    let day = raw.join("uat/aps1/2024/06/18");
    std::fs::create_dir_all(&day).unwrap();
    let events = [("s1", C0 + H), ("s2", C0 + 2 * H)].map(|(id, t)| {
        json!({"event_id": id, "event_type": "page_enter", "client_ts": t, "collector_ts": t, "device_id": "d"})
            .to_string()
    });
    std::fs::write(day.join("messages-1718668800000.txt"), events.join("\n")).unwrap();
    let outside = w.dir.path().join("passwd");
    std::fs::write(&outside, "root:x:0:0:tauc-secret-line\n").unwrap();
    let link = day.join("messages-1718690400000.txt");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    w.put("wh/dim/dim_user/u.csv", "user_id,gender,birth_date\n")
        .await;
    let raw_root = raw.to_str().unwrap().to_string();
    let wh = w.warehouse();
    let run = w.tauc_job(
        &[
            "submit",
            "layering",
            "--date",
            "2024-06-18",
            "--region",
            "aps1",
            "--raw-root",
            &raw_root,
            "--warehouse",
            &wh,
            "--s3-endpoint",
            &w.endpoint,
            "--s3-allow-http",
        ],
        false,
    );
    run.ok();
    assert!(
        run.stderr.contains("symbolic link") && run.stderr.contains(link.to_str().unwrap()),
        "no warning names the link:\n{run}"
    );
    let s = w.rows(Table::OdsLoadStats, "2024-06-18", "aps1").await;
    assert_eq!(i64s(&s, "files"), vec![Some(1)]);
    assert_eq!(i64s(&s, "files_ignored"), vec![Some(1)]);
    assert_eq!(i64s(&s, "lines"), vec![Some(2)]);
    assert_eq!(i64s(&s, "valid_rows"), vec![Some(2)]);
    let q = w.rows(Table::OdsQuarantine, "2024-06-18", "aps1").await;
    assert_eq!(q.num_rows(), 0, "{:?}", strs(&q, "raw_line"));
}

/// A raw object whose name holds a tab (S3 takes any UTF-8 key; the
/// uploader never writes one) is counted with the ignored files and named
/// in a warning; the batches listed around it are all read (issue: one
/// such object failed the run with `InvalidPath … BadSegment`).
#[tokio::test(flavor = "multi_thread")]
async fn a_raw_object_named_with_a_tab_is_ignored_and_the_rest_read() {
    let w = World::new("tabname");
    let folder = "raw/uat/aps1/2024/06/18";
    for (i, t) in [C0 + H, C0 + 2 * H, C0 + 3 * H, C0 + 4 * H]
        .iter()
        .enumerate()
    {
        let line = json!({"event_id": format!("t{i}"), "event_type": "page_enter",
            "client_ts": t, "collector_ts": t, "device_id": "d"});
        w.put(&format!("{folder}/messages-{t}.txt"), line.to_string())
            .await;
    }
    // written beside the server's files: a client library would escape it
    let day = w.dir.path().join("s3/tabname").join(folder);
    let bad = day.join(format!("messages-{}\t.txt", C0 + 2 * H));
    std::fs::write(&bad, "{\"event_id\":\"bad\"}\n").unwrap();
    w.put("wh/dim/dim_user/u.csv", "user_id,gender,birth_date\n")
        .await;
    let run = w.submit(&["--date", "2024-06-18", "--region", "aps1"]);
    run.ok();
    assert!(
        run.stderr.contains("ignored a raw object")
            && run
                .stderr
                .contains(&format!("messages-{}\\t.txt", C0 + 2 * H)),
        "no warning names the object:\n{run}"
    );
    let s = w.rows(Table::OdsLoadStats, "2024-06-18", "aps1").await;
    assert_eq!(i64s(&s, "files"), vec![Some(4)]);
    assert_eq!(i64s(&s, "files_ignored"), vec![Some(1)]);
    assert_eq!(i64s(&s, "valid_rows"), vec![Some(4)]);
}

/// layers.md dedupes by `event_id` over the rows a partition reads, and a
/// DWD partition reads its own region's ODS: one id collected in two
/// regions is two events, kept once in each; a copy within a region is
/// still removed. (The plan counts copies per id across the run's regions,
/// so this id takes the dedupe path in both.)
#[tokio::test(flavor = "multi_thread")]
async fn an_event_id_in_two_regions_is_kept_once_in_each() {
    let w = World::new("id-two-regions");
    let t = C0 + 6 * H; // 11:30 in Kolkata, 07:00 in Dublin: both on 2024-06-18
    let ev = |id: &str, dev: &str| {
        json!({"event_id": id, "event_type": "page_enter", "client_ts": t, "collector_ts": t, "device_id": dev})
            .to_string()
    };
    w.put(KEY_A, ev("x1", "dev-a") + "\n").await;
    let euw1 = [ev("x1", "dev-e"), ev("x2", "dev-e"), ev("x2", "dev-e")].join("\n");
    w.put("raw/uat/euw1/2024/06/18/messages-1718668800000.txt", euw1)
        .await;
    w.put("wh/dim/dim_user/u.csv", "user_id,gender,birth_date\n")
        .await;
    w.submit(&[
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
        "--region",
        "euw1",
    ])
    .ok();

    let a = w.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    assert_eq!(strs(&a, "event_id"), vec![Some("x1".into())]);
    assert_eq!(strs(&a, "device_id"), vec![Some("dev-a".into())]);
    let e = w.rows(Table::DwdTrkEvent, "2024-06-18", "euw1").await;
    let mut ids = strs(&e, "event_id");
    ids.sort();
    assert_eq!(ids, vec![Some("x1".into()), Some("x2".into())]);
    assert_eq!(strs(&e, "device_id"), vec![Some("dev-e".into()); 2]);

    let sa = w.rows(Table::DwdDedupeStats, "2024-06-18", "aps1").await;
    assert_eq!(i64s(&sa, "duplicates"), vec![Some(0)]);
    let se = w.rows(Table::DwdDedupeStats, "2024-06-18", "euw1").await;
    assert_eq!(i64s(&se, "rows_read"), vec![Some(3)]);
    assert_eq!(i64s(&se, "duplicates"), vec![Some(1)]);
    assert_eq!(i64s(&se, "rows_written"), vec![Some(2)]);
}

/// The ids seen more than once are found by a job of their own, whose
/// executors write them under the warehouse's `_tmp/{run_id}/`; the run
/// removes them when its DWD stage ends. A day without any copy takes the
/// plan without the joins on those ids: every row is its own kept row.
/// Expected values from layers.md: DWD 2024-06-18 reads ODS 06-17 … 06-21,
/// so after day 2 the re-delivered y1 is one copy of two (rows_read 3,
/// duplicates 1), the first collected kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_day_without_copies_and_the_copied_ids_scratch() {
    let w = World::new("copied-scratch");
    let t = C0 + 6 * H; // 11:30 in Kolkata on 2024-06-18
    let ev = |id: &str, collected: i64| {
        json!({"event_id": id, "event_type": "page_enter", "client_ts": t, "collector_ts": collected, "device_id": "dev-y"})
            .to_string()
    };
    w.put(KEY_A, [ev("y1", t), ev("y2", t)].join("\n") + "\n")
        .await;
    w.put("wh/dim/dim_user/u.csv", "user_id,gender,birth_date\n")
        .await;
    w.submit(&["--date", "2024-06-18", "--region", "aps1"]).ok();
    let a = w.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    let mut ids = strs(&a, "event_id");
    ids.sort();
    assert_eq!(ids, vec![Some("y1".into()), Some("y2".into())]);
    let s = w.rows(Table::DwdDedupeStats, "2024-06-18", "aps1").await;
    assert_eq!(i64s(&s, "rows_read"), vec![Some(2)]);
    assert_eq!(i64s(&s, "duplicates"), vec![Some(0)]);
    assert_eq!(w.keys("wh/_tmp").await, Vec::<String>::new());

    w.put(KEY_DAY2, ev("y1", t + DAY) + "\n").await;
    w.submit(&["--date", "2024-06-19", "--region", "aps1"]).ok();
    let a = w.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    let mut kept: Vec<_> = strs(&a, "event_id")
        .into_iter()
        .zip(i64s(&a, "lateness_ms"))
        .collect();
    kept.sort();
    // y1's kept copy is the one collected at once (lateness 0), not the
    // one a day later
    assert_eq!(
        kept,
        vec![(Some("y1".into()), Some(0)), (Some("y2".into()), Some(0))]
    );
    let s = w.rows(Table::DwdDedupeStats, "2024-06-18", "aps1").await;
    assert_eq!(i64s(&s, "rows_read"), vec![Some(3)]);
    assert_eq!(i64s(&s, "duplicates"), vec![Some(1)]);
    assert_eq!(i64s(&s, "rows_written"), vec![Some(2)]);
    assert_eq!(w.keys("wh/_tmp").await, Vec::<String>::new());
}
