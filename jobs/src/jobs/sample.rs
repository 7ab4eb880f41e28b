//! Realistic sample data in the contract's raw layout, so a newcomer has
//! something to run on: a day's events per region in files of ~50 lines,
//! with every dirty case of events.md mixed in (blank lines, CRLF, a BOM,
//! a missing final newline, over-long and malformed lines, missing and
//! wrong-typed fields, impossible and late timestamps, seconds and string
//! timestamps, re-deliveries across files and days, bots, CORS failures,
//! hash-routed URLs, a stray non-message object), plus the DIM files.
//!
//! Deterministic: the same arguments write the same bytes.

use chrono::{Days, NaiveDate};
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{Value, json};

use crate::engine::session::Engine;
use crate::error::Result;
use crate::ingest::event_time::day_start_ms;
use crate::store::Location;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SampleArgs {
    /// First UTC collection date.
    pub date: NaiveDate,
    /// Number of days.
    pub days: u32,
    /// Clean events per region and day (dirty lines come on top).
    pub events_per_day: u32,
    /// Regions.
    pub regions: Vec<String>,
    /// Environment segment.
    pub env: String,
    /// Where raw files go.
    pub raw_root: Location,
    /// Where DIM files go (`{warehouse}/dim/...`); none skips them.
    pub warehouse: Option<Location>,
    /// Lines per file.
    pub lines_per_file: usize,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleReport {
    /// Raw objects written (message files and strays).
    pub files: usize,
    /// Lines written, blank ones included.
    pub lines: usize,
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

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

fn region_offset(region: &str) -> usize {
    region.bytes().map(|b| b as usize).sum()
}

/// One clean event at `ts` (ms).
fn clean_event(rng: &mut Rng, region: &str, n: u64, ts: i64) -> Value {
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

/// The dirty lines of one day: one of each case of events.md.
fn dirty_lines(region: &str, day0: i64, day: NaiveDate) -> Vec<Vec<u8>> {
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

/// Writes the sample.
pub async fn write(engine: &Engine, args: &SampleArgs) -> Result<SampleReport> {
    let mut report = SampleReport::default();
    let store = engine.registry.for_location(&args.raw_root)?;
    for d in 0..args.days {
        let day = args.date + Days::new(d as u64);
        let day0 = day_start_ms(day);
        for region in &args.regions {
            let mut rng = Rng(day0 as u64 ^ (region_offset(region) as u64) << 32);
            let folder =
                args.raw_root
                    .join(&format!("{}/{region}/{}", args.env, day.format("%Y/%m/%d")));
            let mut lines: Vec<(i64, Vec<u8>)> = Vec::new();
            let step = 86_400_000 / i64::from(args.events_per_day.max(1));
            for n in 0..args.events_per_day {
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
            // yesterday's last events re-delivered today (dedupe across days)
            if d > 0 {
                let prev0 = day0 - 86_400_000;
                let mut prev_rng = Rng(prev0 as u64 ^ (region_offset(region) as u64) << 32);
                let prev_step = step;
                for n in 0..args.events_per_day.min(3) {
                    let ts = prev0
                        + prev_step * i64::from(n)
                        + prev_rng.below(prev_step.max(1) as u64) as i64;
                    let e = clean_event(&mut prev_rng, region, u64::from(n), ts);
                    lines.push((day0 + 60_000, e.to_string().into_bytes()));
                }
            }
            for (i, l) in dirty_lines(region, day0, day).into_iter().enumerate() {
                lines.push((day0 + 3_600_000 * (i as i64 % 20), l));
            }
            lines.sort_by_key(|(ts, _)| *ts);
            for (f, chunk) in lines.chunks(args.lines_per_file.max(1)).enumerate() {
                let first_ts = chunk[0].0;
                let mut body: Vec<u8> = Vec::new();
                if f == 0 {
                    body.extend_from_slice(b"\xEF\xBB\xBF");
                }
                for (i, (_, l)) in chunk.iter().enumerate() {
                    body.extend_from_slice(l);
                    match (f % 3, i + 1 == chunk.len()) {
                        (1, _) => body.extend_from_slice(b"\r\n"),
                        (2, true) => {} // no final newline
                        _ => body.push(b'\n'),
                    }
                    if f % 4 == 0 && i == 0 {
                        body.extend_from_slice(b"\n  \t\n");
                        report.lines += 2;
                    }
                }
                report.lines += chunk.len();
                let key = format!("{}/messages-{first_ts}-{f:04}.txt", folder.prefix);
                store
                    .put(&key.as_str().into(), PutPayload::from(body))
                    .await?;
                report.files += 1;
            }
            let stray = format!("{}/_kafka_offsets.json", folder.prefix);
            store
                .put(
                    &stray.as_str().into(),
                    PutPayload::from(b"{\"offset\": 1}".to_vec()),
                )
                .await?;
            report.files += 1;
        }
    }
    if let Some(wh) = &args.warehouse {
        write_dims(engine, wh, args.date).await?;
    }
    Ok(report)
}

/// The funnels file `sample` writes: the example of analyses.md, which
/// the sample's pages and targets can complete.
pub const SAMPLE_FUNNELS: &str = r#"# Funnels for ads_trk_funnel_1d (analyses.md). Each [[funnel]] has an id,
# a window in seconds and ordered steps; a step matches event_type and
# each of page_path (normalised), target_type and target_id it names.
[[funnel]]
id = "add_device"
window_seconds = 3600
[[funnel.step]]
event_type = "page_enter"
page_path = "/home"
[[funnel.step]]
event_type = "click"
target_id = "btn-add-device"
[[funnel.step]]
event_type = "page_enter"
page_path = "/devices/{id}"
"#;

async fn write_dims(engine: &Engine, warehouse: &Location, date: NaiveDate) -> Result<()> {
    let store = engine.registry.for_location(warehouse)?;
    let mut users = String::from("user_id,gender,birth_date\n");
    for u in 0..40 {
        let gender = ["M", "F", "other", ""][u % 4];
        let birth = if u % 7 == 0 {
            String::new()
        } else {
            format!(
                "{}-{:02}-{:02}",
                1950 + (u * 13) % 60,
                1 + u % 12,
                1 + u % 28
            )
        };
        users.push_str(&format!("u{u},{gender},{birth}\n"));
    }
    let start = date - Days::new(30);
    let contracts = format!(
        "contract_id,partner_id,target_id,pricing_model,unit_price,currency,valid_from,valid_to\n\
         c-1,p-ads,banner-spring-sale,CPM,2.50,USD,{start},\n\
         c-2,p-dev,btn-add-device,CPC,0.12,USD,{start},{end}\n",
        end = date + Days::new(60)
    );
    for (path, body) in [
        ("dim/dim_user/dim_user.csv", users),
        ("dim/dim_contract/dim_contract.csv", contracts),
        ("conf/funnels.toml", SAMPLE_FUNNELS.to_string()),
    ] {
        let loc = warehouse.join(path);
        store
            .put(&loc.path(), PutPayload::from(body.into_bytes()))
            .await?;
    }
    Ok(())
}
