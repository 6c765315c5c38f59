"""Terminal registry: companies, the location tree, surveys and terminals.

Loaded from a TOML file of ``[[company]]``, ``[[location]]``, ``[[survey]]``,
``[[terminal]]`` and ``[[web_smiley]]`` tables (see deploy/terminals.example.toml).
A location with a ``timezone`` is an experience point, where terminals stand;
one without is a group. Everything is checked when loading, so a running gateway never meets a
terminal whose survey or time zone is missing.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import RegistryError
from gateway.registry.web_smileys import WebSmiley, parse_followup, parse_web_smiley

KEY_BYTES = 16
SCALES = ("four", "five")
SURVEY_FIELDS = {
    "id", "company", "question", "locale", "scale", "misuse_interval_s",
    "followup_question", "followup_options", "followup_after",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Company:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Location:
    id: int
    company: str
    name: str
    parent: int | None = None
    timezone: str | None = None

    @property
    def is_experience_point(self) -> bool:
        return self.timezone is not None


@dataclass(frozen=True, slots=True)
class Survey:
    id: int
    company: str
    question: str
    locale: str = "en-US"
    scale: str = "four"
    misuse_interval_s: int = 0
    followup_question: str | None = None
    followup_options: tuple[str, ...] = ()
    followup_after: tuple[int, ...] = ()
    """The buttons after which the follow-up question is asked."""

    @property
    def buttons(self) -> int:
        return 5 if self.scale == "five" else 4

    def asks_followup(self, button: int) -> bool:
        return self.followup_question is not None and button in self.followup_after


@dataclass(frozen=True, slots=True)
class Terminal:
    id: int
    key: bytes
    location: int
    survey: int
    name: str | None = None
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class Registry:
    companies: Mapping[str, Company]
    locations: Mapping[int, Location]
    surveys: Mapping[int, Survey]
    terminals: Mapping[int, Terminal]
    web_smileys: Mapping[int, WebSmiley] = field(default_factory=dict)
    """Web smileys by id (the terminals' id space: no id is both)."""

    def web_smiley(self, slug: str) -> WebSmiley | None:
        """The web smiley whose page is ``/w/<slug>``, or None."""
        return next((w for w in self.web_smileys.values() if w.slug == slug), None)

    def key_for(self, terminal_id: int) -> bytes | None:
        """The terminal's key, or None if it is not registered (a codec KeyLookup)."""
        terminal = self.terminals.get(terminal_id)
        return terminal.key if terminal is not None else None

    def zone_for(self, terminal_id: int) -> ZoneInfo:
        """Time zone of the experience point where the terminal stands."""
        point = self.terminals.get(terminal_id) or self.web_smileys[terminal_id]
        timezone = self.locations[point.location].timezone
        assert timezone is not None  # checked when loading
        return ZoneInfo(timezone)

    @classmethod
    def empty(cls) -> Registry:
        return cls({}, {}, {}, {}, {})


def registry_tables(registry: Registry) -> dict[str, list[dict[str, Any]]]:
    """The registry as the tables of its TOML form; ``parse_registry`` reads them back."""

    def table(**fields: Any) -> dict[str, Any]:
        return {name: value for name, value in fields.items() if value is not None}

    return {
        "company": [table(id=c.id, name=c.name) for c in registry.companies.values()],
        "location": [
            table(id=x.id, company=x.company, name=x.name, parent=x.parent, timezone=x.timezone)
            for x in registry.locations.values()
        ],
        "survey": [
            table(
                id=s.id,
                company=s.company,
                question=s.question,
                locale=s.locale,
                scale=s.scale,
                misuse_interval_s=s.misuse_interval_s,
                followup_question=s.followup_question,
                followup_options=list(s.followup_options) or None,
                followup_after=list(s.followup_after) or None,
            )
            for s in registry.surveys.values()
        ],
        "terminal": [
            table(
                id=t.id,
                key=t.key.hex(),
                location=t.location,
                survey=t.survey,
                name=t.name,
                phone=t.phone,
            )
            for t in registry.terminals.values()
        ],
        "web_smiley": [
            table(id=w.id, slug=w.slug, location=w.location, survey=w.survey, name=w.name)
            for w in registry.web_smileys.values()
        ],
    }


def load_registry(path: Path) -> Registry:
    """Read and check a registry TOML file; raise RegistryError saying what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{path}: registry file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return parse_registry(data)
    except RegistryError as exc:
        raise RegistryError(f"{path}: {exc}") from None


def parse_registry(data: Mapping[str, Any]) -> Registry:
    unknown = set(data) - {"company", "location", "survey", "terminal", "web_smiley"}
    if unknown:
        raise RegistryError(f"unknown table(s) {sorted(unknown)}")
    companies = _unique("company", [parse_company(t) for t in _tables(data, "company")])
    locations = _unique("location", [parse_location(t) for t in _tables(data, "location")])
    surveys = _unique("survey", [parse_survey(t) for t in _tables(data, "survey")])
    terminals = _unique("terminal", [parse_terminal(t) for t in _tables(data, "terminal")])
    web = _unique("web_smiley", [parse_web_smiley(t) for t in _tables(data, "web_smiley")])
    _check_references(companies, locations, surveys, terminals)
    _check_web_smileys(web, locations, surveys, terminals)
    return Registry(companies, locations, surveys, terminals, web)


def _tables(data: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    tables = data.get(name, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise RegistryError(f"{name} must be an array of tables ([[{name}]])")
    return tables


class _Fields:
    """Typed access to one table's fields, with errors that say which table."""

    def __init__(self, kind: str, table: dict[str, Any], allowed: set[str]) -> None:
        self.kind = kind
        self.table = table
        self.where = f"{kind} {table.get('id', '?')!r}"
        extra = set(table) - allowed
        if extra:
            raise RegistryError(f"{self.where}: unknown field(s) {sorted(extra)}")

    def get(self, name: str, kind: type[Any], *, required: bool = True) -> Any:
        value = self.table.get(name)
        if value is None:
            if required:
                raise RegistryError(f"{self.where}: missing field {name!r}")
            return None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RegistryError(f"{self.where}: {name} must be {kind.__name__}, got {value!r}")
        return value


def parse_company(table: dict[str, Any]) -> Company:
    f = _Fields("company", table, {"id", "name"})
    return Company(f.get("id", str), f.get("name", str))


def parse_location(table: dict[str, Any]) -> Location:
    f = _Fields("location", table, {"id", "company", "name", "parent", "timezone"})
    location = Location(
        f.get("id", int),
        f.get("company", str),
        f.get("name", str),
        f.get("parent", int, required=False),
        f.get("timezone", str, required=False),
    )
    if location.timezone is not None:
        try:
            ZoneInfo(location.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise RegistryError(f"{f.where}: unknown time zone {location.timezone!r}") from None
    return location


def parse_survey(table: dict[str, Any]) -> Survey:
    f = _Fields("survey", table, SURVEY_FIELDS)
    survey = Survey(
        f.get("id", int),
        f.get("company", str),
        f.get("question", str),
        f.get("locale", str, required=False) or "en-US",
        f.get("scale", str, required=False) or "four",
        f.get("misuse_interval_s", int, required=False) or 0,
    )
    if survey.scale not in SCALES:
        raise RegistryError(f"{f.where}: scale must be one of {SCALES}")
    if survey.misuse_interval_s < 0:
        raise RegistryError(f"{f.where}: misuse_interval_s must not be negative")
    question, options, after = parse_followup(f.where, table, survey.buttons)
    return dataclasses.replace(
        survey, followup_question=question, followup_options=options, followup_after=after
    )


def parse_terminal(table: dict[str, Any]) -> Terminal:
    f = _Fields("terminal", table, {"id", "key", "location", "survey", "name", "phone"})
    terminal_id = f.get("id", int)
    if not 0 <= terminal_id <= 0xFFFFFFFF:
        raise RegistryError(f"{f.where}: id must fit in 32 bits")
    key_hex = f.get("key", str)
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise RegistryError(f"{f.where}: key is not hex") from None
    if len(key) != KEY_BYTES:
        raise RegistryError(f"{f.where}: key must be {KEY_BYTES} bytes, got {len(key)}")
    return Terminal(
        terminal_id,
        key,
        f.get("location", int),
        f.get("survey", int),
        f.get("name", str, required=False),
        f.get("phone", str, required=False),
    )


_Entry = TypeVar("_Entry", Company, Location, Survey, Terminal, WebSmiley)


def _unique(kind: str, items: list[_Entry]) -> dict[Any, _Entry]:
    found: dict[Any, _Entry] = {}
    for item in items:
        if item.id in found:
            raise RegistryError(f"duplicate {kind} id {item.id!r}")
        found[item.id] = item
    return found


def _check_references(
    companies: Mapping[str, Company],
    locations: Mapping[int, Location],
    surveys: Mapping[int, Survey],
    terminals: Mapping[int, Terminal],
) -> None:
    for loc in locations.values():
        if loc.company not in companies:
            raise RegistryError(f"location {loc.id}: company {loc.company!r} does not exist")
        if loc.parent is not None:
            parent = locations.get(loc.parent)
            if parent is None:
                raise RegistryError(f"location {loc.id}: parent {loc.parent} does not exist")
            if parent.company != loc.company:
                raise RegistryError(f"location {loc.id}: parent belongs to another company")
        _check_no_cycle(loc, locations)
    for survey in surveys.values():
        if survey.company not in companies:
            raise RegistryError(f"survey {survey.id}: company {survey.company!r} does not exist")
    for t in terminals.values():
        point = locations.get(t.location)
        if point is None:
            raise RegistryError(f"terminal {t.id}: location {t.location} does not exist")
        if not point.is_experience_point:
            raise RegistryError(
                f"terminal {t.id}: location {t.location} is a group, not an experience point"
                " (give it a timezone)"
            )
        asked = surveys.get(t.survey)
        if asked is None:
            raise RegistryError(f"terminal {t.id}: survey {t.survey} does not exist")
        if asked.company != point.company:
            raise RegistryError(f"terminal {t.id}: survey and location belong to other companies")


def _check_web_smileys(
    web: Mapping[int, WebSmiley],
    locations: Mapping[int, Location],
    surveys: Mapping[int, Survey],
    terminals: Mapping[int, Terminal],
) -> None:
    slugs: set[str] = set()
    for w in web.values():
        where = f"web_smiley {w.id}"
        if w.id in terminals:
            raise RegistryError(f"{where}: id is also a terminal's (they share one id space)")
        if w.slug in slugs:
            raise RegistryError(f"{where}: slug {w.slug!r} is taken by another web smiley")
        slugs.add(w.slug)
        point = locations.get(w.location)
        if point is None or not point.is_experience_point:
            raise RegistryError(f"{where}: location {w.location} is not an experience point")
        asked = surveys.get(w.survey)
        if asked is None:
            raise RegistryError(f"{where}: survey {w.survey} does not exist")
        if asked.company != point.company:
            raise RegistryError(f"{where}: survey and location belong to other companies")


def _check_no_cycle(start: Location, locations: Mapping[int, Location]) -> None:
    seen = {start.id}
    parent = start.parent
    while parent is not None:
        if parent in seen:
            raise RegistryError(f"location {start.id}: the parent chain loops")
        seen.add(parent)
        parent = locations[parent].parent if parent in locations else None
