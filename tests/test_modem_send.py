"""The modem driver sending SMS over a pseudo-terminal to the simulated modem, while
HOURLY messages come in: AT+CMGS with the prompt, the references, status reports
matched to each part, transient errors retried by the caller, permanent ones reported."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from firmware_sim.modem_profiles import PRESETS, ModemProfile
from firmware_sim.modem_server import PtyModemServer
from firmware_sim.sms_terminal import SmsFleet, SmsFleetOptions
from gateway.errors import SendRefused, SendUnknown
from gateway.registry.config import SmsSection
from gateway.transports.modem import Modem
from protocols.sms_pdu import DeliveryOutcome, StatusReport
from protocols.sms_submit import encode_submit
from tests.support import KEYS


async def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110  (state of another task)
            await asyncio.sleep(0.02)


@dataclass
class Sinks:
    """What the driver handed over; a commit is the append (then the modem deletes)."""

    taken: list[str] = field(default_factory=list)
    reports: list[StatusReport] = field(default_factory=list)
    refuse_reports: bool = False
    """The sink cannot commit (its store is down): it raises."""
    report_attempts: int = 0

    async def take(self, pdu: str, source: str) -> str:
        self.taken.append(pdu.upper())
        return "taken"

    async def report(self, report: StatusReport) -> None:
        self.report_attempts += 1
        if self.refuse_reports:
            raise OSError("the store is down")
        self.reports.append(report)


@contextlib.asynccontextmanager
async def driven(
    profile: str = "generic,network_retry_s=0.3", *, submit_answer_s: float = 60.0
) -> AsyncIterator[tuple[PtyModemServer, Modem, Sinks]]:
    sim = PtyModemServer(ModemProfile.parse(profile))
    sinks = Sinks()
    async with sim:
        section = SmsSection(port=sim.path, command_timeout_s=3.0, poll_interval_s=5.0)
        modem = Modem(section, sinks.take, sinks.report, submit_answer_s=submit_answer_s)
        task = asyncio.create_task(modem.run(), name="modem")
        try:
            await eventually(lambda: modem.status.ready)
            yield sim, modem, sinks
        finally:
            task.cancel()
            await asyncio.wait({task})


async def send_text(modem: Modem, text: str, number: str, ref: int) -> list[int]:
    """What a durable queue does, minus the queue: each part, retrying transient errors."""
    references = []
    for part in encode_submit(text, number, concat_reference=ref).parts:
        for _ in range(5):
            try:
                references.append(await modem.send(part))
                break
            except SendRefused as exc:
                if not exc.transient:
                    raise
                await asyncio.sleep(0.05)
        else:
            pytest.fail(f"part {part.index} to {number} kept failing")
    return references


TEXTS = (
    "How likely are you to recommend us? Reply with a number from 0 to 10.",
    "Wie wahrscheinlich empfehlen Sie uns weiter? Antworten Sie mit 0 bis 10. " * 3,
    "Recommanderiez-vous notre magasin ? Répondez de 0 à 10 — merci ! 😀",
)


@pytest.mark.parametrize("profile", list(PRESETS))
async def test_sends_interleaved_with_incoming_hourly_messages(profile: str) -> None:
    async with driven(f"{profile},network_retry_s=0.3") as (sim, modem, sinks):
        assert modem.reports_enabled
        delivered: list[str] = []

        def deliver(pdu: str) -> None:
            delivered.append(pdu.strip().upper())
            sim.deliver(pdu)

        keys = {t: KEYS[t] for t in (1001, 1002)}
        fleet = SmsFleet(keys, deliver, SmsFleetOptions(seed=5, notices_per_day=2.0))

        async def incoming() -> None:
            for _ in range(24):
                fleet.advance(hours=1)
                await asyncio.sleep(0.02)

        people = [f"+3247000{n:04d}" for n in range(30)]
        sends = [send_text(modem, TEXTS[n % 3], number, ref=n) for n, number in enumerate(people)]
        feeding = asyncio.create_task(incoming())
        references = await asyncio.gather(*sends)
        await feeding

        # What each person received, whole, and the references the driver returned.
        received = {m.destination: m for m in sim.network.received}
        assert set(received) == set(people)
        for n, number in enumerate(people):
            assert received[number].text == TEXTS[n % 3]
            assert list(received[number].mrs) == references[n]
        parts = sum(len(r) for r in references)
        assert parts == len(sim.network.parts) > len(people)

        # A status report for every part, matched by reference and number.
        await eventually(lambda: len(sinks.reports) == parts)
        sent = {
            (mr, number) for number, refs in zip(people, references, strict=True) for mr in refs
        }
        reported = {(r.message_reference, r.recipient) for r in sinks.reports}
        assert reported == sent
        assert {r.outcome for r in sinks.reports} == {DeliveryOutcome.DELIVERED}

        # Every incoming message taken once and deleted, the reports deleted too.
        await eventually(lambda: sim.all_taken and sim.stored_now == 0)
        assert Counter(sinks.taken) == Counter(delivered)
        assert sim.counters.reports_stored == parts
        assert modem.status.reports_taken == parts


async def test_a_transient_error_is_retried_and_a_permanent_one_reported() -> None:
    async with driven() as (sim, modem, sinks):
        part = encode_submit("Reply 0-10", "+32470000001").parts[0]
        sim.network.fail_next(332, 314)
        for code in (332, 314):
            with pytest.raises(SendRefused) as refused:
                await modem.send(part)
            assert (refused.value.code, refused.value.transient) == (code, True)
        assert sim.network.received == []
        reference = await modem.send(part)  # the caller's retry goes through
        assert [m.mrs for m in sim.network.received] == [(reference,)]

        sim.network.refused["+32470000002"] = 21
        with pytest.raises(SendRefused) as refused:
            await modem.send(encode_submit("Reply 0-10", "+32470000002").parts[0])
        assert (refused.value.code, refused.value.transient) == (21, False)

        sim.network.unreachable.add("+32470000003")
        lost = await modem.send(encode_submit("Reply 0-10", "+32470000003").parts[0])
        await eventually(lambda: len(sinks.reports) == 2)
        outcomes = {r.message_reference: r.outcome for r in sinks.reports}
        assert outcomes == {
            reference: DeliveryOutcome.DELIVERED,
            lost: DeliveryOutcome.FAILED_PERMANENT,
        }
        assert [m.destination for m in sim.network.received] == ["+32470000001"]
        await eventually(lambda: sim.stored_now == 0)


async def test_a_report_stays_on_the_modem_until_the_sink_commits() -> None:
    async with driven() as (sim, modem, sinks):
        sinks.refuse_reports = True
        await modem.send(encode_submit("Reply 0-10", "+32470000004").parts[0])
        await eventually(lambda: sinks.report_attempts == 1)
        await modem.at("AT")  # the driver is done with the indication
        assert sim.stored_now == 1
        assert modem.status.reports_taken == 0
        sinks.refuse_reports = False
        await modem.sweep()  # the periodic sweep finds it again
        assert [r.recipient for r in sinks.reports] == ["+32470000004"]
        assert sim.stored_now == 0


async def test_a_send_whose_answer_never_comes_is_unknown_not_refused() -> None:
    """The person got it, the driver cannot know: SendUnknown, so a queue that marked
    the request as being sent leaves it UNKNOWN and never sends it again."""
    profile = "generic,network_retry_s=0.3,hang_s=1.0"
    async with driven(profile, submit_answer_s=0.5) as (sim, modem, _):
        sim.network.lose_answer_next()
        with pytest.raises(SendUnknown):
            await modem.send(encode_submit("Reply 0-10", "+32470000005").parts[0])
        assert [m.destination for m in sim.network.received] == ["+32470000005"]
        await eventually(lambda: modem.status.ready and not sim.core.hung)
        part = encode_submit("Reply 0-10", "+32470000006").parts[0]
        for _ in range(50):  # the driver finds the modem again and re-initialises it
            try:
                await modem.send(part)
                break
            except SendRefused as exc:
                if not exc.transient:
                    raise
                await asyncio.sleep(0.1)
        assert [m.destination for m in sim.network.received][-1] == "+32470000006"
