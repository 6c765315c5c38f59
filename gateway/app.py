"""Composition root: builds every part from one frozen Config and runs them together.

:func:`build` makes the parts, each handed only what it uses; :func:`run`
starts them under one :class:`~gateway.supervisor.Supervisor` (a part that is
off is not started) and, when asked to stop or when a part fails, shuts down
in this order:

1. the query API (it only reads; it gets a grace period to finish requests);
2. intake that needs no goodbye: MQTT (unacknowledged messages stay with the
   broker and come back), the modem (a message is deleted only after its
   commit), the SMS part expiry;
3. TCP: stop accepting, stop reading, let queued answers go out (grace period);
4. the forwarder, between two batches (a write is never cut off mid-way);
5. the stats line and the registry import;
6. one last drain of the outbox into the store, within the same grace;
7. the outbox writer, then the store and the outbox are closed.

Operations (systemd notify, health port, housekeeping) start once the
transports listen and close last.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from gateway.errors import GatewayError, StoreError
from gateway.intake.forwarder import Forwarder
from gateway.intake.ingest import Ingest
from gateway.intake.outbox import Outbox
from gateway.intake.store_seq import StoreSeq
from gateway.ops.operations import Operations
from gateway.ops.stats import StatsReporter
from gateway.ops.views import Observed
from gateway.registry.config import Config
from gateway.registry.source import RegistryImport, registry_for
from gateway.registry.terminals import Registry, load_registry
from gateway.stores import CentralStore, open_reader, open_store
from gateway.supervisor import Supervisor
from gateway.transports.modem import Modem
from gateway.transports.mqtt import MqttIngest
from gateway.transports.sms import SmsIntake
from gateway.transports.tcp import TcpServer, server_ssl_context
from gateway.transports.web import WebSmileys

log = structlog.get_logger("gateway.app")

SHUTDOWN_GRACE_S = 10.0
SMS_EXPIRY_INTERVAL_S = 300.0
WEB_EXPIRY_INTERVAL_S = 3600.0


@dataclass(frozen=True, slots=True)
class Sms:
    """The SMS transport: the modem driver and the sink it hands messages to."""

    modem: Modem
    intake: SmsIntake


@dataclass(frozen=True, slots=True)
class Gateway:
    """The parts of one gateway, built by :func:`build`; tests and the demo read them."""

    config: Config
    registry: Registry
    outbox: Outbox
    store: CentralStore
    ingest: Ingest
    forwarder: Forwarder
    registry_import: RegistryImport
    store_seq: StoreSeq
    tcp: TcpServer | None = None
    mqtt: MqttIngest | None = None
    sms_transport: Sms | None = None
    web: WebSmileys | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sms(self) -> SmsIntake | None:
        return self.sms_transport.intake if self.sms_transport is not None else None

    @property
    def modem(self) -> Modem | None:
        return self.sms_transport.modem if self.sms_transport is not None else None

    @property
    def registry_in_store(self) -> bool:
        return self.registry_import.done

    def observed(self) -> Observed:
        """The read-only view operations get (health port, stats line)."""
        health = self.config.health
        if health is not None and health.console_password_file is not None:
            password_file = self.config.path(health.console_password_file)
            health = dataclasses.replace(health, console_password_file=password_file)
        return Observed(
            health=health,
            data_dir=self.config.data_dir,
            registry=self.registry,
            counters=self.ingest.counters,
            fleet=self.ingest.fleet,
            outbox=self.outbox,
            forwarder=self.forwarder,
            store=self.store,
            tcp=self.tcp,
            mqtt=self.mqtt,
            modem=self.modem.status if self.modem is not None else None,
            sms=self.sms.counters if self.sms is not None else None,
            web=self.web.counters if self.web is not None else None,
        )


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
    store_url = config.store_url()
    store_seq = StoreSeq(lambda: open_reader(store_url))
    ingest = Ingest(registry, outbox, store_seq)
    gateway = Gateway(
        config=config,
        registry=registry,
        outbox=outbox,
        store=store,
        ingest=ingest,
        forwarder=Forwarder(
            outbox, store, batch=config.store.forward_batch, retry_max_s=config.store.retry_max_s
        ),
        registry_import=RegistryImport(registry, store, from_store=from_store),
        store_seq=store_seq,
        tcp=_tcp(config, ingest, registry, clock),
        mqtt=MqttIngest(config, ingest, registry, clock=clock) if config.mqtt else None,
        sms_transport=_sms(config, ingest, registry, clock),
        web=WebSmileys(config, registry, ingest, clock=clock) if config.web else None,
    )
    with contextlib.suppress(StoreError):  # logged; run() retries it
        await gateway.registry_import.once()
    return gateway


def _tcp(
    config: Config, ingest: Ingest, registry: Registry, clock: Callable[[], float]
) -> TcpServer | None:
    if config.tcp is None:
        return None
    tls = None
    if config.tcp.tls_cert is not None and config.tcp.tls_key is not None:
        tls = server_ssl_context(
            str(config.path(config.tcp.tls_cert)), str(config.path(config.tcp.tls_key))
        )
    return TcpServer(config.tcp, ingest, registry, clock=clock, ssl_context=tls)


def _sms(
    config: Config, ingest: Ingest, registry: Registry, clock: Callable[[], float]
) -> Sms | None:
    if config.sms is None:
        return None
    intake = SmsIntake(
        registry, ingest, reassembly_timeout_s=config.sms.reassembly_timeout_h * 3600, clock=clock
    )
    return Sms(Modem(config.sms, intake.take), intake)


async def run(gateway: Gateway, *, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or the task is cancelled, then shut down in order."""
    stop = stop or asyncio.Event()
    ops = Operations(gateway.observed())
    parts = Supervisor()
    api_stop = asyncio.Event()
    web_stop = asyncio.Event()
    parts.start("outbox-writer", gateway.outbox.run())
    parts.start("forwarder", gateway.forwarder.run())
    parts.start("stats", _stats(gateway, ops))
    if not gateway.registry_import.done:
        parts.start(
            "registry-import", gateway.registry_import.run(gateway.config.store.retry_max_s)
        )
    if gateway.mqtt is not None:
        parts.start("mqtt", gateway.mqtt.run())
    if gateway.sms_transport is not None:
        parts.start("modem", gateway.sms_transport.modem.run())
        parts.start("sms-expiry", _expire_sms_parts(gateway.sms_transport.intake))
    if gateway.web is not None:
        parts.start("web-expiry", _forget_web_clients(gateway.web))
    if gateway.config.api is not None:
        parts.start("api", _serve_api(gateway.config, api_stop))
    try:
        if gateway.tcp is not None:
            await gateway.tcp.start()
        if gateway.web is not None:
            await gateway.web.start()
            parts.start("web", gateway.web.run(web_stop))
        await ops.start()  # READY=1 once the transports listen
        gateway.started.set()
        log.info("gateway_started", gateway_id=gateway.outbox.gateway_id)
        await parts.serve(stop)
    finally:
        api_stop.set()  # the API returns by itself; _shutdown gives it the grace period
        web_stop.set()  # so do web smileys: a request in hand gets its commit and answer
        ops.stopping()  # STOPPING=1, /readyz 503; the watchdog keeps pinging until close()
        try:
            await _shutdown(gateway, parts)
        finally:
            await ops.close()


