"""Composition root: builds every part from one Config and runs them together.

Shutdown order: stop accepting, let connections answer what they hold, stop
the outbox writer once nothing waits on it, forward what is left, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.backoff import Backoff
from gateway.errors import GatewayError, StoreError
from gateway.intake.forwarder import Forwarder
from gateway.intake.ingest import Ingest
from gateway.intake.outbox import Outbox
from gateway.ops.operations import Operations
from gateway.ops.stats import StatsReporter
from gateway.registry.config import Config
from gateway.registry.source import registry_for
from gateway.registry.terminals import Registry, load_registry
from gateway.stores import CentralStore, open_store
from gateway.transports.modem import Modem
from gateway.transports.mqtt import MqttIngest
from gateway.transports.sms import SmsIntake
from gateway.transports.tcp import TcpServer, server_ssl_context

log = structlog.get_logger("gateway.app")

SHUTDOWN_GRACE_S = 10.0
SMS_EXPIRY_INTERVAL_S = 300.0


@dataclass
class Gateway:
    """A running gateway; tests and the demo use its parts directly."""

    config: Config
    registry: Registry
    outbox: Outbox
    store: CentralStore
    ingest: Ingest
    forwarder: Forwarder
    tcp: TcpServer | None
    mqtt: MqttIngest | None
    sms: SmsIntake | None = None
    modem: Modem | None = None
    registry_in_store: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)


async def build(config: Config, *, clock: Callable[[], float] = time.time) -> Gateway:
    if config.gateway.registry is not None:  # a bad file stops the start before anything opens
        load_registry(config.path(config.gateway.registry))
    outbox = await Outbox.open(
        config.outbox_path,
        max_mb=config.gateway.outbox_max_mb,
        batch_max=config.gateway.commit_batch_max,
    )
    try:
        # Lazy: a gateway starts and takes presses while its central store is down.
        store = await open_store(config.store_url(), lazy=True)
    except BaseException:
        await outbox.close()
        raise
    registry, from_store = await registry_for(config, store)
    ingest = Ingest(registry, outbox)
    forwarder = Forwarder(
        outbox, store, batch=config.store.forward_batch, retry_max_s=config.store.retry_max_s
    )
    tcp = None
    if config.tcp is not None:
        tls = None
        if config.tcp.tls_cert is not None and config.tcp.tls_key is not None:
            tls = server_ssl_context(
                str(config.path(config.tcp.tls_cert)), str(config.path(config.tcp.tls_key))
            )
        tcp = TcpServer(config.tcp, ingest, registry, clock=clock, ssl_context=tls)
    mqtt = MqttIngest(config, ingest, registry, clock=clock) if config.mqtt is not None else None
    gateway = Gateway(config, registry, outbox, store, ingest, forwarder, tcp, mqtt)
    if config.sms is not None:
        gateway.sms = SmsIntake(
            registry,
            outbox,
            reassembly_timeout_s=config.sms.reassembly_timeout_h * 3600,
            clock=clock,
        )
        gateway.modem = Modem(config.sms, gateway.sms.take)
    gateway.registry_in_store = from_store
    with contextlib.suppress(StoreError):  # logged; run() retries it
        await _import_registry(gateway)
    return gateway


async def _import_registry(gateway: Gateway) -> None:
    registry = gateway.registry
    if not registry.terminals or gateway.registry_in_store:
        gateway.registry_in_store = True
        return
    try:
        summary = await gateway.store.import_registry(registry)
    except StoreError as exc:
        log.warning("registry_import_deferred", error=str(exc))
        raise
    gateway.registry_in_store = True
    log.info("registry_loaded", terminals=len(registry.terminals), **vars_of(summary))


async def _import_registry_until_done(gateway: Gateway) -> None:
    """Retry the registry import while the store is unreachable, then stay idle."""
    backoff = Backoff(initial=1.0, cap=gateway.config.store.retry_max_s)
    while not gateway.registry_in_store:
        try:
            await _import_registry(gateway)
        except StoreError:
            await asyncio.sleep(backoff.next_delay())
    await asyncio.Event().wait()


def vars_of(summary: object) -> dict[str, object]:
    slots = getattr(type(summary), "__slots__", ())
    return {name: getattr(summary, name) for name in slots}


async def run(gateway: Gateway, *, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or the task is cancelled, then shut down in order."""
    stop = stop or asyncio.Event()
    # systemd notify, health port, fleet status (gateway/ops/operations.py); the modem's status
    # adds an sms readiness check and the modem metrics.
    ops = Operations(gateway, modem=gateway.modem.status if gateway.modem is not None else None)
    stats = StatsReporter(gateway, interval_s=gateway.config.gateway.stats_interval_s)
    writer = asyncio.create_task(gateway.outbox.run(), name="outbox-writer")
    forwarder = asyncio.create_task(gateway.forwarder.run(), name="forwarder")
    reporter = asyncio.create_task(stats.run(), name="stats")
    mqtt = asyncio.create_task(_run_mqtt(gateway), name="mqtt")
    importer = asyncio.create_task(_import_registry_until_done(gateway), name="registry")
    modem = asyncio.create_task(_run_modem(gateway), name="modem")
    api_stop = asyncio.Event()
    api = asyncio.create_task(_run_api(gateway, api_stop), name="api")
    background = (writer, forwarder, reporter, mqtt, importer, modem, api)
    stopped = asyncio.create_task(stop.wait(), name="stop")
    try:
        if gateway.tcp is not None:
            await gateway.tcp.start()
        await ops.start()  # READY=1 once the transports listen
        gateway.started.set()
        log.info("gateway_started", gateway_id=gateway.outbox.gateway_id)
        done, _ = await asyncio.wait({stopped, *background}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopped:
                task.result()  # a background task died: raise its error
    finally:
        await _finish(stopped)
        api_stop.set()  # the API returns by itself; _shutdown waits for it
        ops.stopping()  # STOPPING=1, /readyz 503; the watchdog keeps pinging until close()
        try:
            await _shutdown(gateway, background)
        finally:
            await ops.close()


async def _run_mqtt(gateway: Gateway) -> None:
    if gateway.mqtt is not None:
        await gateway.mqtt.run()
    else:
        await asyncio.Event().wait()  # off: wait with the others until shutdown


async def _run_modem(gateway: Gateway) -> None:
    if gateway.modem is None or gateway.sms is None:
        await asyncio.Event().wait()  # off: wait with the others until shutdown
        return
    async with asyncio.TaskGroup() as group:
        group.create_task(gateway.modem.run())
        group.create_task(_expire_sms_parts(gateway.sms))


async def _run_api(gateway: Gateway, stop: asyncio.Event) -> None:
    """The query API inside ``run`` when ``[api]`` is configured; it never stops intake."""
    if gateway.config.api is None:
        await stop.wait()  # nothing to serve: done as soon as shutdown starts
        return
    from gateway.api import serve_api  # noqa: PLC0415 - the web stack only when serving

    try:
        await serve_api(gateway.config, stop, wait_for_store=True)
    except (GatewayError, OSError) as exc:
        log.error(
            "api_failed",
            error=str(exc),
            component="api",
            action="fix [api] (is the port free?) and restart; presses are still taken",
        )
        await stop.wait()


async def _expire_sms_parts(sms: SmsIntake) -> None:
    while True:
        with contextlib.suppress(GatewayError):  # OutboxBusy: try again next round
            await sms.expire()
        await asyncio.sleep(SMS_EXPIRY_INTERVAL_S)


async def _shutdown(gateway: Gateway, background: tuple[asyncio.Task[None], ...]) -> None:
    writer, forwarder, reporter, mqtt, importer, modem, api = background
    await asyncio.wait({api}, timeout=SHUTDOWN_GRACE_S)  # queries first: they only read
    await _finish(api)
    # Unacknowledged MQTT messages stay with the broker and come back on restart;
    # a message being taken from the modem is deleted only after its commit.
    await _finish(mqtt)
    await _finish(modem)
    if gateway.tcp is not None:
        await gateway.tcp.stop_accepting()
        await gateway.tcp.close_connections(grace_s=SHUTDOWN_GRACE_S)
    # The batch in hand and the drain share one budget: forwarding ends by this time.
    forwarding_ends = asyncio.get_running_loop().time() + SHUTDOWN_GRACE_S
    try:  # let the batch in hand reach the store: a write cut off mid-way is left open
        async with asyncio.timeout_at(forwarding_ends), gateway.forwarder.between_batches():
            await _finish(forwarder)
    except TimeoutError:
        await _finish(forwarder)
    for task in (reporter, importer):
        await _finish(task)
    if not writer.done():
        try:
            async with asyncio.timeout_at(forwarding_ends):
                await gateway.forwarder.drain()
        except (TimeoutError, GatewayError) as exc:
            log.warning("shutdown_left_backlog", error=str(exc) or type(exc).__name__)
    await _finish(writer)
    await gateway.store.close()
    await gateway.outbox.close()
    log.info("gateway_stopped")


async def _finish(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it; an error it died of was raised already, by run()."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
