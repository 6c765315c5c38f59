"""What `smiley-gateway check` reports: problems, each with its file and key, and notes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gateway.registry.config import (
    Config,
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: in which file, which key or entry, and what."""

    source: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.message}"


@dataclass(slots=True)
class CheckResult:
    problems: list[Problem] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    config: Config | None = None

    @property
    def ok(self) -> bool:
        return not self.problems
