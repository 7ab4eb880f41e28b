//! The business's shape: millions of users at 100 M events a day, whose
//! activity, targets, pages and cities are Zipf-skewed (a few heavy ones,
//! a long tail), in sessions — some walking the sample's funnel (home →
//! the add-device button → a device page, with drop-offs), most browsing
//! pages, seeing banners and clicking some — from a User-Agent mix with
//! bots, at places over many cities.
//!
//! A day is generated as a stream in collection-time order (sessions start
//! in order; their events wait in a heap until no later session can come
//! before them), so a day of millions of events is never held whole.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde_json::{Value, json};

use super::{Rng, TimedLine};

/// How many of each the business has; every count is at least 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    /// Users (a quarter browse signed out: device ids only).
    pub users: u64,
    /// Devices (each user has `devices / users` of them, at least one).
    pub devices: u64,
    /// Click and impression targets.
    pub targets: u64,
    /// Pages.
    pub pages: u64,
    /// Cities the events' geo points are near.
    pub cities: u64,
}

impl Population {
    /// The defaults for a day of `events` per region: the business's ratios
    /// (5 M users at 100 M events, 20 a day each).
    pub fn for_events(events: u64) -> Population {
        let users = (events / 20).max(100);
        Population {
            users,
            devices: users + users * 3 / 10,
            targets: (events / 200).clamp(20, 500_000),
            pages: (events / 1000).clamp(10, 50_000),
            cities: (events / 1000).clamp(10, 2_000),
        }
    }

    /// Signed-in users have a `user_id` (and a `dim_user` row).
    pub fn signed_in(u: u64) -> bool {
        !u.is_multiple_of(4)
    }

    /// User `u`'s id.
    pub fn user_id(u: u64) -> String {
        format!("u{u}")
    }

    /// User `u`'s gender and birth date (empty: unknown, as in `dim_user`).
    pub fn person(&self, u: u64) -> (&'static str, String) {
        let mut r = Rng(u ^ 0x5EED_0F0F);
        let gender = ["M", "F", "M", "F", "other", ""][r.below(6) as usize];
        let birth = match r.below(20) {
            0 => String::new(),
            _ => format!(
                "{}-{:02}-{:02}",
                1950 + r.below(58),
                1 + r.below(12),
                1 + r.below(28)
            ),
        };
        (gender, birth)
    }

    /// Target of rank `r` (0 the most shown): its type and id. The first
    /// four are the toy sample's (the funnel's button, the contracted
    /// banner).
    pub fn target(r: u64) -> (&'static str, String) {
        match r {
            0 => ("button", "btn-add-device".into()),
            1 => ("banner", "banner-spring-sale".into()),
            2 => ("button", "btn-save".into()),
            3 => ("page", "page-devices".into()),
            _ => match r % 3 {
                0 => ("button", format!("btn-{r}")),
                1 => ("banner", format!("banner-{r}")),
                _ => ("page", format!("page-{r}")),
            },
        }
    }
}

/// A Zipf-like law over ranks `0..n` with exponent `s`: the continuous
/// power law's inverse CDF, floored (close to the discrete law, and one
/// draw costs a `powf`).
#[derive(Debug, Clone)]
struct Zipf {
    n: f64,
    s: f64,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Zipf {
        Zipf {
            n: n.max(1) as f64,
            s,
        }
    }

    fn rank(&self, rng: &mut Rng) -> u64 {
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let x = if (self.s - 1.0).abs() < 1e-9 {
            self.n.powf(u)
        } else {
            let a = 1.0 - self.s;
            ((self.n.powf(a) - 1.0) * u + 1.0).powf(1.0 / a)
        };
        (x.floor() as u64).saturating_sub(1).min(self.n as u64 - 1)
    }
}

