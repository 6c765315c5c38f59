"""Bulk packing for fixed-size construct layouts.

A PRESSES frame carries up to 680 records. Parsing each through construct
costs about 12 us a record, which would make the codec the gateway's
bottleneck. The layouts stay declared once, in construct; for arrays of
fixed-size records this module derives the equivalent ``struct.Struct`` from
that declaration, so ``iter_unpack`` and ``pack`` handle the bulk.
"""

from __future__ import annotations

import struct

import construct as cs


def packing_of(layout: cs.Struct) -> struct.Struct:
    """The ``struct`` format equal to ``layout``, a Struct of big-endian fixed-size fields."""
    codes = []
    for field in layout.subcons:
        inner = field.subcon if isinstance(field, cs.Renamed) else field
        fmt = getattr(inner, "fmtstr", None)
        if not isinstance(inner, cs.FormatField) or not isinstance(fmt, str) or fmt[0] != ">":
            raise TypeError(f"field {field.name!r} is not a big-endian fixed-size number")
        codes.append(fmt[1:])
    packing = struct.Struct(">" + "".join(codes))
    if packing.size != layout.sizeof():
        raise TypeError("layout has padding or variable parts")
    return packing
