//! Every row of events.md's "What happens to each line" and its lenient
//! typing list; expectations worked out by hand from the contract.

use super::*;

/// 2024-06-18 00:00:00 UTC in ms.
const C0: i64 = 1_718_668_800_000;

fn ctx() -> LineContext {
    LineContext {
        collection_date: NaiveDate::from_ymd_opt(2024, 6, 18).unwrap(),
        lateness_days: 2,
    }
}

fn outcome(line: &str) -> LineOutcome {
    classify_line(line.as_bytes(), &ctx())
}

fn reason(line: &str) -> String {
    match outcome(line) {
        LineOutcome::Rejected(r) => r.reason,
        other => panic!("expected a rejection for {line}, got {other:?}"),
    }
}

fn valid(line: &str) -> OdsEvent {
    match outcome(line) {
        LineOutcome::Valid(e) => *e,
        other => panic!("expected a valid row for {line}, got {other:?}"),
    }
}

/// A minimal valid page_enter collected at C0 + 1 h.
fn base() -> Map<String, Value> {
    let v = serde_json::json!({
        "event_id": "e1", "event_type": "page_enter",
        "client_ts": C0 + 3_600_000, "collector_ts": C0 + 3_600_000,
        "device_id": "d1"
    });
    v.as_object().unwrap().clone()
}

fn with(pairs: &[(&str, Value)]) -> String {
    let mut m = base();
    for (k, v) in pairs {
        m.insert((*k).to_string(), v.clone());
    }
    Value::Object(m).to_string()
}

fn without(keys: &[&str]) -> String {
    let mut m = base();
    for k in keys {
        m.shift_remove(*k);
    }
    Value::Object(m).to_string()
}

#[test]
fn line_splitting_handles_crlf_bom_and_missing_final_newline() {
    let data = b"\xEF\xBB\xBFa\r\n\r\n  \nb";
    let lines: Vec<&[u8]> = split_lines(data).collect();
    assert_eq!(lines, vec![&b"a"[..], b"", b"  ", b"b"]);
    assert_eq!(split_lines(b"a\n").count(), 1);
    assert_eq!(split_lines(b"").count(), 0);
    assert_eq!(split_lines(b"\n").count(), 1);
    assert!(is_blank(b" \t\x0b\x0c\r"));
    assert!(!is_blank(b" x"));
}

#[test]
fn blank_lines_are_not_events() {
    assert_eq!(outcome(""), LineOutcome::Blank);
    assert_eq!(outcome(" \t "), LineOutcome::Blank);
}

#[test]
fn check1_too_long_keeps_64k_and_event_id() {
    let pad = "x".repeat(MAX_LINE_BYTES);
    let line = with(&[("pad", Value::String(pad))]);
    match outcome(&line) {
        LineOutcome::Rejected(r) => {
            assert_eq!(r.reason, "line_too_long");
            assert_eq!(r.raw_line.len(), KEPT_LINE_BYTES);
            assert_eq!(r.event_id.as_deref(), Some("e1"));
        }
        o => panic!("{o:?}"),
    }
    // exactly 1 MiB is not too long (it is malformed JSON instead)
    assert_eq!(reason(&"y".repeat(MAX_LINE_BYTES)), "malformed_json");
}