async def _stats(gateway: Gateway, ops: Operations) -> None:
    await StatsReporter(ops.observed, interval_s=gateway.config.gateway.stats_interval_s).run()


async def _serve_api(config: Config, stop: asyncio.Event) -> None:
    """The query API inside ``run`` when ``[api]`` is configured; it never stops intake."""
    from gateway.api import serve_api  # noqa: PLC0415 - the web stack only when serving

    try:
        await serve_api(config, stop, wait_for_store=True)
    except (GatewayError, OSError) as exc:
        log.error(
            "api_failed",
            error=str(exc),
            component="api",
            action="fix [api] (is the port free?) and restart; presses are still taken",
        )


async def _forget_web_clients(web: WebSmileys) -> None:
    while True:
        with contextlib.suppress(GatewayError):  # OutboxBusy: try again next round
            await web.forget_old_clients()
        await asyncio.sleep(WEB_EXPIRY_INTERVAL_S)


async def _expire_sms_parts(sms: SmsIntake) -> None:
    while True:
        with contextlib.suppress(GatewayError):  # OutboxBusy: try again next round
            await sms.expire()
        await asyncio.sleep(SMS_EXPIRY_INTERVAL_S)


async def _shutdown(gateway: Gateway, parts: Supervisor) -> None:
    """Stop the parts in the order of the module docstring."""
    await parts.wait("api", SHUTDOWN_GRACE_S)  # queries first: they only read
    await parts.wait("web", SHUTDOWN_GRACE_S)  # the outbox writer still commits for it
    for name in ("api", "web", "web-expiry", "mqtt", "modem", "sms-expiry"):
        await parts.stop(name)
    if gateway.tcp is not None:
        await gateway.tcp.stop_accepting()
        await gateway.tcp.close_connections(grace_s=SHUTDOWN_GRACE_S)
    # The batch in hand and the drain share one budget: forwarding ends by this time.
    forwarding_ends = asyncio.get_running_loop().time() + SHUTDOWN_GRACE_S
    try:  # let the batch in hand reach the store: a write cut off mid-way is left open
        async with asyncio.timeout_at(forwarding_ends), gateway.forwarder.between_batches():
            await parts.stop("forwarder")
    except TimeoutError:
        await parts.stop("forwarder")
    for name in ("stats", "registry-import"):
        await parts.stop(name)
    if parts.running("outbox-writer"):
        try:
            async with asyncio.timeout_at(forwarding_ends):
                await gateway.forwarder.drain()
        except (TimeoutError, GatewayError) as exc:
            log.warning("shutdown_left_backlog", error=str(exc) or type(exc).__name__)
    await parts.stop_all()  # the outbox writer
    await gateway.store_seq.close()
    await gateway.store.close()
    await gateway.outbox.close()
    log.info("gateway_stopped")
