//! The toy shape: 40 users, four targets, six pages, five places — the
//! small day a newcomer runs first and the tests build on. Lines are made
//! whole and sorted by collection time (a toy day fits in memory).

use serde_json::{Value, json};

use super::{Rng, TimedLine};

const UAS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];

const PAGES: [&str; 6] = [
    "https://portal.tauc.example/home",
    "https://portal.tauc.example/#/devices/1042?tab=info",
    "https://portal.tauc.example/#/devices/add",
    "https://portal.tauc.example/billing/invoices/2024000123",
    "https://portal.tauc.example/users/3f2b9c1e-7d4a-4e11-9a0b-5c6d7e8f9a01/profile",
    "https://portal.tauc.example/help?q=cors",
];

const PLACES: [(f64, f64); 5] = [
    (19.076, 72.8777),
    (12.9716, 77.5946),
    (40.7128, -74.006),
    (53.3498, -6.2603),
    (51.8985, -8.4756),
];

/// One clean event at `ts` (ms).
pub(super) fn clean_event(rng: &mut Rng, region: &str, n: u64, ts: i64) -> Value {
    let users = 40;
    let u = rng.below(users);
    let kind = rng.below(100);
    let event_type = match kind {
        0..=34 => "page_enter",
        35..=54 => "page_leave",
        55..=79 => "click",
        80..=92 => "impression",
        _ => "cors_error",
    };
    let page = *rng.pick(&PAGES);
    let mut e = json!({
        "event_id": format!("{region}-{ts}-{n}"),
        "event_type": event_type,
        "client_ts": ts - 1500,
        "sent_ts": ts - 200,
        "collector_ts": ts,
        "device_id": format!("dev-{region}-{u}"),
        "device_id_type": if u.is_multiple_of(3) { "imei" } else { "browser" },
        "app_version": "3.14.0",
        "ua": *rng.pick(&UAS),
        "page": {"url": page, "from_url": PAGES[0], "to_url": PAGES[1]},
    });
    if !u.is_multiple_of(4) {
        e["user_id"] = json!(format!("u{u}"));
    }
    if !u.is_multiple_of(5) {
        let (lat, lon) = *rng.pick(&PLACES);
        e["geo"] = json!({"lat": lat, "lon": lon});
    }
    match event_type {
        "page_leave" => {
            e["page_enter_ts"] = json!(ts - 1500 - (rng.below(600) as i64) * 1000);
            e["page_leave_ts"] = json!(ts - 1500);
        }
        "click" | "impression" => {
            let (t, id) = *rng.pick(&[
                ("button", "btn-add-device"),
                ("button", "btn-save"),
                ("banner", "banner-spring-sale"),
                ("page", "page-devices"),
            ]);
            e["target"] = json!({"type": t, "id": id});
        }
        "cors_error" => {
            let (err, status) = *rng.pick(&[
                ("net::ERR_FAILED", 0),
                ("Request timeout", 0),
                ("net::ERR_ABORTED", 0),
                ("HTTP 403", 403),
                ("HTTP 502", 502),
            ]);
            e["cors"] = json!({
                "url": format!("https://API{}.tauc.example:443/v1/devices/{}", rng.below(2), rng.below(9000)),
                "method": "get", "origin": "https://Portal.tauc.example",
                "error": err, "status": status, "duration_ms": rng.below(30000)
            });
        }
        _ => {}
    }
    if n.is_multiple_of(17) {
        e["props"] = json!({"experiment": "b"});
    }
    e
}

/// The clean lines of one toy day, with client retries and (after the
/// first day) yesterday's first events re-delivered, sorted by collection
/// time.
pub(super) fn day(region: &str, day0: i64, first: bool, events: u32) -> Vec<TimedLine> {
    let mut rng = Rng::for_day(day0, region);
    let mut lines: Vec<TimedLine> = Vec::new();
    let step = 86_400_000 / i64::from(events.max(1));
    for n in 0..events {
        let ts = day0 + step * i64::from(n) + rng.below(step.max(1) as u64) as i64;
        let e = clean_event(&mut rng, region, u64::from(n), ts);
        lines.push((ts, e.to_string().into_bytes()));
        // a client retry: same event, collected again 2 s later
        if n % 97 == 5 {
            let mut retry = e.clone();
            retry["collector_ts"] = json!(ts + 2000);
            lines.push((ts + 2000, retry.to_string().into_bytes()));
        }
    }
    // yesterday's first events re-delivered today (dedupe across days)
    if !first {
        let prev0 = day0 - 86_400_000;
        let mut prev_rng = Rng::for_day(prev0, region);
        for n in 0..events.min(3) {
            let ts = prev0 + step * i64::from(n) + prev_rng.below(step.max(1) as u64) as i64;
            let e = clean_event(&mut prev_rng, region, u64::from(n), ts);
            lines.push((day0 + 60_000, e.to_string().into_bytes()));
        }
    }
    lines
}
