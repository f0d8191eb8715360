/* floe
# Half-hourly GB demand with the weather at each site at that time (the
# hourly reading of the half-hour's hour). Incremental: a run recomputes
# only the UTC days whose bronze data changed.
materialized = "incremental"
event_time = "ts_utc"
unique_key = ["ts_utc", "site_id"]
sort = ["site_id", "ts_utc"]

[tests]
not_null = ["ts_utc", "site_id", "demand_mw"]
relationships = { site_id = "silver.dim_site.site_id" }
range = { demand_mw = { min = 0, max = 100000 }, temperature_c = { min = -40, max = 50 } }
cadence = { key = ["site_id"], interval = "30m" }
*/
SELECT
    d.ts_utc,
    s.site_id,
    d.settlement_date,
    d.settlement_period,
    d.demand_mw,
    d.embedded_wind_mw,
    w.temperature_c,
    w.wind_speed_ms
FROM bronze.demand AS d
CROSS JOIN silver.dim_site AS s
LEFT JOIN bronze.weather AS w
    ON w.site_id = s.site_id
   AND w.ts_utc = date_trunc('hour', d.ts_utc)
