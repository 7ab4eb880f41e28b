-- The regions with a committed page report on a local date.
-- $1: the local date (DATE)
SELECT DISTINCT region FROM ads_trk_page_1d WHERE dt = $1 ORDER BY region
