"""PostgreSQL writers in parallel: 1, 2 and 4 gateway processes writing one store at once.

Run from the repository root::

    .venv/bin/python -m bench.pg_writers [--presses 120000] [--terminals 480] [--batch 2000]
                                         [--writers 1 2 4] [--repeats 3] [--fsync on]
                                         [--no-serial] [--json OUT]

A private PostgreSQL cluster (firmware_sim.harness, a temp dir and a free port;
the shared server on 5432 is never touched) gets, for each number of writers,
a fresh database with the registry of ``--terminals`` terminals (one survey,
5 s misuse interval, as bench/postgres.py's). The ``--presses`` presses of an
outbox backlog (bench/postgres.py's ``backlog``) are dealt out by terminal, so
each writer has its own terminals (a load balancer spreads terminals over the
instances); all of them press into the same survey and hours, so the writers
share the survey rollup's rows as a real chain's instances do.

Each writer is a process of its own (``python -m bench.pg_writers --child``)
with its own ``PostgresStore`` (one connection) calling ``write()`` with
``--batch`` rows, as a forwarder does. A writer opens its store and makes one
untimed write before the clock starts; the clock runs from the "go" sent to
every writer to the last one done. Rate = presses / that time; ratio = the
rate against one writer's in the same repeat; the median of the ``--repeats``
ratios counts.

Baseline (``serial``): the same writers, each ``write()`` taken in turn under
one file lock, which is what the store did up to schema version 3 (one
advisory lock for every write transaction): N writers write no faster than one.

The exit status is 1 only when something is BROKEN: a writer failed, or the
store does not hold exactly the presses written (press, press_hourly and
press_hourly_survey counted).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
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
from bench.postgres import FIRST_TERMINAL_ID, add_terminals, backlog, batches, create_database
from bench.procs import machine_cpu_seconds
from firmware_sim.harness import ClusterUnavailable, PrivateCluster
from gateway.rows import PressRow
from gateway.stores.postgres import PostgresStore

SEED = 1
WARMUP_TERMINAL = 1  # not registered: its one press per writer is not timed
_READY, _GO = "ready", "go"


@dataclass(frozen=True, slots=True)
class Options:
    presses: int
    terminals: int
    batch: int
    writers: list[int]
    repeats: int
    fsync: bool
    serial: bool
    json_path: Path | None


@dataclass(frozen=True, slots=True)
class Run:
    mode: str  # "parallel" or "serial" (the global-lock baseline)
    writers: int
    presses: int
    seconds: float
    rate: float
    writer_cpu_s: float
    server_cpu_s: float  # the PostgreSQL processes, backends and background workers
    others_cpu_s: float  # the rest of the machine: other programs on a shared VM


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_writers", description=__doc__)
    parser.add_argument("--presses", type=int, default=120_000, help="presses in all (split)")
    parser.add_argument("--terminals", type=int, default=480, help="terminals in all (split)")
    parser.add_argument("--batch", type=int, default=2000, help="rows per write()")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fsync", choices=("on", "off"), default="on")
    parser.add_argument("--no-serial", action="store_true", help="skip the global-lock baseline")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    args = parser.parse_args(argv)
    if args.presses < 1 or args.terminals < max(args.writers) or args.batch < 1:
        parser.error("need presses >= 1, batch >= 1 and a terminal for every writer")
    writers = sorted(set(args.writers) | {1})
    return Options(args.presses, args.terminals, args.batch, writers, max(1, args.repeats),
                   args.fsync == "on", not args.no_serial, args.json)  # fmt: skip


def share_of(rows: Sequence[PressRow], writer: int, writers: int) -> list[PressRow]:
    """The rows of one writer's terminals: disjoint, each in the backlog's order."""
    return [p for p in rows if (p.terminal_id - FIRST_TERMINAL_ID) % writers == writer]


# --- the writer process ----------------------------------------------------------------------


async def child(spec: dict[str, Any]) -> int:
    rows = share_of(
        backlog(spec["presses"], spec["terminals"], SEED), spec["writer"], spec["writers"]
    )
    store = await PostgresStore.open(spec["url"], pool_size=1)
    lock_file = open(spec["lock"], "a+b") if spec["serial"] else None  # noqa: SIM115, ASYNC230
    try:
        first = rows[0]
        warmup = first._replace(terminal_id=WARMUP_TERMINAL, seq=spec["writer"])
        await store.write([warmup], [])  # partitions known, connection warm: not timed
        print(_READY, flush=True)
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != _GO:
            return 1
        cpu, start = time.process_time(), time.monotonic()
        for batch in batches(rows, spec["batch"]):
            if lock_file is None:
                await store.write(batch, [])
                continue
            await asyncio.to_thread(fcntl.flock, lock_file, fcntl.LOCK_EX)
            try:
                await store.write(batch, [])
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        seconds, cpu = time.monotonic() - start, time.process_time() - cpu
        print(json.dumps({"presses": len(rows), "seconds": seconds, "cpu_s": cpu}), flush=True)
        return 0
    finally:
        if lock_file is not None:
            lock_file.close()
        await store.close()


# --- the runs ----------------------------------------------------------------------------


def _stat_fields(pid: int | str) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    return stat.rsplit(")", 1)[1].split()  # from the state on: ppid is [1], utime [11]


def server_processes(cluster: PrivateCluster) -> tuple[float, int]:
    """CPU seconds used by the cluster so far, and how many processes it has now.

    The postmaster's own time and its children's that ended (cutime, cstime)
    plus the time of those alive: a backend that ends is still counted.
    """
    postmaster = (cluster.root / "data" / "postmaster.pid").read_text().split()[0]
    own = _stat_fields(postmaster)
    ticks = sum(int(v) for v in own[11:15])
    children = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _stat_fields(entry.name)
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[1] == postmaster:
                children += 1
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK"), children


async def server_settled(cluster: PrivateCluster, processes: int) -> float:
    """The cluster's CPU seconds once the writers' backends have ended (at most 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        cpu, alive = server_processes(cluster)
        if alive <= processes or time.monotonic() > deadline:
            return cpu
        await asyncio.sleep(0.05)


async def start_writer(spec: dict[str, Any]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.pg_writers", "--child", json.dumps(spec),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    if line.decode().strip() != _READY:
        proc.kill()
        raise BenchError(f"writer {spec['writer']} did not start (exit {await proc.wait()})")
    return proc


async def finish_writer(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 600)
    code = await proc.wait()
    if code != 0 or not line:
        raise BenchError(f"a writer failed (exit {code})")
    result: dict[str, Any] = json.loads(line)
    return result


async def one_run(
    cluster: PrivateCluster,
    options: Options,
    writers: int,
    *,
    serial: bool,
    name: str,
    cluster_sizes: dict[str, tuple[int, int]],
) -> Run:
    url = await create_database(cluster, name)
    store = await PostgresStore.open(url)  # migrates before the writers come
    await store.close()
    await add_terminals(url, options.terminals, 1)
    base = {"url": url, "presses": options.presses, "terminals": options.terminals,
            "batch": options.batch, "writers": writers, "serial": serial,
            "lock": str(cluster.root / f"{name}.lock")}  # fmt: skip
    idle_processes = server_processes(cluster)[1]
    procs = await asyncio.gather(*(start_writer({**base, "writer": w}) for w in range(writers)))
    server_cpu, machine_cpu = server_processes(cluster)[0], machine_cpu_seconds()
    start = time.monotonic()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{_GO}\n".encode())
        await proc.stdin.drain()
    results = await asyncio.gather(*(finish_writer(p) for p in procs))
    seconds = time.monotonic() - start
    machine_cpu = machine_cpu_seconds() - machine_cpu
    server_cpu = await server_settled(cluster, idle_processes) - server_cpu
    writer_cpu = sum(r["cpu_s"] for r in results)
    written = sum(r["presses"] for r in results)
    await check_store(url, written, warmups=writers)
    if writers == 1 and not serial and not cluster_sizes:
        cluster_sizes.update(await table_sizes(url))
    return Run("serial" if serial else "parallel", writers, written, seconds, written / seconds,
               writer_cpu, server_cpu, max(0.0, machine_cpu - server_cpu - writer_cpu))  # fmt: skip


async def check_store(url: str, written: int, *, warmups: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM press")
        hourly = await conn.fetchval("SELECT sum(presses) FROM press_hourly")
        survey = await conn.fetchval("SELECT sum(presses) FROM press_hourly_survey")
    finally:
        await conn.close()
    if not stored == hourly == survey == written + warmups:
        raise BenchError(f"store holds {stored} presses ({hourly} and {survey} in the rollups)"
                         f" after {written} written and {warmups} warm-ups")  # fmt: skip


_SIZES = """
SELECT 'press', (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('press')),
       (SELECT count(*) FROM press)
UNION ALL SELECT 'press_key', pg_total_relation_size('press_key'), (SELECT count(*) FROM press_key)
UNION ALL SELECT 'press_hourly', pg_total_relation_size('press_hourly'),
       (SELECT count(*) FROM press_hourly)
UNION ALL SELECT 'press_hourly_survey', pg_total_relation_size('press_hourly_survey'),
       (SELECT count(*) FROM press_hourly_survey)
"""


async def table_sizes(url: str) -> dict[str, tuple[int, int]]:
    """Bytes on disk (with indexes) and rows of each table a press goes into."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")  # the visibility map and free space map counted
        return {r[0]: (int(r[1]), int(r[2])) for r in await conn.fetch(_SIZES)}
    finally:
        await conn.close()


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def ratios(table: dict[tuple[str, int], list[Run]], key: tuple[str, int]) -> list[float]:
    """Each repeat's rate against the one writer of the same repeat: the machine's
    moods (other work on a shared VM) move both alike."""
    return [r.rate / one.rate for r, one in zip(table[key], table[("parallel", 1)], strict=True)]


def print_report(options: Options, table: dict[tuple[str, int], list[Run]]) -> None:
    print(f"  load        {options.presses:,} presses over {options.terminals} terminals, "
          f"batches of {options.batch}, fsync {'on' if options.fsync else 'off'}, "
          f"{options.repeats} repeats")  # fmt: skip
    print("  mode      writers  presses/s  ratio to 1 writer  runs: presses/s (ratio)")
    for key, runs in sorted(table.items()):
        each = ratios(table, key)
        every = "  ".join(f"{r.rate:,.0f} ({x:.2f})" for r, x in zip(runs, each, strict=True))
        print(f"  {key[0]:<9} {key[1]:>7} {median_run(runs).rate:>10,.0f}"
              f" {statistics.median(each):>18.2f}  {every}")  # fmt: skip
    print("  (presses/s: the median run; ratio: the median of each repeat's ratio)")
    print("  CPU of the median run, us per press: server / writers / others on the machine")
    for key, runs in sorted(table.items()):
        r = median_run(runs)
        per = [1e6 * x / r.presses for x in (r.server_cpu_s, r.writer_cpu_s, r.others_cpu_s)]
        print(f"  {key[0]:<9} {key[1]:>7}   {per[0]:.1f} / {per[1]:.1f} / {per[2]:.1f}"
              f"   (server {r.server_cpu_s / r.seconds:.0%} of a core)")  # fmt: skip


async def bench(options: Options) -> int:
    try:
        cluster = PrivateCluster.create()
    except ClusterUnavailable as exc:
        print(f"BROKEN  no private PostgreSQL cluster: {exc}")
        return 1
    if options.fsync:  # a production server's durability: commits wait for the disk
        cluster.extra_options += ["-c fsync=on", "-c synchronous_commit=on"]
    print("smiley-gateway PostgreSQL writers benchmark")
    print(f"  machine     {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip
    table: dict[tuple[str, int], list[Run]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    try:
        cluster.start()
        modes = [(False, n) for n in options.writers]
        modes += [(True, n) for n in options.writers if options.serial and n > 1]
        for repeat in range(options.repeats):
            for serial, writers in modes:
                name = f"w{'s' if serial else 'p'}{writers}r{repeat}"
                run = await one_run(
                    cluster, options, writers, serial=serial, name=name, cluster_sizes=sizes
                )
                table.setdefault((run.mode, writers), []).append(run)
    except (BenchError, asyncpg.PostgresError, OSError) as exc:
        print(f"BROKEN  {exc}")
        return 1
    finally:
        cluster.destroy()
    print_report(options, table)
    print("  on disk     " + ", ".join(f"{name} {size / max(1, rows):.0f} B/row ({rows:,} rows)"
                                       for name, (size, rows) in sizes.items()))  # fmt: skip
    if options.json_path is not None:
        data: dict[str, Any] = {
            f"{m}-{n}": [asdict(r) for r in runs] for (m, n), runs in table.items()
        }
        data["sizes"] = sizes
        options.json_path.write_text(json.dumps({"options": str(options), "runs": data}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        return asyncio.run(child(json.loads(argv[1])))
    return asyncio.run(bench(parse_options(argv)))


if __name__ == "__main__":
    sys.exit(main())
