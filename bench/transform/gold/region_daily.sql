/* floe
# Daily KPIs per region (UTC days).
materialized = "incremental"
event_time = "ts_utc"
*/
SELECT
    date_trunc('day', ts_utc) AS ts_utc,
    region,
    COUNT(DISTINCT site_id) AS sites,
    SUM(energy_mwh) AS energy_mwh,
    MAX(demand_mw) AS peak_demand_mw,
    AVG(temperature_c) AS avg_temperature_c,
    AVG(wind_speed_ms) AS avg_wind_speed_ms
FROM silver.observations
GROUP BY date_trunc('day', ts_utc), region
