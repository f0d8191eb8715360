"""Shared parts of the benchmark scripts: the data generator, timing a process under
/usr/bin/time -v, and a `floe catalog serve` over a local warehouse.

Imported by bench/ingest.py, bench/maintain.py, bench/database.py, bench/kafka.py
and the others (run them from anywhere: each puts its own folder on sys.path)."""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGIONS = [f"R{i:02d}" for i in range(14)]
DEFAULT_FLOE = str(ROOT / "target" / "release" / "floe")


def generate(work: Path, sites: int, days: int, formats=("ndjson", "parquet")):
    """Half-hourly rows for `sites` sites over `days` days from 2024-01-01, one file per
    day and format under work/<format>/<YYYY-MM-DD>.<format>. Cached: a stamp file marks
    a finished set. Same seed, same order: day d holds the same rows whatever `days` is."""
    formats = tuple(sorted(formats))
    tag = "" if formats == ("ndjson", "parquet") else "-" + "+".join(formats)
    stamp = work / f"data-{sites}x{days}{tag}.done"
    if stamp.exists():
        return
    # A set of more days holds these (day d is the same whatever `days` is).
    for done in work.glob(f"data-{sites}x*{tag}.done"):
        more = done.name[len(f"data-{sites}x"):len(done.name) - len(f"{tag}.done")]
        if more.isdigit() and int(more) >= days:
            return
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    for sub in formats:
        (work / sub).mkdir(parents=True, exist_ok=True)
    start = np.datetime64("2024-01-01T00:00:00", "us")
    rng = np.random.default_rng(42)
    site_ids = np.array([f"S{i:05d}" for i in range(sites)])
    regions = np.array([REGIONS[i % 14] for i in range(sites)])
    for d in range(days):
        ts = start + np.timedelta64(d, "D") + np.arange(48) * np.timedelta64(30, "m")
        ts_all = np.repeat(ts[None, :], sites, axis=0).ravel()
        n = ts_all.size
        table = pa.table({
            "ts_utc": pa.array(ts_all, pa.timestamp("us", tz="UTC")),
            "site_id": pa.array(np.repeat(site_ids, 48)),
            "region": pa.array(np.repeat(regions, 48)),
            "demand_mw": pa.array(rng.normal(50, 10, n)),
            "temperature_c": pa.array(rng.normal(10, 5, n)),
            "wind_speed_ms": pa.array(rng.gamma(2, 3, n)),
            "quality_flag": pa.array(rng.integers(0, 4, n).astype("int32")),
        })
        day = (start + np.timedelta64(d, "D")).astype("datetime64[D]")
        if "parquet" in formats:
            pq.write_table(table, work / "parquet" / f"{day}.parquet", compression="zstd")
        if "ndjson" in formats:
            with open(work / "ndjson" / f"{day}.ndjson", "w") as f:
                cols = table.to_pydict()
                iso = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in cols["ts_utc"]]
                for i in range(n):
                    f.write(json.dumps({
                        "ts": iso[i], "site_id": cols["site_id"][i], "region": cols["region"][i],
                        "demand_mw": cols["demand_mw"][i], "temperature_c": cols["temperature_c"][i],
                        "wind_speed_ms": cols["wind_speed_ms"][i], "quality_flag": cols["quality_flag"][i],
                    }) + "\n")
        print(f"  generated {day}", file=sys.stderr)
    stamp.touch()


def day_after(first: str, days: int) -> str:
    """The date `days` days after `first` (YYYY-MM-DD)."""
    t = time.mktime(time.strptime(first, "%Y-%m-%d")) + days * 86400 + 43200
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@dataclass
class Timed:
    """One process run under /usr/bin/time -v."""
    wall: float      # seconds
    rss: float       # peak RSS, MiB (the largest process of the tree /usr/bin/time waited for)
    user: float      # CPU seconds
    sys: float
    stdout: str
    stderr: str      # the process's stderr, without /usr/bin/time's report


def parse_time_v(text: str):
    """(wall s, peak RSS MiB, user s, sys s, where the report starts) from /usr/bin/time -v output."""
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    h, m, s = wall.groups()
    secs = int(h or 0) * 3600 + int(m) * 60 + float(s)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", text).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", text).group(1))
    start = text.rfind("\tCommand being timed:")
    return secs, rss, user, system, start


def timed_run(cmd, env=None, timeout=None, cwd=None) -> Timed:
    """Runs cmd under /usr/bin/time -v; exits the script if it fails."""
    try:
        out = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], capture_output=True, text=True,
                             env=env, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise SystemExit(f"benchmark step timed out after {timeout} s: {' '.join(map(str, cmd))}") from e
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-6000:])
        raise SystemExit(f"benchmark step failed: {' '.join(map(str, cmd))}")
    secs, rss, user, system, start = parse_time_v(out.stderr)
    return Timed(secs, rss, user, system, out.stdout, out.stderr[:max(start, 0)])


