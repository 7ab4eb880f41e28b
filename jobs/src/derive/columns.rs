//! The derived DWD columns of `analyses.md` ("Derived columns") as plain
//! functions; `udf` wraps them for the engine.

use chrono::{Datelike, NaiveDate};
use sha2::{Digest, Sha256};

/// Substrings of a lower-cased User-Agent that mark a bot.
pub const BOT_MARKERS: [&str; 9] = [
    "bot",
    "spider",
    "crawler",
    "headlesschrome",
    "phantomjs",
    "curl/",
    "wget/",
    "python-requests",
    "go-http-client",
];

/// `norm(url)`: the route of a URL with id-like segments replaced by `{id}`.
///
/// A fragment that starts with `/` is a hash-routed SPA route and wins over
/// the path; otherwise the path is taken without query or fragment. A bare
/// path is accepted. Case and percent-encoding are kept.
pub fn norm_path(url: &str) -> Option<String> {
    if url.is_empty() {
        return None;
    }
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let route = match fragment {
        Some(f) if f.starts_with('/') => f.split('?').next().unwrap_or(""),
        _ => url_path(before_fragment.split('?').next().unwrap_or("")),
    };
    let segments: Vec<&str> = route
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| if is_id_segment(s) { "{id}" } else { s })
        .collect();
    Some(format!("/{}", segments.join("/")))
}

/// The path of a URL without query and fragment; a bare path is returned as is.
fn url_path(url: &str) -> &str {
    match authority_and_rest(url) {
        Some((_, rest)) => rest,
        None => url,
    }
}