/// User-Agents and their weights (per mille of devices): desktop and
/// mobile browsers, and the bots a portal sees.
const UAS: [(u64, &str); 11] = [
    (
        400,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    ),
    (
        80,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    ),
    (
        180,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    ),
    (
        200,
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    ),
    (
        50,
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    ),
    (
        40,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    ),
    (
        20,
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ),
    (
        10,
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    ),
    (
        10,
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
    ),
    (5, "curl/8.4.0"),
    (5, "python-requests/2.31.0"),
];

/// Where a region's cities are drawn from (lat, lon ranges).
fn region_box(region: &str) -> ((f64, f64), (f64, f64)) {
    match region {
        "use1" => ((25.0, 45.0), (-90.0, -70.0)),
        "euw1" => ((40.0, 58.0), (-10.0, 20.0)),
        _ => ((8.0, 30.0), (70.0, 88.0)),
    }
}

/// The API endpoints CORS failures come from: host, path, method.
fn cors_call(rank: u64) -> (String, String, &'static str) {
    let resources = ["devices", "users", "billing", "alerts", "firmware", "sites"];
    let host = format!("https://api{}.tauc.example:443", rank % 3);
    let path = format!("/v1/{}/{}", resources[(rank / 3) as usize % 6], 1000 + rank);
    let method = ["get", "post", "put"][(rank % 7 % 3) as usize];
    (host, path, method)
}

/// One region's day: the stream of its clean lines (and client retries)
/// in collection-time order.
pub(super) struct Day {
    pop: Population,
    region: String,
    day0: i64,
    events: u64,
    made: u64,
    seq: u64,
    rng: Rng,
    users: Zipf,
    targets: Zipf,
    pages: Zipf,
    cities: Zipf,
    waiting: BinaryHeap<Reverse<(i64, u64, Vec<u8>)>>,
}

/// Milliseconds of a day.
const DAY_MS: i64 = 86_400_000;

impl Day {
    /// The day starting at `day0` (ms) with `events` clean events.
    pub(super) fn new(pop: &Population, region: &str, day0: i64, events: u64) -> Day {
        Day {
            pop: pop.clone(),
            region: region.to_string(),
            day0,
            events,
            made: 0,
            seq: 0,
            rng: Rng::for_day(day0, region),
            users: Zipf::new(pop.users, 0.6),
            targets: Zipf::new(pop.targets, 1.0),
            pages: Zipf::new(pop.pages, 1.0),
            cities: Zipf::new(pop.cities, 1.0),
            waiting: BinaryHeap::new(),
        }
    }

    /// The next session's events, queued; `false` once the day has all
    /// its events.
    fn session(&mut self) -> bool {
        if self.made >= self.events {
            return false;
        }
        // sessions start spread by event volume over the day, so the day
        // ends when its events do
        let start = self.day0
            + (DAY_MS as u128 * self.made as u128 / self.events as u128) as i64
            + self.rng.below(1000) as i64;
        let user = self.users.rank(&mut self.rng);
        let who = Who::of(self, user);
        let mut t = start;
        let steps = if self.rng.below(100) < 15 {
            self.funnel_walk()
        } else {
            self.browse()
        };
        for step in steps {
            if self.made >= self.events {
                break;
            }
            t += 1000 + self.rng.below(45_000) as i64;
            let e = self.event(&who, step, t);
            self.made += 1;
            self.queue(t, e.to_string().into_bytes());
            // a client retry: the same event collected again 2 s later
            if self.rng.below(100) == 0 {
                self.queue(t + 2000, e.to_string().into_bytes());
            }
        }
        true
    }

    fn queue(&mut self, ts: i64, line: Vec<u8>) {
        self.seq += 1;
        self.waiting.push(Reverse((ts, self.seq, line)));
    }

    /// The funnel of the sample's funnels file, with drop-offs.
    fn funnel_walk(&mut self) -> Vec<Step> {
        let mut steps = vec![Step::Enter(0)];
        if self.rng.below(100) < 60 {
            steps.push(Step::Impression(0));
            steps.push(Step::Click(0));
            if self.rng.below(100) < 70 {
                steps.push(Step::Enter(1));
                steps.push(Step::Leave(1));
            }
        }
        steps
    }

