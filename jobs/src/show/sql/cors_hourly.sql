-- CORS errors per hour and series (alerts flagged) of one partition.
-- $1: the local date (DATE), $2: the region
SELECT series, CAST(hour_start AS BIGINT) AS h, CAST(hour_start_local AS VARCHAR) AS local,
    errors, is_alert
FROM ads_mon_cors_anomaly_hh
WHERE dt = $1 AND region = $2
ORDER BY series, hour_start
