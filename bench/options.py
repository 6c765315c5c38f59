"""The command-line options the TCP and MQTT benchmarks share (the shape of the load)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """The load: ``terminals`` x ``frames_per_terminal`` PRESSES of ``records_per_frame``."""

    terminals: int
    records_per_frame: int
    frames_per_terminal: int
    window: int
    baseline_repeats: int
    seed: int
    json_path: Path | None
    keep: bool

    @property
    def frames(self) -> int:
        return self.terminals * self.frames_per_terminal

    @property
    def presses(self) -> int:
        return self.frames * self.records_per_frame

    @property
    def in_flight_presses(self) -> int:
        """At most this many presses wait for an ACK at once."""
        return self.terminals * self.window * self.records_per_frame


OptionsT = TypeVar("OptionsT", bound=LoadOptions)


def load_parser(name: str, *, terminals: int, frames: int) -> argparse.ArgumentParser:
    """A parser with the load's options; the benchmark adds its own."""
    parser = argparse.ArgumentParser(
        prog=f"python -m bench.{name}",
        description=f"{name.upper()} benchmark of the smiley-gateway process.",
    )
    parser.add_argument("--terminals", type=int, default=terminals, help="terminals sending")
    parser.add_argument("--records-per-frame", type=int, default=50, help="records per PRESSES")
    parser.add_argument(
        "--frames-per-terminal", type=int, default=frames, help="PRESSES per terminal"
    )
    parser.add_argument("--window", type=int, default=4, help="frames per terminal without ACK")
    parser.add_argument("--baseline-repeats", type=int, default=3, help="median of N runs")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated presses")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write results here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (path printed)")
    return parser


def parse_load(
    parser: argparse.ArgumentParser, options_type: type[OptionsT], argv: Sequence[str] | None
) -> OptionsT:
    """The options, or exit with a usage error if they make no load."""
    options = options_type(**vars(parser.parse_args(argv)))
    if min(options.terminals, options.frames_per_terminal, options.window) < 1:
        parser.error("--terminals, --frames-per-terminal and --window must be at least 1")
    if not 1 <= options.records_per_frame <= 680:
        parser.error("--records-per-frame must be 1..680")
    if options.baseline_repeats < 1:
        parser.error("--baseline-repeats must be at least 1")
    return options
