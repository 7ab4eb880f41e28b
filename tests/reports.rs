//! The reports job against a real S3 server, on DWD partitions written by
//! hand (so every input column is exactly what the test says), with every
//! expected figure worked out by hand from analyses.md.
//!
//! Region `aps1` (Asia/Kolkata, +05:30). K0 = 2024-06-18 00:00 local =
//! 2024-06-17T18:30Z; T = K0 + 1 h. DWD 2024-06-17 is *not* committed (the
//! anomaly baseline reaches into a missing day); 2024-06-18 (D1) and
//! 2024-06-19 (D2) are.
//!
//! D1 tracking events (user, page, target):
//! - p1 page_enter T-10 s u1 /home; c1 click T u1 /home btn-a; c2 click
//!   T+29 999 ms u1 btn-a (duplicate); p2 page_enter T+50 s u1
//!   /devices/{id} (funnel end exactly 60 s after p1: passes)
//! - p3 page_enter T-10 s u2 /home; c3 click T u2 btn-a; c4 click T+30 000
//!   u2 btn-a (not a duplicate); p4 page_enter T+50.001 s u2 /devices/{id}
//!   (60 001 ms: fails)
//! - c5, c6, c7 clicks T, T+20 s, T+40 s u3 btn-a (chain: only c6 is a
//!   duplicate); p5 page_enter T+50 s u3 /home (after its clicks)
//! - p6 page_enter T+100 s u4 /devices/{id}; i1 impression T u4 bn-1;
//!   c8 click T+1 s u4 /home bn-1
//! - p7, p8 page_enter T, T+1 s u5 /home; p9 page_enter T+2 s u5
//!   /devices/{id}
//! - i2, i3 impressions T u1, u2 bn-1
//! - bot: b1 click btn-a, b2 impression bn-1, b3 page_enter /home
//! - l1 page_leave u1 /home 1000 ms; l2 u2 /home no duration; l3, l4 u3
//!   /help 500 and 1500 ms; n1 page_enter u6 without a page
//!
//! D1 CORS errors: one `timeout` (u4) at K0+2h05; 30
//! `network_or_cors` at K0+13h05 + i s (i < 15 fingerprint A, else B,
//! user u(i%3+1)); 5 bot errors there too.
//! D2: impressions u1, u2 and a bot on bn-1, a click u1 on btn-a; one
//! `http_5xx` error (u1) at D2 00:01 local.
//!
//! Contracts: k-cpc btn-a CPC 0.125 for D1 only; k-cpm bn-1 CPM 2.5 from
//! D2, open; k-cpm2 bn-1 CPM 2.5 from D1, open; k-old ended before D1.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    new_null_array,
};
use tauc_jobs::store::Location;
use tauc_jobs::warehouse::commit::{self, PartitionRef};
use tauc_jobs::warehouse::tables::Table;

use crate::harness::*;

const K0: i64 = 1_718_649_000_000; // 2024-06-17T18:30:00Z
const H: i64 = 3_600_000;
const T: i64 = K0 + H;
const DAY: i64 = 86_400_000;

/// One hand-made DWD row: only the columns the reports read.
#[derive(Clone, Default)]
pub struct Row {
    id: &'static str,
    ty: &'static str,
    ts: i64,
    user: &'static str,
    bot: bool,
    page: Option<&'static str>,
    target: Option<(&'static str, &'static str)>,
    duration: Option<i64>,
    // cors
    class: &'static str,
    fp: &'static str,
    path: &'static str,
}

fn ev(
    id: &'static str,
    ty: &'static str,
    ts: i64,
    user: &'static str,
    page: Option<&'static str>,
) -> Row {
    Row {
        id,
        ty,
        ts,
        user,
        page,
        ..Default::default()
    }
}

fn click(
    id: &'static str,
    ts: i64,
    user: &'static str,
    tt: &'static str,
    tid: &'static str,
) -> Row {
    Row {
        target: Some((tt, tid)),
        ..ev(id, "click", ts, user, Some("/home"))
    }
}

