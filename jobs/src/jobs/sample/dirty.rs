//! One of each dirty case of events.md, for every day and region of any
//! shape.

use chrono::NaiveDate;
use serde_json::{Value, json};

use super::TimedLine;

/// The dirty lines of one day: one of each case of events.md.
fn lines(region: &str, day0: i64, day: NaiveDate) -> Vec<Vec<u8>> {
    let base = |id: &str| {
        json!({"event_id": format!("{region}-dirty-{day}-{id}"), "event_type": "page_enter",
               "client_ts": day0 + 7_200_000, "collector_ts": day0 + 7_200_000, "device_id": "dev-x"})
    };
    let with = |id: &str, k: &str, v: Value| {
        let mut e = base(id);
        e[k] = v;
        e.to_string().into_bytes()
    };
    let without = |id: &str, k: &str| {
        let mut e = base(id);
        e.as_object_mut().map(|o| o.shift_remove(k));
        e.to_string().into_bytes()
    };
    let mut long = base("long");
    long["pad"] = json!("x".repeat(1_100_000));
    vec![
        long.to_string().into_bytes(),
        b"{\"event_id\": \"broken".to_vec(),
        b"[1, 2, 3]".to_vec(),
        b"{\"event_id\": \"bad-utf8-\xff\"}".to_vec(),
        without("no-id", "event_id"),
        without("no-type", "event_type"),
        without("no-client", "client_ts"),
        with("no-device", "device_id", json!("")),
        with("click-no-target", "event_type", json!("click")),
        with("float-ts", "client_ts", json!(1.5)),
        with("bad-type", "event_type", json!("scroll")),
        with("bad-target", "target", json!({"type": "link", "id": "x"})),
        with("bad-geo", "geo", json!("here")),
        with(
            "future",
            "collector_ts",
            json!(day0 + 86_400_000 + 3_600_000),
        ),
        with("late", "client_ts", json!(day0 - 3 * 86_400_000)),
        with(
            "secs",
            "client_ts",
            json!(((day0 + 7_000_000) / 1000).to_string()),
        ),
        with("geo-zero", "geo", json!({"lat": 0, "lon": 0})),
        with("new-field", "tracker_v2", json!({"a": 1})),
        with("bot", "ua", json!("curl/8.4.0")),
    ]
}

/// The dirty lines of a day, each at a collection time spread over its
/// first 20 hours.
pub(super) fn timed(region: &str, day0: i64, day: NaiveDate) -> Vec<TimedLine> {
    lines(region, day0, day)
        .into_iter()
        .enumerate()
        .map(|(i, l)| (day0 + 3_600_000 * (i as i64 % 20), l))
        .collect()
}
