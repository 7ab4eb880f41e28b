//! From a request body to spool lines, as collection.md "The collector"
//! says: one JSON object, an array of objects, or NDJSON, optionally
//! gzipped; each event becomes one compact line with the collector's
//! `collector_ts`, and nothing else about it changes.
//!
//! Events are kept as the client's raw JSON text (`RawValue`), never
//! parsed into numbers: a value such as `1.0` or a 20-digit id reaches
//! Kafka exactly as sent, so the layering job judges what the client sent.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::Rejection;

/// Request limits of collection.md.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body, after gzip is undone.
    pub max_body: usize,
    /// Most events in one request.
    pub max_events: usize,
    /// Largest event, as its compact line.
    pub max_event: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            max_events: 500,
            max_event: 64 << 10,
        }
    }
}

/// Checks the content type and undoes `Content-Encoding: gzip` (an
/// uncompressed body is borrowed, not copied).
pub fn decode<'a>(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &'a [u8],
    limits: Limits,
) -> Result<Cow<'a, [u8]>, Rejection> {
    let media = content_type
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if media != "application/json" && media != "text/plain" {
        let got = content_type.map_or("none".to_string(), |t| format!("'{t}'"));
        return Err(Rejection::Unsupported(format!(
            "unsupported Content-Type {got} (send application/json or text/plain)"
        )));
    }
    match content_encoding
        .map(|e| e.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => Ok(Cow::Borrowed(body)),
        Some("gzip") => gunzip(body, limits.max_body).map(Cow::Owned),
        Some(other) => Err(Rejection::Unsupported(format!(
            "unsupported Content-Encoding '{other}' (send gzip or none)"
        ))),
    }
}

fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, Rejection> {
    let mut out = Vec::new();
    let mut reader = flate2::read::MultiGzDecoder::new(body).take(max as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| Rejection::BadRequest(format!("body is not valid gzip: {e}")))?;
    if out.len() > max {
        return Err(Rejection::TooLarge(format!(
            "body is over {max} bytes once gunzipped"
        )));
    }
    Ok(out)
}

/// The events of a decoded body as spool lines, each with `collector_ts`
/// set to `now_ms`. All or nothing: the first problem rejects the request.
pub fn events(body: &[u8], now_ms: i64, limits: Limits) -> Result<Vec<String>, Rejection> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Rejection::BadRequest(format!(
            "body is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let raws = split_events(text)?;
    if raws.is_empty() {
        return Err(Rejection::BadRequest(
            "the body holds no events (send a JSON object, an array of objects or NDJSON)".into(),
        ));
    }
    if raws.len() > limits.max_events {
        return Err(Rejection::TooLarge(format!(
            "{} events in one request (at most {})",
            raws.len(),
            limits.max_events
        )));
    }
    raws.iter()
        .enumerate()
        .map(|(i, raw)| {
            let line = stamp(raw.get(), now_ms)
                .map_err(|e| Rejection::BadRequest(format!("event {}: {e}", i + 1)))?;
            if line.len() > limits.max_event {
                return Err(Rejection::BadRequest(format!(
                    "event {} is {} bytes (at most {})",
                    i + 1,
                    line.len(),
                    limits.max_event
                )));
            }
            Ok(line)
        })
        .collect()
}

/// Splits a body into its events' raw JSON texts.
fn split_events(text: &str) -> Result<Vec<&RawValue>, Rejection> {
    let trimmed = text.trim_matches(is_json_space);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(trimmed)
            .map_err(|e| Rejection::BadRequest(format!("body is not JSON: {e}")))?;
        for (i, item) in items.iter().enumerate() {
            if !item.get().starts_with('{') {
                return Err(not_object(&format!("array element {}", i + 1)));
            }
        }
        return Ok(items);
    }
    match serde_json::from_str::<&RawValue>(trimmed) {
        Ok(one) if one.get().starts_with('{') => Ok(vec![one]),
        Ok(_) => Err(not_object("the body")),
        Err(e) if e.to_string().starts_with("trailing characters") => ndjson(text),
        Err(e) => Err(Rejection::BadRequest(format!("body is not JSON: {e}"))),
    }
}

fn ndjson(text: &str) -> Result<Vec<&RawValue>, Rejection> {
    let mut out = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let line = line.trim_matches(is_json_space);
        if line.is_empty() {
            continue;
        }
        let raw: &RawValue = serde_json::from_str(line)
            .map_err(|e| Rejection::BadRequest(format!("line {}: not JSON: {e}", n + 1)))?;
        if !raw.get().starts_with('{') {
            return Err(not_object(&format!("line {}", n + 1)));
        }
        out.push(raw);
    }
    Ok(out)
}

fn not_object(what: &str) -> Rejection {
    Rejection::BadRequest(format!(
        "{what} is not a JSON object (each event is an object)"
    ))
}

