//! One raw line in, one outcome out: a typed ODS event, a quarantine reason,
//! or a blank line — exactly the checks of `events.md` ("What happens to
//! each line"), in their order.
//!
//! This is plain Rust with no engine types so that every rule is unit-tested
//! here and the raw scan only has to number lines and build Arrow arrays.

use chrono::NaiveDate;
use serde_json::{Map, Value};

use crate::ingest::event_time::{self, DAY_MS};

/// Lines longer than this are quarantined as `line_too_long`.
pub const MAX_LINE_BYTES: usize = 1_048_576;
/// How much of an over-long line is kept in `raw_line`.
pub const KEPT_LINE_BYTES: usize = 65_536;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The event types the contract knows.
pub const EVENT_TYPES: [&str; 5] = [
    "page_enter",
    "page_leave",
    "click",
    "impression",
    "cors_error",
];
/// The target types the contract knows.
pub const TARGET_TYPES: [&str; 3] = ["page", "button", "banner"];

/// Top-level fields of the event table; everything else goes to `extra`.
const KNOWN_FIELDS: [&str; 16] = [
    "event_id",
    "event_type",
    "client_ts",
    "sent_ts",
    "collector_ts",
    "device_id",
    "device_id_type",
    "user_id",
    "app_version",
    "ua",
    "geo",
    "page",
    "target",
    "page_enter_ts",
    "page_leave_ts",
    "cors",
];

/// What the batch a line came from says about it.
#[derive(Debug, Clone, Copy)]
pub struct LineContext {
    /// UTC collection date: the raw folder's date.
    pub collection_date: NaiveDate,
    /// The lateness allowance `L`, in days.
    pub lateness_days: i64,
}

/// A valid event, typed, with every `*_ts` in epoch milliseconds; the
/// fields are the ODS columns of the same names.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OdsEvent {
    pub event_id: String,
    pub event_type: String,
    pub client_ts: i64,
    pub sent_ts: Option<i64>,
    pub collector_ts: i64,
    pub device_id: Option<String>,
    pub device_id_type: Option<String>,
    pub user_id: Option<String>,
    pub app_version: Option<String>,
    pub ua: Option<String>,
    pub geo_lat: Option<f64>,
    pub geo_lon: Option<f64>,
    pub page_url: Option<String>,
    pub from_url: Option<String>,
    pub to_url: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub page_enter_ts: Option<i64>,
    pub page_leave_ts: Option<i64>,
    pub cors_url: Option<String>,
    pub cors_method: Option<String>,
    pub cors_origin: Option<String>,
    pub cors_status: Option<i64>,
    pub cors_error: Option<String>,
    pub cors_duration_ms: Option<i64>,
    /// Unknown top-level fields and `props`, as one compact JSON object.
    pub extra: Option<String>,
}

/// A rejected line.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `line_too_long`, `malformed_json`, `missing_field:<name>`,
    /// `invalid_field:<name>` or `late_beyond_window`.
    pub reason: String,
    /// The line as text (invalid UTF-8 replaced by U+FFFD), cut to 64 KiB
    /// for `line_too_long`.
    pub raw_line: String,
    /// The line's `event_id` when it is a JSON object with a non-empty
    /// string `event_id`.
    pub event_id: Option<String>,
}

/// What one line becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum LineOutcome {
    /// Empty or only ASCII whitespace: counted, not an event.
    Blank,
    /// A valid ODS row.
    Valid(Box<OdsEvent>),
    /// A quarantine row.
    Rejected(Rejection),
}

/// Splits a file's bytes into lines: `\n` or `\r\n` terminated, a missing
/// final newline tolerated, a leading BOM stripped from each line. An empty
/// file has no lines; a file ending in a newline has no extra empty line.
pub fn split_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let empty = data.is_empty();
    body.split(|b| *b == b'\n')
        .filter(move |_| !empty)
        .map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            line.strip_prefix(UTF8_BOM).unwrap_or(line)
        })
}

/// Is the line blank (empty or only space, tab, CR, FF, VT)?
pub fn is_blank(line: &[u8]) -> bool {
    line.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\x0c' | b'\x0b'))
}

