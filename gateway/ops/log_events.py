"""What operations staff read: every warning names its component and says what to do.

Two structlog processors, installed once by :func:`gateway.logs.configure_logging`:

- :func:`add_operator_hints` gives each warning or error the ``component``
  it concerns and an ``action`` (what to do about it) from :data:`EVENTS`,
  unless the call site gave its own. ``tests/test_operations_logs.py`` checks
  that every warning and error the gateway logs is listed here.
- :class:`RepeatLimiter` keeps log volume bounded under a flood (a terminal
  sending garbage, a store that is down): per (event, terminal or peer) at
  most ``per_window`` warnings or errors per ``window_s``; the rest are
  counted, and one ``log_suppressed`` line with ``suppressed=N`` follows when
  the window ends (from :meth:`RepeatLimiter.flush`, which the gateway calls
  every few seconds; a later line of the same kind also carries the count).
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog

DISK = "check free space and the file system of gateway.data_dir, and gateway.outbox_max_mb"

EVENTS: dict[str, tuple[str, str]] = {
    # event: (component, action)
    "registry_unavailable": ("registry", "start the central store or set gateway.registry"),
    "registry_from_cache": (
        "registry",
        "the central store is unreachable; running on the cached registry: restore the store",
    ),
    "registry_cache_unreadable": (
        "registry",
        "delete the cache file named in path; it is rewritten from the store at the next start",
    ),
    "registry_import_deferred": (
        "store",
        "the central store is unreachable; the import is retried: check store.url and the network",
    ),
    "tcp_connection_refused": (
        "tcp",
        "raise tcp.max_connections, or find the device reconnecting in a loop (peer)",
    ),
    "presses_busy": ("outbox", f"the outbox cannot commit, terminals retry: {DISK}"),
    "web_outbox_busy": ("outbox", f"the outbox cannot commit, browsers keep and resend: {DISK}"),
    "quarantine_failed": ("outbox", f"a refused frame could not be kept: {DISK}"),
    "outbox_commit_failed": ("outbox", DISK),
    "frame_refused": (
        "transport",
        "see reason: BAD_TAG or UNKNOWN_TERMINAL mean a wrong key or a terminal missing from"
        " the registry; BAD_CRC or MALFORMED a bad link or firmware; check the terminal",
    ),
    "part_failed": (
        "gateway",
        "a part of the gateway failed and it is shutting down (see part and error);"
        " the service manager restarts it; report the error if it repeats",
    ),
    "part_stopped_with_error": (
        "gateway",
        "a part ended with an error while the gateway shut down (see part); report it",
    ),
    "forward_failed": (
        "store",
        "check store.url, the network and the database; presses wait in the outbox meanwhile",
    ),
    "store_unreachable": (
        "store",
        "check store.url, the network and the database; presses wait in the outbox meanwhile",
    ),
    "store_analyze_failed": (
        "store",
        "none needed: queries may be slower until it is retried; check the disk if it repeats",
    ),
    "shutdown_left_backlog": (
        "store",
        "nothing is lost: the rest is forwarded at the next start; check the store if it repeats",
    ),
    "mqtt_disconnected": (
        "mqtt",
        "check the broker (mqtt.url), the gateway's broker account and the network",
    ),
    "mqtt_packet_too_large": (
        "mqtt",
        "the broker ignores the Maximum Packet Size the gateway sent: update or configure it"
        " (message_size_limit) so it drops such messages",
    ),
    "sd_notify_failed": (
        "watchdog",
        "check the unit has Type=notify and NotifyAccess=main; systemd may restart the service",
    ),
    "event_loop_stalled": (
        "watchdog",
        "the gateway was blocked for lag_s; if it repeats, keep the log and report it",
    ),
    "watchdog_unhealthy": (
        "watchdog",
        "a core task stopped; systemd restarts the service: keep the log and report it",
    ),
    "gateway_unready": ("health", "see failing: the checks that fail say what is down"),
    "terminal_silent": (
        "fleet",
        "visit the terminal: check its power, its network or mobile coverage, and its display",
    ),
    "status_save_failed": ("fleet", f"the fleet status could not be saved: {DISK}"),
    "history_write_failed": ("console", f"the console's history could not be written: {DISK}"),
    "history_series_refused": (
        "console",
        "the console's history holds its fixed number of series; this one is not charted"
        " (delete history.db in gateway.data_dir to start the history afresh)",
    ),
    "history_unavailable": (
        "console",
        f"history.db could not be opened; the console shows no charts: {DISK}",
    ),
    "health_server_failed": (
        "health",
        "check health.listen: the address must be free and local to this machine",
    ),
    "test_hang_hook_installed": (
        "watchdog",
        f"a test hook is on: unset {'SMILEY_TEST_HANG_ON_SIGUSR2'} outside tests",
    ),
    "operations_task_failed": ("operations", "a bug: keep the log lines around it and report them"),
    "modem_read_failed": (
        "modem",
        "the message stays on the SIM and is read by the next sweep; if it repeats, check the"
        " modem (smiley-gateway check) and its SIM storage",
    ),
    "modem_delete_failed": (
        "modem",
        "the message is stored already; if the SIM fills up, delete old messages on it",
    ),
    "api_store_unavailable": (
        "api",
        "the API cannot read the central store and retries: check store.url and the database",
    ),
    "proxy_header_refused": (
        "tcp",
        "a connection did not start with a PROXY header: is everything that reaches"
        " tcp.listen sent by the load balancer with send-proxy-v2 (see deploy/haproxy/)?",
    ),
    "store_seq_unavailable": (
        "store",
        "the central store did not tell a HELLO its highest seq in time; WELCOME took the"
        " outbox's: check store.url and the database",
    ),
    "log_suppressed": (
        "logs",
        "identical lines were dropped; the first ones of that window say what is wrong",
    ),
}
FALLBACK_ACTION = "unexpected: keep the log lines around it and report them"
_NOTABLE = frozenset({"warning", "warn", "error", "critical", "exception"})
_TRANSPORT_EVENTS = frozenset({"frame_refused"})


def add_operator_hints(
    _logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``component`` and ``action`` on every warning and error."""
    if method_name not in _NOTABLE:
        return event_dict
    component, action = EVENTS.get(str(event_dict.get("event")), ("gateway", FALLBACK_ACTION))
    if component == "transport" and event_dict.get("event") in _TRANSPORT_EVENTS:
        component = str(event_dict.get("transport", component))
    event_dict.setdefault("component", component)
    event_dict.setdefault("action", action)
    return event_dict


