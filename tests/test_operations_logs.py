"""Logs operations staff can use: hints on every warning, bounded volume under a flood."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import structlog

from firmware_sim.harness import GatewayProcess, free_port
from gateway.ops.log_events import EVENTS, FieldLimiter, RepeatLimiter, add_operator_hints
from protocols.frames import Hello
from tests.support import KEYS, RawTerminal, seal, write_config

REPO = Path(__file__).resolve().parents[1]
NOTABLE = {"warning", "error", "exception", "critical"}


def logged_warnings() -> list[tuple[str, int, str, bool]]:
    """(file, line, event, gives its own action) of each warning or error in gateway/."""
    found = []
    for path in sorted((REPO / "gateway").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in NOTABLE
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                continue
            own_action = any(k.arg == "action" for k in node.keywords)
            found.append((str(path.relative_to(REPO)), node.lineno, node.args[0].value, own_action))
    return found


def test_every_warning_and_error_says_what_to_do() -> None:
    calls = logged_warnings()
    assert len(calls) > 15
    missing = [
        f"{f}:{line} {event}" for f, line, event, own in calls if event not in EVENTS and not own
    ]
    assert not missing, f"add these events to gateway/ops/log_events.py EVENTS: {missing}"


def test_hints_are_added_to_warnings_only() -> None:
    warning = add_operator_hints(None, "warning", {"event": "forward_failed"})
    assert warning["component"] == "store"
    assert "store.url" in warning["action"]
    refused = add_operator_hints(None, "warning", {"event": "frame_refused", "transport": "mqtt"})
    assert refused["component"] == "mqtt"
    own = add_operator_hints(None, "error", {"event": "forward_failed", "action": "mine"})
    assert own["action"] == "mine"
    assert "action" not in add_operator_hints(None, "info", {"event": "gateway_started"})


def test_repeat_limiter_counts_what_it_drops() -> None:
    now = [0.0]
    limiter = RepeatLimiter(per_window=3, window_s=60, clock=lambda: now[0])

    def log(event: str, **fields: Any) -> bool:
        try:
            limiter(None, "warning", {"event": event, **fields})
        except structlog.DropEvent:
            return False
        return True

    passed = [log("frame_refused", terminal_id=1) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert log("frame_refused", terminal_id=2)  # another terminal: its own window
    assert log("frame_refused", peer="10.0.0.9:4000")
    assert log("frame_refused", peer="10.0.0.9:4001")  # the same host, another port
    assert log("frame_refused", peer="10.0.0.9:4002")
    assert not log("frame_refused", peer="10.0.0.9:4003")
    assert limiter(None, "info", {"event": "tcp_hello", "terminal_id": 1})  # info: not limited
    now[0] = 30.0
    assert limiter.flush() == []  # windows still open
    now[0] = 61.0
    summaries = limiter.flush()
    assert {(s["subject"], s["suppressed"]) for s in summaries} == {
        ("terminal_id=1", 7),
        ("peer=10.0.0.9", 1),
    }
    assert limiter.suppressed_total == 8
    assert log("frame_refused", terminal_id=1)  # a new window


def test_field_limiter_cuts_long_text_and_bytes_and_says_by_how_much() -> None:
    limiter = FieldLimiter(max_chars=10)
    line = limiter(None, "warning", {"event": "e", "topic": "t" * 25, "raw": b"\x01" * 8, "n": 7})
    assert line == {"event": "e", "topic": "t" * 10 + "...(+15 chars)",
                    "raw": "01" * 5 + "...(+6 chars)", "n": 7}  # fmt: skip


def test_a_line_of_the_gateway_stays_small_whatever_a_peer_sent() -> None:
    # The logging the gateway configures at its entry point, in a process of its own.
    script = (
        "import structlog; from gateway.logs import configure_logging;"
        "configure_logging('json'); structlog.get_logger().warning("
        "'frame_refused', error='x' * 1_000_000, payload=b'\\xff' * 100_000)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    (line,) = done.stderr.splitlines()
    entry = json.loads(line)
    assert entry["error"].endswith("...(+998976 chars)")
    assert entry["payload"].endswith("...(+198976 chars)")
    assert len(line) < 3000


def test_a_late_line_carries_the_count_when_no_flush_ran() -> None:
    now = [0.0]
    limiter = RepeatLimiter(per_window=1, window_s=10, clock=lambda: now[0])
    limiter(None, "error", {"event": "x", "terminal_id": 1})
    with pytest.raises(structlog.DropEvent):
        limiter(None, "error", {"event": "x", "terminal_id": 1})
    now[0] = 11.0
    assert limiter(None, "error", {"event": "x", "terminal_id": 1})["suppressed"] == 1


@pytest.mark.timeout(120)
async def test_a_flood_of_bad_frames_gives_a_bounded_log(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port)
    gateway = GatewayProcess(config, port)
    await gateway.start()
    flood = 500
    t = await RawTerminal.connect(port)
    await t.send_frame(Hello(1001, 0x0100, 1, 1767225600, 0, 0))
    await t.receive()
    bad = bytearray(seal(2, 1001, b"\x00" * 8, KEYS[1001]))
    bad[-1] ^= 0xFF  # a broken crc: NAK BAD_CRC, and the connection stays open
    for _ in range(flood):
        await t.send(bytes(bad))
    for _ in range(flood):
        await t.receive()  # every one is answered (and quarantined): nothing is dropped
    await t.close()
    assert await gateway.terminate() == 0
    lines = [json.loads(x) for x in gateway.log.read_text().splitlines() if x.startswith("{")]
    refused = [e for e in lines if e["event"] == "frame_refused"]
    assert len(refused) == 10  # the limiter's default: 10 per (event, terminal) per minute
    for event in refused:
        assert event["terminal_id"] == 1001
        assert event["component"] == "tcp"
        assert "BAD_CRC" in event["action"]
    (summary,) = [e for e in lines if e["event"] == "log_suppressed"]
    assert summary["suppressed_event"] == "frame_refused"
    assert summary["subject"] == "terminal_id=1001"
    assert summary["suppressed"] == flood - 10
    assert summary["component"] == "logs"
    assert len(lines) < 40, Counter(e["event"] for e in lines)
