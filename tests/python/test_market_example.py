"""The market example (examples/market): a ticker list from a file fanned out over a
rate-limited JSON API, an SCD2 company dimension, a five-day return model with a lookback.

  * offline, `floe run --replay` from the bundled landing zone builds every table;
  * against the test mock of the API (Alpha Vantage's documented shapes: a per-minute
    throttle body once, then data), a re-run where one ticker is refused ends partial (exit
    3) with that ticker's rows kept, a changed sector opens a new company version, and the
    incrementally refreshed returns equal a full refresh.

Every process and request stays on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import floe_testlib as lib
from test_http_sources import Reply, Request, api_server, floe_env, floe_ok, run_floe  # noqa: F401 - api_server is a fixture

MARKET = lib.REPO_ROOT / "examples" / "market"
FIRST, LAST = "2024-05-01", "2024-05-31"


def copy_market(root: Path) -> Path:
    dest = root / "market"
    dest.mkdir(parents=True)
    for name in ("market.toml", "tickers.csv"):
        shutil.copy2(MARKET / name, dest / name)
    shutil.copytree(MARKET / "raw", dest / "raw")
    shutil.copytree(MARKET / "sql", dest / "sql")
    return dest


def sample(job: str, symbol: str) -> dict:
    """The bundled answer of `job` for `symbol`."""
    folder = MARKET / "raw" / job / f"dt={FIRST}"
    manifest = json.loads((folder / "sample.manifest.json").read_text())
    (part,) = [p for p in manifest["parts"] if p["vars"] == {"symbol": symbol}]
    return json.loads((folder / part["pages"][0]["file"]).read_text())


def rows(cat, ident: str, columns: tuple[str, ...]) -> list[tuple]:
    data = cat.load_table(ident).scan(selected_fields=columns).to_arrow().to_pylist()
    return sorted(tuple(r[c] for c in columns) for r in data)


def test_market_example_offline_and_against_the_mock(catalog_server, api_server, tmp_path):
    offline = copy_market(tmp_path / "offline")
    floe_ok("run", "--pipeline", offline / "market.toml", "--replay", "--from", FIRST, "--to", LAST,
            cwd=offline, env=floe_env())
    cat = catalog_server(warehouse=(offline / "warehouse").as_uri()).catalog()
    returns = rows(cat, "gold.weekly_returns", ("symbol", "trade_date", "return_5d", "sector"))
    assert len(returns) == 3 * 22, "three tickers, 22 trading days in May 2024"
    assert sum(r[2] is None for r in returns) == 3 * 5, "the first five days of each have no return yet"
    assert {r[3] for r in returns} == {"TECHNOLOGY", "ENERGY"}
    dims = rows(cat, "silver.dim_company", ("symbol", "sector"))
    assert dims == [("IBM", "TECHNOLOGY"), ("MSFT", "TECHNOLOGY"), ("XOM", "ENERGY")]

    # Against the mock: the same answers, a per-minute throttle body first.
    state = {"refuse": None, "sector": "TECHNOLOGY", "throttled": False}
    key = "mock-av-key-1f2e"

    def script(req: Request) -> Reply:
        if req.path != "/query" or req.query.get("apikey") != key:
            return Reply(200, {"Error Message": "the parameter apikey is invalid or missing."})
        if not state["throttled"]:
            state["throttled"] = True
            return Reply(200, {"Information": "Please consider spreading out your free API requests "
                                              "more sparingly (1 request per second)."})
        symbol = req.query.get("symbol")
        if symbol == state["refuse"] and req.query.get("function") != "OVERVIEW":
            return Reply(200, {"Error Message": f"Invalid API call for {symbol}."})
        if req.query.get("function") == "OVERVIEW":
            body = sample("companies", symbol)
            if symbol == "IBM":
                body = {**body, "Sector": state["sector"]}
            return Reply(200, body)
        return Reply(200, sample("prices", symbol))

    api_server.script = script
    online = copy_market(tmp_path / "online")
    shutil.rmtree(online / "raw")
    env = floe_env(ALPHAVANTAGE_URL=api_server.base, ALPHAVANTAGE_API_KEY=key)
    toml = online / "market.toml"
    # No waiting between requests in the test (the example keeps 5 a minute).
    toml.write_text(toml.read_text().replace('rate_limit = "5/min"', 'rate_limit = "100/s"\nbackoff = "50ms"'))
    floe_ok("run", "--pipeline", toml, "--from", FIRST, "--to", LAST, cwd=online, env=env)
    assert state["throttled"]

    # IBM changes sector; MSFT's prices are refused today: they are kept, the run is partial.
    state.update(refuse="MSFT", sector="CONSULTING")
    out = run_floe("run", "--pipeline", toml, "--from", "2024-05-20", "--to", "2024-05-24",
                   "--report", tmp_path / "partial.json", cwd=online, env=env)
    assert out.returncode == 3, lib.explain(out)
    assert "symbol=MSFT" in out.stderr, lib.explain(out)
    report = lib.read_report(tmp_path / "partial.json")
    prices = lib.job_report(report, "prices")
    assert prices["status"] == "partial" and prices["rows_kept"] == 5, prices

    cat = catalog_server(warehouse=(online / "warehouse").as_uri()).catalog()
    got = rows(cat, "gold.weekly_returns", ("symbol", "trade_date", "return_5d"))
    assert got == [r[:3] for r in returns], "the incremental refresh equals the offline full one"
    versions = rows(cat, "bronze.companies", ("symbol", "sector", "_valid_to"))
    ibm = [(s, v is None) for (sym, s, v) in versions if sym == "IBM"]
    assert sorted(ibm) == [("CONSULTING", True), ("TECHNOLOGY", False)], versions
    assert rows(cat, "silver.dim_company", ("symbol", "sector"))[0] == ("IBM", "CONSULTING")
