/* floe
# One row per settlement date (UK local calendar day). A day has 48
# settlement periods, 46 on the spring clock change (last Sunday of March)
# and 50 on the autumn one (last Sunday of October).
materialized = "table"
unique_key = ["settlement_date"]

[tests]
not_null = ["settlement_date", "settlement_periods", "periods_landed"]
accepted_values = { settlement_periods = [46, 48, 50] }
*/
SELECT
    settlement_date,
    year,
    month,
    day_of_week,
    day_of_week IN (0, 6) AS is_weekend,
    settlement_periods,
    settlement_periods <> 48 AS is_clock_change,
    periods_landed,
    periods_landed = settlement_periods AS is_complete
FROM (
    SELECT
        settlement_date,
        CAST(EXTRACT(YEAR FROM settlement_date) AS INT) AS year,
        CAST(EXTRACT(MONTH FROM settlement_date) AS INT) AS month,
        -- Sunday 0 to Saturday 6 on both engines (Trino's DOW is ISO: Monday 1 to Sunday 7).
        CAST(EXTRACT(DOW FROM settlement_date) % 7 AS INT) AS day_of_week,
        CAST(CASE
            WHEN EXTRACT(MONTH FROM settlement_date) = 3 AND EXTRACT(DOW FROM settlement_date) % 7 = 0
                 AND EXTRACT(DAY FROM settlement_date) >= 25 THEN 46
            WHEN EXTRACT(MONTH FROM settlement_date) = 10 AND EXTRACT(DOW FROM settlement_date) % 7 = 0
                 AND EXTRACT(DAY FROM settlement_date) >= 25 THEN 50
            ELSE 48
        END AS INT) AS settlement_periods,
        CAST(COUNT(DISTINCT settlement_period) AS INT) AS periods_landed
    FROM bronze.demand
    GROUP BY settlement_date
) AS d
