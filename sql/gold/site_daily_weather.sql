/* floe
# Daily weather per site (UTC days) next to the day's peak GB demand.
materialized = "incremental"
event_time = "ts_utc"
unique_key = ["day", "site_id"]

[tests]
not_null = ["ts_utc", "day", "site_id"]
relationships = { site_id = "silver.dim_site.site_id" }
range = { missing_weather_pct = { min = 0, max = 100 } }
*/
SELECT
    date_trunc('day', ts_utc) AS ts_utc,
    CAST(date_trunc('day', ts_utc) AS DATE) AS day,
    site_id,
    MIN(temperature_c) AS min_temperature_c,
    MAX(temperature_c) AS max_temperature_c,
    ROUND(AVG(temperature_c), 2) AS avg_temperature_c,
    ROUND(AVG(wind_speed_ms), 2) AS avg_wind_speed_ms,
    MAX(demand_mw) AS peak_demand_mw,
    CAST(48 - COUNT(temperature_c) AS DOUBLE) * 100 / 48 AS missing_weather_pct
FROM silver.fact_observations
GROUP BY date_trunc('day', ts_utc), site_id