fn imp(id: &'static str, ts: i64, user: &'static str) -> Row {
    Row {
        target: Some(("banner", "bn-1")),
        ..ev(id, "impression", ts, user, None)
    }
}

fn leave(id: &'static str, user: &'static str, page: &'static str, d: Option<i64>) -> Row {
    Row {
        duration: d,
        ..ev(id, "page_leave", T + 3 * H, user, Some(page))
    }
}

fn bot(r: Row) -> Row {
    Row { bot: true, ..r }
}

fn cors(id: String, ts: i64, user: &'static str, class: &'static str, fp: &'static str) -> Row {
    Row {
        id: Box::leak(id.into_boxed_str()),
        ty: "cors_error",
        ts,
        user,
        class,
        fp,
        path: if fp.starts_with("0a") {
            "/v1/a"
        } else {
            "/v1/b"
        },
        ..Default::default()
    }
}

const FP_A: &str = "0a00000000000000";
const FP_B: &str = "0b00000000000000";
const FP_T: &str = "ff00000000000000";

fn d1_events() -> Vec<Row> {
    vec![
        ev("p1", "page_enter", T - 10_000, "u1", Some("/home")),
        click("c1", T, "u1", "button", "btn-a"),
        click("c2", T + 29_999, "u1", "button", "btn-a"),
        ev("p2", "page_enter", T + 50_000, "u1", Some("/devices/{id}")),
        ev("p3", "page_enter", T - 10_000, "u2", Some("/home")),
        click("c3", T, "u2", "button", "btn-a"),
        click("c4", T + 30_000, "u2", "button", "btn-a"),
        ev("p4", "page_enter", T + 50_001, "u2", Some("/devices/{id}")),
        click("c5", T, "u3", "button", "btn-a"),
        click("c6", T + 20_000, "u3", "button", "btn-a"),
        click("c7", T + 40_000, "u3", "button", "btn-a"),
        ev("p5", "page_enter", T + 50_000, "u3", Some("/home")),
        ev("p6", "page_enter", T + 100_000, "u4", Some("/devices/{id}")),
        imp("i1", T, "u4"),
        click("c8", T + 1_000, "u4", "banner", "bn-1"),
        ev("p7", "page_enter", T, "u5", Some("/home")),
        ev("p8", "page_enter", T + 1_000, "u5", Some("/home")),
        ev("p9", "page_enter", T + 2_000, "u5", Some("/devices/{id}")),
        imp("i2", T, "u1"),
        imp("i3", T, "u2"),
        bot(click("b1", T, "d:bot", "button", "btn-a")),
        bot(imp("b2", T, "d:bot")),
        bot(ev("b3", "page_enter", T - 10_000, "d:bot", Some("/home"))),
        leave("l1", "u1", "/home", Some(1000)),
        leave("l2", "u2", "/home", None),
        leave("l3", "u3", "/help", Some(500)),
        leave("l4", "u3", "/help", Some(1500)),
        ev("n1", "page_enter", T + 4 * H, "u6", None),
    ]
}

fn d1_errors() -> Vec<Row> {
    let users = ["u1", "u2", "u3"];
    let base = K0 + 13 * H + 300_000;
    let mut v = vec![cors(
        "t1".into(),
        K0 + 2 * H + 300_000,
        "u4",
        "timeout",
        FP_T,
    )];
    for i in 0..30 {
        let fp = if i < 15 { FP_A } else { FP_B };
        v.push(cors(
            format!("x{i}"),
            base + i * 1000,
            users[i as usize % 3],
            "network_or_cors",
            fp,
        ));
    }
    for i in 0..5 {
        v.push(bot(cors(
            format!("bx{i}"),
            base,
            "d:bot",
            "network_or_cors",
            FP_B,
        )));
    }
    v
}

