"""PostgreSQL central store benchmark: backlog drain rate and hourly results queries.

Run from the repository root::

    .venv/bin/python -m bench.postgres [--rows 200000] [--batch 2000]
                                       [--presses 10000000] [--terminals 500] [--surveys 1]
                                       [--queries 100] [--drain-only] [--json OUT]

Everything runs on a private PostgreSQL cluster (firmware_sim.harness: initdb in a temp
dir, a free port, fsync off); the shared server on 5432 is never touched.

1. drain: ``--rows`` PressRows, as a gateway's outbox holds them after an
   outage, are written with ``PostgresStore.write()`` in ``--batch``-sized
   batches (the forwarder's ``store.forward_batch``) into a fresh database.
   In the same run, a bare ``copy_records_to_table`` of the same rows in the
   same batches goes into a plain table with the same columns and a primary
   key on (terminal_id, seq), in another fresh database. Ratio = store / COPY.
2. results: a year of one chain's presses (``--presses`` over
   ``--terminals``) is loaded with INSERT ... SELECT FROM generate_series into
   press_key, press and press_hourly (consistent with one another, as the
   gateway writes them); then ``--queries`` runs of an hourly results query
   for one survey over one month, and over the whole year, are timed.

Targets are printed as PASS/FAIL; the exit status is 1 only when something
broke (a cluster that would not start, row counts that do not match).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.errors import BenchError
from firmware_sim.harness import ClusterUnavailable, PrivateCluster
from gateway.registry.config import StoreSection
from gateway.rows import PressRow
from gateway.stores.postgres import PostgresStore, ensure_partitions

TARGET_DRAIN_RATIO = 0.60
TARGET_QUERY_P95_MS = 100.0
YEAR = 2025
YEAR_START = int(datetime(YEAR, 1, 1, tzinfo=UTC).timestamp())
YEAR_END = int(datetime(YEAR + 1, 1, 1, tzinfo=UTC).timestamp())
UTC_OFFSET_S = 7200  # one offset for the whole year: the query does not depend on it
FIRST_TERMINAL_ID = 100_001

BARE_TABLE = """
CREATE TABLE bare_press (
    terminal_id bigint NOT NULL,
    seq bigint NOT NULL,
    occurred_at bigint NOT NULL,
    utc_offset_s integer NOT NULL,
    button smallint NOT NULL,
    followup smallint NOT NULL,
    clock_corrected boolean NOT NULL,
    transport text NOT NULL,
    received_at_ms bigint NOT NULL,
    ui text NOT NULL,
    PRIMARY KEY (terminal_id, seq)
)
"""

# The hourly results of one survey: presses per hour and button, without misuse.
RESULTS_QUERY = """
SELECT hour, utc_offset_s, button, sum(presses) AS presses
FROM press_hourly_survey
WHERE survey = $1 AND hour >= to_timestamp($2) AND hour < to_timestamp($3) AND NOT misuse
GROUP BY hour, utc_offset_s, button
ORDER BY hour, utc_offset_s, button
"""


@dataclass(frozen=True, slots=True)
class Options:
    rows: int
    batch: int
    presses: int
    terminals: int
    surveys: int
    queries: int
    seed: int
    drain_only: bool
    json_path: Path | None


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.postgres", description="PostgreSQL central store benchmark."
    )
    parser.add_argument("--rows", type=int, default=200_000, help="backlog rows to drain")
    parser.add_argument(
        "--batch",
        type=int,
        default=StoreSection().forward_batch,  # what the forwarder uses unless configured
        help="rows per write (store.forward_batch)",
    )
    parser.add_argument("--presses", type=int, default=10_000_000, help="presses in the year")
    parser.add_argument("--terminals", type=int, default=500, help="terminals of the chain")
    parser.add_argument("--surveys", type=int, default=1, help="surveys the terminals share")
    parser.add_argument("--queries", type=int, default=100, help="timed runs of each query")
    parser.add_argument("--seed", type=int, default=1, help="seed of the backlog rows")
    parser.add_argument(
        "--drain-only", action="store_true", help="skip the results part (load and queries)"
    )
    parser.add_argument("--json", type=Path, dest="json_path", help="also write results here")
    args = parser.parse_args(argv)
    options = Options(**vars(args))
    if min(options.rows, options.batch, options.presses, options.queries) < 1:
        parser.error("--rows, --batch, --presses and --queries must be at least 1")
    if not 1 <= options.surveys <= options.terminals:
        parser.error("need 1 <= --surveys <= --terminals")
    return options


@dataclass(frozen=True, slots=True)
class Drain:
    rows: int
    batch: int
    store_s: float
    store_rows_per_s: float
    copy_s: float
    copy_rows_per_s: float
    ratio: float


@dataclass(frozen=True, slots=True)
class QueryTimes:
    window: str
    result_rows: int
    p50_ms: float
    p95_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class Results:
    presses: int
    terminals: int
    surveys: int
    load_s: float
    hourly_rows: int
    month: QueryTimes
    year: QueryTimes


# ---------------------------------------------------------------- helpers


async def create_database(cluster: PrivateCluster, name: str) -> str:
    conn = await asyncpg.connect(cluster.url())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return cluster.url(name)


async def add_terminals(url: str, terminals: int, surveys: int) -> None:
    """The registry rows the hourly rollup and the misuse flags join, straight in SQL.

    Surveys have a 5 s misuse interval, as real ones do, so every batch also
    pays for keeping the misuse flags.
    """
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO survey (id, company, question, locale, scale, misuse_interval_s)"
            " SELECT 1 + i, 'bench', 'How was your visit?', 'en', 'four', 5"
            " FROM generate_series(0, $1::bigint - 1) AS i",
            surveys,
        )
        await conn.execute(
            "INSERT INTO terminal (id, key, location, survey)"
            " SELECT $1::bigint + i, '\\x00'::bytea, 1 + i % 50, 1 + i % $3::bigint"
            " FROM generate_series(0, $2::bigint - 1) AS i",
            FIRST_TERMINAL_ID,
            terminals,
            surveys,
        )
    finally:
        await conn.close()


def backlog(rows: int, terminals: int, seed: int) -> list[PressRow]:
    """An outbox after an outage: terminals' presses interleaved, seqs consecutive."""
    rng = random.Random(seed)
    now = YEAR_END - 86400
    out = []
    for n in range(rows):
        terminal, seq = FIRST_TERMINAL_ID + n % terminals, n // terminals
        occurred = now - rows + n
        out.append(
            PressRow(
                terminal,
                seq,
                occurred,
                UTC_OFFSET_S,
                rng.randint(1, 4),
                rng.choice((0, 0, 1, 2)),
                False,
                "tcp",
                occurred * 1000 + 150,
            )
        )
    return out


