"""What the modem driver knows of its modem, and the parsing of its answer lines."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ModemStatus:
    """What operations staff see of the modem (stats line, /metrics, status)."""

    port_open: bool = False
    ready: bool = False
    manufacturer: str = ""
    model: str = ""
    sim: str = "unknown"
    signal_rssi: int | None = None  # 0..31, None when unknown (+CSQ 99)
    registration: int | None = None  # +CREG stat: 1 home, 5 roaming
    storage: str = ""
    storage_used: int | None = None
    storage_total: int | None = None
    messages_taken: int = 0
    reports_taken: int = 0
    """Status reports the report sink committed."""
    sent: int = 0
    """SMS-SUBMITs the modem answered with a reference."""
    sends_refused: int = 0
    deletes: int = 0
    resets_seen: int = 0
    reopens: int = 0
    timeouts: int = 0
    last_error: str = ""
    last_contact: float = field(default=0.0)

    @property
    def signal_dbm(self) -> int | None:
        return None if self.signal_rssi is None else -113 + 2 * self.signal_rssi

    @property
    def registered(self) -> bool:
        return self.registration in (1, 5)


def is_hex(text: str) -> bool:
    return bool(text) and len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text)


def first_int(text: str) -> int | None:
    head = text.strip().split(",")[0].strip()
    return int(head) if head.isdigit() else None


def last_int(text: str) -> int | None:
    tail = text.strip().split(",")[-1].strip()
    return int(tail) if tail.isdigit() else None


def rssi(value: int | None) -> int | None:
    return value if value is not None and 0 <= value <= 31 else None


def registration(value: str, *, unsolicited: bool) -> int | None:
    """The stat of ``+CREG: [n,]stat[,...]``: first field unsolicited, second when asked."""
    fields = [f.strip() for f in value.split(",")]
    pick = fields[0] if unsolicited or len(fields) < 2 else fields[1]
    return int(pick) if pick.isdigit() else None
