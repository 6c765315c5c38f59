"""`check` of the registry file: every entry parsed alone, then the references between them."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.errors import RegistryError
from gateway.registry.problems import Problem
from gateway.registry.terminals import (
    Company,
    Location,
    Survey,
    Terminal,
    parse_company,
    parse_location,
    parse_survey,
    parse_terminal,
)
from gateway.registry.web_smileys import WebSmiley, parse_web_smiley

_REGISTRY_KINDS = ("company", "location", "survey", "terminal", "web_smiley")


def check_registry(path: Path, problems: list[Problem]) -> int:
    """Append every problem of the registry file; return how many terminals it defines."""
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(source, "file", f"cannot read: {exc}"))
        return 0
    except tomllib.TOMLDecodeError as exc:
        problems.append(Problem(source, "file", f"not valid TOML: {exc}"))
        return 0
    for name in data:
        if name not in _REGISTRY_KINDS:
            problems.append(
                Problem(source, f"[[{name}]]", f"unknown table; expected {list(_REGISTRY_KINDS)}")
            )
    parsers = {"company": parse_company, "location": parse_location, "survey": parse_survey,
               "terminal": parse_terminal, "web_smiley": parse_web_smiley}  # fmt: skip
    entries: dict[str, dict[Any, Any]] = {kind: {} for kind in _REGISTRY_KINDS}
    for kind in _REGISTRY_KINDS:
        tables = data.get(kind, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            problems.append(Problem(source, kind, f"must be an array of tables ([[{kind}]])"))
            continue
        ids = Counter(t.get("id") for t in tables)
        for index, table in enumerate(tables, 1):
            where = f"{kind} {table.get('id', f'#{index} (no id)')!r}"
            if table.get("id") is not None and ids[table.get("id")] > 1:
                if table["id"] not in entries[kind]:
                    problems.append(
                        Problem(source, where, f"duplicate {kind} id ({ids[table['id']]} entries)")
                    )
                    entries[kind][table["id"]] = None  # one line per duplicated id
                continue
            try:
                entries[kind][table.get("id")] = parsers[kind](table)
            except RegistryError as exc:
                problems.append(Problem(source, where, _without_where(str(exc))))
    _check_references(entries, source, problems)
    return sum(1 for t in entries["terminal"].values() if t is not None)


def _without_where(message: str) -> str:
    """``terminal 5: key ...`` -> ``key ...`` (the entry is named already)."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.split(" ")[0] in _REGISTRY_KINDS else message


def _check_references(
    entries: dict[str, dict[Any, Any]], source: str, problems: list[Problem]
) -> None:
    companies: dict[str, Company] = entries["company"]
    locations: dict[int, Location] = entries["location"]
    surveys: dict[int, Survey] = entries["survey"]
    terminals: dict[int, Terminal] = entries["terminal"]
    for loc in locations.values():
        if loc is None:
            continue
        where = f"location {loc.id}"
        if loc.company not in companies:
            problems.append(Problem(source, where, f"company {loc.company!r} does not exist"))
        if loc.parent is not None and loc.parent not in locations:
            problems.append(Problem(source, where, f"parent {loc.parent} does not exist"))
    for survey in surveys.values():
        if survey is not None and survey.company not in companies:
            problems.append(
                Problem(source, f"survey {survey.id}", f"company {survey.company!r} does not exist")
            )
    keys = Counter(t.key for t in terminals.values() if t is not None)
    for t in terminals.values():
        if t is None:
            continue
        where = f"terminal {t.id}"
        point = locations.get(t.location)
        if t.location not in locations:
            problems.append(Problem(source, where, f"location {t.location} does not exist"))
        elif point is not None and not point.is_experience_point:
            problems.append(
                Problem(source, where, f"location {t.location} is a group (it has no timezone)")
            )
        if t.survey not in surveys:
            problems.append(Problem(source, where, f"survey {t.survey} does not exist"))
        if keys[t.key] > 1:
            problems.append(Problem(source, where, "key is shared with another terminal"))
    _check_web_references(entries, source, problems)


def _check_web_references(
    entries: dict[str, dict[Any, Any]], source: str, problems: list[Problem]
) -> None:
    locations: dict[int, Location] = entries["location"]
    web: dict[int, WebSmiley] = entries["web_smiley"]
    slugs = Counter(w.slug for w in web.values() if w is not None)
    for w in web.values():
        if w is None:
            continue
        where = f"web_smiley {w.id}"
        point = locations.get(w.location)
        if w.location not in locations:
            problems.append(Problem(source, where, f"location {w.location} does not exist"))
        elif point is not None and not point.is_experience_point:
            problems.append(
                Problem(source, where, f"location {w.location} is a group (it has no timezone)")
            )
        if w.survey not in entries["survey"]:
            problems.append(Problem(source, where, f"survey {w.survey} does not exist"))
        if w.id in entries["terminal"]:
            problems.append(Problem(source, where, "id is also a terminal's (one id space)"))
        if slugs[w.slug] > 1:
            problems.append(Problem(source, where, f"slug {w.slug!r} is taken twice"))
