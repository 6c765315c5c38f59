"""Where a gateway's registry comes from: its file, or the central store.

An edge gateway without a registry file reads terminals, keys and surveys
from the central store at start, and keeps a copy in its data directory, so
it still knows its terminals when it starts during a store outage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import structlog

from gateway.errors import RegistryError, StoreError
from gateway.registry.config import Config
from gateway.registry.terminals import Registry, load_registry, parse_registry, registry_tables
from gateway.stores import CentralStore

log = structlog.get_logger("gateway.registry")

CACHE_NAME = "registry-cache.json"


async def registry_for(config: Config, store: CentralStore) -> tuple[Registry, bool]:
    """The registry, and whether it came from the store (so there is nothing to import)."""
    if config.gateway.registry is not None:
        return load_registry(config.path(config.gateway.registry)), False
    cache = config.data_dir / CACHE_NAME
    try:
        registry = await store.load_registry()
    except StoreError as exc:
        cached = _read_cache(cache)
        if cached is None:
            log.error(
                "registry_unavailable",
                error=str(exc),
                action="start the store or add a registry file",
            )
            return Registry.empty(), False
        log.warning("registry_from_cache", error=str(exc), terminals=len(cached.terminals))
        return cached, False
    _write_cache(cache, registry)
    log.info("registry_from_store", terminals=len(registry.terminals))
    return registry, True


def _read_cache(path: Path) -> Registry | None:
    try:
        return parse_registry(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, RegistryError) as exc:
        log.error("registry_cache_unreadable", path=str(path), error=str(exc))
        return None


def _write_cache(path: Path, registry: Registry) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        json.dump(registry_tables(registry), out)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)  # a reader sees the old copy or the new one, never half
