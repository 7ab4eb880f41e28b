-- Page views, visitors and mean time on page of one partition, most
-- viewed first.
-- $1: the local date (DATE), $2: the region
SELECT page_path, pv, uv, avg_duration_ms
FROM ads_trk_page_1d
WHERE dt = $1 AND region = $2
ORDER BY pv DESC, page_path
