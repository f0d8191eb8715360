/* floe
# Daily adjusted closes, one row per symbol and trading day.
materialized = "incremental"
event_time = "ts_utc"
sort = ["symbol", "ts_utc"]

[tests]
not_null = ["symbol", "ts_utc", "adjusted_close"]
range = { adjusted_close = { min = 0 } }
*/
SELECT
    symbol,
    ts_utc,
    CAST(ts_utc AS DATE) AS trade_date,
    adjusted_close,
    volume
FROM bronze.prices
