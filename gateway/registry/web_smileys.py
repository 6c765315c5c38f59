"""Web smileys: the feedback page a browser opens (``[[web_smiley]]`` in the registry).

A web smiley stands at an experience point like a terminal and shares the
terminals' id space: its presses are stored with its id as ``terminal_id``.
Its slug names the page (``/w/<slug>``). References to locations and surveys
are checked with the rest of the registry (gateway/registry/terminals.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.errors import RegistryError

SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
MAX_FOLLOWUP_OPTIONS = 16
WEB_FIELDS = {"id", "slug", "location", "survey", "name"}


@dataclass(frozen=True, slots=True)
class WebSmiley:
    id: int
    slug: str
    location: int
    survey: int
    name: str | None = None


def parse_web_smiley(table: dict[str, Any]) -> WebSmiley:
    where = f"web_smiley {table.get('id', '?')!r}"
    extra = set(table) - WEB_FIELDS
    if extra:
        raise RegistryError(f"{where}: unknown field(s) {sorted(extra)}")
    values: dict[str, Any] = {}
    for name, kind, required in (("id", int, True), ("slug", str, True),
                                 ("location", int, True), ("survey", int, True),
                                 ("name", str, False)):  # fmt: skip
        value = table.get(name)
        if value is None:
            if required:
                raise RegistryError(f"{where}: missing field {name!r}")
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RegistryError(f"{where}: {name} must be {kind.__name__}, got {value!r}")
        values[name] = value
    if not 0 <= values["id"] <= 0xFFFFFFFF:
        raise RegistryError(f"{where}: id must fit in 32 bits")
    if not SLUG.fullmatch(values["slug"]):
        raise RegistryError(
            f"{where}: slug must be 1-64 of a-z, 0-9 and '-' (not at either end),"
            f" got {values['slug']!r}"
        )
    return WebSmiley(**values)


def parse_followup(
    where: str, table: dict[str, Any], buttons: int
) -> tuple[str | None, tuple[str, ...], tuple[int, ...]]:
    """A survey's follow-up question, its options and the buttons after which it is asked."""
    question = table.get("followup_question")
    options = table.get("followup_options", [])
    after = table.get("followup_after", [])
    if question is not None and (not isinstance(question, str) or not question.strip()):
        raise RegistryError(f"{where}: followup_question must be a non-empty string")
    if not isinstance(options, list) or not all(isinstance(o, str) and o for o in options):
        raise RegistryError(f"{where}: followup_options must be a list of non-empty strings")
    if len(options) > MAX_FOLLOWUP_OPTIONS:
        raise RegistryError(
            f"{where}: at most {MAX_FOLLOWUP_OPTIONS} followup_options, got {len(options)}"
        )
    if not isinstance(after, list) or not all(
        isinstance(b, int) and not isinstance(b, bool) for b in after
    ):
        raise RegistryError(f"{where}: followup_after must be a list of button numbers")
    for button in after:
        if not 1 <= button <= buttons:
            raise RegistryError(f"{where}: followup_after button {button} is not 1..{buttons}")
    if (question is None) != (not options):
        raise RegistryError(f"{where}: followup_question and followup_options go together")
    if after and question is None:
        raise RegistryError(f"{where}: followup_after needs followup_question and options")
    return question, tuple(options), tuple(sorted(set(after)))
