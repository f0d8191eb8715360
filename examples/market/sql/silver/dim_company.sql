/* floe
# The current version of each company (the SCD2 table's open rows).
materialized = "table"

[tests]
not_null = ["symbol", "sector"]
*/
SELECT symbol, name, sector, market_cap, _valid_from AS valid_from
FROM bronze.companies
WHERE _valid_to IS NULL
