-- The top CORS failure fingerprints of one partition (the page shows the
-- first rows only).
-- $1: the local date (DATE), $2: the region
SELECT rank, fingerprint, err_class, req_method, req_host, req_path_tpl, errors, affected_users
FROM ads_mon_cors_topn_1d
WHERE dt = $1 AND region = $2
ORDER BY rank
