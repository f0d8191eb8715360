/* floe
# Typed and cleaned half-hourly observations: flagged readings dropped,
# implausible temperatures nulled, energy per half-hour derived.
materialized = "incremental"
event_time = "ts_utc"
*/
SELECT
    ts_utc,
    site_id,
    region,
    demand_mw,
    demand_mw * 0.5 AS energy_mwh,
    CASE WHEN temperature_c BETWEEN -50 AND 60 THEN temperature_c END AS temperature_c,
    wind_speed_ms
FROM bronze.observations
WHERE quality_flag <> 3
