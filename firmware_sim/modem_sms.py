"""The simulated modem's SMS commands: storage (+CPMS), listing and reading (+CMGL,
+CMGR), deleting (+CMGD), and PDU input after the ``> `` prompt (+CMGS, +CMGW).

Each handler is ``(op, args) -> Answer``; ``op`` is "", "?", "=?" or "=".
"""

from __future__ import annotations

from firmware_sim.modem_parse import check_pdu
from firmware_sim.modem_state import (
    NO_FINAL,
    PROMPT,
    Answer,
    FinalResult,
    ModemState,
    PendingInput,
    StoredMessage,
)
from firmware_sim.sms_pdu import tpdu_length


class SmsCommands(ModemState):
    """Commands on stored and submitted messages."""

    def _at_cpms(self, op: str, args: list[str]) -> Answer:
        if op == "?":
            usage = self._usage()
            return ["+CPMS: " + ",".join(f'"{m}",{usage}' for m in self.settings.mems)], None
        if op == "=?":
            known = ",".join(f'"{m}"' for m in self.profile.memories)
            return [f"+CPMS: ({known}),({known}),({known})"], None
        if op != "=" or not 1 <= len(args) <= 3:
            raise ValueError(op)
        names = [a.strip().strip('"').upper() for a in args]
        if any(name not in self.profile.memories for name in names):
            return [], self._cms(302)
        mems = list(self.settings.mems)
        mems[: len(names)] = names
        self.settings.mems = (mems[0], mems[1], mems[2])
        return ["+CPMS: " + ",".join([self._usage()] * 3)], None

    def _at_cmgl(self, op: str, args: list[str]) -> Answer:
        if op == "=?":
            return ["+CMGL: (0-4)"], None
        if self.settings.cmgf != 0:
            return [], self._cms(302)  # text mode listings are not simulated
        stat = int(args[0]) if op == "=" else 0
        if not 0 <= stat <= 4:
            return [], self._cms(304)
        lines: list[str] = []
        for index, message in self.storage().items():
            if stat in (4, message.stat):
                lines += [f"+CMGL: {index},{message.stat},,{message.length}", message.pdu]
                if message.stat == 0:
                    message.stat = 1
        return lines, None

    def _at_cmgr(self, op: str, args: list[str]) -> Answer:
        if op == "=?":
            return [], None
        if op != "=":
            raise ValueError(op)
        if self.settings.cmgf != 0:
            return [], self._cms(302)
        slot = self._slot(args[0])
        if slot is None:
            return [], self._cms(321)
        message = self.slots[slot]
        if message is None:
            self.counters.empty_reads += 1
            return [], (
                None if self.profile.cmgr_empty == "OK" else FinalResult(self.profile.cmgr_empty)
            )
        lines = [f"+CMGR: {message.stat},,{message.length}", message.pdu]
        if message.stat == 0 and self._cmgr_count + 1 != self.profile.reset_on_cmgr:
            message.stat = 1  # a read cut off by a reset leaves the message unread
        return lines, None

    def _at_cmgd(self, op: str, args: list[str]) -> Answer:
        if op == "=?":
            first = self.profile.first_index
            return [f"+CMGD: ({first}-{first + len(self.slots) - 1}),(0-4)"], None
        if op != "=":
            raise ValueError(op)
        flag = int(args[1]) if len(args) > 1 and args[1].strip() else 0
        if flag:
            keep = {1: {0, 2, 3}, 2: {0, 2}, 3: {0}, 4: set()}.get(flag)
            if keep is None:
                return [], self._cms(302)
            for i, message in enumerate(self.slots):
                if message is not None and message.stat not in keep:
                    self.slots[i] = None
                    self.counters.deleted += 1
            return [], None
        slot = self._slot(args[0])
        if slot is None or self.slots[slot] is None:
            self.counters.empty_deletes += 1
            return [], self._cms(321)
        self.slots[slot] = None
        self.counters.deleted += 1
        return [], None

    def _at_prompt(self, name: str, op: str, args: list[str]) -> Answer:
        if op == "=?":
            return [], None
        if op != "=" or self.settings.cmgf != 0:
            return [], self._cms(302)
        length = int(args[0])
        if not 7 <= length <= 164:
            return [], self._cms(304)
        if name == "+CMGW" and self._free_slot() is None:
            return [], self._cms(322)
        self._prompt = PendingInput(name, length)
        return [], PROMPT

    def _at_cmgs(self, op: str, args: list[str]) -> Answer:
        return self._at_prompt("+CMGS", op, args)

    def _at_cmgw(self, op: str, args: list[str]) -> Answer:
        return self._at_prompt("+CMGW", op, args)

    def _submit(self, prompt: PendingInput) -> Answer:
        pdu = prompt.data.decode("latin-1").strip().upper()
        try:
            check_pdu(pdu)
        except ValueError:
            return [], self._cms(304)
        if tpdu_length(pdu) != prompt.length:
            return [], self._cms(304)
        if prompt.command == "+CMGS":
            mr = (self._mr + 1) % 256
            try:
                code = self.network.submit(pdu, mr, self.clock())
            except (ValueError, IndexError, KeyError, UnicodeError):
                return [], self._cms(304)  # not an SMS-SUBMIT the network reads
            if code is not None:
                return [], self._cms(code)
            self._mr = mr
            self.counters.submitted.append(pdu)
            if self.network.answers_to_lose:
                self.network.answers_to_lose -= 1
                self.hang(self.profile.hang_s)  # sent, and the answer never comes
                return [], NO_FINAL
            return [f"+CMGS: {mr}"], None
        index = self._free_slot()
        if index is None:
            return [], self._cms(322)
        self.slots[index] = StoredMessage(pdu, stat=2)
        return [f"+CMGW: {index + self.profile.first_index}"], None
