//! Browser and OS from a User-Agent, with the uap-core rules (the
//! BrowserScope data set that ua-parser libraries in every language share),
//! compiled once per process.
//!
//! `data/uap_regexes.json` is uap-core's `regexes.yaml` (user agent and OS
//! parsers only) converted to JSON, so no YAML parser is needed at run time.

use std::sync::OnceLock;

/// What the DWD tables keep of a User-Agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgent {
    /// `Chrome`, `Firefox`, ... (`Other` when no rule matches).
    pub browser_family: String,
    /// Major version, when the rule gives one.
    pub browser_major: Option<String>,
    /// `Windows`, `Mac OS X`, `Android`, ... (`Other` when no rule matches).
    pub os_family: String,
}

struct Parsers {
    ua: ua_parser::user_agent::Extractor<'static>,
    os: ua_parser::os::Extractor<'static>,
}

static RULES: &str = include_str!("../../data/uap_regexes.json");

fn parsers() -> &'static Parsers {
    static P: OnceLock<Parsers> = OnceLock::new();
    P.get_or_init(|| {
        let regexes: ua_parser::Regexes<'static> =
            serde_json::from_str(RULES).expect("bundled uap rules are valid JSON");
        let ua = ua_parser::user_agent::Builder::new()
            .push_all(regexes.user_agent_parsers)
            .expect("bundled uap user agent rules parse")
            .build()
            .expect("bundled uap user agent rules compile");
        let os = ua_parser::os::Builder::new()
            .push_all(regexes.os_parsers)
            .expect("bundled uap os rules parse")
            .build()
            .expect("bundled uap os rules compile");
        Parsers { ua, os }
    })
}

/// Parses a User-Agent string.
pub fn parse(ua: &str) -> UserAgent {
    let p = parsers();
    let (browser_family, browser_major) = match p.ua.extract(ua) {
        Some(v) => (v.family.to_string(), v.major.map(str::to_string)),
        None => ("Other".to_string(), None),
    };
    let os_family =
        p.os.extract(ua)
            .map(|v| v.os.to_string())
            .unwrap_or_else(|| "Other".to_string());
    UserAgent {
        browser_family,
        browser_major,
        os_family,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_browsers() {
        let chrome = parse(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36",
        );
        assert_eq!(chrome.browser_family, "Chrome");
        assert_eq!(chrome.browser_major.as_deref(), Some("120"));
        assert_eq!(chrome.os_family, "Windows");
        let iphone = parse(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        );
        assert_eq!(iphone.browser_family, "Mobile Safari");
        assert_eq!(iphone.os_family, "iOS");
        assert_eq!(parse("nonsense").browser_family, "Other");
    }
}
