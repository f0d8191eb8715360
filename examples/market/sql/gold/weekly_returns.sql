/* floe
# Five-trading-day return per symbol and day, with the company's sector.
# LAG looks back across days: lookback bounds how far (five trading days
# span at most nine calendar days, with a holiday), so a refresh of some
# days reads the ten days around them and equals a full one.
materialized = "incremental"
event_time = "ts_utc"
lookback = "10d"

[tests]
not_null = ["symbol", "ts_utc", "adjusted_close"]
relationships = { symbol = "silver.dim_company.symbol" }
*/
SELECT
    p.symbol,
    p.ts_utc,
    p.trade_date,
    d.sector,
    p.adjusted_close,
    p.adjusted_close / LAG(p.adjusted_close, 5) OVER (PARTITION BY p.symbol ORDER BY p.ts_utc) - 1 AS return_5d
FROM silver.prices AS p
LEFT JOIN silver.dim_company AS d ON d.symbol = p.symbol
