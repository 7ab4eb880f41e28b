-- Billable quantity and amount per partner and currency of one partition,
-- largest amount first.
-- $1: the local date (DATE), $2: the region
SELECT partner_id, currency, sum(billable_qty) AS qty, sum(amount) AS amount
FROM ads_bill_settlement_1d
WHERE dt = $1 AND region = $2
GROUP BY partner_id, currency
ORDER BY amount DESC, partner_id