def batches(rows: Sequence[PressRow], size: int) -> list[Sequence[PressRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# ---------------------------------------------------------------- 1. drain


async def drain(cluster: PrivateCluster, options: Options) -> Drain:
    rows = backlog(options.rows, options.terminals, options.seed)
    chunks = batches(rows, options.batch)

    bare_url = await create_database(cluster, "bench_bare")
    conn = await asyncpg.connect(bare_url)
    try:
        await conn.execute(BARE_TABLE)
        started = time.perf_counter()
        for chunk in chunks:
            await conn.copy_records_to_table("bare_press", records=chunk, columns=PressRow._fields)
        copy_s = time.perf_counter() - started
        copied = await conn.fetchval("SELECT count(*) FROM bare_press")
    finally:
        await conn.close()
    if copied != len(rows):
        raise BenchError(f"bare COPY stored {copied} rows of {len(rows)}")

    store_url = await create_database(cluster, "bench_drain")
    store = await PostgresStore.open(store_url)
    try:
        await add_terminals(store_url, options.terminals, options.surveys)
        await store.write(chunks[0][:1], [])  # partitions and staging table, not timed
        conn = await asyncpg.connect(store_url)
        await conn.execute("TRUNCATE press, press_key, press_hourly, press_hourly_survey")
        started = time.perf_counter()
        for chunk in chunks:
            await store.write(chunk, [])
        store_s = time.perf_counter() - started
        stored = await conn.fetchval("SELECT count(*) FROM press")
        keys = await conn.fetchval("SELECT count(*) FROM press_key")
        hourly = await conn.fetchval("SELECT sum(presses) FROM press_hourly")
        surveyed = await conn.fetchval("SELECT sum(presses) FROM press_hourly_survey")
        await conn.close()
    finally:
        await store.close()
    if not stored == keys == hourly == surveyed == len(rows):
        raise BenchError(
            f"store holds {stored} presses, {keys} keys, {hourly} counted by terminal,"
            f" {surveyed} by survey"
        )
    return Drain(
        rows=len(rows),
        batch=options.batch,
        store_s=store_s,
        store_rows_per_s=len(rows) / store_s,
        copy_s=copy_s,
        copy_rows_per_s=len(rows) / copy_s,
        ratio=copy_s / store_s,
    )


# ---------------------------------------------------------------- 2. results


def _load_statements(presses: int, terminals: int) -> list[str]:
    """press_key, press and press_hourly for a year, from generate_series, consistent.

    Press g belongs to terminal g % terminals with seq g / terminals; a
    terminal's presses are spread evenly over the year.
    """
    per_terminal = -(-presses // terminals)
    step = (YEAR_END - YEAR_START) / per_terminal
    series = (
        f"SELECT {FIRST_TERMINAL_ID} + g % {terminals} AS terminal_id, g / {terminals} AS seq,"
        f" {YEAR_START} + floor((g / {terminals}) * {step} + (g % {terminals}) * {step}"
        f" / {terminals})::bigint AS ts, 1 + (g * 2654435761 % 1009) % 4 AS button,"
        f" (g * 40503 % 7) % 3 AS followup FROM generate_series(0::bigint, {presses - 1}) AS g"
    )
    return [
        "SET maintenance_work_mem = '256MB'",
        "SET work_mem = '256MB'",
        "SET synchronous_commit = off",
        f"INSERT INTO press_key (terminal_id, seq, occurred_at)"
        f" SELECT terminal_id, seq, to_timestamp(ts) FROM ({series}) AS s",
        f"INSERT INTO press (terminal_id, seq, occurred_at, utc_offset_s, button, followup,"
        f" transport, clock_corrected, received_at_ms)"
        f" SELECT terminal_id, seq, to_timestamp(ts), {UTC_OFFSET_S}, button, followup, 'tcp',"
        f" false, ts * 1000 + 150 FROM ({series}) AS s",
        f"INSERT INTO press_hourly"
        f" (survey, location, terminal_id, hour, utc_offset_s, button, misuse, presses)"
        f" SELECT t.survey, t.location, p.terminal_id,"
        f" to_timestamp(p.ts - ((p.ts + {UTC_OFFSET_S}) % 3600 + 3600) % 3600),"
        f" {UTC_OFFSET_S}, p.button, false, count(*)"
        f" FROM ({series}) AS p JOIN terminal AS t ON t.id = p.terminal_id"
        f" GROUP BY 1, 2, 3, 4, 5, 6",
        "INSERT INTO press_hourly_survey (survey, hour, utc_offset_s, button, misuse, presses)"
        " SELECT survey, hour, utc_offset_s, button, misuse, sum(presses) FROM press_hourly"
        " GROUP BY 1, 2, 3, 4, 5",
        "ANALYZE press_key",
        "ANALYZE press",
        "ANALYZE press_hourly",
        "ANALYZE press_hourly_survey",
    ]


async def time_query(
    conn: asyncpg.Connection[asyncpg.Record], window: str, low: int, high: int, runs: int
) -> QueryTimes:
    result = await conn.fetch(RESULTS_QUERY, 1, low, high)  # warm-up, not timed
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await conn.fetch(RESULTS_QUERY, 1, low, high)
        samples.append((time.perf_counter() - started) * 1000)
    return QueryTimes(
        window=window,
        result_rows=len(result),
        p50_ms=statistics.median(samples),
        p95_ms=percentile(samples, 0.95),
        max_ms=max(samples),
    )


async def results(cluster: PrivateCluster, options: Options) -> Results:
    url = await create_database(cluster, "bench_results")
    store = await PostgresStore.open(url)  # the gateway's schema, migrated
    await store.close()
    await add_terminals(url, options.terminals, options.surveys)
    conn = await asyncpg.connect(url, command_timeout=3600)
    try:
        async with conn.transaction():
            await ensure_partitions(conn, {(YEAR, month) for month in range(1, 13)})
        started = time.perf_counter()
        for statement in _load_statements(options.presses, options.terminals):
            await conn.execute(statement)
        load_s = time.perf_counter() - started
        stored = await conn.fetchval("SELECT count(*) FROM press")
        keys = await conn.fetchval("SELECT count(*) FROM press_key")
        counted = await conn.fetchval("SELECT sum(presses) FROM press_hourly")
        in_default = await conn.fetchval("SELECT count(*) FROM press_default")
        hourly_rows = await conn.fetchval("SELECT count(*) FROM press_hourly")
        if not stored == keys == counted == options.presses or in_default:
            raise BenchError(
                f"loaded {stored} presses, {keys} keys, {counted} counted,"
                f" {in_default} in press_default; wanted {options.presses}"
            )
        june = int(datetime(YEAR, 6, 1, tzinfo=UTC).timestamp())
        july = int(datetime(YEAR, 7, 1, tzinfo=UTC).timestamp())
        month_times = await time_query(conn, "month", june, july, options.queries)
        year_times = await time_query(conn, "year", YEAR_START, YEAR_END, options.queries)
    finally:
        await conn.close()
    return Results(
        presses=options.presses,
        terminals=options.terminals,
        surveys=options.surveys,
        load_s=load_s,
        hourly_rows=int(hourly_rows),
        month=month_times,
        year=year_times,
    )


# ---------------------------------------------------------------- report


def verdict(passed: bool, text: str) -> str:
    return f"{'PASS' if passed else 'FAIL'}  {text}"


def report_results(r: Results, options: Options) -> None:
    print(
        f"  load          {r.presses:,} presses over {r.terminals} terminals, {r.surveys}"
        f" survey(s), year {YEAR}: {r.load_s:.1f} s ({r.hourly_rows:,} press_hourly rows)"
    )
    for q in (r.month, r.year):
        print(
            f"  query {q.window:<7} hourly results of survey 1 ({q.result_rows:,} rows):"
            f" p50 {q.p50_ms:.1f} ms  p95 {q.p95_ms:.1f} ms  max {q.max_ms:.1f} ms"
            f" ({options.queries} runs)"
        )


async def bench(options: Options) -> int:
    try:
        cluster = PrivateCluster.create()
        cluster.start()
    except ClusterUnavailable as exc:
        print(f"BROKEN  no private PostgreSQL cluster: {exc}")
        return 1
    try:
        print("smiley-gateway PostgreSQL store benchmark")
        print(f"  cluster       private, port {cluster.port}, fsync off ({cluster.root})")
        d = await drain(cluster, options)
        print(
            f"  drain         {d.rows:,} rows in batches of {d.batch}:"
            f" PostgresStore.write() {d.store_s:.2f} s = {d.store_rows_per_s:,.0f} rows/s"
        )
        print(
            f"  baseline      bare COPY into a table with PK (terminal_id, seq):"
            f" {d.copy_s:.2f} s = {d.copy_rows_per_s:,.0f} rows/s"
        )
        print(f"  ratio         store / bare COPY = {d.ratio:.2f}")
        r = None if options.drain_only else await results(cluster, options)
        if r is not None:
            report_results(r, options)
    except (BenchError, asyncpg.PostgresError, OSError) as exc:
        print(f"BROKEN  {type(exc).__name__}: {exc}")
        return 1
    finally:
        cluster.destroy()
    print(
        verdict(
            d.ratio >= TARGET_DRAIN_RATIO,
            f"drain >= {TARGET_DRAIN_RATIO:.2f} x bare COPY: {d.ratio:.2f}",
        )
    )
    for q in () if r is None else (r.month, r.year):
        print(
            verdict(
                q.p95_ms < TARGET_QUERY_P95_MS,
                f"hourly results over a {q.window}, p95 < {TARGET_QUERY_P95_MS:.0f} ms:"
                f" {q.p95_ms:.1f} ms",
            )
        )
    if options.json_path is not None:
        report: dict[str, dict[str, Any] | None] = {
            "options": {**asdict(options), "json_path": str(options.json_path)}
        }
        report |= {"drain": asdict(d), "results": None if r is None else asdict(r)}
        options.json_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(bench(parse_options(argv)))


if __name__ == "__main__":
    sys.exit(main())
