"""Parsing of the command lines the simulated modem receives: pure functions."""

from __future__ import annotations

from firmware_sim.modem_state import PROMPT, FinalResult
from firmware_sim.sms_pdu import tpdu_length


def check_pdu(pdu: str) -> None:
    try:
        length = tpdu_length(pdu)
    except (ValueError, IndexError):
        length = 0
    if length <= 0:
        raise ValueError(f"not an SMS PDU with an SMSC field: {pdu[:40]!r}")


def is_error(final: FinalResult | None) -> bool:
    return final is not None and final.text is not None and final is not PROMPT


def split_commands(rest: str) -> list[str]:
    """``E0+CMEE=1;+CMGF=0`` -> ["E0", "+CMEE=1", "+CMGF=0"]: ';' outside quotes ends an
    extended command; basic commands run up to the next '+', '^' or '#'."""
    commands: list[str] = []
    current = ""
    quoted = False
    for char in rest:
        if char == '"':
            quoted = not quoted
        if not quoted and char == ";":
            commands.append(current)
            current = ""
            continue
        if not quoted and char in "+^#" and current and current[0] not in "+^#":
            commands.append(current)
            current = ""
        current += char
    commands.append(current)
    return [c.strip() for c in commands if c.strip()]


def parse_extended(command: str) -> tuple[str, str, list[str]]:
    """ "+CMGR=3" -> ("+CMGR", "=", ["3"]); ops: "" action, "?" read, "=?" test, "=" set."""
    upper = command.upper()
    for op in ("=?", "?", "="):
        name, sep, _ = upper.partition(op)
        if sep and "=" not in name and "?" not in name:
            if op != "=":
                return name, op, []
            raw_rest = command[len(name) + 1 :]  # keep the case of quoted arguments
            return name, "=", split_args(raw_rest)
    return upper, "", []


def split_args(text: str) -> list[str]:
    args: list[str] = []
    current = ""
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            args.append(current.strip())
            current = ""
        else:
            current += char
    args.append(current.strip())
    return args


def basic_parts(command: str) -> list[tuple[str, str]]:
    """ "E0V1&W" -> [("E", "0"), ("V", "1"), ("&W", "")]."""
    parts: list[tuple[str, str]] = []
    i = 0
    while i < len(command):
        letter = command[i]
        i += 1
        if letter == "&" and i < len(command):
            letter += command[i]
            i += 1
        digits = ""
        while i < len(command) and command[i].isdigit():
            digits += command[i]
            i += 1
        parts.append((letter, digits))
    return parts
