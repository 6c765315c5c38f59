"""The processes a benchmark measures: the gateway it starts, their CPU time and memory.

The gateway runs as ``smiley-gateway run`` (``firmware_sim.harness``) on a
configuration of its own in a temp dir; CPU and memory come from ``/proc``.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

from firmware_sim.harness import GatewayProcess, free_port, write_config


@dataclass(frozen=True, slots=True)
class Memory:
    rss_mb: float
    hwm_mb: float


def read_memory(pid: int) -> Memory:
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return Memory(rss_mb=fields["VmRSS"], hwm_mb=fields["VmHWM"])


def read_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    after_name = stat.rsplit(")", 1)[1].split()
    ticks = int(after_name[11]) + int(after_name[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time used so far by everything on the machine, all CPUs (from /proc/stat)."""
    first = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0]
    ticks = [int(v) for v in first.split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit(needed: int) -> None:
    """Lift the soft limit of open files (inherited by the gateway spawned after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            print(f"warning: open-file limit {target} < {needed} needed", file=sys.stderr)


def bench_gateway(
    root: Path, registry: str, *, pipeline_depth: int = 16, extra: str = ""
) -> GatewayProcess:
    """A gateway (not started) on a free port, its config, data dir and store in ``root``."""
    port = free_port()
    config = write_config(
        root, port=port, registry=registry, pipeline_depth=pipeline_depth, extra=extra
    )
    return GatewayProcess(config, port)


def central_db(gateway: GatewayProcess) -> Path:
    return gateway.data_dir / "central.db"


def outbox_db(gateway: GatewayProcess) -> Path:
    return gateway.data_dir / "outbox.db"


def cpu_seconds(gateway: GatewayProcess) -> float:
    return read_cpu_seconds(gateway.pid)


def memory(gateway: GatewayProcess) -> Memory:
    return read_memory(gateway.pid)


async def stop(gateway: GatewayProcess) -> int | None:
    """SIGTERM (the gateway drains its outbox); its exit status, None if it did not exit."""
    try:
        return await gateway.terminate()
    except TimeoutError:
        return None
