#!/usr/bin/env python3
"""Writes the bundled sample data of the energy example (deterministic).

demand/DATE.ndjson: GB national demand per settlement period, shaped like the
NESO CKAN datastore records (SETTLEMENT_DATE + SETTLEMENT_PERIOD in UK local
time: 46 periods on the spring clock-change day, 50 in autumn).
weather/DATE.csv: hourly weather per site, UTC timestamps with an offset,
shaped like Open-Meteo's hourly arrays flattened to rows.

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


if __name__ == "__main__":
    main()
