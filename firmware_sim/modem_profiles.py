"""How one simulated modem differs from the next: a frozen set of switches, and named presets.

A profile answers "what does this modem do on the wire", never "how is the sim
wired". Presets model the quirks of real families (the ones a gateway's modem
driver meets in the field); the fault switches (``sim_busy_s``, ``reset_on_cmgr``,
``hang_on_command``, ``capacity``...) can be set on any of them with
``dataclasses.replace`` or ``ModemProfile.parse("huawei,sim_busy_s=5")``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

CNMI_ALL_MODES = frozenset({0, 1, 2, 3})
CNMI_ALL_MTS = frozenset({0, 1, 2, 3})


@dataclass(frozen=True, slots=True)
class ModemProfile:
    """Switches of one modem model (and of the faults it shows)."""

    name: str = "generic"
    manufacturer: str = "Generic"
    model: str = "GSM Modem"
    revision: str = "1.0"
    eol: str = "\r\n"
    """What ends a response line, and what precedes it (Huawei: ``\\r\\r\\n``)."""
    echo_default: bool = True
    boot_urcs: tuple[str, ...] = ("RDY",)
    """Sent on power-up and after every reset."""
    ready_urcs: tuple[str, ...] = ("+CPIN: READY", "SMS DONE")
    """Sent once the SIM is ready (after ``sim_busy_s``, and the PIN if one is needed)."""
    unknown_command: str = "ERROR"
    """The final result for a command the modem does not know (Huawei: COMMAND NOT SUPPORT)."""
    huawei_curc: bool = False
    """``AT^CURC=0/1`` switches periodic URCs off/on; other modems answer it as unknown."""
    rssi_every_s: float = 0.0
    """Send ``^RSSI: n`` this often (0: never) until ``AT^CURC=0``."""
    memories: tuple[str, ...] = ("SM", "ME", "MT")
    first_index: int = 1
    """The index of the first storage slot (1 for most; 0 for Huawei)."""
    capacity: int = 30
    cmgr_empty: str = "OK"
    """The answer to ``AT+CMGR`` of an empty slot: ``OK`` alone, or e.g. ``+CMS ERROR: 321``."""
    cnmi_default: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    cnmi_modes: frozenset[int] = CNMI_ALL_MODES
    """``AT+CNMI`` modes accepted; others get ``cnmi_reject``."""
    cnmi_mts: frozenset[int] = CNMI_ALL_MTS
    cnmi_reject: str = "+CMS ERROR: 303"
    cmgf_default: int = 0
    wavecom_cpin: bool = False
    """``AT+CPIN?`` is answered ``+CPIN: READY`` with no final ``OK``."""
    urc_in_response: bool = False
    """URCs that come up between commands wait for the next answer with info lines and
    are sent inside it, between the info lines and the final result."""
    urc_hold_s: float = 2.0
    """With ``urc_in_response``: the longest a URC waits for such an answer."""
    creg_in_response_every: int = 0
    """Every n-th answer with info lines carries a ``+CREG: 1`` before its final result."""
    cmt_copy_every: int = 0
    """With CNMI mt=2: every n-th message is both routed (``+CMT``) and stored (``+CMTI``)."""
    sim_busy_s: float = 0.0
    """After boot, SMS commands answer ``+CME ERROR: 14`` (SIM busy) for this long."""
    reset_on_cmgr: int = 0
    """Fault: the n-th ``AT+CMGR`` after boot is cut off by a spontaneous reset (0: never)."""
    reset_cut_at: int = 12
    """How many bytes of that ``+CMGR`` answer get out before the reset."""
    hang_on_command: int = 0
    """Fault: the n-th command after boot is swallowed and the modem hangs (0: never)."""
    hang_s: float = 5.0
    network_retry_s: float = 30.0
    """While storage is full, the network tries to deliver held messages this often."""
    signal: int = 20

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.first_index not in (0, 1):
            raise ValueError("need capacity >= 1 and first_index 0 or 1")
        if self.network_retry_s <= 0 or self.hang_s < 0 or self.sim_busy_s < 0:
            raise ValueError("need network_retry_s > 0, hang_s >= 0 and sim_busy_s >= 0")
        if self.eol not in ("\r\n", "\r\r\n", "\n"):
            raise ValueError(f"eol {self.eol!r} is not one a modem uses")

    @classmethod
    def preset(cls, name: str) -> ModemProfile:
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown modem profile {name!r}; have {sorted(PRESETS)}") from None

    @classmethod
    def parse(cls, text: str) -> ModemProfile:
        """``NAME[,switch=value...]``, e.g. ``huawei,sim_busy_s=5,capacity=3``."""
        name, *switches = [part.strip() for part in text.split(",") if part.strip()]
        profile = cls.preset(name)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        changes: dict[str, object] = {}
        for switch in switches:
            key, sep, value = switch.partition("=")
            current = getattr(profile, key, None) if key in fields else None
            if not sep or key not in fields or key == "name":
                raise ValueError(
                    f"{switch!r}: expected SWITCH=VALUE with a switch of {cls.__name__}"
                )
            try:
                changes[key] = _convert(current, value)
            except ValueError as exc:
                raise ValueError(f"{switch!r}: {exc}") from None
        return dataclasses.replace(profile, **changes)  # type: ignore[arg-type]


def _convert(current: object, value: str) -> object:
    if isinstance(current, bool):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError("expected true or false")
        return value.lower() in ("1", "true", "yes")
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, frozenset):
        return frozenset(int(v) for v in value.split("/") if v)
    if isinstance(current, str):
        return value.replace("\\r", "\r").replace("\\n", "\n")
    raise ValueError("this switch cannot be set from text")


GENERIC = ModemProfile()

PRESETS: dict[str, ModemProfile] = {
    "generic": GENERIC,
    "quectel": ModemProfile(
        name="quectel",
        manufacturer="Quectel",
        model="EC25",
        revision="EC25EFAR06A06M4G",
        boot_urcs=("RDY", "+CFUN: 1"),
        ready_urcs=("+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE"),
        cnmi_default=(2, 1, 0, 0, 0),
        urc_in_response=True,
    ),
    "simcom": ModemProfile(
        name="simcom",
        manufacturer="SIMCOM_Ltd",
        model="SIMCOM_SIM800L",
        revision="1418B05SIM800L24",
        boot_urcs=("RDY", "+CFUN: 1"),
        ready_urcs=("+CPIN: READY", "Call Ready", "SMS Ready", "SMS DONE", "PB DONE"),
        cmt_copy_every=2,
    ),
    "huawei": ModemProfile(
        name="huawei",
        manufacturer="huawei",
        model="E173",
        revision="11.126.85.00.209",
        eol="\r\r\n",
        boot_urcs=("^SYSSTART",),
        ready_urcs=("+CPIN: READY",),
        unknown_command="COMMAND NOT SUPPORT",
        huawei_curc=True,
        rssi_every_s=3.0,
        memories=("SM", "ME"),
        first_index=0,
    ),
    "wavecom": ModemProfile(
        name="wavecom",
        manufacturer="WAVECOM MODEM",
        model="MULTIBAND  900E  1800",
        revision="R7.46.0.201108091301.FXT009",
        boot_urcs=("+WIND: 3",),
        ready_urcs=("+WIND: 1", "+WIND: 4"),
        wavecom_cpin=True,
        cnmi_modes=frozenset({0, 1, 3}),
        cnmi_reject="+CMS ERROR: 302",
        memories=("SM", "ME"),
    ),
    "ublox": ModemProfile(
        name="ublox",
        manufacturer="u-blox",
        model="SARA-U201",
        revision="23.60",
        boot_urcs=(),
        ready_urcs=("+CPIN: READY",),
        cmgr_empty="+CMS ERROR: 321",
        cnmi_mts=frozenset({0, 1}),
        cnmi_reject="ERROR",
    ),
    "telit": ModemProfile(
        name="telit",
        manufacturer="Telit",
        model="LE910C1-EU",
        revision="25.21.660",
        boot_urcs=("#QSS: 0",),
        ready_urcs=("#QSS: 1", "+CPIN: READY"),
        creg_in_response_every=2,
    ),
}
"""Named presets; what sets each apart from ``generic``:

- ``quectel``: boot URCs up to ``+QIND: SMS DONE``; CNMI defaults to 2,1; URCs that
  come up between commands arrive inside the next answer with info lines.
- ``simcom``: ``Call Ready``/``SMS Ready``/``PB DONE``; with CNMI mt=2 every 2nd
  message is routed as ``+CMT`` *and* stored with ``+CMTI`` (process it once).
- ``huawei``: ``\\r\\r\\n`` line ends; ``^RSSI`` every 3 s until ``AT^CURC=0``;
  ``COMMAND NOT SUPPORT`` for unknown commands; storage indexes from 0; no MT memory.
- ``wavecom``: ``AT+CPIN?`` answers ``+CPIN: READY`` with no ``OK``; rejects CNMI
  mode 2 (``+CMS ERROR: 302``), so the driver must fall back to mode 1; ``+WIND`` URCs.
- ``ublox``: ``AT+CMGR`` of an empty slot is ``+CMS ERROR: 321``; CNMI mt 2/3 refused
  with ``ERROR``; no boot URCs.
- ``telit``: every 2nd answer with info lines carries a ``+CREG: 1`` before its result.
"""
