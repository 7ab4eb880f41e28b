-- Users reaching each funnel step of one partition.
-- $1: the local date (DATE), $2: the region
SELECT funnel_id, step_no, users, conv_from_start
FROM ads_trk_funnel_1d
WHERE dt = $1 AND region = $2
ORDER BY funnel_id, step_no
