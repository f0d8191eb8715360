/* floe
# One row per weather site. Replaced whole on every change; an unchanged
# result is not committed, so fact_observations stays incremental.
materialized = "table"
unique_key = ["site_id"]

[tests]
not_null = ["site_id", "site_name"]
range = { latitude = { min = -90, max = 90 }, longitude = { min = -180, max = 180 } }
*/
SELECT
    w.site_id,
    COALESCE(known.site_name, w.site_id) AS site_name,
    known.latitude,
    known.longitude
FROM (SELECT DISTINCT site_id FROM bronze.weather) AS w
LEFT JOIN (
    VALUES
        ('london', 'London', 51.51, -0.13),
        ('manchester', 'Manchester', 53.48, -2.24),
        ('edinburgh', 'Edinburgh', 55.95, -3.19)
) AS known (site_id, site_name, latitude, longitude)
    ON known.site_id = w.site_id