/// Classifies one line (without its terminator).
pub fn classify_line(line: &[u8], ctx: &LineContext) -> LineOutcome {
    if is_blank(line) {
        return LineOutcome::Blank;
    }
    let reject = |reason: String, raw: &[u8], event_id: Option<String>| {
        LineOutcome::Rejected(Rejection {
            reason,
            raw_line: String::from_utf8_lossy(raw).into_owned(),
            event_id,
        })
    };
    // Check 1: over-long lines; the event_id is still reported when the line
    // is a JSON object.
    if line.len() > MAX_LINE_BYTES {
        let event_id = parse_object(line).and_then(|o| string_event_id(&o));
        return reject("line_too_long".into(), &line[..KEPT_LINE_BYTES], event_id);
    }
    // Check 2: UTF-8, JSON, object.
    let Some(obj) = parse_object(line) else {
        return reject("malformed_json".into(), line, None);
    };
    let event_id = string_event_id(&obj);
    match validate(&obj, ctx) {
        Ok(ev) => LineOutcome::Valid(Box::new(ev)),
        Err(reason) => reject(reason, line, event_id),
    }
}

fn parse_object(line: &[u8]) -> Option<Map<String, Value>> {
    let text = std::str::from_utf8(line).ok()?;
    match serde_json::from_str::<Value>(text).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn string_event_id(obj: &Map<String, Value>) -> Option<String> {
    match obj.get("event_id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Is the field present: non-null and, for ids, not an empty string.
fn present(v: Option<&Value>, is_id: bool) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if is_id => !s.is_empty(),
        Some(_) => true,
    }
}

fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// Checks 3 to 5; the reason of the first that fails.
fn validate(obj: &Map<String, Value>, ctx: &LineContext) -> Result<OdsEvent, String> {
    check_required(obj)?;
    let ev = check_types(obj, ctx)?;
    // Check 5: lateness.
    let (ets, _) = event_time::event_ts(ev.client_ts, ev.sent_ts, ev.collector_ts);
    let lateness = event_time::lateness_ms(ets, ev.collector_ts, ctx.collection_date);
    if lateness > ctx.lateness_days.saturating_mul(DAY_MS) {
        return Err("late_beyond_window".into());
    }
    Ok(ev)
}

fn check_required(obj: &Map<String, Value>) -> Result<(), String> {
    let missing = |name: &str| Err(format!("missing_field:{name}"));
    for (name, is_id) in [
        ("event_id", true),
        ("event_type", false),
        ("client_ts", false),
        ("collector_ts", false),
    ] {
        if !present(obj.get(name), is_id) {
            return missing(name);
        }
    }
    if !present(obj.get("device_id"), true) && !present(obj.get("user_id"), true) {
        return missing("device_id");
    }
    let event_type = obj.get("event_type").and_then(Value::as_str);
    if matches!(event_type, Some("click" | "impression")) {
        let target = obj.get("target");
        if !present(target, false) {
            return missing("target");
        }
        // A target that is not an object is reported by the type check as
        // `invalid_field:target`, not as a missing `target.type`.
        if let Some(Value::Object(t)) = target {
            if !present(t.get("type"), false) {
                return missing("target.type");
            }
            if !present(t.get("id"), true) {
                return missing("target.id");
            }
        }
    }
    if event_type == Some("cors_error") {
        let cors = obj.get("cors");
        if !present(cors, false) {
            return missing("cors");
        }
        if let Some(Value::Object(c)) = cors
            && !present(c.get("url"), false)
        {
            return missing("cors.url");
        }
    }
    Ok(())
}

/// A lenient integer: a JSON integer, or a string of decimal digits with an
/// optional leading `-`.
fn lenient_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        _ => None,
    }
}

/// A lenient number for `geo`: a JSON number or a numeric string.
fn lenient_f64(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

struct Typed<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'static str,
}

