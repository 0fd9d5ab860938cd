-- Usage per hour, from the deduplicated audit trail. A view rather than a table fed at
-- insert time: a replayed batch writes its events again until ReplacingMergeTree folds
-- them, so only a read with FINAL counts each event once. Filters on tenant and
-- subscription reach the events table's sorting key, so one subscription's windows are
-- a narrow read.
CREATE VIEW IF NOT EXISTS {db}.usage_hourly AS
SELECT
    tenant,
    subscription,
    meter,
    toStartOfHour(timestamp) AS window_start,
    count() AS events,
    sum(quantity) AS quantity
FROM {db}.events FINAL
GROUP BY tenant, subscription, meter, window_start;