fn d2_events() -> Vec<Row> {
    vec![
        imp("j1", T + DAY, "u1"),
        imp("j2", T + DAY, "u2"),
        bot(imp("j3", T + DAY, "d:bot")),
        click("j4", T + DAY, "u1", "button", "btn-a"),
    ]
}

fn d2_errors() -> Vec<Row> {
    vec![cors("y1".into(), K0 + DAY + 60_000, "u1", "http_5xx", FP_T)]
}

/// A DWD batch of `table` with the rows' columns set and the others null.
fn dwd_batch(table: Table, rows: &[Row]) -> RecordBatch {
    let schema = table.schema();
    let s = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let cols = schema
        .fields()
        .iter()
        .map(|field| -> ArrayRef {
            match field.name().as_str() {
                "event_id" => s(&|r| Some(r.id.into())),
                "event_type" => s(&|r| Some(r.ty.into())),
                "event_ts" => Arc::new(
                    TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.ts))
                        .with_timezone("UTC"),
                ),
                "user_key" => s(&|r| Some(r.user.into())),
                "is_bot" => Arc::new(rows.iter().map(|r| Some(r.bot)).collect::<BooleanArray>()),
                "page_path" => s(&|r| r.page.map(Into::into)),
                "target_type" => s(&|r| r.target.map(|t| t.0.into())),
                "target_id" => s(&|r| r.target.map(|t| t.1.into())),
                "duration_ms" if table == Table::DwdTrkEvent => {
                    Arc::new(rows.iter().map(|r| r.duration).collect::<Int64Array>())
                }
                "err_class" => s(&|r| Some(r.class.into())),
                "fingerprint" => s(&|r| Some(r.fp.into())),
                "req_method" => s(&|_| Some("GET".into())),
                "req_host" => s(&|_| Some("api.example.com".into())),
                "req_path_tpl" => s(&|r| Some(r.path.into())),
                "req_origin" => s(&|_| Some(String::new())),
                _ => new_null_array(field.data_type(), rows.len()),
            }
        })
        .collect();
    RecordBatch::try_new(schema, cols).unwrap()
}

/// Commits DWD partitions of `aps1` (or `region`) as the layering job
/// would.
pub async fn commit_dwd(w: &World, region: &str, dt: &str, trk: &[Row], cors: &[Row]) {
    let store = w
        .engine
        .registry
        .for_location(&Location::parse(&w.warehouse()).unwrap())
        .unwrap();
    let wh = Location::parse(&w.warehouse()).unwrap();
    let p = PartitionRef {
        dt: chrono::NaiveDate::parse_from_str(dt, "%Y-%m-%d").unwrap(),
        region: region.into(),
    };
    for (table, rows) in [(Table::DwdTrkEvent, trk), (Table::DwdCorsError, cors)] {
        commit::commit_table(
            &store,
            "test-run",
            "layering",
            &wh,
            table,
            &p,
            vec![dwd_batch(table, rows)],
        )
        .await
        .unwrap();
    }
}

const CONTRACTS: &str =
    "contract_id,partner_id,target_id,pricing_model,unit_price,currency,valid_from,valid_to
k-cpc,p1,btn-a,CPC,0.125,USD,2024-06-01,2024-06-18
k-cpm,p2,bn-1,CPM,2.5,EUR,2024-06-19,
k-cpm2,p3,bn-1,cpm,2.500000,USD,2024-06-18,
k-old,p4,btn-a,CPC,9,USD,2024-01-01,2024-06-17
";

const FUNNELS: &str = r#"
[[funnel]]
id = "f"
window_seconds = 60
[[funnel.step]]
event_type = "page_enter"
page_path = "/home"
[[funnel.step]]
event_type = "click"
target_type = "button"
target_id = "btn-a"
[[funnel.step]]
event_type = "page_enter"
page_path = "/devices/{id}"

[[funnel]]
id = "never"
window_seconds = 3600
[[funnel.step]]
event_type = "page_enter"
page_path = "/nowhere"
[[funnel.step]]
event_type = "click"
"#;