fn is_json_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// One event object as a compact line with `collector_ts` replaced (at
/// its place when the client sent one, else appended).
fn stamp(raw: &str, now_ms: i64) -> Result<String, serde_json::Error> {
    let members = Members::parse(raw)?;
    let mut out = String::with_capacity(raw.len() + 32);
    out.push('{');
    let mut stamped = false;
    for (key, value) in &members.0 {
        if key == "collector_ts" {
            if stamped {
                continue;
            }
            stamped = true;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key.as_ref())?);
        out.push(':');
        if key == "collector_ts" {
            out.push_str(&now_ms.to_string());
        } else {
            compact_into(value.get(), &mut out);
        }
    }
    if !stamped {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str("\"collector_ts\":");
        out.push_str(&now_ms.to_string());
    }
    out.push('}');
    Ok(out)
}

/// Copies valid JSON text without the whitespace between tokens, so a
/// pretty-printed event becomes one line (strings are copied as they are).
fn compact_into(json: &str, out: &mut String) {
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !is_json_space(c) {
            out.push(c);
            in_string = c == '"';
        }
    }
}

/// An object's members in their order, duplicates kept, values raw.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    fn parse(raw: &'a str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(raw);
        let members = (&mut de).deserialize_map(MembersVisitor)?;
        de.end()?;
        Ok(members)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            members.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(Members(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_718_668_800_123;

    fn ok(body: &str) -> Vec<String> {
        events(body.as_bytes(), NOW, Limits::default()).unwrap()
    }

    fn bad(body: &str) -> String {
        match events(body.as_bytes(), NOW, Limits::default()) {
            Err(Rejection::BadRequest(m)) => m,
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn one_object_array_and_ndjson() {
        let want = r#"{"event_id":"a","n":1.0,"collector_ts":1718668800123}"#;
        assert_eq!(ok(r#"{"event_id":"a","n":1.0}"#), vec![want]);
        assert_eq!(
            ok("{\n  \"event_id\": \"a\",\n  \"n\": 1.0\n}\n"),
            vec![want]
        );
        assert_eq!(
            ok(r#"[{"event_id":"a","n":1.0}, {"event_id":"b"}]"#).len(),
            2
        );
        let lines = ok("{\"event_id\":\"a\"}\r\n\n{\"event_id\":\"b\"}\n");
        assert_eq!(
            lines,
            vec![
                r#"{"event_id":"a","collector_ts":1718668800123}"#,
                r#"{"event_id":"b","collector_ts":1718668800123}"#
            ]
        );
    }

    #[test]
    fn collector_ts_is_replaced_in_place_and_nothing_else_changes() {
        let line = &ok(
            r#"{"a":"x y","collector_ts":"1","big":123456789012345678901234,"s":"q\"\n{ }","collector_ts":5}"#,
        )[0];
        assert_eq!(
            line,
            r#"{"a":"x y","collector_ts":1718668800123,"big":123456789012345678901234,"s":"q\"\n{ }"}"#
        );
        let nested = &ok("{\"page\": {\"url\" : \"/a b\",\n \"x\": [1, 2]}}")[0];
        assert_eq!(
            nested,
            r#"{"page":{"url":"/a b","x":[1,2]},"collector_ts":1718668800123}"#
        );
    }

    #[test]
    fn rejections_name_the_problem() {
        assert!(bad("not json").contains("not JSON"));
        assert!(bad("[1]").contains("array element 1 is not a JSON object"));
        assert!(bad("{\"a\":1}\n[2]").contains("line 2 is not a JSON object"));
        assert!(bad("{\"a\":1}\n{oops").contains("line 2"));
        assert!(bad("").contains("no events"));
        assert!(bad("[]").contains("no events"));
        assert!(bad("\"s\"").contains("not a JSON object"));
        let big = format!("{{\"p\":\"{}\"}}", "x".repeat(70_000));
        assert!(bad(&big).contains("at most 65536"));
        let many = format!("[{}]", vec!["{}"; 501].join(","));
        assert!(matches!(
            events(many.as_bytes(), NOW, Limits::default()),
            Err(Rejection::TooLarge(m)) if m.contains("501 events")
        ));
        assert!(matches!(
            events(b"\xff{}", NOW, Limits::default()),
            Err(Rejection::BadRequest(m)) if m.contains("not UTF-8")
        ));
    }

    #[test]
    fn content_types_and_gzip() {
        let l = Limits::default();
        assert!(decode(Some("application/json; charset=utf-8"), None, b"{}", l).is_ok());
        assert!(decode(Some("text/plain;charset=UTF-8"), None, b"{}", l).is_ok());
        assert!(matches!(
            decode(Some("text/html"), None, b"{}", l),
            Err(Rejection::Unsupported(_))
        ));
        assert!(matches!(
            decode(None, None, b"{}", l),
            Err(Rejection::Unsupported(_))
        ));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"{\"a\":1}").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decode(Some("application/json"), Some("gzip"), &gz, l)
                .unwrap()
                .as_ref(),
            b"{\"a\":1}"
        );
        assert!(matches!(
            decode(Some("application/json"), Some("gzip"), b"nope", l),
            Err(Rejection::BadRequest(_))
        ));
        assert!(matches!(
            decode(Some("application/json"), Some("br"), b"{}", l),
            Err(Rejection::Unsupported(_))
        ));
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut bomb, &vec![b' '; 2 << 20]).unwrap();
        let bomb = bomb.finish().unwrap();
        assert!(matches!(
            decode(Some("application/json"), Some("gzip"), &bomb, l),
            Err(Rejection::TooLarge(_))
        ));
    }
}
