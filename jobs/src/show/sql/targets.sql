-- Clicks, impressions and CTR per target of one partition, most clicked
-- first.
-- $1: the local date (DATE), $2: the region
SELECT target_type, target_id, clicks, impressions, ctr
FROM ads_trk_target_click_1d
WHERE dt = $1 AND region = $2
ORDER BY clicks DESC, target_id
