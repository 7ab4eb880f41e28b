"""The lookup mix of the notes' back office, as SQL both engines run
unchanged: one user's events over 30 days; one target's clicks per day by
gender and age band; one city and action in one hour; a funnel's
conversion over a week; the top 20 targets of a day; one CORS
fingerprint's errors over a week.

`mix(first, days, picks)` gives (name, kind, sql) triples; `kind` says which
queries count towards the lookup targets (p95 <= 300 ms warm, <= 1 s cold,
<= 2 % of the bytes)."""

import datetime as dt


def mix(first: str, days: int, picks: dict) -> list:
    d0 = dt.date.fromisoformat(first)
    last = d0 + dt.timedelta(days=days - 1)
    week0 = last - dt.timedelta(days=6)
    day = d0 + dt.timedelta(days=days // 2)
    hour = dt.datetime(day.year, day.month, day.day, 14)
    h1 = hour + dt.timedelta(hours=1)
    span = f"dt BETWEEN DATE '{d0}' AND DATE '{last}'"
    week = f"dt BETWEEN DATE '{week0}' AND DATE '{last}'"
    return [
        ("user_30d", "lookup",
         f"SELECT event_id, event_type, event_ts, page_path, target_id FROM dwd_trk_event_di "
         f"WHERE {span} AND user_id = '{picks['user']}' ORDER BY event_ts, event_id"),
        ("target_by_day_gender_age", "lookup",
         f"SELECT dt, gender, age_band, count(*) AS clicks FROM dwd_trk_event_di "
         f"WHERE {span} AND target_type = '{picks['target_type']}' AND target_id = '{picks['target']}' "
         f"AND event_type = 'click' GROUP BY dt, gender, age_band ORDER BY dt, gender, age_band"),
        ("city_action_hour", "lookup",
         f"SELECT event_id, user_key, target_id, event_ts FROM dwd_trk_event_di "
         f"WHERE dt = DATE '{day}' AND city = '{picks['city']}' AND event_type = 'click' "
         f"AND event_ts >= TIMESTAMP '{hour:%Y-%m-%d %H:%M:%S}' AND event_ts < TIMESTAMP '{h1:%Y-%m-%d %H:%M:%S}' "
         f"ORDER BY event_ts, event_id"),
        ("funnel_week", "report",
         "WITH s1 AS (SELECT user_key, min(event_ts) AS t1 FROM dwd_trk_event_di "
         f"WHERE {week} AND event_type = 'page_enter' AND page_path = '/home' AND NOT is_bot GROUP BY user_key), "
         "s2 AS (SELECT e.user_key FROM dwd_trk_event_di e JOIN s1 ON e.user_key = s1.user_key "
         f"WHERE e.{week} AND e.event_type = 'click' AND e.target_id = 'btn-add-device' AND e.event_ts >= s1.t1 "
         "GROUP BY e.user_key) "
         "SELECT (SELECT count(*) FROM s1) AS started, (SELECT count(*) FROM s2) AS clicked"),
        ("top20_targets_day", "report",
         f"SELECT target_type, target_id, count(*) AS clicks FROM dwd_trk_event_di "
         f"WHERE dt = DATE '{day}' AND event_type = 'click' GROUP BY target_type, target_id "
         f"ORDER BY clicks DESC, target_type, target_id LIMIT 20"),
        ("fingerprint_week", "lookup",
         f"SELECT dt, count(*) AS errors, count(DISTINCT user_key) AS users FROM dwd_mon_cors_error_di "
         f"WHERE {week} AND fingerprint = '{picks['fingerprint']}' GROUP BY dt ORDER BY dt"),
    ]