/// Splits `scheme://authority/rest` (or `//authority/rest`) into authority
/// and the rest starting at the path; `None` for a URL without authority.
fn authority_and_rest(url: &str) -> Option<(&str, &str)> {
    let after = if let Some(rest) = url.strip_prefix("//") {
        rest
    } else {
        let (scheme, rest) = url.split_once("://")?;
        let valid_scheme = !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme {
            return None;
        }
        rest
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    Some((&after[..end], &after[end..]))
}

fn is_id_segment(s: &str) -> bool {
    let all_digits = s.bytes().all(|b| b.is_ascii_digit());
    let hex = s.bytes().all(|b| b.is_ascii_hexdigit());
    all_digits || (hex && s.len() >= 16) || is_uuid(s)
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `req_host`: the URL's host, lower-cased, without user info, port or
/// IPv6 brackets; `None` for a relative URL.
pub fn url_host(url: &str) -> Option<String> {
    let (authority, _) = authority_and_rest(url)?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        match host_port.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host_port,
        }
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// `is_bot`: the User-Agent contains a bot marker; no UA is not a bot.
pub fn is_bot(ua: Option<&str>) -> bool {
    ua.map(|u| {
        let lower = u.to_lowercase();
        BOT_MARKERS.iter().any(|m| lower.contains(m))
    })
    .unwrap_or(false)
}

/// `err_class` of a CORS failure; the first matching rule wins.
pub fn err_class(error: Option<&str>, status: Option<i64>) -> &'static str {
    let lower = error.map(str::to_lowercase).unwrap_or_default();
    if lower.contains("timeout") {
        "timeout"
    } else if lower.contains("abort") {
        "aborted"
    } else {
        match status {
            None | Some(0) => "network_or_cors",
            Some(400..=499) => "http_4xx",
            Some(500..=599) => "http_5xx",
            Some(_) => "other",
        }
    }
}

/// First 16 lower-case hex digits of SHA-256 over the parts joined by `|`
/// (null parts as empty strings).
pub fn fingerprint(parts: &[Option<&str>]) -> String {
    let text = parts
        .iter()
        .map(|p| p.unwrap_or(""))
        .collect::<Vec<_>>()
        .join("|");
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Age band at `on` for a `yyyy-mm-dd` birth date; `unknown` when the date
/// is missing or unparsable, or the age is outside 0–120.
pub fn age_band(birth_date: Option<&str>, on: NaiveDate) -> &'static str {
    let Some(born) = birth_date.and_then(|b| NaiveDate::parse_from_str(b.trim(), "%Y-%m-%d").ok())
    else {
        return "unknown";
    };
    let mut age = on.year() - born.year();
    if (on.month(), on.day()) < (born.month(), born.day()) {
        age -= 1;
    }
    match age {
        a if !(0..=120).contains(&a) => "unknown",
        0..=17 => "<18",
        18..=24 => "18-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=54 => "45-54",
        _ => "55+",
    }
}

/// `gender` from `dim_user`: `M`, `F`, `other`, else `unknown`.
pub fn gender(g: Option<&str>) -> &'static str {
    match g {
        Some("M") => "M",
        Some("F") => "F",
        Some("other") => "other",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let n = |s| norm_path(s);
        assert_eq!(n(""), None);
        assert_eq!(n("https://h/"), Some("/".into()));
        assert_eq!(n("https://h"), Some("/".into()));
        assert_eq!(
            n("https://h/#/devices/7?tab=1"),
            Some("/devices/{id}".into())
        );
        assert_eq!(n("https://h/app?x=1#section"), Some("/app".into()));
        assert_eq!(n("/devices/7"), Some("/devices/{id}".into()));
        assert_eq!(n("https://h//a//b/"), Some("/a/b".into()));
        assert_eq!(
            n("https://h/u/123e4567-E89B-12d3-a456-426614174000/x"),
            Some("/u/{id}/x".into())
        );
        // 16 hex chars is an id, 15 is not; case kept elsewhere
        assert_eq!(n("/k/0123456789abcdeF/Abc"), Some("/k/{id}/Abc".into()));
        assert_eq!(n("/k/0123456789abcde"), Some("/k/0123456789abcde".into()));
        assert_eq!(n("/a%20b/v2"), Some("/a%20b/v2".into()));
        assert_eq!(n("https://h:8080/p?q#frag"), Some("/p".into()));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            url_host("https://API.Example.com:8443/x"),
            Some("api.example.com".into())
        );
        assert_eq!(url_host("https://u:p@h.io/x"), Some("h.io".into()));
        assert_eq!(url_host("http://[::1]:80/"), Some("::1".into()));
        assert_eq!(url_host("/relative/path"), None);
        assert_eq!(url_host("//cdn.x.com/a"), Some("cdn.x.com".into()));
    }

    #[test]
    fn bots() {
        assert!(is_bot(Some("Mozilla/5.0 (compatible; Googlebot/2.1)")));
        assert!(is_bot(Some("curl/8.1")));
        assert!(is_bot(Some("Mozilla/5.0 HeadlessChrome/120")));
        assert!(!is_bot(Some("curl 8")));
        assert!(!is_bot(None));
    }

    #[test]
    fn err_classes() {
        assert_eq!(err_class(Some("Request TIMEOUT"), Some(500)), "timeout");
        assert_eq!(err_class(Some("net::ERR_ABORTED"), Some(0)), "aborted");
        assert_eq!(err_class(Some("CORS"), None), "network_or_cors");
        assert_eq!(err_class(None, Some(0)), "network_or_cors");
        assert_eq!(err_class(None, Some(404)), "http_4xx");
        assert_eq!(err_class(None, Some(599)), "http_5xx");
        assert_eq!(err_class(None, Some(302)), "other");
    }

    #[test]
    fn fingerprint_is_sha256_prefix() {
        // sha256("") = e3b0c44298fc1c149afbf4c8996fb924...
        assert_eq!(fingerprint(&[]), "e3b0c44298fc1c14");
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(fingerprint(&[Some("abc")]), "ba7816bf8f01cfea");
        // "||" joins five null parts: sha256("||||") computed independently
        assert_eq!(
            fingerprint(&[None, None]),
            fingerprint(&[Some(""), Some("")])
        );
    }

    #[test]
    fn age_bands() {
        let on = NaiveDate::from_ymd_opt(2024, 6, 18).unwrap();
        assert_eq!(age_band(Some("2006-06-18"), on), "18-24");
        assert_eq!(age_band(Some("2006-06-19"), on), "<18");
        assert_eq!(age_band(Some("1969-06-18"), on), "55+");
        assert_eq!(age_band(Some("1990-01-01"), on), "25-34");
        assert_eq!(age_band(Some("2030-01-01"), on), "unknown");
        assert_eq!(age_band(Some("1900-01-01"), on), "unknown");
        assert_eq!(age_band(Some(""), on), "unknown");
        assert_eq!(age_band(None, on), "unknown");
        assert_eq!(gender(Some("F")), "F");
        assert_eq!(gender(Some("f")), "unknown");
    }
}
