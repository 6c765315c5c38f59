"""Personal data kept out of logs and status: phone numbers are shown masked."""

from __future__ import annotations

_KEEP_HEAD = 4  # "+358": the country, which an operator needs to tell a roaming SIM
_KEEP_TAIL = 2


def mask_number(number: str) -> str:
    """A phone number with all but its first 4 and last 2 characters hidden.

    Short strings (not a number: a modem's storage name, an alphanumeric
    sender) keep at most their last 2 characters.
    """
    if len(number) <= _KEEP_HEAD + _KEEP_TAIL:
        return "*" * max(0, len(number) - _KEEP_TAIL) + number[-_KEEP_TAIL:]
    hidden = len(number) - _KEEP_HEAD - _KEEP_TAIL
    return number[:_KEEP_HEAD] + "*" * hidden + number[-_KEEP_TAIL:]