/// The columns of `ads_trk_target_click_1d` the tests compare.
const TARGET_COLS: &[&str] = &[
    "target_type",
    "target_id",
    "clicks",
    "impressions",
    "clickers",
    "avg_clicks_per_clicker",
    "ctr",
];

/// The columns of `ads_mon_cors_summary_1d`.
const SUMMARY_COLS: &[&str] = &[
    "errors",
    "affected_users",
    "fingerprints",
    "page_views",
    "errors_per_1k_pv",
];

/// Selected columns of each row as text (floats to 4 places), sorted.
fn text(b: &RecordBatch, cols: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = (0..b.num_rows())
        .map(|i| {
            cols.iter()
                .map(|c| {
                    let col = b
                        .column_by_name(c)
                        .unwrap_or_else(|| panic!("no column {c}"));
                    if col.is_null(i) {
                        return "null".to_string();
                    }
                    match col
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::Float64Array>()
                    {
                        Some(f) => format!("{:.4}", f.value(i)),
                        None => {
                            datafusion::arrow::util::display::array_value_to_string(col, i).unwrap()
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    rows.sort();
    rows
}

fn lines(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

use datafusion::arrow::array::Array;

#[tokio::test(flavor = "multi_thread")]
async fn reports_match_hand_computed_figures() {
    let w = World::new("reports");
    commit_dwd(&w, "aps1", "2024-06-18", &d1_events(), &d1_errors()).await;
    commit_dwd(&w, "aps1", "2024-06-19", &d2_events(), &d2_errors()).await;
    w.put("wh/dim/dim_contract/contracts.csv", CONTRACTS).await;
    w.put("conf/test-funnels.toml", FUNNELS).await;
    let funnels = format!("s3://{}/conf/test-funnels.toml", w.bucket);
    let submit = [
        "submit",
        "reports",
        "--date",
        "2024-06-18",
        "--to",
        "2024-06-19",
        "--region",
        "aps1",
        "--funnels",
        &funnels,
    ];
    let out = w.tauc_job(&submit, true).ok().to_string();
    assert!(
        out.contains("funnels: 2 from s3://reports/conf/test-funnels.toml"),
        "{out}"
    );

    let (d1, d2) = ("2024-06-18", "2024-06-19");
    let t = w.rows(Table::AdsTargetClick, d1, "aps1").await;
    assert_eq!(
        text(&t, TARGET_COLS),
        lines(&[
            "banner bn-1 1 3 1 1.0000 0.3333",
            "button btn-a 7 0 3 2.3333 null"
        ])
    );
    let t = w.rows(Table::AdsTargetClick, d2, "aps1").await;
    assert_eq!(
        text(&t, TARGET_COLS),
        lines(&[
            "banner bn-1 0 2 0 null 0.0000",
            "button btn-a 1 0 1 1.0000 null"
        ])
    );

    let p = w.rows(Table::AdsPage, d1, "aps1").await;
    assert_eq!(
        text(&p, &["page_path", "pv", "uv", "clicks", "avg_duration_ms"]),
        lines(&[
            "/devices/{id} 4 4 0 null",
            "/help 0 0 0 1000.0000",
            "/home 5 4 8 1000.0000",
        ])
    );

    let f = w.rows(Table::AdsFunnel, d1, "aps1").await;
    assert_eq!(
        text(
            &f,
            &[
                "funnel_id",
                "step_no",
                "users",
                "conv_from_start",
                "conv_from_prev"
            ]
        ),
        lines(&[
            "f 1 4 1.0000 1.0000",
            "f 2 2 0.5000 0.5000",
            "f 3 1 0.2500 0.5000",
            "never 1 0 null null",
            "never 2 0 null null",
        ])
    );
    // D2 has no page views at all: every step 0
    let f = w.rows(Table::AdsFunnel, d2, "aps1").await;
    assert_eq!(f.num_rows(), 5);
    assert!(i64s(&f, "users").iter().all(|u| *u == Some(0)));

    let s = w.rows(Table::AdsCorsSummary, d1, "aps1").await;
    assert_eq!(
        text(&s, SUMMARY_COLS),
        // 31 non-bot errors, users u1-u4, fingerprints A B T, 10 page views
        lines(&["31 4 3 10 3100.0000"])
    );
    let s = w.rows(Table::AdsCorsSummary, d2, "aps1").await;
    assert_eq!(text(&s, SUMMARY_COLS), lines(&["1 1 1 0 null"]));

    let top = w.rows(Table::AdsCorsTopN, d1, "aps1").await;
    let base = K0 + 13 * H + 300_000;
    assert_eq!(
        text(
            &top,
            &[
                "rank",
                "fingerprint",
                "err_class",
                "req_path_tpl",
                "errors",
                "affected_users"
            ]
        ),
        lines(&[
            "1 0a00000000000000 network_or_cors /v1/a 15 3",
            "2 0b00000000000000 network_or_cors /v1/b 15 3",
            "3 ff00000000000000 timeout /v1/b 1 1",
        ])
    );
    let first = ts(&top, "first_seen");
    let last = ts(&top, "last_seen");
    let fps = strs(&top, "fingerprint");
    let a = fps.iter().position(|f| f.as_deref() == Some(FP_A)).unwrap();
    let b = fps.iter().position(|f| f.as_deref() == Some(FP_B)).unwrap();
    assert_eq!((first[a], last[a]), (Some(base), Some(base + 14_000)));
    // the bot errors at `base` are not B's first sighting
    assert_eq!(
        (first[b], last[b]),
        (Some(base + 15_000), Some(base + 29_000))
    );

    // anomaly, D1: series all, network_or_cors, timeout × 24 buckets
    let an = w.rows(Table::AdsCorsAnomaly, d1, "aps1").await;
    assert_eq!(an.num_rows(), 72);
    let series = strs(&an, "series");
    let starts = ts(&an, "hour_start");
    let find = |s: &str, bucket: i64| {
        (0..an.num_rows())
            .find(|&i| series[i].as_deref() == Some(s) && starts[i] == Some(K0 + bucket * H))
            .unwrap_or_else(|| panic!("no row {s} bucket {bucket}"))
    };
    let (errors, n) = (i64s(&an, "errors"), i64s(&an, "baseline_n"));
    let (med, mad, z) = (
        f64s(&an, "baseline_median"),
        f64s(&an, "mad"),
        f64s(&an, "robust_z"),
    );
    let alert = bools(&an, "is_alert");
    // first bucket: local midnight, baseline entirely in the missing day
    let i = find("all", 0);
    assert_eq!(ts(&an, "hour_start_local")[i], Some(K0 + 19_800_000));
    assert_eq!(
        (errors[i], n[i], med[i], mad[i], z[i]),
        (Some(0), Some(0), None, None, None)
    );
    // bucket 11: 11 baseline buckets → no z; bucket 12: 12 → z = 0
    let i = find("all", 11);
    assert_eq!((n[i], med[i], z[i]), (Some(11), Some(0.0), None));
    let i = find("all", 12);
    assert_eq!((n[i], z[i]), (Some(12), Some(0.0)));
    // bucket 2 holds the timeout error
    assert_eq!(errors[find("all", 2)], Some(1));
    assert_eq!(errors[find("timeout", 2)], Some(1));
    // the spike: 30 (bots excluded), baseline 13 buckets (12 × 0, 1 × 1)
    let i = find("all", 13);
    assert_eq!(
        (errors[i], n[i], med[i], mad[i]),
        (Some(30), Some(13), Some(0.0), Some(0.0))
    );
    assert!((z[i].unwrap() - 0.6745 * 30.0).abs() < 1e-9);
    assert_eq!(alert[i], Some(true));
    let i = find("network_or_cors", 13);
    assert_eq!((errors[i], alert[i]), (Some(30), Some(true)));
    let i = find("timeout", 13);
    assert_eq!(
        (errors[i], z[i], alert[i]),
        (Some(0), Some(0.0), Some(false))
    );
    assert_eq!(alert.iter().filter(|a| **a == Some(true)).count(), 2);

    // D2: series all + http_5xx only; every baseline is 24 buckets of
    // committed days
    let an = w.rows(Table::AdsCorsAnomaly, d2, "aps1").await;
    assert_eq!(an.num_rows(), 48);
    let mut names = strs(&an, "series");
    names.sort();
    names.dedup();
    assert_eq!(names, vec![Some("all".into()), Some("http_5xx".into())]);
    assert!(i64s(&an, "baseline_n").iter().all(|n| *n == Some(24)));
    let series = strs(&an, "series");
    let starts = ts(&an, "hour_start");
    let i = (0..an.num_rows())
        .find(|&i| series[i].as_deref() == Some("all") && starts[i] == Some(K0 + DAY))
        .unwrap();
    // baseline: 22 × 0, 1, 30 → median 0, mad 0
    assert_eq!(i64s(&an, "errors")[i], Some(1));
    assert_eq!(f64s(&an, "baseline_median")[i], Some(0.0));
    assert!((f64s(&an, "robust_z")[i].unwrap() - 0.6745).abs() < 1e-9);

    let cols = [
        "contract_id",
        "partner_id",
        "target_id",
        "pricing_model",
        "currency",
        "unit_price",
        "gross_clicks",
        "bot_clicks",
        "dup_clicks",
        "valid_clicks",
        "gross_impressions",
        "bot_impressions",
        "valid_impressions",
        "billable_qty",
        "amount",
    ];
    let st = w.rows(Table::AdsSettlement, d1, "aps1").await;
    assert_eq!(
        text(&st, &cols),
        lines(&[
            // 8 clicks, 1 bot, 2 duplicates (c2, c6) → 5 × 0.125 = 0.625 → 0.63
            "k-cpc p1 btn-a CPC USD 0.125000 8 1 2 5 0 0 0 5 0.630000",
            // 4 impressions, 1 bot → 3 × 2.5 / 1000 = 0.0075 → 0.01
            "k-cpm2 p3 bn-1 CPM USD 2.500000 1 0 0 1 4 1 3 3 0.010000",
        ])
    );
    let st = w.rows(Table::AdsSettlement, d2, "aps1").await;
    assert_eq!(
        text(&st, &cols),
        lines(&[
            // 2 × 2.5 / 1000 = 0.005: half a cent, away from zero → 0.01
            "k-cpm p2 bn-1 CPM EUR 2.500000 0 0 0 0 3 1 2 2 0.010000",
            "k-cpm2 p3 bn-1 CPM USD 2.500000 0 0 0 0 3 1 2 2 0.010000",
        ])
    );
    assert_eq!(
        st.schema().field_with_name("amount").unwrap().data_type(),
        &datafusion::arrow::datatypes::DataType::Decimal128(18, 6)
    );

    // re-running gives the same rows
    w.tauc_job(&submit, true).ok();
    let again = w.rows(Table::AdsSettlement, d2, "aps1").await;
    assert_eq!(text(&again, &cols), text(&st, &cols));

    // SQL over the warehouse: an uncommitted partition (no _SUCCESS) and a
    // stray file in a committed one are not seen
    let (_, good) = w.read(Table::DwdTrkEvent, d1, "aps1").await.unwrap();
    let bytes = commit::parquet_bytes(&Table::DwdTrkEvent.schema(), &[good]).unwrap();
    w.put(
        "wh/dwd/dwd_trk_event_di/dt=2024-06-20/region=aps1/part-uncommitted-00000.parquet",
        bytes.clone(),
    )
    .await;
    w.put(
        "wh/dwd/dwd_trk_event_di/dt=2024-06-18/region=aps1/part-stray-00000.parquet",
        bytes,
    )
    .await;
    let out = w
        .tauc_job(
            &[
                "sql",
                "SELECT dt, region, count(*) AS n FROM dwd_trk_event_di GROUP BY dt, region ORDER BY dt",
                "--format",
                "csv",
            ],
            true,
        )
        .ok()
        .to_string();
    assert_eq!(out, "dt,region,n\n2024-06-18,aps1,28\n2024-06-19,aps1,4\n");
    let tables = w.tauc_job(&["tables"], true).ok().to_string();
    let line = tables
        .lines()
        .find(|l| l.starts_with("dwd_trk_event_di "))
        .unwrap_or_else(|| panic!("{tables}"));
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        [
            "dwd_trk_event_di",
            "2",
            "32",
            "2024-06-18..2024-06-19",
            "aps1"
        ]
    );
    // pruning on dt, and an ADS table with a DIM join
    let out = w
        .tauc_job(
            &[
                "sql",
                "SELECT s.contract_id, c.partner_id, s.amount FROM ads_bill_settlement_1d s JOIN dim_contract c USING (contract_id) WHERE s.dt = DATE '2024-06-19' ORDER BY 1",
                "--format",
                "json",
            ],
            true,
        )
        .ok()
        .to_string();
    assert_eq!(
        out,
        // money stays exact: a JSON number written from the decimal's digits
        "{\"contract_id\":\"k-cpm\",\"partner_id\":\"p2\",\"amount\":0.010000}\n{\"contract_id\":\"k-cpm2\",\"partner_id\":\"p3\",\"amount\":0.010000}\n"
    );
}

/// A report whose DWD input is missing says which job to run; once the
/// (empty) input exists, every table is committed, and a New York DST day
/// has 25 hourly buckets.
#[tokio::test(flavor = "multi_thread")]
async fn reports_need_their_input_and_commit_empty_partitions() {
    let w = World::new("reports-empty");
    w.put("wh/dim/dim_contract/contracts.csv", CONTRACTS).await;
    let args = [
        "submit",
        "reports",
        "--date",
        "2024-11-03",
        "--region",
        "use1",
    ];
    let r = w.tauc_job(&args, true);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr
            .contains("dwd_trk_event_di dt=2024-11-03 region=use1, which is not committed")
            && r.stderr
                .contains("tauc-job submit layering --date 2024-11-03 --region use1"),
        "{r}"
    );
    commit_dwd(&w, "use1", "2024-11-03", &[], &[]).await;
    let out = w.tauc_job(&args, true).ok().to_string();
    assert!(out.contains("no funnels file at"), "{out}");
    for table in Table::REPORTS {
        let (m, b) = w.read(table, "2024-11-03", "use1").await.unwrap();
        assert_eq!(m.job, "reports");
        let want = match table {
            Table::AdsCorsSummary => 1,
            // k-cpm and k-cpm2 are open-ended
            Table::AdsSettlement => 2,
            // fall back: 01:00-02:00 twice
            Table::AdsCorsAnomaly => 25,
            _ => 0,
        };
        assert_eq!(b.num_rows(), want, "{table:?}");
        if want == 0 {
            assert!(m.files.is_empty());
        }
    }
    let s = w.rows(Table::AdsCorsSummary, "2024-11-03", "use1").await;
    assert_eq!(text(&s, SUMMARY_COLS), lines(&["0 0 0 0 null"]));
    // a bad funnels file stops the run before any work, naming the line
    w.put(
        "wh/conf/funnels.toml",
        "[[funnel]]\nid = \"x\"\nwindow_seconds = -5\n",
    )
    .await;
    let r = w.tauc_job(&args, true);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr
            .contains("funnels.toml:3: funnel 'x': window_seconds = -5"),
        "{r}"
    );
}

/// A region name, a contract's target and a funnel step may hold a quote
/// (the contract and tauc's config allow any text there): each is a value
/// of the plans — it matches exactly what it says and can change no
/// query — from the raw folders through DWD, the reports and the report
/// page.
#[tokio::test(flavor = "multi_thread")]
async fn a_quote_in_a_region_a_contract_or_a_funnel_step_is_a_value() {
    let w = World::new("quotes");
    w.sample_day("50"); // the DIM tables
    let region = "o'hare";
    w.put(
        "wh/dim/dim_region/quoted.csv",
        format!("region,time_zone\n{region},America/Chicago\n"),
    )
    .await;
    // 2024-06-18 12:00 UTC, 07:00 in Chicago
    let t = 1_718_712_000_000_i64;
    let click = |id: &str, at: i64, device: &str, target: &str| {
        serde_json::json!({"event_id": id, "event_type": "click", "client_ts": at,
            "collector_ts": at, "device_id": device,
            "target": {"type": "button", "id": target}})
        .to_string()
    };
    let lines = [
        click("e1", t, "d1", "b'1"),
        click("e2", t + 60_000, "d2", "b'1"),
        click("e3", t + 120_000, "d1", "b'1"),
        click("e4", t + 180_000, "d3", "b"),
    ];
    w.put(
        &format!("raw/uat/{region}/2024/06/18/messages-{t}.txt"),
        lines.join("\n"),
    )
    .await;
    let sneaky = "b' OR '1'='1";
    w.put(
        "wh/dim/dim_contract/quoted.csv",
        format!(
            "contract_id,partner_id,target_id,pricing_model,unit_price,currency,valid_from,valid_to\n\
             q-1,p'q,b'1,CPC,1.00,USD,2024-01-01,\n\
             q-2,p'q,\"{sneaky}\",CPC,1.00,USD,2024-01-01,\n"
        ),
    )
    .await;
    w.put(
        "wh/conf/funnels.toml",
        format!(
            "[[funnel]]\nid = \"q'uote\"\nwindow_seconds = 600\n[[funnel.step]]\nevent_type = \"click\"\ntarget_id = \"b'1\"\n\
             [[funnel]]\nid = \"decoy\"\nwindow_seconds = 600\n[[funnel.step]]\nevent_type = \"click\"\ntarget_id = \"{sneaky}\"\n"
        ),
    )
    .await;
    let at = ["--date", "2024-06-18", "--region", region];
    w.tauc_job(&["submit", "daily", at[0], at[1], at[2], at[3]], true)
        .ok();

    let dwd = w.rows(Table::DwdTrkEvent, "2024-06-18", region).await;
    assert_eq!(dwd.num_rows(), 4);
    let bill = w.rows(Table::AdsSettlement, "2024-06-18", region).await;
    let ids = strs(&bill, "contract_id");
    let gross = i64s(&bill, "gross_clicks");
    let of = |c: &str| gross[ids.iter().position(|i| i.as_deref() == Some(c)).unwrap()];
    assert_eq!(of("q-1"), Some(3), "the three clicks on b'1");
    assert_eq!(of("q-2"), Some(0), "no click on {sneaky}");
    let funnels = w.rows(Table::AdsFunnel, "2024-06-18", region).await;
    let users: Vec<(Option<String>, Option<i64>)> = strs(&funnels, "funnel_id")
        .into_iter()
        .zip(i64s(&funnels, "users"))
        .collect();
    assert_eq!(
        users,
        vec![
            (Some("q'uote".into()), Some(2)),
            (Some("decoy".into()), Some(0))
        ]
    );

    // the SQL surface and the report page read the region as a value too
    let q = w.tauc_job(
        &[
            "sql",
            "SELECT count(*) AS n FROM dwd_trk_event_di WHERE region = 'o''hare'",
            "--format",
            "csv",
        ],
        true,
    );
    assert_eq!(q.ok(), "n\n4\n", "{q}");
    let page = w.dir.path().join("page.html");
    let r = w.tauc_job(
        &[
            "report",
            at[0],
            at[1],
            at[2],
            at[3],
            "--out",
            page.to_str().unwrap(),
        ],
        true,
    );
    r.ok();
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("b&#39;1") || html.contains("b'1"), "{html}");
}