def try_timed_run(cmd, env=None, timeout=None, stdout=None):
    """(Timed, None) for a process run under /usr/bin/time -v, or (None, error text)
    when it fails; `stdout` may be a file object (e.g. /dev/null) instead of captured.
    The process runs in its own process group, ended whole on a timeout or when this
    script is interrupted (SIGTERM raises SystemExit through exit_on_sigterm)."""
    proc = subprocess.Popen(["/usr/bin/time", "-v", *map(str, cmd)], text=True, env=env,
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdout=stdout if stdout is not None else subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate(timeout=30)
    if proc.returncode != 0:
        cut = [i for i in (err.rfind("Command exited with non-zero status"), err.rfind("\tCommand being timed:"))
               if i >= 0]
        return None, (out or "")[-2000:] + err[:min(cut) if cut else len(err)][-4000:]
    secs, rss, user, system, start = parse_time_v(err)
    return Timed(secs, rss, user, system, out or "", err[:max(start, 0)]), None


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time -v; returns (seconds, peak RSS MiB)."""
    t = timed_run(cmd, env)
    return t.wall, t.rss


def parquet_bytes(folder: Path):
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


def quiet_env(**extra):
    """The environment for floe processes: warnings only on stderr."""
    return {**os.environ, "FLOE_LOG": "warn", **extra}


class CatalogServer:
    """`floe catalog serve` on 127.0.0.1 over a local warehouse folder (SQLite pointer
    store inside it). A context manager; stop() is idempotent and also runs if the
    script is interrupted (SIGTERM/SIGINT end the `with` block through an exception)."""

    def __init__(self, floe: str, warehouse: Path, log: Path | None = None):
        self.floe, self.warehouse, self.log_path = floe, Path(warehouse), log
        self.proc = None
        self.uri = None

    def start(self):
        self.ready_dir = Path(tempfile.mkdtemp(prefix="floe-bench-ready-"))
        ready = self.ready_dir / "addr"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [self.floe, "catalog", "serve", "--listen", "127.0.0.1:0", "--warehouse", str(self.warehouse),
             "--ready-file", str(ready)],
            stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, env=quiet_env())
        if log is not subprocess.DEVNULL:
            log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"floe catalog serve exited with {self.proc.returncode}")
            if ready.exists() and ready.read_text().strip():
                addr = ready.read_text().strip()
                self.uri = f"http://{addr}"
                try:
                    urllib.request.urlopen(f"{self.uri}/v1/config", timeout=1)
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise SystemExit("floe catalog serve did not become ready within 30 s")

    def stop(self):
        if getattr(self, "ready_dir", None):
            shutil.rmtree(self.ready_dir, ignore_errors=True)
            self.ready_dir = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def exit_on_sigterm():
    """Turns SIGTERM into SystemExit so `finally` blocks and context managers clean up."""
    def handler(signum, frame):
        raise SystemExit(f"terminated by signal {signum}")
    signal.signal(signal.SIGTERM, handler)


def cpu_busy(window: float = 2.0) -> float:
    """Fraction of all cores busy over `window` seconds (/proc/stat), e.g. to see
    whether something else runs on the machine while this script is idle."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]  # idle + iowait
        return sum(v), idle
    t1, i1 = sample()
    time.sleep(window)
    t2, i2 = sample()
    return 1 - (i2 - i1) / max(t2 - t1, 1)


def wait_quiet(max_wait: float, busy_below: float = 0.15) -> float:
    """Waits (at most max_wait seconds) until other processes use under `busy_below`
    of the machine; returns the last busy fraction measured."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy >= busy_below and time.monotonic() < deadline:
        busy = cpu_busy()
    return busy


def pipeline(path: Path, uri: str, job: str, table: str, fmt: str, folder: Path, sort: bool,
             delta: Path | None = None):
    """Writes a pipeline file with one job reading the generated daily files
    (`ndjson`, `csv` or `parquet`) of `folder` into `table` (a Delta table under
    `delta` when given)."""
    column = "ts_utc" if fmt == "parquet" else "ts"
    delta_lines = f'[delta]\nlocation = "{delta}"\n' if delta else ""
    format_line = 'format = "delta"\n' if delta else ""
    path.write_text(f'''[catalog]
uri = "{uri}"

{delta_lines}
[[job]]
name = "{job}"
table = "{table}"
{format_line}source = {{ path = "{folder}/{{date}}.{fmt}", format = "{fmt}" }}
event_time = {{ kind = "offset", column = "{column}" }}
columns = [
  {{ name = "site_id", type = "string", required = true }},
  {{ name = "region", type = "string" }},
  {{ name = "demand_mw", type = "double" }},
  {{ name = "temperature_c", type = "double" }},
  {{ name = "wind_speed_ms", type = "double" }},
  {{ name = "quality_flag", type = "int" }},
]
sort = {'["site_id", "ts_utc"]' if sort else "[]"}
schema_drift = "ignore"
''')


def floe_records(floe: str, uri: str, table: str) -> int:
    """The rows `floe status` counts in `table` (-1 when it cannot say)."""
    out = subprocess.run([floe, "status", table, "--catalog", uri, "--json"], capture_output=True, text=True,
                         env=quiet_env(), timeout=120, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        return -1
    return int(json.loads(out.stdout)[0]["records"])


def parquet_rows(folder: Path) -> int:
    """Rows of every Parquet file under `folder`, from their footers."""
    import pyarrow.parquet as pq
    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.rglob("*.parquet"))


def du(folder: Path) -> int:
    """Bytes of the files under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def median(xs):
    """The median, NaN for no values."""
    return statistics.median(xs) if xs else float("nan")


def add_round_args(ap):
    """The options of a benchmark whose cases alternate in rounds (see Rounds)."""
    ap.add_argument("--pairs", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--round-limit", type=float, default=240,
                    help="when the first round takes longer (s), run at most 2 rounds (default 240)")
    ap.add_argument("--budget", type=float, default=3000,
                    help="start no round that would end past this many seconds (default 3000)")
    ap.add_argument("--timeout", type=float, default=1800, help="per process (s)")
    ap.add_argument("--wait-quiet", type=float, default=20,
                    help="before each timed run, wait up to this many seconds for other processes to go idle")
    ap.add_argument("--json-out", type=Path)


class Rounds:
    """The rounds of add_round_args' options; iterating gives the 1-based round numbers.
    At most --pairs; 2 when the first round took longer than --round-limit; none started
    that would end past --budget seconds after this object was made. Why the rounds
    stopped short goes to `notes`; `done` counts the rounds finished."""

    def __init__(self, args, notes):
        self.args, self.notes = args, notes
        self.pairs = args.pairs
        self.done = 0
        self.started = time.monotonic()

    def __iter__(self):
        while self.done < self.pairs:
            t_round = time.monotonic()
            yield self.done + 1
            self.done += 1
            took = time.monotonic() - t_round
            if self.done == 1 and took > self.args.round_limit and self.pairs > 2:
                self.pairs = 2
                self.notes.append(f"round 1 took {took:.0f} s (> {self.args.round_limit:.0f} s): 2 rounds")
            if self.done < self.pairs and time.monotonic() - self.started + took > self.args.budget:
                self.notes.append(f"stopped after {self.done} rounds: the time budget "
                                  f"({self.args.budget:.0f} s) would be passed")
                return


def floe_table_written(floe: str, uri: str, warehouse: Path, table: str):
    """(rows `floe status` counts in `table`, bytes of its folder under `warehouse`);
    the folder is then removed, so the rounds do not fill the disk."""
    rows = floe_records(floe, uri, table)
    out_dir = next(warehouse.glob(f"bench/{table.split('.')[1]}-*"), None)
    size = du(out_dir) if out_dir else 0
    if out_dir:
        shutil.rmtree(out_dir, ignore_errors=True)
    return rows, size


def summarize(results, n: int, unit: str, rate_key: str, width: int):
    """Per case of `results` (lists of runs with wall_s and rss_mib): the median wall
    time, the rate of `n` `unit`s per second and the peak RSS, printed and returned."""
    summary = {}
    for case, rs in results.items():
        if not rs:
            continue
        walls = [r["wall_s"] for r in rs]
        rss = [r["rss_mib"] for r in rs]
        m = median(walls)
        summary[case] = {"wall_s": m, rate_key: n / m, "rss_mib": median(rss), "rss_max_mib": max(rss),
                         "walls_s": walls}
        print(f"  {case:<{width}} {m:7.2f} s ({min(walls):.2f}-{max(walls):.2f})  {n / m / 1e6:5.2f} M {unit}/s  "
              f"peak RSS {median(rss):6.0f} MiB (max {max(rss):.0f})")
    return summary


def rss_goal(summary, case: str, limit: float = 512):
    """Prints whether `case` stayed under `limit` MiB of peak RSS in every round."""
    peak = summary[case]["rss_max_mib"]
    print(f"  goal {case} under {limit:.0f} MiB peak RSS: {'met' if peak < limit else 'missed'} ({peak:.0f} MiB)")
