"""Query API benchmark: results (hourly, a month, one survey) and a 10,000-row feedback page.

Run from the repository root::

    .venv/bin/python -m bench.api [--presses 10000000] [--terminals 500] [--surveys 4]
                                  [--stores sqlite,postgres] [--requests 200]
                                  [--concurrency 4] [--sqlite-rollup] [--json OUT] [--keep]

For each store a year (2025) of presses is loaded in bulk, spread evenly over
``--terminals`` terminals at 50 experience points, each terminal on one of
``--surveys`` surveys; then ``smiley-gateway api`` is started as an operator
would, and ``--requests`` requests of each kind are sent by ``--concurrency``
clients at once (after a warm-up):

1. ``GET /v1/surveys/S-1/results?truncate=hour&date_start=2025-06-01&date_end=2025-07-01``
   with S the bare survey id 1 (every experience point of the survey);
2. ``GET /v2/results/button-feedbacks.json?surveyId=1&period=2025-06&limit=10000``,
   its offset moving through the month.

PostgreSQL runs on a private cluster (firmware_sim.harness), never the shared server.
Where the store does not have ``press.misuse`` or ``hourly`` yet, the bench
adds them (all presses counted, no hour counts). The SQLite store keeps its
per-survey rollup (``press_hourly_survey``) itself, through triggers, also
while the bench loads it; ``--sqlite-rollup`` also gives it a per-terminal
``press_hourly`` like PostgreSQL's and measures with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from firmware_sim.harness import ClusterUnavailable, PrivateCluster, free_port
from gateway.api.tokens import create_token
from gateway.registry.terminals import Company, Location, Registry, Survey, Terminal
from gateway.stores import open_reader, open_store
from gateway.stores.postgres import ensure_partitions

TARGET_RESULTS_P95_MS = 100.0
TARGET_PAGE_P95_MS = 500.0
YEAR_START = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
YEAR_END = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
OFFSET_S = 10800  # Helsinki in summer; one offset for the year keeps the load simple
POINTS = 50
FIRST_TERMINAL = 100_001
GATEWAY = str(Path(sys.executable).parent / "smiley-gateway")

SQLITE_ROLLUP = """
CREATE TABLE IF NOT EXISTS press_hourly (
    survey INTEGER NOT NULL, location INTEGER NOT NULL, terminal_id INTEGER NOT NULL,
    hour INTEGER NOT NULL, utc_offset_s INTEGER NOT NULL, button INTEGER NOT NULL,
    misuse INTEGER NOT NULL, presses INTEGER NOT NULL,
    PRIMARY KEY (survey, location, terminal_id, hour, utc_offset_s, button, misuse)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS press_hourly_survey_hour ON press_hourly (survey, hour);
"""


@dataclass
class Options:
    presses: int
    terminals: int
    surveys: int
    stores: list[str]
    requests: int
    concurrency: int
    sqlite_rollup: bool
    json: Path | None
    keep: bool


@dataclass
class Timing:
    requests: int
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    max_ms: float
    rows: int
    target_ms: float

    @property
    def passed(self) -> bool:
        return self.p95_ms < self.target_ms


@dataclass
class StoreResult:
    store: str
    presses: int
    load_s: float
    results: Timing  # one client: latency
    page: Timing
    results_loaded: Timing  # --concurrency clients: throughput
    page_loaded: Timing
    notes: list[str] = field(default_factory=list)


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presses", type=int, default=10_000_000)
    parser.add_argument("--terminals", type=int, default=500)
    parser.add_argument("--surveys", type=int, default=4)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sqlite-rollup", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true")
    a = parser.parse_args(argv)
    return Options(a.presses, a.terminals, a.surveys, a.stores.split(","), a.requests,
                   a.concurrency, a.sqlite_rollup, a.json, a.keep)  # fmt: skip


def registry(terminals: int, surveys: int) -> Registry:
    company = Company("bench", "Bench Retail")
    locations = {1000: Location(1000, "bench", "All stores")}
    for i in range(1, POINTS + 1):
        locations[i] = Location(i, "bench", f"Store {i}", 1000, "Europe/Helsinki")
    survey_map = {
        s: Survey(s, "bench", f"Question {s}", "en-US", "four", 5) for s in range(1, surveys + 1)
    }
    terminal_map = {
        FIRST_TERMINAL + i: Terminal(
            FIRST_TERMINAL + i, bytes(16), 1 + i % POINTS, 1 + (i // POINTS) % surveys
        )
        for i in range(terminals)
    }
    return Registry({"bench": company}, locations, survey_map, terminal_map)


def press_rows(presses: int, terminals: int) -> Iterator[tuple[Any, ...]]:
    """Every terminal's presses spread evenly over the year, in (terminal, seq) order."""
    per_terminal = -(-presses // terminals)
    step = (YEAR_END - YEAR_START) / per_terminal
    made = 0
    for t in range(terminals):
        for seq in range(per_terminal):
            if made == presses:
                return
            at = YEAR_START + int(seq * step + t * step / terminals)
            button = 1 + (made * 2654435761 % 1009) % 4
            yield (FIRST_TERMINAL + t, seq, at, OFFSET_S, button, 0, 0, "tcp", at * 1000, 0)
            made += 1


def load_sqlite(path: Path, options: Options, notes: list[str]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        columns = {r[1] for r in db.execute("PRAGMA table_info(press)")}
        if "misuse" not in columns:
            db.execute("ALTER TABLE press ADD COLUMN misuse INTEGER NOT NULL DEFAULT 0")
            notes.append("added press.misuse (the store has none yet)")
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-1000000")
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO press (terminal_id, seq, occurred_at, utc_offset_s, button, followup,"
            " clock_corrected, transport, received_at_ms, misuse)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            press_rows(options.presses, options.terminals),
        )
        db.execute("COMMIT")
        if options.sqlite_rollup:
            db.executescript(SQLITE_ROLLUP)
            db.execute(
                "INSERT INTO press_hourly SELECT t.survey, t.location, p.terminal_id,"
                " p.occurred_at - ((p.occurred_at + p.utc_offset_s) % 3600 + 3600) % 3600,"
                " p.utc_offset_s, p.button, p.misuse, count(*) FROM press AS p"
                " JOIN terminal AS t ON t.id = p.terminal_id GROUP BY 1, 2, 3, 4, 5, 6, 7"
            )
            notes.append("with a press_hourly rollup (--sqlite-rollup)")
        # Loaded past the store, so the statistics it keeps (it analyzes press each
        # time the table doubles) are made here, as it would have made them.
        db.execute("ANALYZE")
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()


async def load_postgres(url: str, options: Options, notes: list[str]) -> None:
    conn = await asyncpg.connect(url, command_timeout=7200)
    try:
        if not await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'press'"
            " AND column_name = 'misuse'"
        ):
            await conn.execute("ALTER TABLE press ADD COLUMN misuse boolean NOT NULL DEFAULT false")
            notes.append("added press.misuse (the store has none yet)")
        async with conn.transaction():
            await ensure_partitions(conn, {(2025, month) for month in range(1, 13)})
        n, terminals = options.presses, options.terminals
        per_terminal = -(-n // terminals)
        step = (YEAR_END - YEAR_START) / per_terminal
        series = (
            f"SELECT {FIRST_TERMINAL} + g / {per_terminal} AS terminal_id,"
            f" g % {per_terminal} AS seq, {YEAR_START} + floor((g % {per_terminal}) * {step}"
            f" + (g / {per_terminal}) * {step} / {terminals})::bigint AS ts,"
            f" 1 + (g * 2654435761 % 1009) % 4 AS button"
            f" FROM generate_series(0::bigint, {n - 1}) AS g"
        )
        for statement in (
            "SET maintenance_work_mem = '512MB'",
            "SET work_mem = '256MB'",
            "SET synchronous_commit = off",
            f"INSERT INTO press_key (terminal_id, seq, occurred_at)"
            f" SELECT terminal_id, seq, to_timestamp(ts) FROM ({series}) AS s",
            f"INSERT INTO press (terminal_id, seq, occurred_at, utc_offset_s, button, followup,"
            f" transport, clock_corrected, received_at_ms)"
            f" SELECT terminal_id, seq, to_timestamp(ts), {OFFSET_S}, button, 0, 'tcp', false,"
            f" ts * 1000 FROM ({series}) AS s",
            f"INSERT INTO press_hourly"
            f" (survey, location, terminal_id, hour, utc_offset_s, button, misuse, presses)"
            f" SELECT t.survey, t.location, p.terminal_id,"
            f" to_timestamp(p.ts - ((p.ts + {OFFSET_S}) % 3600 + 3600) % 3600),"
            f" {OFFSET_S}, p.button, false, count(*)"
            f" FROM ({series}) AS p JOIN terminal AS t ON t.id = p.terminal_id"
            f" GROUP BY 1, 2, 3, 4, 5, 6",
        ):
            await conn.execute(statement)
        if await conn.fetchval("SELECT to_regclass('press_hourly_survey') IS NOT NULL"):
            await conn.execute(
                "INSERT INTO press_hourly_survey (survey, hour, utc_offset_s, button, misuse,"
                " presses) SELECT survey, hour, utc_offset_s, button, misuse, sum(presses)"
                " FROM press_hourly GROUP BY 1, 2, 3, 4, 5"
            )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def measure(
    urls: Sequence[tuple[str, dict[str, Any]]], headers: dict[str, str], options: Options,
    target_ms: float, concurrency: int,
) -> Timing:  # fmt: skip
    """``options.requests`` GETs cycling through ``urls``, ``concurrency`` at a time."""
    samples: list[float] = []
    rows = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(options.requests):
        queue.put_nowait(i)
    async with httpx.AsyncClient(headers=headers, timeout=120) as client:
        for url, params in urls[:2]:  # warm-up, not timed
            (await client.get(url, params=params)).raise_for_status()

        async def worker() -> None:
            nonlocal rows
            while not queue.empty():
                i = queue.get_nowait()
                url, params = urls[i % len(urls)]
                started = time.perf_counter()
                answer = await client.get(url, params=params)
                samples.append((time.perf_counter() - started) * 1000)
                answer.raise_for_status()
                rows = max(rows, len(answer.json()))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Timing(
        requests=len(samples), concurrency=concurrency,
        requests_per_s=len(samples) / elapsed, p50_ms=statistics.median(samples),
        p95_ms=percentile(samples, 0.95), max_ms=max(samples), rows=rows, target_ms=target_ms,
    )  # fmt: skip


async def run_api(url: str, directory: Path, options: Options, store: str, load_s: float,
                  notes: list[str]) -> StoreResult:  # fmt: skip
    db = await open_reader(url)
    try:
        _, token = await create_token(db, "bench", None, "bench", None)
        client_id = (await db.fetch("SELECT client_id FROM api_token WHERE name = 'bench'"))[0][0]
    finally:
        await db.close()
    process, port = start_server(url, directory, store)
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                try:
                    await client.get(f"{base}/openapi.json", timeout=1)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
        headers = {"X-HON-Client-Id": client_id, "X-HON-API-Token": token}
        results_urls = [(f"{base}/v1/surveys/1/results",
                         {"truncate": "hour", "date_start": "2025-06-01",
                          "date_end": "2025-07-01"})]  # fmt: skip
        per_month = options.presses / options.surveys / 12
        offsets = [int(per_month * k / 10) // 10_000 * 10_000 for k in range(9)]
        page_urls = [(f"{base}/v2/results/button-feedbacks.json",
                      {"surveyId": 1, "period": "2025-06", "limit": 10_000, "offset": o})
                     for o in offsets]  # fmt: skip
        timings = [
            await measure(urls, headers, options, target, clients)
            for clients in (1, options.concurrency)
            for urls, target in ((results_urls, TARGET_RESULTS_P95_MS),
                                 (page_urls, TARGET_PAGE_P95_MS))
        ]  # fmt: skip
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)
    results, page, results_loaded, page_loaded = timings
    return StoreResult(
        store, options.presses, load_s, results, page, results_loaded, page_loaded, notes
    )


def start_server(url: str, directory: Path, store: str) -> tuple[subprocess.Popen[bytes], int]:
    """``smiley-gateway api`` on a free port, as an operator starts it."""
    port = free_port()
    config = directory / f"{store}.toml"
    config.write_text(
        f'[gateway]\ndata_dir = "var"\nlog_level = "warning"\n[store]\nurl = "{url}"\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\nrate_limit = "1000000/minute"\n',
        encoding="utf-8",
    )
    with (directory / f"{store}-api.log").open("wb") as log:
        process = subprocess.Popen(
            [GATEWAY, "api", "--config", str(config)], stdout=log, stderr=log
        )
    return process, port


async def bench_store(store: str, directory: Path, options: Options) -> StoreResult:
    notes: list[str] = []
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    reg = registry(options.terminals, options.surveys)
    if store == "sqlite":
        url = f"sqlite:///{directory / 'central.db'}"
        s = await open_store(url)
        await s.import_registry(reg)
        await s.close()
        started = time.perf_counter()
        load_sqlite(directory / "central.db", options, notes)
        return await run_api(url, directory, options, store, time.perf_counter() - started, notes)
    cluster = PrivateCluster.create()
    cluster.extra_options += ["-c shared_buffers=512MB", "-c max_wal_size=8GB"]
    cluster.start()
    try:
        conn = await asyncpg.connect(cluster.url())
        await conn.execute("CREATE DATABASE bench_api")
        await conn.close()
        url = cluster.url("bench_api")
        s = await open_store(url)
        await s.import_registry(reg)
        await s.close()
        started = time.perf_counter()
        await load_postgres(url, options, notes)
        return await run_api(url, directory, options, store, time.perf_counter() - started, notes)
    finally:
        if not options.keep:
            cluster.destroy()


def report(result: StoreResult) -> str:
    lines = [f"{result.store}: {result.presses:,} presses, loaded in {result.load_s:.0f} s"
             + (f" ({'; '.join(result.notes)})" if result.notes else "")]  # fmt: skip
    for name, t in (("results, hourly, one month, one survey", result.results),
                    ("button-feedbacks page of 10,000 rows", result.page),
                    ("results, under load", result.results_loaded),
                    ("page, under load", result.page_loaded)):  # fmt: skip
        lines.append(
            f"  {'PASS' if t.passed else 'FAIL'}  {name}: {t.requests_per_s:.1f} req/s"
            f" ({t.concurrency} clients), p50 {t.p50_ms:.0f} ms, p95 {t.p95_ms:.0f} ms"
            f" (target < {t.target_ms:.0f} ms), max {t.max_ms:.0f} ms, {t.rows} rows"
        )
    return "\n".join(lines)


async def bench(options: Options) -> int:
    out: list[StoreResult] = []
    directory = Path(tempfile.mkdtemp(prefix="smiley-bench-api-"))
    for store in options.stores:
        try:
            result = await bench_store(store, directory / store, options)
        except ClusterUnavailable as exc:
            print(f"{store}: skipped ({exc})")
            continue
        print(report(result), flush=True)
        out.append(result)
    if options.json is not None:
        options.json.write_text(json.dumps([asdict(r) for r in out], indent=2), encoding="utf-8")
    if options.keep:
        print(f"kept {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    for store in options.stores:
        if store not in ("sqlite", "postgres"):
            print(f"unknown store {store!r}", file=sys.stderr)
            return 2
    return asyncio.run(bench(options))


if __name__ == "__main__":
    sys.exit(main())
