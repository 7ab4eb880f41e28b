-- The DWD rows of the target dates: the kept rows of the dedupe (view
-- `dwd_kept`, built in `layering.rs`: one row per kept event and DWD date
-- `target_dt`, with `copies` = the rows read it stands for, its zone `tz`,
-- `event_ts` and `local_dt`), joined with the user dimension and derived
-- with the tauc functions (layers.md, analyses.md). No value of the run is
-- in this text: the dates, regions, zones and lateness are in `dwd_kept`.
--
-- Anonymous rows get a join key of their own per event (`n…`), which no
-- user key (`u…`) equals, instead of all meeting in the NULL key's
-- partition. The dimension is the join's left (build) side: this query
-- runs with hash joins, which hold their build side in memory.
WITH dated AS (
    SELECT *, tauc_local_ts(event_ts, tz) AS local_ts FROM dwd_kept
),
users AS (
    SELECT 'u' || user_id AS u_key, min(gender) AS u_gender, min(birth_date) AS u_birth_date
    FROM dim_user_raw WHERE user_id IS NOT NULL AND user_id <> ''
    GROUP BY user_id
),
derived AS (
    SELECT
        k.region, k.target_dt, k.copies,
        k.event_id, k.event_type, k.event_ts, k.local_ts,
        CAST(date_part('hour', k.local_ts) AS INT) AS local_hour,
        tauc_lateness_ms(k.event_ts, k.collector_ts, k.dt) AS lateness_ms,
        tauc_ts_clamped(k.client_ts, k.sent_ts, k.collector_ts) AS ts_clamped,
        COALESCE(k.user_id, 'd:' || k.device_id) AS user_key,
        k.user_id, k.device_id, k.device_id_type, k.target_type, k.target_id,
        k.page_url,
        tauc_norm_path(k.page_url) AS page_path,
        tauc_norm_path(k.from_url) AS from_path,
        tauc_norm_path(k.to_url) AS to_path,
        k.page_enter_ts, k.page_leave_ts,
        CASE WHEN k.event_type = 'page_leave' AND k.page_leave_ts >= k.page_enter_ts
             THEN least(CAST(k.page_leave_ts AS BIGINT) - CAST(k.page_enter_ts AS BIGINT), 1800000)
        END AS duration_ms,
        k.geo_lat, k.geo_lon,
        tauc_geocode(k.geo_lat, k.geo_lon) AS place,
        tauc_gender(u.u_gender) AS gender,
        CASE WHEN k.user_id IS NULL THEN 'unknown'
             ELSE tauc_age_band(u.u_birth_date, k.local_dt) END AS age_band,
        tauc_user_agent(k.ua) AS agent,
        tauc_is_bot(k.ua) AS is_bot,
        k.app_version, k.extra,
        tauc_url_host(k.cors_url) AS req_host,
        tauc_norm_path(k.cors_url) AS req_path_tpl,
        COALESCE(upper(k.cors_method), 'UNKNOWN') AS req_method,
        COALESCE(lower(k.cors_origin), '') AS req_origin,
        k.cors_status AS status,
        tauc_err_class(k.cors_error, k.cors_status) AS err_class,
        k.cors_error AS error,
        k.cors_duration_ms
    FROM users u RIGHT JOIN dated k
      ON CASE WHEN k.user_id IS NULL THEN 'n' || k.event_id ELSE 'u' || k.user_id END = u.u_key
    WHERE k.local_dt = k.target_dt
)
SELECT
    region, target_dt AS dt, copies,
    event_id, event_type, event_ts, local_ts, local_hour,
    lateness_ms, ts_clamped, user_key, user_id, device_id, device_id_type,
    target_type, target_id, page_url, page_path, from_path, to_path,
    page_enter_ts, page_leave_ts,
    CASE WHEN event_type = 'cors_error' THEN cors_duration_ms ELSE duration_ms END AS duration_ms,
    geo_lat, geo_lon,
    get_field(place, 'city') AS city, get_field(place, 'country') AS country,
    gender, age_band,
    get_field(agent, 'browser_family') AS browser_family,
    get_field(agent, 'browser_major') AS browser_major,
    get_field(agent, 'os_family') AS os_family,
    is_bot, app_version, extra,
    req_host, req_path_tpl, req_method, req_origin, status, err_class, error, cors_duration_ms,
    CASE WHEN event_type = 'cors_error'
         THEN tauc_fingerprint(err_class, req_method, req_host, req_path_tpl, req_origin) END AS fingerprint
FROM derived
