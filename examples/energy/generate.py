#!/usr/bin/env python3
"""Writes the bundled sample data of the energy example (deterministic).

demand/DATE.ndjson: GB national demand per settlement period, shaped like the
NESO CKAN datastore records (SETTLEMENT_DATE + SETTLEMENT_PERIOD in UK local
time: 46 periods on the spring clock-change day, 50 in autumn).
weather/DATE.csv: hourly weather per site, UTC timestamps with an offset,
shaped like Open-Meteo's hourly arrays flattened to rows.
raw/: the same data as API responses in a floe landing zone, for api.toml
(`floe ingest --replay` works offline on it): a NESO CKAN
datastore_search_sql answer for 2024-03-30..2024-04-01 (local dates one day
wider) and one Open-Meteo archive answer per site.

Values are synthetic (smooth daily and weekly shapes), not real measurements.
"""
import csv
import json
import math
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

HERE = Path(__file__).parent
LONDON = ZoneInfo("Europe/London")
DAYS = [date(2024, 3, 29) + timedelta(days=i) for i in range(5)]
SITES = {"london": (51.51, -0.13), "manchester": (53.48, -2.24), "edinburgh": (55.95, -3.19)}


def periods(day):
    start = datetime(day.year, day.month, day.day, tzinfo=LONDON)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=LONDON)
    return int((end.astimezone(timezone.utc) - start.astimezone(timezone.utc)).total_seconds() // 1800)


def main():
    (HERE / "data" / "demand").mkdir(parents=True, exist_ok=True)
    (HERE / "data" / "weather").mkdir(parents=True, exist_ok=True)
    for day in DAYS:
        with open(HERE / "data" / "demand" / f"{day}.ndjson", "w") as f:
            for p in range(1, periods(day) + 1):
                hour = (p - 1) / 2
                nd = 24000 + 7000 * math.sin(math.pi * (hour - 6) / 12) ** 2 + 900 * (day.weekday() < 5)
                wind = 3000 + 1500 * math.sin(p / 7 + day.day)
                f.write(json.dumps({
                    "SETTLEMENT_DATE": day.isoformat(),
                    "SETTLEMENT_PERIOD": p,
                    "ND": round(nd),
                    "TSD": round(nd * 1.06),
                    "EMBEDDED_WIND_GENERATION": round(wind),
                }) + "\n")
        with open(HERE / "data" / "weather" / f"{day}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time", "site", "temperature_2m", "wind_speed_10m"])
            for h in range(24):
                ts = datetime(day.year, day.month, day.day, h, tzinfo=timezone.utc)
                for i, site in enumerate(SITES):
                    temp = 7 + 4 * math.sin(math.pi * (h - 9) / 12) - 1.5 * i
                    wind = 4 + 2 * math.cos(h / 5 + i)
                    w.writerow([ts.strftime("%Y-%m-%dT%H:%M:%SZ"), site, round(temp, 1), round(wind, 1)])


WINDOW = (date(2024, 3, 30), date(2024, 4, 1))
DEMAND_RESOURCE = "f6d02c0f-957b-48cb-82ee-09003f2ba759"  # Historic Demand Data 2024


def manifest(job, api, parts):
    return {
        "job": job,
        "run_id": "sample",
        "api": api,
        "fetched_at": "2024-04-02T06:00:00Z",
        "first_day": WINDOW[0].isoformat(),
        "last_day": WINDOW[1].isoformat(),
        "parts": parts,
    }


def write_raw():
    """The landing zone api.toml replays (real API shapes, sample values)."""
    folder = HERE / "raw" / "demand" / f"dt={WINDOW[0]}"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for day in DAYS:  # the window, padded by a local day each side
        with open(HERE / "data" / "demand" / f"{day}.ndjson") as f:
            records += [json.loads(line) for line in f]
    sql = (
        'SELECT "SETTLEMENT_DATE", "SETTLEMENT_PERIOD", "ND", "TSD", "EMBEDDED_WIND_GENERATION" '
        f'FROM "{DEMAND_RESOURCE}" WHERE "SETTLEMENT_DATE" >= \'{DAYS[0]}\' AND "SETTLEMENT_DATE" <= \'{DAYS[-1]}\' '
        'ORDER BY "SETTLEMENT_DATE", "SETTLEMENT_PERIOD" LIMIT 5000 OFFSET 0'
    )
    body = {
        "help": "https://api.neso.energy/api/3/action/help_show?name=datastore_search_sql",
        "success": True,
        "result": {
            "sql": sql,
            "records": records,
            "fields": [
                {"id": "SETTLEMENT_DATE", "type": "date"},
                {"id": "SETTLEMENT_PERIOD", "type": "int4"},
                {"id": "ND", "type": "int4"},
                {"id": "TSD", "type": "int4"},
                {"id": "EMBEDDED_WIND_GENERATION", "type": "int4"},
            ],
        },
    }
    (folder / "sample-1.json").write_text(json.dumps(body, indent=1) + "\n")
    url = "https://api.neso.energy/api/3/action/datastore_search_sql?sql=" + sql.replace(" ", "+")
    page = {"file": "sample-1.json", "url": url, "records": len(records)}
    (folder / "sample.manifest.json").write_text(
        json.dumps(manifest("demand", "ckan", [{"vars": {}, "pages": [page]}]), indent=2) + "\n"
    )

    folder = HERE / "raw" / "weather" / f"dt={WINDOW[0]}"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for day in DAYS:
        with open(HERE / "data" / "weather" / f"{day}.csv", newline="") as f:
            rows += list(csv.DictReader(f))
    parts = []
    for n, (site, (lat, lon)) in enumerate(SITES.items(), start=1):
        mine = [r for r in rows if r["site"] == site and WINDOW[0].isoformat() <= r["time"][:10] <= WINDOW[1].isoformat()]
        body = {
            "latitude": lat,
            "longitude": lon,
            "generationtime_ms": 0.1,
            "utc_offset_seconds": 0,
            "timezone": "GMT",
            "timezone_abbreviation": "GMT",
            "elevation": 35.0,
            "hourly_units": {"time": "iso8601", "temperature_2m": "°C", "wind_speed_10m": "m/s"},
            "hourly": {
                "time": [r["time"][:16] for r in mine],
                "temperature_2m": [float(r["temperature_2m"]) for r in mine],
                "wind_speed_10m": [float(r["wind_speed_10m"]) for r in mine],
            },
        }
        name = f"sample-{n}.json"
        (folder / name).write_text(json.dumps(body) + "\n")
        url = (
            f"https://archive-api.open-meteo.com/v1/archive?end_date={WINDOW[1]}&hourly=temperature_2m%2Cwind_speed_10m"
            f"&latitude={lat}&longitude={lon}&start_date={WINDOW[0]}&timezone=GMT&wind_speed_unit=ms"
        )
        parts.append({
            "vars": {"latitude": str(lat), "longitude": str(lon), "site": site},
            "pages": [{"file": name, "url": url, "records": len(mine)}],
        })
    (folder / "sample.manifest.json").write_text(json.dumps(manifest("weather", "open_meteo", parts), indent=2) + "\n")


if __name__ == "__main__":
    main()
    write_raw()