@dataclass(slots=True)
class _Window:
    started: float
    passed: int = 0
    suppressed: int = 0


class RepeatLimiter:
    """structlog processor: at most ``per_window`` lines per (event, subject) per window."""

    SUMMARY = "log_suppressed"

    def __init__(
        self,
        *,
        per_window: int = 10,
        window_s: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self.suppressed_total = 0

    def __call__(
        self, _logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event = str(event_dict.get("event"))
        if method_name not in _NOTABLE or event == self.SUMMARY:
            return event_dict
        key = (event, _subject(event_dict))
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now - window.started >= self.window_s:
            if window.suppressed:
                event_dict["suppressed"] = window.suppressed  # the count of the last window
            window = None
        if window is None:
            if len(self._windows) >= self._max_keys:
                self._expire(now)
                if len(self._windows) >= self._max_keys:
                    key = (event, "*")  # too many subjects: one window for the rest
                    window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(now)
        if window.passed >= self.per_window:
            window.suppressed += 1
            self.suppressed_total += 1
            raise structlog.DropEvent
        window.passed += 1
        return event_dict

    def flush(self, now: float | None = None, *, final: bool = False) -> list[dict[str, Any]]:
        """End the windows that are over (all of them if ``final``); one summary per
        window that dropped lines."""
        return self._expire(self._clock() if now is None else now, final=final)

    def _expire(self, now: float, *, final: bool = False) -> list[dict[str, Any]]:
        summaries = []
        for key, window in list(self._windows.items()):
            if now - window.started < self.window_s and not final:
                continue
            del self._windows[key]
            if window.suppressed:
                summaries.append(
                    {
                        "suppressed_event": key[0],
                        "subject": key[1],
                        "suppressed": window.suppressed,
                        "window_s": self.window_s,
                    }
                )
        return summaries


def _subject(event_dict: MutableMapping[str, Any]) -> str:
    """Whom a line is about: the terminal, else the MQTT topic, else the peer's host."""
    for name in ("terminal_id", "topic", "component_id"):
        value = event_dict.get(name)
        if value is not None:
            return f"{name}={value}"
    peer = event_dict.get("peer")
    if isinstance(peer, str):
        return f"peer={peer.rpartition(':')[0] or peer}"
    return "-"


def configured_limiter() -> RepeatLimiter | None:
    """The RepeatLimiter in structlog's configuration, if logging was set up with one."""
    for processor in structlog.get_config().get("processors", ()):
        if isinstance(processor, RepeatLimiter):
            return processor
    return None


def emit_summaries(limiter: RepeatLimiter, logger: Any, *, final: bool = False) -> int:
    """Log one ``log_suppressed`` line per window that dropped lines; how many."""
    summaries = limiter.flush(final=final)
    for summary in summaries:
        logger.warning(RepeatLimiter.SUMMARY, **summary)
    return len(summaries)


class FieldLimiter:
    """structlog processor: a text or bytes value over ``max_chars`` is cut, saying by how much.

    A log line carries what a peer sent (a topic, an error text, a payload's
    start); a peer must not be able to make one line, or the memory it takes on
    its way out, as large as it likes.
    """

    def __init__(self, max_chars: int = 1024) -> None:
        self.max_chars = max_chars

    def __call__(
        self, _logger: Any, _method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            text = value.hex() if isinstance(value, bytes | bytearray) else value
            if isinstance(text, str) and len(text) > self.max_chars:
                cut = len(text) - self.max_chars
                event_dict[key] = f"{text[: self.max_chars]}...(+{cut} chars)"
        return event_dict
