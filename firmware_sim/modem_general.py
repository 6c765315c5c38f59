"""The simulated modem's general commands: basic (E, Z, I), error reporting, SIM PIN,
identification, message format, indications, signal and registration.

Each handler is ``(op, args) -> Answer``; ``op`` is "", "?", "=?" or "=".
"""

from __future__ import annotations

from firmware_sim.modem_parse import basic_parts
from firmware_sim.modem_state import NO_FINAL, Answer, FinalResult, ModemState


class GeneralCommands(ModemState):
    """Commands that are not about stored messages."""

    def _basic(self, command: str) -> Answer:
        p = self.profile
        for letter, digits in basic_parts(command):
            if letter == "E" and digits in ("", "0", "1"):
                self.settings.echo = digits == "1"
            elif letter in ("Z", "&F") and digits in ("", "0"):
                self.settings = self._defaults()
            elif letter == "I" and digits in ("", "0"):
                return [p.manufacturer, p.model, f"Revision: {p.revision}"], None
            elif not ((letter in ("V", "Q") and digits in ("", "0", "1")) or letter == "&W"):
                return [], FinalResult(p.unknown_command)
        return [], None

    def _at_cmee(self, op: str, args: list[str]) -> Answer:
        if op == "?":
            return [f"+CMEE: {self.settings.cmee}"], None
        if op == "=?":
            return ["+CMEE: (0-2)"], None
        value = int(args[0]) if op == "=" else 0
        if value not in (0, 1, 2):
            raise ValueError(value)
        self.settings.cmee = value
        return [], None

    def _at_cpin(self, op: str, args: list[str]) -> Answer:
        if op == "?":
            state = "READY" if self._sim_state == "ready" else "SIM PIN"
            return [f"+CPIN: {state}"], NO_FINAL if self.profile.wavecom_cpin else None
        if op == "=?":
            return [], None
        if op != "=" or self._sim_state == "ready":
            return [], self._cme(3)
        if self._sim_state == "busy":
            return [], self._cme(14)
        if args[0].strip('"') != self.pin:
            return [], self._cme(16)
        self._pin_ok = True  # the ready URCs follow the OK (tick after the answer)
        return [], None

    def _at_cfun(self, op: str, args: list[str]) -> Answer:
        if op == "?":
            return ["+CFUN: 1"], None
        if op == "=?":
            return ["+CFUN: (0,1,4),(0-1)"], None
        if op != "=" or int(args[0]) not in (0, 1, 4):
            raise ValueError(op)
        return [], None  # "+CFUN=1,1" resets after the OK (see _command_line)

    def _at_ident(self, op: str, args: list[str], value: str) -> Answer:
        if op not in ("", "=?"):
            raise ValueError(op)
        return ([value] if op == "" else []), None

    def _at_cgmi(self, op: str, args: list[str]) -> Answer:
        return self._at_ident(op, args, self.profile.manufacturer)

    def _at_cgmm(self, op: str, args: list[str]) -> Answer:
        return self._at_ident(op, args, self.profile.model)

    def _at_cgmr(self, op: str, args: list[str]) -> Answer:
        return self._at_ident(op, args, self.profile.revision)

    def _at_cgsn(self, op: str, args: list[str]) -> Answer:
        return self._at_ident(op, args, "867962041234567")

    def _at_cmgf(self, op: str, args: list[str]) -> Answer:
        if op == "?":
            return [f"+CMGF: {self.settings.cmgf}"], None
        if op == "=?":
            return ["+CMGF: (0,1)"], None
        value = int(args[0]) if op == "=" else 0
        if value not in (0, 1):
            raise ValueError(value)
        self.settings.cmgf = value
        return [], None

    def _at_cnmi(self, op: str, args: list[str]) -> Answer:
        p = self.profile
        if op == "?":
            return ["+CNMI: " + ",".join(str(v) for v in self.settings.cnmi)], None
        if op == "=?":
            modes = ",".join(str(m) for m in sorted(p.cnmi_modes))
            mts = ",".join(str(m) for m in sorted(p.cnmi_mts))
            return [f"+CNMI: ({modes}),({mts}),(0,2),(0-2),(0,1)"], None
        if op != "=" or not 1 <= len(args) <= 5:
            raise ValueError(op)
        values = list(self.settings.cnmi)
        for i, arg in enumerate(args):
            if arg.strip():
                values[i] = int(arg)
        if values[0] not in p.cnmi_modes or values[1] not in p.cnmi_mts:
            return [], FinalResult(p.cnmi_reject)
        if not (values[2] in (0, 2) and 0 <= values[3] <= 2 and values[4] in (0, 1)):
            return [], self._cms(303)
        self.settings.cnmi = (values[0], values[1], values[2], values[3], values[4])
        return [], None

    def _at_csq(self, op: str, args: list[str]) -> Answer:
        if op == "=?":
            return ["+CSQ: (0-31,99),(0-7,99)"], None
        if op:
            raise ValueError(op)
        return [f"+CSQ: {self.signal},99"], None

    def _at_creg(self, op: str, args: list[str]) -> Answer:
        if op == "?":
            return [f"+CREG: {self.settings.creg},1"], None
        if op == "=?":
            return ["+CREG: (0-2)"], None
        value = int(args[0]) if op == "=" else 0
        if value not in (0, 1, 2):
            raise ValueError(value)
        self.settings.creg = value
        return [], None

    def _at_curc(self, op: str, args: list[str]) -> Answer:
        if op == "?":
            return [f"^CURC: {int(self.settings.curc)}"], None
        if op != "=" or args[0] not in ("0", "1"):
            raise ValueError(op)
        self.settings.curc = args[0] == "1"
        return [], None
