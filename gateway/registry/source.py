"""Where a gateway's registry comes from: its file, or the central store.

An edge gateway without a registry file reads terminals, keys and surveys
from the central store at start, and keeps a copy in its data directory, so
it still knows its terminals when it starts during a store outage.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import structlog

from gateway.backoff import Backoff
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


class RegistryImport:
    """Copies a registry file into the central store, retrying while the store is down.

    ``done`` is True once the store holds the registry: at once when there is
    nothing to import (no terminals, or the registry came from the store).
    """

    def __init__(self, registry: Registry, store: CentralStore, *, from_store: bool) -> None:
        self._registry = registry
        self._store = store
        self.done = from_store or not registry.terminals

    async def once(self) -> None:
        """Import now; raise StoreError (logged) if the store cannot take it."""
        if self.done:
            return
        try:
            summary = await self._store.import_registry(self._registry)
        except StoreError as exc:
            log.warning("registry_import_deferred", error=str(exc))
            raise
        self.done = True
        log.info("registry_loaded", terminals=len(self._registry.terminals), **_fields(summary))

    async def run(self, retry_max_s: float) -> None:
        """Retry :meth:`once` with backoff until it succeeds, then return."""
        backoff = Backoff(initial=1.0, cap=retry_max_s)
        while not self.done:
            try:
                await self.once()
            except StoreError:
                await asyncio.sleep(backoff.next_delay())


def _fields(summary: object) -> dict[str, object]:
    slots = getattr(type(summary), "__slots__", ())
    return {name: getattr(summary, name) for name in slots}
