/* floe
# GB daily KPIs per UTC day: energy, peak demand, temperature across the
# sites, and how many half-hours are missing.
materialized = "incremental"
event_time = "ts_utc"
unique_key = ["day"]

[tests]
not_null = ["ts_utc", "day", "energy_mwh", "peak_demand_mw"]
range = { missing_interval_pct = { min = 0, max = 100 } }
*/
SELECT
    date_trunc('day', ts_utc) AS ts_utc,
    CAST(date_trunc('day', ts_utc) AS DATE) AS day,
    -- Demand is national: count each half-hour once, not once per site.
    SUM(CASE WHEN site_id = first_site THEN demand_mw END) * 0.5 AS energy_mwh,
    MAX(demand_mw) AS peak_demand_mw,
    MIN(temperature_c) AS min_temperature_c,
    MAX(temperature_c) AS max_temperature_c,
    ROUND(AVG(temperature_c), 2) AS avg_temperature_c,
    CAST(48 - COUNT(DISTINCT ts_utc) AS DOUBLE) * 100 / 48 AS missing_interval_pct
FROM (
    SELECT *, MIN(site_id) OVER (PARTITION BY ts_utc) AS first_site
    FROM silver.fact_observations
) AS f
GROUP BY date_trunc('day', ts_utc)
