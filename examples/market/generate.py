#!/usr/bin/env python3
"""Writes the bundled sample data of the market example (deterministic).

tickers.csv: the ticker list the API jobs fan out over (for_each).
raw/: Alpha Vantage answers in a floe landing zone, for `--replay` offline:
  companies/dt=2024-05-01: one OVERVIEW answer per ticker (a single object);
  prices/dt=2024-05-01: one TIME_SERIES_DAILY_ADJUSTED answer per ticker
  (trading days from mid April to the end of May 2024, newest first, as the
  API lists them).

Values are synthetic (smooth trends with a weekly wiggle), not real prices.
"""
import json
import math
from datetime import date, timedelta
from pathlib import Path

HERE = Path(__file__).parent
WINDOW = (date(2024, 5, 1), date(2024, 5, 31))
HOLIDAYS = {date(2024, 5, 27)}  # Memorial Day
TICKERS = {
    "IBM": ("International Business Machines", "TECHNOLOGY", 170_000_000_000, 165.0),
    "MSFT": ("Microsoft Corporation", "TECHNOLOGY", 3_100_000_000_000, 405.0),
    "XOM": ("Exxon Mobil Corporation", "ENERGY", 520_000_000_000, 118.0),
}
BASE = "https://www.alphavantage.co/query"


def trading_days():
    day, out = date(2024, 4, 15), []
    while day <= WINDOW[1]:
        if day.weekday() < 5 and day not in HOLIDAYS:
            out.append(day)
        day += timedelta(days=1)
    return out


def close(symbol, i):
    start = TICKERS[symbol][3]
    return round(start * (1 + 0.002 * i) + 2.5 * math.sin(i / 2.3 + len(symbol)), 4)


def manifest(job, parts):
    return {
        "job": job,
        "run_id": "sample",
        "api": "alpha_vantage",
        "fetched_at": "2024-06-01T06:00:00Z",
        "first_day": WINDOW[0].isoformat(),
        "last_day": WINDOW[1].isoformat(),
        "parts": parts,
    }


def write(job, bodies, url):
    folder = HERE / "raw" / job / f"dt={WINDOW[0]}"
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for n, (symbol, (body, records)) in enumerate(bodies.items(), start=1):
        name = f"sample-{n}.json"
        (folder / name).write_text(json.dumps(body) + "\n")
        parts.append({"vars": {"symbol": symbol},
                      "pages": [{"file": name, "url": url(symbol), "records": records}]})
    (folder / "sample.manifest.json").write_text(json.dumps(manifest(job, parts), indent=2) + "\n")


def main():
    (HERE / "tickers.csv").write_text("symbol\n" + "".join(f"{t}\n" for t in TICKERS))
    overviews = {
        t: ({"Symbol": t, "AssetType": "Common Stock", "Name": name, "Exchange": "NYSE", "Currency": "USD",
             "Sector": sector, "MarketCapitalization": str(cap)}, 1)
        for t, (name, sector, cap, _) in TICKERS.items()
    }
    write("companies", overviews, lambda t: f"{BASE}?function=OVERVIEW&symbol={t}")
    days = trading_days()
    series = {}
    for t in TICKERS:
        points = {}
        for i, d in reversed(list(enumerate(days))):
            c = close(t, i)
            points[d.isoformat()] = {
                "1. open": f"{c - 0.8:.4f}", "2. high": f"{c + 1.2:.4f}", "3. low": f"{c - 1.5:.4f}",
                "4. close": f"{c + 0.1:.4f}", "5. adjusted close": f"{c:.4f}",
                "6. volume": str(3_000_000 + 10_000 * i), "7. dividend amount": "0.0000",
                "8. split coefficient": "1.0",
            }
        body = {"Meta Data": {"1. Information": "Daily Time Series with Splits and Dividend Events",
                              "2. Symbol": t, "3. Last Refreshed": days[-1].isoformat(),
                              "4. Output Size": "Compact", "5. Time Zone": "US/Eastern"},
                "Time Series (Daily)": points}
        series[t] = (body, len(points))
    write("prices", series,
          lambda t: f"{BASE}?function=TIME_SERIES_DAILY_ADJUSTED&symbol={t}&outputsize=compact")


if __name__ == "__main__":
    main()
