//! `tauc-job sample` in the business's shape, as a benchmark uses it: its
//! days carry every dirty case of events.md (each quarantined for the
//! reason the contract gives it) and account for every line — valid plus
//! quarantined equals the non-blank lines, counted here from the raw
//! objects themselves — and its population is the one asked for.

use std::collections::BTreeMap;

use tauc_jobs::warehouse::tables::Table;

use crate::harness::*;

const DATES: [&str; 2] = ["2024-06-18", "2024-06-19"];

/// The dirty cases of a day and the reason events.md gives each (checks 1
/// to 5): over 1 MiB; not JSON, a JSON array, invalid UTF-8; a required
/// field missing or empty; a float `client_ts`, an unknown type, a target
/// type outside the list, geo not an object, `collector_ts` past C + 1 day
/// 01:00; older than the lateness allowance. (Seconds as a string, geo
/// 0/0, an unknown field and a bot's User-Agent are valid.)
fn dirty_reasons() -> BTreeMap<String, i64> {
    let mut r = BTreeMap::new();
    for (reason, n) in [
        ("line_too_long", 1),
        ("malformed_json", 3),
        ("missing_field:event_id", 1),
        ("missing_field:event_type", 1),
        ("missing_field:client_ts", 1),
        ("missing_field:device_id", 1),
        ("missing_field:target", 1),
        ("invalid_field:client_ts", 1),
        ("invalid_field:event_type", 1),
        ("invalid_field:target.type", 1),
        ("invalid_field:geo", 1),
        ("invalid_field:collector_ts", 1),
        ("late_beyond_window", 1),
    ] {
        r.insert(reason.to_string(), n);
    }
    r
}

/// Lines of a raw object that are not blank (a leading BOM dropped; CR,
/// tab, space, FF and VT are blank space).
fn non_blank_lines(body: &[u8]) -> i64 {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if body.ends_with(b"\n") {
        lines.pop();
    }
    let blank = |l: &&[u8]| l.iter().all(|b| b" \t\r\x0c\x0b".contains(b));
    lines.iter().filter(|l| !blank(l)).count() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_business_sample_keeps_every_dirty_case_and_accounts_for_every_line() {
    let w = World::new("sample-business");
    let out = w
        .tauc_job(
            &[
                "sample",
                "--date",
                DATES[0],
                "--days",
                "2",
                "--regions",
                "aps1",
                "--events-per-day",
                "3000",
                "--users",
                "400",
                "--targets",
                "60",
            ],
            true,
        )
        .ok()
        .to_string();
    assert!(
        out.contains("business shape: 400 users, 520 devices, 60 targets"),
        "{out}"
    );
    for dt in DATES {
        let folder = format!("raw/uat/aps1/{}", dt.replace('-', "/"));
        let mut lines = 0;
        for key in w.keys(&folder).await {
            if key.rsplit('/').next().unwrap().starts_with("messages-") {
                lines += non_blank_lines(&w.get(&key).await);
            }
        }
        assert!(lines > 3000, "{dt}: {lines} lines");
        let args = ["submit", "layering", "--date", dt, "--region", "aps1"];
        w.tauc_job(&args, true).ok();

        let stats = w.rows(Table::OdsLoadStats, dt, "aps1").await;
        let valid = i64s(&stats, "valid_rows")[0].unwrap();
        let quarantined = i64s(&stats, "quarantined_rows")[0].unwrap();
        assert_eq!(
            valid + quarantined,
            lines,
            "{dt}: every non-blank line once"
        );
        let q = w.rows(Table::OdsQuarantine, dt, "aps1").await;
        let mut reasons = BTreeMap::new();
        for r in strs(&q, "reason").into_iter().flatten() {
            *reasons.entry(r).or_insert(0) += 1;
        }
        assert_eq!(reasons, dirty_reasons(), "{dt}");
        assert_eq!(
            w.rows(Table::OdsEvent, dt, "aps1").await.num_rows() as i64,
            valid
        );
    }
    // the population: the users and targets asked for, skewed
    let csv = |q: &str| -> Vec<i64> {
        let r = w.tauc_job(&["sql", q, "--format", "csv"], true);
        let line = r.ok().lines().nth(1).unwrap().to_string();
        line.split(',')
            .map(|v| v.parse::<f64>().unwrap() as i64)
            .collect()
    };
    let seen =
        csv("SELECT count(DISTINCT user_id), count(DISTINCT target_id) FROM dwd_trk_event_di");
    let (users, targets) = (seen[0], seen[1]);
    let activity = csv("SELECT max(n), approx_median(n) FROM \
         (SELECT user_key, count(*) AS n FROM dwd_trk_event_di GROUP BY user_key)");
    let (top, median) = (activity[0], activity[1]);
    assert!(
        (150..=300).contains(&users),
        "signed-in users seen: {users}"
    );
    assert!(targets <= 60 && targets > 30, "targets: {targets}");
    assert!(
        top > 10 * median,
        "a few heavy users: top {top}, median {median}"
    );
}