    /// A few pages, each entered, its banners shown, some clicked, left;
    /// now and then an API call fails.
    fn browse(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..1 + self.rng.below(3) {
            let page = self.pages.rank(&mut self.rng);
            steps.push(Step::Enter(page));
            for _ in 0..self.rng.below(3) {
                let target = self.targets.rank(&mut self.rng);
                steps.push(Step::Impression(target));
                if self.rng.below(100) < 30 {
                    steps.push(Step::Click(target));
                }
            }
            if self.rng.below(100) < 3 {
                steps.push(Step::CorsError(self.rng.below(200)));
            }
            steps.push(Step::Leave(page));
        }
        steps
    }

    fn page_url(&mut self, page: u64) -> String {
        let base = "https://portal.tauc.example";
        match page {
            0 => format!("{base}/home"),
            1 => format!(
                "{base}/#/devices/{}?tab=info",
                1000 + self.rng.below(90_000)
            ),
            2 => format!("{base}/#/devices/add"),
            3 => format!(
                "{base}/billing/invoices/{}",
                2_024_000_000 + self.rng.below(999_999)
            ),
            4 => format!("{base}/help?q=cors"),
            p => format!("{base}/catalog/c{p}/items?page={}", 1 + self.rng.below(5)),
        }
    }

    fn event(&mut self, who: &Who, step: Step, ts: i64) -> Value {
        let (event_type, page) = match step {
            Step::Enter(p) => ("page_enter", p),
            Step::Leave(p) => ("page_leave", p),
            Step::Click(_) => ("click", 0),
            Step::Impression(_) => ("impression", 0),
            Step::CorsError(_) => ("cors_error", 0),
        };
        let url = self.page_url(page);
        let version = ["3.14.0", "3.13.2", "3.12.9"][(who.device_no % 3) as usize];
        let mut e = json!({
            "event_id": self.uuid(),
            "event_type": event_type,
            "client_ts": ts - 300 - self.rng.below(2000) as i64,
            "sent_ts": ts - 100,
            "collector_ts": ts,
            "device_id": who.device,
            "device_id_type": if who.device_no.is_multiple_of(3) { "imei" } else { "browser" },
            "app_version": version,
            "ua": who.ua,
            "page": {"url": url},
        });
        if let Some(u) = &who.user_id {
            e["user_id"] = json!(u);
        }
        if let Some((lat, lon)) = who.place {
            e["geo"] = json!({"lat": lat, "lon": lon});
        }
        match step {
            Step::Leave(_) => {
                let stay = 2_000 + self.rng.below(600_000) as i64;
                e["page_enter_ts"] = json!(ts - stay);
                e["page_leave_ts"] = json!(ts - 200);
            }
            Step::Click(t) | Step::Impression(t) => {
                let (kind, id) = Population::target(t);
                e["target"] = json!({"type": kind, "id": id});
            }
            Step::CorsError(call) => {
                let (host, path, method) = cors_call(call);
                let (err, status) = [
                    ("net::ERR_FAILED", 0),
                    ("Request timeout", 0),
                    ("HTTP 403", 403),
                    ("HTTP 502", 502),
                ][(call % 4) as usize];
                e["cors"] = json!({
                    "url": format!("{host}{path}"), "method": method,
                    "origin": "https://portal.tauc.example", "error": err,
                    "status": status, "duration_ms": self.rng.below(30_000),
                });
            }
            Step::Enter(_) => {}
        }
        e
    }