#[test]
fn check2_malformed() {
    assert_eq!(reason("{not json"), "malformed_json");
    assert_eq!(reason("[1,2]"), "malformed_json");
    assert_eq!(reason("\"str\""), "malformed_json");
    match classify_line(b"{\"event_id\":\"a\xff\"}", &ctx()) {
        LineOutcome::Rejected(r) => {
            assert_eq!(r.reason, "malformed_json");
            assert_eq!(r.raw_line, "{\"event_id\":\"a\u{FFFD}\"}");
            assert_eq!(r.event_id, None);
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn check3_missing_in_order() {
    assert_eq!(
        reason(&without(&["event_id", "event_type"])),
        "missing_field:event_id"
    );
    assert_eq!(
        reason(&with(&[("event_id", "".into())])),
        "missing_field:event_id"
    );
    assert_eq!(
        reason(&with(&[("event_type", Value::Null)])),
        "missing_field:event_type"
    );
    assert_eq!(reason(&without(&["client_ts"])), "missing_field:client_ts");
    assert_eq!(
        reason(&without(&["collector_ts"])),
        "missing_field:collector_ts"
    );
    assert_eq!(
        reason(&with(&[("device_id", "".into())])),
        "missing_field:device_id"
    );
    // user_id stands in for device_id
    let e = valid(&with(&[
        ("device_id", Value::Null),
        ("user_id", "u1".into()),
    ]));
    assert_eq!((e.device_id, e.user_id.as_deref()), (None, Some("u1")));
    let click = |t: Value| with(&[("event_type", "click".into()), ("target", t)]);
    assert_eq!(
        reason(&with(&[("event_type", "click".into())])),
        "missing_field:target"
    );
    assert_eq!(
        reason(&click(serde_json::json!({"id": "b"}))),
        "missing_field:target.type"
    );
    assert_eq!(
        reason(&click(serde_json::json!({"type": "button", "id": ""}))),
        "missing_field:target.id"
    );
    assert_eq!(
        reason(&click(serde_json::json!("x"))),
        "invalid_field:target"
    );
    assert_eq!(
        reason(&with(&[("event_type", "cors_error".into())])),
        "missing_field:cors"
    );
    assert_eq!(
        reason(&with(&[
            ("event_type", "cors_error".into()),
            ("cors", serde_json::json!({}))
        ])),
        "missing_field:cors.url"
    );
}

#[test]
fn check4_types_in_order() {
    assert_eq!(
        reason(&with(&[("event_id", 5.into())])),
        "invalid_field:event_id"
    );
    assert_eq!(
        reason(&with(&[("event_type", "scroll".into())])),
        "invalid_field:event_type"
    );
    assert_eq!(
        reason(&with(&[("client_ts", 1.0.into())])),
        "invalid_field:client_ts"
    );
    assert_eq!(
        reason(&with(&[("client_ts", "12a".into())])),
        "invalid_field:client_ts"
    );
    assert_eq!(
        reason(&with(&[("client_ts", true.into())])),
        "invalid_field:client_ts"
    );
    assert_eq!(
        reason(&with(&[("sent_ts", "x".into())])),
        "invalid_field:sent_ts"
    );
    // first in the table's order wins: client_ts before device_id
    assert_eq!(
        reason(&with(&[
            ("device_id", 7.into()),
            ("client_ts", "bad".into())
        ])),
        "invalid_field:client_ts"
    );
    assert_eq!(
        reason(&with(&[("device_id", 7.into())])),
        "invalid_field:device_id"
    );
    assert_eq!(
        reason(&with(&[("user_id", 7.into())])),
        "invalid_field:user_id"
    );
    assert_eq!(reason(&with(&[("ua", 7.into())])), "invalid_field:ua");
    assert_eq!(reason(&with(&[("geo", "x".into())])), "invalid_field:geo");
    assert_eq!(reason(&with(&[("page", 1.into())])), "invalid_field:page");
    assert_eq!(
        reason(&with(&[("page", serde_json::json!({"url": 1}))])),
        "invalid_field:page.url"
    );
    assert_eq!(
        reason(&with(&[(
            "target",
            serde_json::json!({"type": "link", "id": "a"})
        )])),
        "invalid_field:target.type"
    );
    assert_eq!(
        reason(&with(&[(
            "target",
            serde_json::json!({"type": "page", "id": 3})
        )])),
        "invalid_field:target.id"
    );
    // nested fields come right after their object, before page_enter_ts
    assert_eq!(
        reason(&with(&[
            ("page_enter_ts", "z".into()),
            ("target", serde_json::json!({"type": "x"}))
        ])),
        "invalid_field:target.type"
    );
    assert_eq!(
        reason(&with(&[("page_leave_ts", 1.5.into())])),
        "invalid_field:page_leave_ts"
    );
    assert_eq!(
        reason(&with(&[("cors", serde_json::json!([]))])),
        "invalid_field:cors"
    );
    assert_eq!(
        reason(&with(&[(
            "cors",
            serde_json::json!({"url": "u", "status": "40x"})
        )])),
        "invalid_field:cors.status"
    );
}

#[test]
fn check4_impossible_collector_ts() {
    // C + 1 day 01:00 is impossible, one ms earlier is fine
    let limit = C0 + 86_400_000 + 3_600_000;
    let ok = with(&[
        ("collector_ts", (limit - 1).into()),
        ("client_ts", (limit - 1).into()),
    ]);
    assert_eq!(valid(&ok).collector_ts, limit - 1);
    let bad = with(&[("collector_ts", limit.into())]);
    assert_eq!(reason(&bad), "invalid_field:collector_ts");
}

#[test]
fn check5_lateness() {
    // allowance 2 days, counted from max(collector_ts, C 00:00)
    let l = 2 * 86_400_000;
    let edge = with(&[
        ("client_ts", (C0 - l).into()),
        ("collector_ts", (C0 - 5).into()),
    ]);
    assert_eq!(valid(&edge).client_ts, C0 - l);
    let late = with(&[
        ("client_ts", (C0 - l - 1).into()),
        ("collector_ts", (C0 - 5).into()),
    ]);
    assert_eq!(reason(&late), "late_beyond_window");
    match outcome(&late) {
        LineOutcome::Rejected(r) => assert_eq!(r.event_id.as_deref(), Some("e1")),
        o => panic!("{o:?}"),
    }
}

#[test]
fn lenient_typing() {
    let secs = (C0 + 3_600_000) / 1000;
    let e = valid(&with(&[
        ("client_ts", secs.to_string().into()),
        ("collector_ts", secs.into()),
        ("sent_ts", Value::Null),
        ("device_id_type", "watch".into()),
        ("geo", serde_json::json!({"lat": "12.5", "lon": 77})),
        ("props", serde_json::json!({"k": 1})),
        ("new_field", "n".into()),
    ]));
    assert_eq!(e.client_ts, C0 + 3_600_000);
    assert_eq!(e.collector_ts, C0 + 3_600_000);
    assert_eq!(e.sent_ts, None);
    assert_eq!(e.device_id_type.as_deref(), Some("watch"));
    assert_eq!((e.geo_lat, e.geo_lon), (Some(12.5), Some(77.0)));
    assert_eq!(
        e.extra.as_deref(),
        Some(r#"{"props":{"k":1},"new_field":"n"}"#)
    );
    let neg = valid(&with(&[("page_enter_ts", "-5".into())]));
    assert_eq!(neg.page_enter_ts, Some(-5000));
    for geo in [
        serde_json::json!({"lat": 0, "lon": 0}),
        serde_json::json!({"lat": 91, "lon": 0}),
        serde_json::json!({"lat": 10, "lon": -180.5}),
        serde_json::json!({"lat": 10}),
        serde_json::json!({"lat": "n/a", "lon": 3}),
        serde_json::json!({"lat": null, "lon": 3}),
    ] {
        let e = valid(&with(&[("geo", geo)]));
        assert_eq!((e.geo_lat, e.geo_lon), (None, None));
    }
    let e = valid(&with(&[("user_id", "".into())]));
    assert_eq!(e.user_id, None);
    assert_eq!(e.extra, None);
}