impl Typed<'_> {
    fn err(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            format!("invalid_field:{key}")
        } else {
            format!("invalid_field:{}.{key}", self.prefix)
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, String> {
        match get(self.obj, key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(key)),
        }
    }

    /// An id: like [`Self::string`], with `""` meaning absent.
    fn id(&self, key: &str) -> Result<Option<String>, String> {
        Ok(self.string(key)?.filter(|s| !s.is_empty()))
    }

    fn int(&self, key: &str) -> Result<Option<i64>, String> {
        match get(self.obj, key) {
            None => Ok(None),
            Some(v) => lenient_int(v).map(Some).ok_or_else(|| self.err(key)),
        }
    }

    fn ts(&self, key: &str) -> Result<Option<i64>, String> {
        match self.int(key)? {
            None => Ok(None),
            Some(v) => event_time::normalise_ts(v)
                .map(Some)
                .ok_or_else(|| self.err(key)),
        }
    }

    fn object(&self, key: &'static str) -> Result<Option<Typed<'_>>, String> {
        match get(self.obj, key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Typed {
                obj: m,
                prefix: key,
            })),
            Some(_) => Err(self.err(key)),
        }
    }
}

/// Check 4, in the event table's order with each object's nested fields
/// right after it.
fn check_types(obj: &Map<String, Value>, ctx: &LineContext) -> Result<OdsEvent, String> {
    let top = Typed { obj, prefix: "" };
    let mut ev = OdsEvent {
        event_id: top.id("event_id")?.unwrap_or_default(),
        ..Default::default()
    };
    let event_type = top.string("event_type")?.unwrap_or_default();
    if !EVENT_TYPES.contains(&event_type.as_str()) {
        return Err(top.err("event_type"));
    }
    ev.event_type = event_type;
    ev.client_ts = top.ts("client_ts")?.ok_or_else(|| top.err("client_ts"))?;
    ev.sent_ts = top.ts("sent_ts")?;
    ev.collector_ts = top
        .ts("collector_ts")?
        .ok_or_else(|| top.err("collector_ts"))?;
    if ev.collector_ts >= event_time::collector_ts_limit(ctx.collection_date) {
        return Err(top.err("collector_ts"));
    }
    ev.device_id = top.id("device_id")?;
    ev.device_id_type = top.string("device_id_type")?;
    ev.user_id = top.id("user_id")?;
    ev.app_version = top.string("app_version")?;
    ev.ua = top.string("ua")?;
    if let Some(geo) = top.object("geo")? {
        let lat = lenient_f64(get(geo.obj, "lat"));
        let lon = lenient_f64(get(geo.obj, "lon"));
        if let (Some(lat), Some(lon)) = (lat, lon)
            && lat.abs() <= 90.0
            && lon.abs() <= 180.0
            && !(lat == 0.0 && lon == 0.0)
        {
            ev.geo_lat = Some(lat);
            ev.geo_lon = Some(lon);
        }
    }
    if let Some(page) = top.object("page")? {
        ev.page_url = page.string("url")?;
        ev.from_url = page.string("from_url")?;
        ev.to_url = page.string("to_url")?;
    }
    if let Some(target) = top.object("target")? {
        ev.target_type = target.string("type")?;
        if let Some(t) = &ev.target_type
            && !TARGET_TYPES.contains(&t.as_str())
        {
            return Err(target.err("type"));
        }
        ev.target_id = target.id("id")?;
    }
    ev.page_enter_ts = top.ts("page_enter_ts")?;
    ev.page_leave_ts = top.ts("page_leave_ts")?;
    if let Some(cors) = top.object("cors")? {
        ev.cors_url = cors.string("url")?;
        ev.cors_method = cors.string("method")?;
        ev.cors_origin = cors.string("origin")?;
        ev.cors_error = cors.string("error")?;
        ev.cors_status = cors.int("status")?;
        ev.cors_duration_ms = cors.int("duration_ms")?;
    }
    let extra: Map<String, Value> = obj
        .iter()
        .filter(|(k, v)| !KNOWN_FIELDS.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !extra.is_empty() {
        ev.extra = Some(Value::Object(extra).to_string());
    }
    Ok(ev)
}

#[cfg(test)]
mod tests;
