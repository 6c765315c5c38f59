"""``python -m firmware_sim``: see ``firmware_sim.cli``."""

from __future__ import annotations

import sys

from firmware_sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
