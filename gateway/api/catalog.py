"""The registry as the API sees it: companies, the location tree, surveys, terminals.

Read from the central store and kept for ``[api] refresh_s`` (:class:`CatalogCache`),
then cut to what one credential may see (:class:`View`): its company, and the
subtree under its scope location if it has one. Everything outside a view is
answered as if it did not exist.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.api.db import Reader
from gateway.registry.terminals import Location, Survey

CACHE_S = 5.0


@dataclass(frozen=True, slots=True)
class Terminal:
    """A registry terminal without its key, which the API never needs."""

    id: int
    location: int
    survey: int
    name: str | None


@dataclass(frozen=True, slots=True)
class Catalog:
    companies: dict[str, str]
    locations: dict[int, Location]
    surveys: dict[int, Survey]
    terminals: dict[int, Terminal]
    children: dict[int | None, list[int]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        companies: dict[str, str],
        locations: dict[int, Location],
        surveys: dict[int, Survey],
        terminals: dict[int, Terminal],
    ) -> Catalog:
        children: dict[int | None, list[int]] = {}
        for loc in sorted(locations.values(), key=lambda x: x.id):
            parent = loc.parent if loc.parent in locations else None
            children.setdefault(parent, []).append(loc.id)
        return cls(companies, locations, surveys, terminals, children)

    def terminals_of(self, survey: int) -> set[int]:
        """Every registered terminal asking ``survey``, whoever may see them."""
        return {t.id for t in self.terminals.values() if t.survey == survey}

    def view(self, company: str, scope: int | None) -> View:
        """What a credential of ``company`` scoped to ``scope`` (None: all of it) sees."""
        if scope is None:
            roots = [i for i in self.children.get(None, []) if self.locations[i].company == company]
        else:
            loc = self.locations.get(scope)
            roots = [scope] if loc is not None and loc.company == company else []
        visible: list[int] = []
        stack = list(reversed(roots))
        while stack:
            current = stack.pop()
            visible.append(current)
            stack.extend(reversed(self.children.get(current, [])))
        locations = {i: self.locations[i] for i in visible}
        terminals = {t.id: t for t in self.terminals.values() if t.location in locations}
        used = {t.survey for t in terminals.values()}
        surveys = {
            s.id: s
            for s in self.surveys.values()
            if s.company == company and (scope is None or s.id in used)
        }
        return View(self, company, scope, roots, locations, surveys, terminals)


@dataclass(frozen=True, slots=True)
class View:
    catalog: Catalog
    company: str
    scope: int | None
    roots: list[int]
    locations: dict[int, Location]
    surveys: dict[int, Survey]
    terminals: dict[int, Terminal]

    @property
    def company_name(self) -> str:
        return self.catalog.companies.get(self.company, self.company)

    def children(self, location: int) -> list[Location]:
        return [
            self.locations[i]
            for i in self.catalog.children.get(location, [])
            if i in self.locations
        ]

    def subtree(self, location: int) -> Iterator[Location]:
        """``location`` and everything under it, depth first."""
        stack = [location] if location in self.locations else []
        while stack:
            current = stack.pop()
            yield self.locations[current]
            stack.extend(reversed([c.id for c in self.children(current)]))

    def surveys_at(self, location: int) -> list[Survey]:
        """The surveys of the terminals standing at one experience point."""
        ids = sorted({t.survey for t in self.terminals.values() if t.location == location})
        return [self.surveys[i] for i in ids if i in self.surveys]

    def select_terminals(
        self, survey: int | None = None, location: int | None = None
    ) -> list[Terminal]:
        """Visible terminals of a survey and/or under a location (subtree)."""
        places = None if location is None else {x.id for x in self.subtree(location)}
        return [
            t
            for t in self.terminals.values()
            if (survey is None or t.survey == survey) and (places is None or t.location in places)
        ]


class CatalogCache:
    """The catalog read from the store again once it is ``max_age_s`` old (0: every time)."""

    def __init__(self, db: Reader, max_age_s: float = CACHE_S) -> None:
        self._db = db
        self._max_age_s = max_age_s
        self._catalog: Catalog | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> Catalog:
        if self._catalog is not None and time.monotonic() - self._loaded_at < self._max_age_s:
            return self._catalog
        async with self._lock:
            if self._catalog is None or time.monotonic() - self._loaded_at >= self._max_age_s:
                self._catalog = await load_catalog(self._db)
                self._loaded_at = time.monotonic()
            return self._catalog


async def load_catalog(db: Reader) -> Catalog:
    rows = await db.catalog()
    companies = {r[0]: r[1] for r in rows.companies}
    locations = {
        int(r[0]): Location(int(r[0]), r[1], r[2], None if r[3] is None else int(r[3]), r[4])
        for r in rows.locations
    }
    surveys = {
        int(r[0]): Survey(int(r[0]), r[1], r[2], r[3], r[4], int(r[5])) for r in rows.surveys
    }
    terminals = {int(r[0]): Terminal(int(r[0]), int(r[1]), int(r[2]), r[3]) for r in rows.terminals}
    return Catalog.build(companies, locations, surveys, terminals)
