"""One concurrent writer: its own RestCatalog, N appends of one row each to one table, each
retried on CommitFailedException (reload, write again). Prints one JSON line with counts.

usage: python append_worker.py '{"props": {...}, "table": ["ns", "t"], "worker": 3, "appends": 25,
                                 "max_attempts": 60}'
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import time

import pyarrow as pa
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import CommitFailedException

SCHEMA = pa.schema([
    pa.field("ts_utc", pa.timestamp("us", tz="UTC")),
    pa.field("site_id", pa.string()),
    pa.field("value", pa.float64()),
])


def main() -> int:
    args = json.loads(sys.argv[1])
    worker = args["worker"]
    catalog = RestCatalog(f"worker{worker}", **args["props"])
    ident = tuple(args["table"])
    retries = 0
    errors: list[str] = []
    start = dt.datetime(2024, 10, 26, 22, 0, tzinfo=dt.timezone.utc)
    for i in range(args["appends"]):
        row = pa.table({
            "ts_utc": [start + dt.timedelta(hours=worker * 3 + i % 3)],  # a few day partitions
            "site_id": [f"w{worker}-{i:03d}"],
            "value": [float(worker * 1000 + i)],
        }, schema=SCHEMA)
        for attempt in range(args["max_attempts"]):
            table = catalog.load_table(ident)
            try:
                table.append(row)
                break
            except CommitFailedException:
                retries += 1
                time.sleep(random.uniform(0, min(0.4, 0.02 * (2 ** min(attempt, 5)))))
        else:
            errors.append(f"append {i}: gave up after {args['max_attempts']} attempts")
            break
    print(json.dumps({"worker": worker, "retries": retries, "errors": errors}))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
