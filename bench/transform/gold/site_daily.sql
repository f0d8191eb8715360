/* floe
# Daily KPIs per site (UTC days).
materialized = "incremental"
event_time = "ts_utc"
*/
SELECT
    date_trunc('day', ts_utc) AS ts_utc,
    site_id,
    MIN(region) AS region,
    SUM(energy_mwh) AS energy_mwh,
    MAX(demand_mw) AS peak_demand_mw,
    MIN(temperature_c) AS min_temperature_c,
    MAX(temperature_c) AS max_temperature_c,
    AVG(temperature_c) AS avg_temperature_c,
    CAST(48 - COUNT(DISTINCT ts_utc) AS DOUBLE) * 100 / 48 AS missing_interval_pct
FROM silver.observations
GROUP BY date_trunc('day', ts_utc), site_id
