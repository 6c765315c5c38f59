"""Misuse flags: a press within its survey's interval after the last counted press.

The flag of a press depends on every earlier press of its terminal, so it is
the greedy walk over the terminal's presses in (occurred_at, seq) order. A
press that arrives late changes the flags after it; :func:`reflag` walks
forward from the earliest new press and stops as soon as the walk settles: a
press after the new ones that was counted before and is counted now has the
same state behind it as before, so everything after it keeps its flag. The
stores keep the flags this way, whatever order presses arrive in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Walk:
    """What :func:`reflag` found: the flags to change and whether the walk settled."""

    changes: list[tuple[int, int, bool]]
    """(seq, occurred_at, new misuse flag) of each press whose flag changes."""
    settled: bool
    last_counted: int | None
    """occurred_at of the last counted press walked, to continue an unsettled walk."""


def reflag(
    presses: Iterable[tuple[int, int, bool]],
    *,
    last_counted: int | None,
    interval_s: int,
    settled_after: int,
) -> Walk:
    """Walk ``(seq, occurred_at, misuse)`` in time order from ``last_counted``.

    ``settled_after`` is the time of the latest new press: the walk may stop at a
    press after it that stays counted.
    """
    changes: list[tuple[int, int, bool]] = []
    for seq, at, was_misuse in presses:
        misuse = last_counted is not None and at - last_counted < interval_s
        if misuse != was_misuse:
            changes.append((seq, at, misuse))
        if not misuse:
            if not was_misuse and at > settled_after:
                return Walk(changes, True, at)
            last_counted = at
    return Walk(changes, False, last_counted)