    /// A version-4-shaped UUID from the day's generator.
    fn uuid(&mut self) -> String {
        let (a, b) = (self.rng.next(), self.rng.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

impl Iterator for Day {
    type Item = TimedLine;

    fn next(&mut self) -> Option<TimedLine> {
        loop {
            // a session starts after every event before its start: those
            // can go
            let horizon = self.day0
                + (DAY_MS as u128 * self.made as u128 / self.events.max(1) as u128) as i64;
            match self.waiting.peek() {
                Some(Reverse((ts, ..))) if *ts < horizon || self.made >= self.events => {
                    let Reverse((ts, _, line)) = self.waiting.pop()?;
                    return Some((ts, line));
                }
                None if self.made >= self.events => return None,
                _ => {
                    self.session();
                }
            }
        }
    }
}

/// One step of a session.
#[derive(Debug, Clone, Copy)]
enum Step {
    Enter(u64),
    Leave(u64),
    Click(u64),
    Impression(u64),
    CorsError(u64),
}

/// Who a session's events come from: fixed per user and device.
struct Who {
    user_id: Option<String>,
    device: String,
    device_no: u64,
    ua: &'static str,
    place: Option<(f64, f64)>,
}

impl Who {
    fn of(day: &mut Day, user: u64) -> Who {
        let pop = &day.pop;
        let per_user = (pop.devices / pop.users.max(1)).max(1);
        let device_no = user + pop.users * day.rng.below(per_user);
        // the same user's traits on every day: from generators seeded by them
        let mut r = Rng(user.wrapping_mul(0x9E37_79B9) ^ 0xC17);
        let city = day.cities.rank(&mut r);
        let mut d = Rng(device_no ^ 0xDE71CE);
        let mut roll = d.below(1000);
        let ua = UAS
            .iter()
            .find(|(w, _)| {
                let hit = roll < *w;
                roll = roll.saturating_sub(*w);
                hit
            })
            .map_or(UAS[0].1, |(_, ua)| ua);
        let bot = ["bot", "Headless", "curl", "python"]
            .iter()
            .any(|b| ua.contains(b));
        let place = (!user.is_multiple_of(5)).then(|| {
            let ((lat0, lat1), (lon0, lon1)) = region_box(&day.region);
            let mut c = Rng(city ^ 0xC171);
            let unit = |r: &mut Rng| (r.below(1_000_000) as f64) / 1_000_000.0;
            let (lat, lon) = (
                lat0 + unit(&mut c) * (lat1 - lat0),
                lon0 + unit(&mut c) * (lon1 - lon0),
            );
            // a few hundred metres around the city's centre
            let jitter = |r: &mut Rng| (r.below(2000) as f64 - 1000.0) / 200_000.0;
            (lat + jitter(&mut day.rng), lon + jitter(&mut day.rng))
        });
        Who {
            user_id: (Population::signed_in(user) && !bot).then(|| Population::user_id(user)),
            device: format!("dev-{}-{device_no}", day.region),
            device_no,
            ua,
            place,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_ranks_are_skewed_and_in_range() {
        let z = Zipf::new(10_000, 1.0);
        let mut rng = Rng(7);
        let mut counts = vec![0u32; 10_000];
        for _ in 0..200_000 {
            counts[z.rank(&mut rng) as usize] += 1;
        }
        // rank 0 takes ~1/ln(n) of the draws; the tail half far less
        let head = f64::from(counts[0]) / 200_000.0;
        assert!((0.05..0.2).contains(&head), "{head}");
        let tail: u32 = counts[5000..].iter().sum();
        assert!(f64::from(tail) / 200_000.0 < 0.1, "{tail}");
        assert!(counts.iter().filter(|c| **c > 0).count() > 5000);
    }

    #[test]
    fn a_day_has_its_events_in_collection_order() {
        let pop = Population::for_events(20_000);
        let day = Day::new(&pop, "aps1", 1_718_668_800_000, 20_000);
        let lines: Vec<TimedLine> = day.collect();
        assert!(lines.windows(2).all(|w| w[0].0 <= w[1].0));
        let clean = lines.len() as f64;
        assert!((20_000.0..20_600.0).contains(&clean), "{clean}");
        let last = lines.last().unwrap().0;
        assert!(last < 1_718_668_800_000 + DAY_MS + 3_600_000);
    }
}
